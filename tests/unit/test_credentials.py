"""Where keys are read from (pure)."""

from __future__ import annotations

import base64

import pytest

from hokusai_registry.auth.credentials import presented_key
from hokusai_registry.core.refusals import Refusal

KEY = "hk_live_abc"


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.mark.parametrize(
    "headers",
    [
        [(b"authorization", b"Bearer " + KEY.encode())],
        [(b"authorization", b"bearer  " + KEY.encode())],
        [(b"authorization", basic("anyone", KEY))],
        [(b"authorization", basic(KEY, ""))],
        [(b"x-api-key", KEY.encode())],
        [(b"x-api-key", b"ignored"), (b"authorization", b"Bearer " + KEY.encode())],
    ],
)
def test_accepted_places(headers: list[tuple[bytes, bytes]]) -> None:
    assert presented_key(headers) == KEY


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ([], "no API key was sent"),
        ([(b"authorization", b"Token abc")], "unsupported scheme"),
        ([(b"authorization", b"Bearer")], "unsupported scheme"),
        ([(b"authorization", b"Basic !!!")], "not valid base64"),
        ([(b"authorization", basic("user", ""))], "MLFLOW_TRACKING_PASSWORD"),
    ],
)
def test_refusals_say_what_is_wrong(headers: list[tuple[bytes, bytes]], hint: str) -> None:
    with pytest.raises(Refusal) as raised:
        presented_key(headers)
    assert raised.value.code == "UNAUTHENTICATED"
    assert raised.value.http_status == 401
    assert hint in raised.value.message
