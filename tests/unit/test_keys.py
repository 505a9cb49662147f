"""Key format: generation, parsing and a checksum that catches typos without a lookup."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.policy import keys


def test_generated_key_has_the_documented_shape() -> None:
    key = keys.generate("live")
    prefix, env, key_id, rest = key.text.split("_")
    assert (prefix, env) == ("hk", "live")
    assert key_id == key.key_id and len(key_id) == keys.KEY_ID_LENGTH
    assert len(rest) == keys.SECRET_LENGTH + keys.CHECKSUM_LENGTH
    assert keys.parse(key.text) == key


def test_secret_carries_at_least_128_bits() -> None:
    import math

    assert keys.SECRET_LENGTH * math.log2(62) >= 128


def test_test_environment_prefix() -> None:
    key = keys.generate("test")
    assert key.text.startswith("hk_test_")
    assert keys.parse(key.text).environment == "test"


def test_keys_are_unique() -> None:
    assert len({keys.generate("live").text for _ in range(1000)}) == 1000


key_texts = (
    st.tuples(
        st.text(alphabet=keys.BASE62, min_size=keys.KEY_ID_LENGTH, max_size=keys.KEY_ID_LENGTH),
        st.text(alphabet=keys.BASE62, min_size=keys.SECRET_LENGTH, max_size=keys.SECRET_LENGTH),
    )
    .map(lambda parts: f"hk_live_{parts[0]}_{parts[1]}")
    .map(lambda body: body + keys.checksum(body))
)


@given(key_texts, st.data())
def test_any_single_character_change_is_caught(text: str, data: st.DataObject) -> None:
    assert keys.parse(text).text == text
    position = data.draw(st.integers(min_value=len("hk_live_"), max_value=len(text) - 1))
    if text[position] == "_":
        return
    replacement = data.draw(st.sampled_from(keys.BASE62).filter(lambda c: c != text[position]))
    mistyped = text[:position] + replacement + text[position + 1 :]
    with pytest.raises(keys.KeyFormatError):
        keys.parse(mistyped)


@given(st.integers(min_value=1, max_value=40))
def test_truncated_key_is_malformed(cut: int) -> None:
    text = keys.generate("live").text
    with pytest.raises(keys.KeyFormatError, match="cut off"):
        keys.parse(text[:-cut])


@pytest.mark.parametrize(
    "text", ["", "Bearer x", "sk_live_abc", "hk_prod_abcdefghijkl_" + "a" * 38, "hk_live_"]
)
def test_wrong_prefix_or_shape(text: str) -> None:
    with pytest.raises(keys.KeyFormatError):
        keys.parse(text)


@given(st.text(min_size=12, max_size=80))
def test_random_text_is_never_accepted_nor_echoed(text: str) -> None:
    with pytest.raises(keys.KeyFormatError) as raised:
        keys.parse(text)
    assert text not in str(raised.value)


def test_digest_is_sha256_hex_and_not_the_key() -> None:
    key = keys.generate("live").text
    assert len(keys.digest(key)) == 64
    assert key not in keys.digest(key)
    assert keys.digest(key) == keys.digest(key)


def test_key_id_check() -> None:
    assert keys.is_key_id(keys.generate("live").key_id)
    assert not keys.is_key_id("hk_live_x")
    assert not keys.is_key_id("abc")
