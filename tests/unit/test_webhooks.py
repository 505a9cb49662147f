"""Webhooks as rules (pure): signatures (checked against MLflow's own signer), the back-off schedule, event
names, URLs and the envelope; and registry events from forwarded writes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from hokusai_registry.policy import webhooks
from hokusai_registry.policy.registry_events import event_data, event_for

SECRET = "whsec_" + "s" * 32
DELIVERY = "0b6f3f1e-2f2a-4a57-9a43-8a7f1a0c0001"


def test_signature_is_mlflows_scheme() -> None:
    body = webhooks.envelope("model_version.created", {"name": "m", "version": "1"}, "2026-01-01T00:00:00")
    signature = webhooks.sign(SECRET, DELIVERY, "1767225600", body)
    expected = hmac.new(SECRET.encode(), f"{DELIVERY}.1767225600.{body}".encode(), hashlib.sha256).digest()
    assert signature == "v1," + base64.b64encode(expected).decode()


def test_signature_matches_mlflows_own_signer() -> None:
    delivery = pytest.importorskip("mlflow.webhooks.delivery")
    constants = pytest.importorskip("mlflow.webhooks.constants")
    body = webhooks.envelope("model_version_alias.created", {"name": "m", "alias": "a", "version": "2"}, "t")
    ours = webhooks.sign(SECRET, DELIVERY, "1767225600", body)
    assert ours == delivery._generate_hmac_signature(SECRET, DELIVERY, "1767225600", body)
    assert (webhooks.SIGNATURE_HEADER, webhooks.TIMESTAMP_HEADER, webhooks.DELIVERY_ID_HEADER) == (
        constants.WEBHOOK_SIGNATURE_HEADER,
        constants.WEBHOOK_TIMESTAMP_HEADER,
        constants.WEBHOOK_DELIVERY_ID_HEADER,
    )


def test_verify_checks_the_signature_and_the_timestamp() -> None:
    body = webhooks.envelope("model_version.created", {"name": "m"}, "t")
    header = webhooks.sign(SECRET, DELIVERY, "1000", body)
    assert webhooks.verify(SECRET, DELIVERY, "1000", body, header, now=1100, tolerance=300)
    assert webhooks.verify(SECRET, DELIVERY, "1000", body, "v1,old " + header, now=1100, tolerance=300)
    assert not webhooks.verify(SECRET, DELIVERY, "1000", body + " ", header, now=1100, tolerance=300)
    assert not webhooks.verify("x" * 32, DELIVERY, "1000", body, header, now=1100, tolerance=300)
    assert not webhooks.verify(SECRET, "other", "1000", body, header, now=1100, tolerance=300)
    assert not webhooks.verify(SECRET, DELIVERY, "1000", body, header, now=2000, tolerance=300)
    assert not webhooks.verify(SECRET, DELIVERY, "soon", body, header, now=1100, tolerance=300)


def test_envelope_is_mlflows_with_the_event_name() -> None:
    body = json.loads(webhooks.envelope("model_version_alias.deleted", {"name": "m", "alias": "a"}, "T"))
    assert body == {
        "entity": "model_version_alias",
        "action": "deleted",
        "timestamp": "T",
        "data": {"name": "m", "alias": "a"},
        "event": "model_version_alias.deleted",
    }


def test_back_off_doubles_up_to_the_cap() -> None:
    schedule = [webhooks.retry_delay(n, base=5, cap=60, jitter=0.2, random=0.5) for n in range(1, 8)]
    assert schedule == [5, 10, 20, 40, 60, 60, 60]
    assert webhooks.retry_delay(10_000, base=5, cap=3600, jitter=0.2, random=0.5) == 3600


def test_jitter_spreads_by_the_fraction_either_way() -> None:
    assert webhooks.retry_delay(3, base=5, cap=60, jitter=0.2, random=0.0) == pytest.approx(16)
    assert webhooks.retry_delay(3, base=5, cap=60, jitter=0.2, random=0.999999) == pytest.approx(24, abs=1e-4)
    assert webhooks.retry_delay(3, base=5, cap=60, jitter=0.0, random=0.9) == 20


def test_retry_after_in_seconds_only_and_capped() -> None:
    assert webhooks.retry_after("30", cap=60) == 30
    assert webhooks.retry_after("3600", cap=60) == 60
    assert webhooks.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", cap=60) is None
    assert webhooks.retry_after(None, cap=60) is None


def test_only_2xx_is_delivered() -> None:
    assert webhooks.delivered(200) and webhooks.delivered(204)
    assert not any(webhooks.delivered(status) for status in (301, 302, 400, 404, 429, 500, 503))


def test_events_are_known_names_or_all() -> None:
    assert webhooks.parse_events("model_version.created, model_version_alias.created") == (
        "model_version.created",
        "model_version_alias.created",
    )
    assert webhooks.parse_events(["*", "model_version.created"]) == ("*",)
    with pytest.raises(ValueError, match=r"unknown event 'model\.created'"):
        webhooks.parse_events("model.created")
    with pytest.raises(ValueError, match="at least one"):
        webhooks.parse_events(" , ")
    assert webhooks.subscribed(("*",), "promotion.applied")
    assert webhooks.subscribed(("model_version.created",), webhooks.TEST)
    assert not webhooks.subscribed(("model_version.created",), "model_version_alias.created")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("https:///hook", "no host"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("https://example.com:99999/hook", "not a valid URL"),
        ("https://example.com/hook#part", "fragment"),
        ("https://example.com/" + "a" * 2000, "longer than"),
    ],
)
def test_urls_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        webhooks.check_url(url)


def test_urls_accepted_anywhere() -> None:
    # Admins configure webhooks; loopback and private addresses are allowed (docs/webhooks.md, SSRF).
    for url in ("http://127.0.0.1:9000/hook", "https://hooks.example.com/x?token=abc", "http://10.0.0.5/h"):
        assert webhooks.check_url(url) == url


def test_secrets_have_a_minimum_length() -> None:
    assert webhooks.check_secret("  " + "k" * 16 + "\n") == "k" * 16
    with pytest.raises(ValueError, match="at least 16"):
        webhooks.check_secret("short")


@pytest.mark.parametrize(
    ("method", "path", "event"),
    [
        ("POST", "/api/2.0/mlflow/model-versions/create", "model_version.created"),
        ("POST", "/ajax-api/2.0/mlflow/registered-models/alias", "model_version_alias.created"),
        ("DELETE", "/api/2.0/mlflow/registered-models/alias", "model_version_alias.deleted"),
        ("POST", "/api/2.0/mlflow/model-versions/transition-stage", "model_version.stage_transitioned"),
        ("POST", "/api/2.0/mlflow/registered-models/create", "registered_model.created"),
        ("GET", "/api/2.0/mlflow/registered-models/alias", None),
        ("POST", "/api/2.0/mlflow/model-versions/update", None),
        ("POST", "/other/2.0/mlflow/model-versions/create", None),
    ],
)
def test_which_writes_make_events(method: str, path: str, event: str | None) -> None:
    assert event_for(method, path) == event
    assert event is None or event in webhooks.EVENTS


def test_model_version_created_takes_the_version_from_mlflows_answer() -> None:
    answer = {
        "model_version": {
            "name": "m",
            "version": "3",
            "source": "models:/m-1",
            "run_id": "r1",
            "tags": [{"key": "k", "value": "v"}],
            "current_stage": "None",
        }
    }
    event, data = event_data(
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        b'{"name": "m", "source": "models:/m-1"}',
        {},
        json.dumps(answer).encode(),
    ) or ("", {})
    assert event == "model_version.created"
    assert data == {
        "name": "m",
        "version": "3",
        "source": "models:/m-1",
        "run_id": "r1",
        "tags": {"k": "v"},
        "description": None,
    }


def test_model_version_created_without_an_answer_still_says_what_was_asked() -> None:
    found = event_data(
        "POST", "/api/2.0/mlflow/model-versions/create", b'{"name": "m", "runId": "r"}', {}, None
    )
    assert found is not None and found[1]["name"] == "m" and found[1]["run_id"] == "r"
    assert found[1]["version"] is None


def test_alias_events_from_the_body_or_the_query_string() -> None:
    created = event_data(
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        b'{"name":"m","alias":"prod","version":"2"}',
        {},
        b"{}",
    )
    assert created == ("model_version_alias.created", {"name": "m", "alias": "prod", "version": "2"})
    deleted = event_data(
        "DELETE", "/api/2.0/mlflow/registered-models/alias", b"", {"name": "m", "alias": "prod"}, b"{}"
    )
    assert deleted == ("model_version_alias.deleted", {"name": "m", "alias": "prod"})


def test_stage_transition_names_the_new_stage() -> None:
    found = event_data(
        "POST",
        "/api/2.0/mlflow/model-versions/transition-stage",
        b'{"name":"m","version":"1","stage":"production","archive_existing_versions":true}',
        {},
        b'{"model_version": {"name": "m", "version": "1", "current_stage": "Production"}}',
    )
    assert found == (
        "model_version.stage_transitioned",
        {"name": "m", "version": "1", "stage": "Production", "archive_existing_versions": True},
    )


def test_every_route_that_makes_an_event_is_inspected() -> None:
    # Their bodies are small JSON read whole before forwarding (inspection.py): events cost no buffering.
    from hokusai_registry.policy.inspection import inspection
    from hokusai_registry.policy.registry_events import _TABLE

    for method, route in _TABLE:
        for root in ("/api/2.0", "/ajax-api/2.0", "/api/3.0"):
            path = f"{root}/mlflow/{route}"
            assert event_for(method, path) is not None
            found = inspection(method, path)
            assert found is not None and found.event is not None, path


def test_generated_webhook_secrets_are_redacted_from_log_lines() -> None:
    from hokusai_registry.core.redaction import redact
    from hokusai_registry.events.sealing import new_secret

    secret = new_secret()
    assert redact(f"secret={secret} key hk_live_abc Bearer xyz") == (
        "secret=whsec_[redacted] key hk_live_[redacted] Bearer [redacted]"
    )
