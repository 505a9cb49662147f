"""Who the client is, live (issue 15, defects 11-15): gateway processes on loopback in front of the real
MLflow, with HOKUSAI_FORWARDED_ALLOW_IPS set as a deployment behind a load balancer sets it. Loopback
plays the load balancer: what it appends to X-Forwarded-For (the address it was connected from) is the
rightmost entry; everything left of it is the client's own text.

- 11: the shipped configuration (Terraform) trusts the load balancer's network, never `*`; a forged
  leftmost entry changes nothing, a value that is not an address is never the client, and `*` is refused.
- 12: guesses at `/api/v1/keys/validate` are counted against the caller, whatever `client_ip` it names.
- 13: 200 guesses at once from one address: the documented limit holds (in memory, and in Redis across
  two gateways), while other clients are answered in under 2 s and the gateway stays under 150 MB.
- 14: a key sent as X-Request-ID is never echoed, forwarded to MLflow, or logged.
- 15: nothing a caller without a valid key can see names an internal address (MLflow's, the auth
  service's), with MLflow down.

Counting is in memory (REDIS_URL unset) unless a test says otherwise; failure windows are aligned to the
clock minute, so tests that count to a limit step clear of a minute's last seconds first.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

import hokusai_registry
from bench.load import RssSampler
from hokusai_registry.policy import keys
from hokusai_registry.store.key_store import DEFAULT_SCOPES
from tests.helpers import HOKUSAI, FrontProxy, GatewayProcess, clear_of_minute_edge, free_port, key_store
from tests.support.bystander import Bystander

StartGateway = Callable[..., GatewayProcess]
SEARCH = "/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
LOAD_BALANCER_NETWORK = "127.0.0.0/8"  # where the test's load balancer (loopback) lives
ATTACKER = "203.0.113.77"  # the address the load balancer saw
MAX_RSS_MB = 150


def shipped_trust() -> str:
    """HOKUSAI_FORWARDED_ALLOW_IPS as the Terraform of the code under test ships it, with the test's
    load balancer network standing in for the VPC's CIDR blocks."""
    terraform = Path(hokusai_registry.__file__).resolve().parents[2] / "deploy" / "terraform"
    services = (terraform / "services.tf").read_text()
    found = re.search(r'name = "HOKUSAI_FORWARDED_ALLOW_IPS", value = ([^ ]+) \}', services)
    assert found, "the gateway's task definition sets no HOKUSAI_FORWARDED_ALLOW_IPS"
    value = found.group(1)
    if value.startswith('"'):
        return value.strip('"')  # a literal
    assert value == "local.trusted_proxies", value
    local = re.search(r"trusted_proxies\s*=\s*(.+)", (terraform / "main.tf").read_text())
    assert local and "data.aws_vpc.main.cidr_block" in local.group(1), local
    return LOAD_BALANCER_NETWORK


def gateway_env(**env: str) -> dict[str, str]:
    base = {
        "HOKUSAI_RATE_LIMIT_PER_MINUTE": "0",
        "HOKUSAI_RATE_LIMIT_PER_HOUR": "0",
        "HOKUSAI_AUTH_FAILURE_LIMIT": "30",
        "HOKUSAI_FORWARDED_ALLOW_IPS": LOAD_BALANCER_NETWORK,
        "REDIS_URL": "",
    }
    return {**base, **env}


@pytest.fixture
def start_gateway(mlflow_server: str, tmp_path: Path) -> Iterator[StartGateway]:
    """Gateways for one test (data directory tmp_path/NAME), in front of MLflow unless told another
    upstream; all stopped afterwards."""
    started: list[GatewayProcess] = []

    def start(name: str, upstream: str = mlflow_server, **env: str) -> GatewayProcess:
        gateway = GatewayProcess(upstream, tmp_path / name, env=gateway_env(**env))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def recorder(mlflow_server: str) -> Iterator[FrontProxy]:
    """A relay between the gateway and MLflow that records what MLflow is sent."""
    relay = FrontProxy(mlflow_server, record=True)
    yield relay
    relay.stop()


def get(gateway: GatewayProcess, target: str, **headers: str) -> requests.Response:
    return requests.get(gateway.url + target, headers=headers, timeout=30)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def access_client(gateway: GatewayProcess, request_id: str) -> str:
    """The client address in the request's access line (lines are flushed every 0.2 s)."""
    marker = re.compile(rf"access: {re.escape(request_id)} (\S+) ")
    for _ in range(100):
        found = marker.search(gateway.log())
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no access line for {request_id}")


def audited_clients(gateway: GatewayProcess) -> Counter[str]:
    """The `client` of every auth.failed audit line so far."""
    clients: Counter[str] = Counter()
    for line in gateway.log().splitlines():
        start = line.find('{"')
        if '"auth.failed"' in line and start >= 0:
            clients[json.loads(line[start:])["client"]] += 1
    return clients


# 11: the shipped trust, forged entries, values that are not addresses, `*`


def test_forged_forwarded_for_behind_the_shipped_load_balancer_is_throttled(
    start_gateway: StartGateway,
) -> None:
    """60 unknown keys from one client behind the load balancer, each naming a new address of its own at
    the left of X-Forwarded-For: the failure limit (30) holds, and the audit names the real address."""
    gateway = start_gateway("gateway", HOKUSAI_FORWARDED_ALLOW_IPS=shipped_trust())
    clear_of_minute_edge()
    statuses = Counter(
        get(
            gateway,
            SEARCH,
            **bearer(keys.generate("live").text),
            **{"X-Forwarded-For": f"198.51.100.{n}, {ATTACKER}"},
        ).status_code
        for n in range(60)
    )
    assert statuses == Counter({401: 30, 429: 30}), statuses
    time.sleep(0.5)  # the audit lines are flushed with the log
    assert audited_clients(gateway) == Counter({ATTACKER: 30})


def test_forwarded_for_that_is_not_an_address_is_never_the_client(
    start_gateway: StartGateway, recorder: FrontProxy
) -> None:
    """From the trusted load balancer: the client is the rightmost address not in its network, and a
    value that is not an IP address stops the walk at the proxy that wrote it (here loopback), in the
    access line and in what MLflow is told."""
    gateway = start_gateway("gateway", recorder.url)
    key = gateway.create_key("identity")
    cases: list[tuple[list[str], str]] = [
        (["evil.example"], "127.0.0.1"),
        (["6.6.6.6, not-an-address"], "127.0.0.1"),
        (["6.6.6.6, <script>"], "127.0.0.1"),
        ([f"6.6.6.6, {ATTACKER}"], ATTACKER),
        ([f"{ATTACKER}, 127.0.0.9"], ATTACKER),
        (["6.6.6.6", ATTACKER], ATTACKER),
        ([f"{ATTACKER}:4711"], ATTACKER),
    ]
    seen = []
    for number, (values, _) in enumerate(cases):
        request_id = f"xff-{number}-{uuid.uuid4().hex[:8]}"
        lines = [f"X-Forwarded-For: {value}" for value in values]
        head = "\r\n".join(
            [
                f"GET {SEARCH} HTTP/1.1",
                f"Host: 127.0.0.1:{gateway.port}",
                f"Authorization: Bearer {key}",
                f"X-Request-ID: {request_id}",
                *lines,
                "Connection: close",
            ]
        )
        status = asyncio.run(_exchange(gateway.port, [head.encode() + b"\r\n\r\n"]))
        assert status == [200]
        assert recorder.recorded is not None
        upstream = {name.lower(): value for name, value in recorder.recorded[-1][2].items()}
        seen.append((upstream.get("x-forwarded-for"), access_client(gateway, request_id)))
    assert seen == [(client, client) for _, client in cases]


def test_trusting_every_address_is_refused_at_start(tmp_path: Path) -> None:
    command = [HOKUSAI, "gateway", "--mlflow-url", f"http://127.0.0.1:{free_port()}", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path)],
        env={**os.environ, "HOKUSAI_FORWARDED_ALLOW_IPS": "*"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail("the gateway started trusting every address's X-Forwarded-For:\n" + output[-2000:])
    assert process.returncode == 2 and "Traceback" not in output, output
    assert "HOKUSAI_FORWARDED_ALLOW_IPS: '*' would trust every client" in output


# 12: validate


def validate(gateway: GatewayProcess, body: dict[str, str], **headers: str) -> int:
    response = requests.post(
        gateway.url + "/api/v1/keys/validate",
        json=body,
        headers={**bearer(keys.generate("live").text), **headers},
        timeout=30,
    )
    return response.status_code


def test_validate_guesses_naming_a_new_client_ip_each_are_throttled(start_gateway: StartGateway) -> None:
    """A caller outside the trusted network names a new `client_ip` with each guess: its own address is
    what counts (limit 10). A trusted caller (loopback, like a gateway in the VPC) names its clients,
    which are counted each on their own."""
    gateway = start_gateway("gateway", HOKUSAI_AUTH_FAILURE_LIMIT="10")
    clear_of_minute_edge()
    outside = Counter(
        validate(gateway, {"client_ip": f"198.51.100.{n}"}, **{"X-Forwarded-For": ATTACKER})
        for n in range(30)
    )
    assert outside == Counter({401: 10, 429: 20}), outside
    inside = Counter(validate(gateway, {"client_ip": f"192.0.2.{n}"}) for n in range(15))
    assert inside == Counter({401: 15}), inside


# 13: at once


async def _exchange(port: int, heads: list[bytes]) -> list[int]:
    """Opens one connection per request, then sends every request at once; each answer's status."""
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in heads]
    for (_, writer), head in zip(connections, heads, strict=True):
        writer.write(head)
    await asyncio.gather(*(writer.drain() for _, writer in connections))

    async def status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        try:
            line = await asyncio.wait_for(reader.readline(), 60)
            return int(line.split()[1])
        finally:
            writer.close()

    return list(await asyncio.gather(*(status(reader, writer) for reader, writer in connections)))


def guesses(gateway: GatewayProcess, count: int, client: str) -> list[bytes]:
    return [
        (
            f"GET {SEARCH} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
            f"Authorization: Bearer {keys.generate('live').text}\r\n"
            f"X-Forwarded-For: 198.51.100.{n % 250}, {client}\r\nConnection: close\r\n\r\n"
        ).encode()
        for n in range(count)
    ]


def test_200_guesses_at_once_from_one_address_check_only_the_limit(start_gateway: StartGateway) -> None:
    gateway = start_gateway("gateway")
    key = gateway.create_key("bystander")  # before the attack: a key change empties the key cache
    requests.get(gateway.url + "/health", timeout=30)
    clear_of_minute_edge(15)
    with Bystander(gateway.url, key) as bystander, RssSampler(gateway.pid) as sampler:
        statuses = Counter(asyncio.run(_exchange(gateway.port, guesses(gateway, 200, ATTACKER))))
    assert statuses == Counter({401: 30, 429: 170}), statuses
    bystander.check()
    assert sampler.peak_mb < MAX_RSS_MB, f"gateway RSS {sampler.peak_mb:.0f} MB"


def test_200_guesses_at_once_on_two_gateways_sharing_redis_check_only_the_limit(
    redis_url: str, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """Half the guesses to each of two replicas counting in one Redis: 30 checked in all."""
    shared = tmp_path / "shared"
    shared.mkdir()
    env = {"DATABASE_URL": f"sqlite:///{shared / 'keys.db'}", "REDIS_URL": redis_url}
    store = key_store(shared)
    try:
        _, key = store.create("bystander", environment="live", scopes=DEFAULT_SCOPES)
    finally:
        store.close()
    first, second = start_gateway("first", **env), start_gateway("second", **env)
    client = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"  # a count of its own in Redis
    clear_of_minute_edge(15)  # the guesses in one aligned window (a loaded machine once straddled two)

    async def both() -> list[int]:
        halves = await asyncio.gather(
            _exchange(first.port, guesses(first, 100, client)),
            _exchange(second.port, guesses(second, 100, client)),
        )
        return halves[0] + halves[1]

    with (
        Bystander([first.url, second.url], key) as bystander,
        RssSampler(first.pid) as first_rss,
        RssSampler(second.pid) as second_rss,
    ):
        statuses = Counter(asyncio.run(both()))
    assert statuses == Counter({401: 30, 429: 170}), statuses
    assert "unavailable for rate limits" not in first.log() + second.log()
    bystander.check()
    assert max(first_rss.peak_mb, second_rss.peak_mb) < MAX_RSS_MB


# 14: request ids


def test_a_key_as_request_id_is_replaced_everywhere(
    start_gateway: StartGateway, recorder: FrontProxy
) -> None:
    gateway = start_gateway("gateway", recorder.url)
    key = gateway.create_key("request-id")
    other = gateway.create_key("other")
    time.sleep(1.5)  # the gateway has seen both keys' creation
    answers = [
        get(gateway, SEARCH, **bearer(key), **{"X-Request-ID": key}),  # the caller's own key
        get(gateway, SEARCH, **bearer(key), **{"X-Request-ID": other}),  # someone else's
        get(gateway, SEARCH, **{"X-Request-ID": other}),  # no key: 401
        get(gateway, SEARCH, **bearer(key), **{"X-Request-ID": "req-" + other.split("_", 2)[2]}),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 401, 200]
    secrets = [key.encode(), other.encode(), other.split("_", 2)[2].encode()]
    for answer in answers:
        echoed = answer.headers["X-Request-ID"].encode()
        assert re.fullmatch(rb"[0-9a-f]{32}", echoed), echoed
    assert recorder.recorded is not None
    for _, _, headers, _ in recorder.recorded[-3:]:
        assert not any(secret in value.encode() for value in headers.values() for secret in secrets), headers
    time.sleep(0.5)
    log = gateway.log().encode()
    assert not any(secret in log for secret in secrets)


# 15: no internal address without a valid key


def unauthenticated_answers(gateway: GatewayProcess) -> list[requests.Response]:
    unknown, malformed = keys.generate("live").text, "hk_live_nonsense"
    answers = [
        get(gateway, path)
        for path in ("/health", "/ready", "/mlflow/health/mlflow", "/api/mlflow/health/mlflow")
    ]
    for headers in ({}, bearer(unknown), bearer(malformed)):
        answers += [
            get(gateway, SEARCH, **headers),
            get(gateway, "/api/mlflow/api/2.0/mlflow/experiments/get?experiment_id=0", **headers),
            get(gateway, "/mlflow/ajax-api/2.0/mlflow/runs/search", **headers),
            get(gateway, "/mlflow/", **headers),
            get(gateway, "/api/v1/keys", **headers),
            get(gateway, "/metrics", **headers),
            get(gateway, "/mlflow/health/mlflow/detailed", **headers),
            requests.post(gateway.url + "/api/v1/keys/validate", json={}, headers=headers, timeout=30),
        ]
    return answers


def named(answer: requests.Response, address: str) -> bool:
    text = answer.text + " ".join(f"{name}: {value}" for name, value in answer.headers.items())
    return address in text


def test_nothing_unauthenticated_names_mlflows_address(start_gateway: StartGateway) -> None:
    dead = f"127.0.0.1:{free_port()}"  # MLflow is down
    gateway = start_gateway("gateway", f"http://{dead}")
    key = gateway.create_key("operator")
    answers = unauthenticated_answers(gateway)
    assert {answer.status_code for answer in answers} <= {200, 302, 303, 307, 401, 404, 503}
    leaks = [
        (answer.request.url, answer.status_code, answer.text[:200])
        for answer in answers
        if named(answer, dead)
    ]
    assert leaks == []
    # With a key it may be named: that is why the detailed report needs one.
    time.sleep(1.5)
    detailed = get(gateway, "/mlflow/health/mlflow/detailed", **bearer(key))
    assert detailed.status_code == 503 and named(detailed, dead)


def test_nothing_unauthenticated_names_the_auth_services_address(start_gateway: StartGateway) -> None:
    auth = f"127.0.0.1:{free_port()}"  # the auth service is down
    gateway = start_gateway("gateway", AUTH_SERVICE_URL=f"http://{auth}")
    answers = unauthenticated_answers(gateway)
    assert 503 in {answer.status_code for answer in answers}  # the unknown key could not be checked
    leaks = [
        (answer.request.url, answer.status_code, answer.text[:200])
        for answer in answers
        if named(answer, auth)
    ]
    assert leaks == []
    assert f"auth service http://{auth} did not answer" in gateway.log()  # the operator is told
