"""Which routes take which bodies, which codings pass, and the bounded decoder (pure)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from hokusai_registry.core.codings import DecodedTooLarge, Decoder
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.bodies import BodyRule, body_rule, request_coding
from hokusai_registry.policy.routes import Family


@pytest.mark.parametrize(
    ("method", "family", "path", "rule"),
    [
        ("GET", Family.TRANSFER, "/get-artifact", BodyRule.NONE),
        ("GET", Family.TRANSFER, "/model-versions/get-artifact", BodyRule.NONE),
        ("HEAD", Family.TRANSFER, "/api/2.0/mlflow-artifacts/artifacts/1/r/m", BodyRule.NONE),
        ("DELETE", Family.TRANSFER, "/ajax-api/2.0/mlflow-artifacts/artifacts/1/r/m", BodyRule.NONE),
        ("GET", Family.TRANSFER, "/api/2.0/mlflow-artifacts/presigned/1/r/m", BodyRule.NONE),
        ("PUT", Family.TRANSFER, "/api/2.0/mlflow-artifacts/artifacts/1/r/m", BodyRule.STREAMED),
        ("PUT", Family.TRANSFER, "/ajax-api/2.0/mlflow-artifacts/artifacts/1/r/m", BodyRule.STREAMED),
        ("PUT", Family.TRANSFER, "/api/2.0/mlflow-artifacts/artifacts", BodyRule.CAPPED),
        ("POST", Family.TRANSFER, "/api/2.0/mlflow-artifacts/mpu/create/1/r", BodyRule.CAPPED),
        ("POST", Family.TRANSFER, "/gateway/chat/mlflow/invocations", BodyRule.CAPPED),
        ("POST", Family.REST, "/api/2.0/mlflow/runs/log-batch", BodyRule.CAPPED),
        ("GET", Family.REST, "/api/2.0/mlflow/experiments/get", BodyRule.CAPPED),
        ("POST", Family.REST, "/v1/traces", BodyRule.CAPPED),
        ("GET", Family.UI, "/static-files/x.js", BodyRule.CAPPED),
    ],
)
def test_body_rules(method: str, family: Family, path: str, rule: BodyRule) -> None:
    assert body_rule(method, family, path) is rule


@pytest.mark.parametrize(
    ("values", "decoded"),
    [
        ([], None),
        ([b""], None),
        ([b"identity"], None),
        ([b" IDENTITY "], None),
        ([b"gzip"], "gzip"),
        ([b"GZip"], "gzip"),
        ([b"x-gzip"], "gzip"),
        ([b"deflate"], "deflate"),
        ([b"identity, gzip"], "gzip"),
    ],
)
def test_codings_decoded_on_otlp(values: list[bytes], decoded: str | None) -> None:
    assert request_coding(values, "/v1/traces") == decoded


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ([b"gzip"], "/api/2.0/mlflow/runs/log-batch"),
        ([b"deflate"], "/graphql"),
        ([b"zstd"], "/gateway/chat/mlflow/invocations"),
        ([b"br"], "/v1/traces"),
        ([b"zstd"], "/v1/traces"),
        ([b"compress"], "/v1/traces"),
        ([b"gzip, gzip"], "/v1/traces"),
        ([b"gzip", b"deflate"], "/v1/traces"),
    ],
)
def test_other_codings_are_refused_with_415(values: list[bytes], path: str) -> None:
    with pytest.raises(Refusal) as refused:
        request_coding(values, path)
    assert refused.value.reason is Reason.UNSUPPORTED_CODING and refused.value.http_status == 415


def _decode(decoder: Decoder, data: bytes, piece: int = 7) -> bytes:
    out = b"".join(b"".join(decoder.decode(data[i : i + piece])) for i in range(0, len(data), piece))
    decoder.finish()
    return out


@pytest.mark.parametrize(
    ("coding", "coded"),
    [
        ("gzip", gzip.compress(b"hello world" * 100, mtime=0)),
        ("gzip", gzip.compress(b"hello world" * 50, mtime=0) + gzip.compress(b"hello world" * 50, mtime=0)),
        ("deflate", zlib.compress(b"hello world" * 100)),
        ("deflate", zlib.compress(b"hello world" * 100)[2:-4]),
    ],
)
def test_decoder_decodes_in_pieces(coding: str, coded: bytes) -> None:
    assert _decode(Decoder(coding, 1 << 20), coded) == b"hello world" * 100


def test_decoder_stops_one_byte_past_the_limit_whatever_the_ratio() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    decoder = Decoder("gzip", 1 << 20)
    produced = 0
    with pytest.raises(DecodedTooLarge):
        for i in range(0, len(bomb), 1 << 16):
            produced += sum(map(len, decoder.decode(bomb[i : i + (1 << 16)])))
    assert produced <= 1 << 20


@pytest.mark.parametrize(
    ("coding", "coded"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(b"cut short", mtime=0)[:-5]),
        ("deflate", zlib.compress(b"x") + b"trailing"),
        ("deflate", b""),
    ],
)
def test_decoder_refuses_what_is_not_its_coding(coding: str, coded: bytes) -> None:
    with pytest.raises(Refusal) as refused:
        _decode(Decoder(coding, 1 << 20), coded)
    assert refused.value.reason is Reason.BAD_CODING and refused.value.http_status == 400
