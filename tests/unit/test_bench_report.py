"""`make bench` rewrites docs/benchmarks.md: the sections written by hand survive it, the cost of
per-resource permissions is reported per call, the small-request targets are ratios to references of the
same run, and the peers are reported beside direct MLflow (formatting only: no figure is asserted of a
real run)."""

from __future__ import annotations

from pathlib import Path

from bench.load import Rate
from bench.model import (
    BASIC_AUTH_PATH,
    NGINX_AUTH_PATH,
    OIDC_AUTH_PATH,
    PERMISSIONS_OFF_PATH,
    PERMISSIONS_ON_PATH,
    PERMISSIONS_READER_PATH,
    Cost,
    Plan,
    Results,
)
from bench.report import kept_sections, markdown, peers_chart, targets


def test_the_hand_written_sections_are_kept_and_nothing_else() -> None:
    previous = (
        "# Benchmarks\n\n## Targets\n\nold figures\n\n"
        "## Server choice\n\nwhy uvicorn\n\n| a |\n\n## Auth\n\nx\n"
    )
    assert kept_sections(previous) == "\n## Server choice\n\nwhy uvicorn\n\n| a |\n"
    assert (
        kept_sections(previous.replace("## Auth\n\nx\n", ""))
        == "\n## Server choice\n\nwhy uvicorn\n\n| a |\n"
    )
    assert kept_sections("# Benchmarks\n\n## Targets\n") == ""
    # The small-request breakdown, measured by hand, is kept too (after the server choice).
    with_breakdown = previous + "\n## Where a small request's time goes\n\nfloor\n"
    assert kept_sections(with_breakdown) == (
        "\n## Server choice\n\nwhy uvicorn\n\n| a |\n\n## Where a small request's time goes\n\nfloor\n"
    )


def _results() -> Results:
    def rate(rps: float, p50: float) -> Rate:
        return Rate(rps, p50, p50 * 3, 0)

    results = Results(
        machine={
            "cores": "2",
            "cpu": "cpu",
            "python": "3.11",
            "mlflow": "3.17.2",
            "nginx": "1.22",
            "date": "today",
            "load": "3.00, 2.00, 1.00",
            "load_end": "4.00, 3.00, 2.00",
        }
    )
    for call, on in (("experiments/get", 95.0), ("runs/log-batch", 50.0), ("runs/search", 80.0)):
        results.mlflow[call] = {
            "direct": rate(120, 10),
            "nginx": rate(110, 11),
            PERMISSIONS_OFF_PATH: rate(100, 12),
            PERMISSIONS_ON_PATH: rate(on, 15),
        }
        if call != "runs/log-batch":  # the other owner only reads
            results.mlflow[call][PERMISSIONS_READER_PATH] = rate(on - 5, 16)
    return results


def test_permissions_on_over_off_per_call_in_the_targets_and_a_section() -> None:
    results = _results()
    plan = Plan(seconds=1, runs=1, artifact_mb=1, artifact_runs=1, output=Path("x.md"), mlflow_url=None)
    text = markdown(results, plan, "chart.png", 1.0)
    rows = {name: (value, ok) for name, value, ok in targets(results)}
    assert rows["`experiments/get` through the gateway, permissions on / off: ≥ 0.90×"] == ("0.95×", True)
    assert rows["`runs/log-batch` through the gateway, permissions on / off: ≥ 0.90×"] == ("0.50×", False)
    assert rows["`runs/search` through the gateway, permissions on / off: ≥ 0.90×"] == ("0.80×", False)
    section = text.split("## Per-resource permissions\n")[1].split("\n## ")[0]
    assert (
        "| `runs/search` | owner (MANAGE) | 100 | 80 | **0.80×** | 12.00 | 15.00 | +3.00 | 0 / 0 |" in section
    )
    assert "| `runs/search` | other owner (READ by default) | 100 | 75 | **0.75×** |" in section
    assert "| `runs/log-batch` | other owner" not in section
    assert "3.00, 2.00, 1.00 at the start, 4.00, 3.00, 2.00 at the end" in text


def test_no_permissions_section_without_both_gateways() -> None:
    results = _results()
    for rates in results.mlflow.values():
        rates.pop(PERMISSIONS_ON_PATH)
        rates.pop(PERMISSIONS_READER_PATH, None)
    plan = Plan(seconds=1, runs=1, artifact_mb=1, artifact_runs=1, output=Path("x.md"), mlflow_url=None)
    assert "\n## Per-resource permissions\n" not in markdown(results, plan, "chart.png", 1.0)
    assert not [name for name, _, _ in targets(results) if "permissions on" in name]


def _small(results: Results) -> None:
    def rate(rps: float, p50: float) -> Rate:
        return Rate(rps, p50, p50 * 3, 0, int(rps * 5), rps * 0.9, rps * 1.1)

    results.small = {
        "direct": {1: rate(20000, 0.02), 32: rate(40000, 0.4)},
        "nginx": {1: rate(15000, 0.05), 32: rate(20000, 1.0)},
        "hello world": {1: rate(12000, 0.06), 32: rate(15000, 1.2)},
        "bare proxy": {1: rate(8000, 0.1), 32: rate(7500, 2.0)},
        "gateway": {1: rate(3000, 0.3), 32: rate(6000, 5.0)},
    }


def test_the_small_request_targets_are_ratios_to_nginx_and_the_hello_world() -> None:
    results = _results()
    _small(results)
    rows = {name: (value, ok) for name, value, ok in targets(results)}
    assert rows["1 worker, auth on, fast stub, c=32: ≥ 0.25× nginx in the same run"] == (
        "0.30× (6,000 req/s)",
        True,
    )
    assert rows["… and ≥ 0.4× the bare ASGI hello world in the same run"] == ("0.40×", True)
    assert not [name for name in rows if "5,000" in name]


def test_cost_per_request_beside_the_rates_and_why_syscalls_are_missing() -> None:
    results = _results()
    _small(results)
    results.costs = {
        "nginx": Cost(Rate(20000, 1.0, 3.0, 0, 100000), 18.0, 5.17, (("writev", 2.01), ("recvfrom", 2.01))),
        "gateway": Cost(Rate(6000, 5.0, 15.0, 0, 30000), 270.0, None, note="strace is not installed"),
    }
    plan = Plan(seconds=1, runs=1, artifact_mb=1, artifact_runs=1, output=Path("x.md"), mlflow_url=None)
    text = markdown(results, plan, "chart.png", 1.0)
    section = text.split("### Cost per request\n")[1].split("\n## ")[0]
    assert "| nginx | 20,000 | 18.0 | 5.17 | `writev` 2.01, `recvfrom` 2.01 |" in section
    assert "| gateway | 6,000 | 270.0 | - | strace is not installed |" in section
    assert "System calls not counted: strace is not installed." in section
    assert "| hello world | 32 | 15,000 | 1.200 | 3.600 | 13,500–16,500 | 0 |" in text
    assert "gateway / hello world **0.40×**" in text
    # The floor of the gateway's design beside it: how far a policy-free proxy on this stack gets.
    assert "| bare proxy | 32 | 7,500 |" in text
    assert (
        "the bare proxy reaches 0.50× the hello world and 0.38× nginx, the gateway 0.80× the bare proxy"
        in text
    )


def test_the_peers_side_by_side_as_ratios_to_direct_and_the_peers_that_could_not_run() -> None:
    results = _results()
    for call in results.mlflow:
        results.mlflow[call][BASIC_AUTH_PATH] = Rate(30, 250, 700, 0, 150, 25, 33)
        results.mlflow[call][NGINX_AUTH_PATH] = Rate(115, 11, 33, 0, 575, 110, 118)
    results.latency = {
        "direct": Rate(90, 10.0, 14, 0),
        BASIC_AUTH_PATH: Rate(5, 180.0, 200, 0),
        NGINX_AUTH_PATH: Rate(85, 10.5, 15, 0),
        PERMISSIONS_OFF_PATH: Rate(80, 11.0, 16, 0),
    }
    results.artifacts = {
        "direct": {"PUT": 200.0, "GET": 220.0},
        BASIC_AUTH_PATH: {"PUT": 190.0, "GET": 200.0},
        NGINX_AUTH_PATH: {"PUT": 170.0, "GET": 180.0},
        PERMISSIONS_OFF_PATH: {"PUT": 185.0, "GET": 190.0},
    }
    results.artifact_ranges = {BASIC_AUTH_PATH: {"PUT": (180.0, 195.0), "GET": (190.0, 210.0)}}
    results.peers = {BASIC_AUTH_PATH: "its basic_auth.ini as shipped", NGINX_AUTH_PATH: "an htpasswd file"}
    results.peer_skipped = {OIDC_AUTH_PATH: "not installed in .venv/peers/mlflow-oidc-auth"}
    plan = Plan(seconds=1, runs=1, artifact_mb=256, artifact_runs=1, output=Path("x.md"), mlflow_url=None)
    text = markdown(results, plan, "benchmarks.png", 1.0)
    section = text.split("\n## Peers\n")[1].split("\n## ")[0]
    assert f"- **{BASIC_AUTH_PATH}**: its basic_auth.ini as shipped." in section
    # experiments/get: basic-auth 30/120, nginx auth_basic 115/120 (the best peer), the gateway 100/120.
    assert (
        f"| {NGINX_AUTH_PATH} | password | **0.96×** | **0.96×** | **0.96×** | 0.85× | 0.82× | **+0.50** |"
        in section
    )
    assert (
        f"| {BASIC_AUTH_PATH} | password, permissions | 0.25× | 0.25× | 0.25× | **0.95×** | **0.91×** |"
        in (section)
    )
    row = f"| `runs/search`, c=8 | {BASIC_AUTH_PATH} | 30 req/s | 0.25× | 250.00 | 700.00 | +240.00 | 25–33 |"
    assert row in section
    assert f"| artifact PUT | {BASIC_AUTH_PATH} | 190 MB/s | 0.95× | - | - | - | 180–195 | 0 |" in section
    assert f"Not measured: {OIDC_AUTH_PATH}: not installed in .venv/peers/mlflow-oidc-auth." in section
    assert "![peers chart](benchmarks-peers.png)" in section
    # The Real MLflow table keeps its own paths.
    real = text.split("\n## Real MLflow\n")[1].split("\n## ")[0]
    assert BASIC_AUTH_PATH not in real


def test_the_peers_chart_is_drawn_only_with_peers(tmp_path: Path) -> None:
    results = _results()
    assert not peers_chart(results, tmp_path / "peers.png")
    for call in results.mlflow:
        results.mlflow[call][NGINX_AUTH_PATH] = Rate(115, 11, 33, 0, 575, 110, 118)
    results.latency = {"direct": Rate(90, 10.0, 14, 0), NGINX_AUTH_PATH: Rate(85, 10.5, 15, 0)}
    results.peers = {NGINX_AUTH_PATH: "an htpasswd file"}
    assert peers_chart(results, tmp_path / "peers.png")
    assert (tmp_path / "peers.png").stat().st_size > 0
