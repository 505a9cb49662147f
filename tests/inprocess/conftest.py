"""Fixtures for the in-process layer: one loop thread per session, a stub upstream and a gateway per
module (tests that need other settings build their own)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.inprocess import InProcessGateway
from tests.support.loop import LoopThread
from tests.support.stub import StubUpstream

GatewayFactory = Callable[..., InProcessGateway]


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def upstream(loop: LoopThread) -> Iterator[StubUpstream]:
    stub = StubUpstream()
    loop.run(stub.start())
    yield stub
    loop.run(stub.stop())


@pytest.fixture(scope="module")
def gateway(
    loop: LoopThread, upstream: StubUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessGateway]:
    built = InProcessGateway(loop, upstream.url, tmp_path_factory.mktemp("gateway"))
    yield built
    built.close()


@pytest.fixture(scope="module")
def key(gateway: InProcessGateway) -> str:
    return gateway.create_key("in-process")


@pytest.fixture
def new_gateway(loop: LoopThread, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Builds gateways with their own settings (and upstream URL); all closed after the test."""
    built: list[InProcessGateway] = []

    def build(upstream_url: str, **settings: Any) -> InProcessGateway:
        gateway = InProcessGateway(loop, upstream_url, tmp_path / f"gateway-{len(built)}", **settings)
        built.append(gateway)
        return gateway

    yield build
    for gateway in built:
        gateway.close()


@pytest.fixture
def new_upstream(loop: LoopThread) -> Iterator[Callable[..., StubUpstream]]:
    """Starts stub upstreams of the test's own (canned answers or a handler); all stopped afterwards."""
    started: list[StubUpstream] = []

    def start(**kwargs: Any) -> StubUpstream:
        stub = StubUpstream(**kwargs)
        loop.run(stub.start())
        started.append(stub)
        return stub

    yield start
    for stub in started:
        loop.run(stub.stop())
