"""Redaction (pure): what it removes, and that its shortcut for lines without a marker changes nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.core import redaction
from hokusai_registry.core.redaction import redact

# Text that often holds the pieces of a secret, in any case, among other characters.
pieces = st.sampled_from(
    [
        *("hk_live_", "hk_test_", "HK_TEST_", "Bearer ", "bAsIc  ", "whsec_", "abc", "_", " ", "="),
        # Letters the expression matches, ignoring case, for ASCII ones: the long s, dotted and dotless i.
        *("ba\u017fic ", "bas\u0130c ", "bas\u0131c ", "\u212a"),
    ]
)
texts = st.lists(st.one_of(pieces, st.text(max_size=8)), max_size=12).map("".join)


@given(texts)
def test_the_shortcut_gives_what_the_expression_gives(text: str) -> None:
    assert redact(text) == redaction._SECRETS.sub(redaction._redacted, text)


def test_secrets_are_redacted_and_other_text_is_kept() -> None:
    line = "GET /x key=abcd Authorization: Bearer eyJ.a.b hk_live_AbC_123 whsec_Zz9 BASIC dXNlcg=="
    assert redact(line) == (
        "GET /x key=abcd Authorization: Bearer [redacted] hk_live_[redacted] whsec_[redacted] "
        "BASIC [redacted]"
    )
    assert redact("GET /api/2.0/mlflow/experiments/get 200 key=abcd") == (
        "GET /api/2.0/mlflow/experiments/get 200 key=abcd"
    )
    assert redact("ba\u017fic dXNlcg==") == "ba\u017fic [redacted]"  # the long s, as the expression sees it
