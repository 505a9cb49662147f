"""`make bench` rewrites docs/benchmarks.md: the sections written by hand survive it, and the cost of
per-resource permissions is reported per call."""

from __future__ import annotations

from pathlib import Path

from bench.load import Rate
from bench.model import PERMISSIONS_OFF_PATH, PERMISSIONS_ON_PATH, PERMISSIONS_READER_PATH, Plan, Results
from bench.report import kept_sections, markdown, targets


def test_the_server_choice_section_is_kept_and_nothing_else() -> None:
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
