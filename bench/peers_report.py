"""The peers section of docs/benchmarks.md and its chart: every peer's calls, artifacts and added latency
as ratios to direct MLflow, from the same interleaved rounds."""

from __future__ import annotations

from pathlib import Path

from bench.load import Rate
from bench.model import (
    BASIC_AUTH_CACHED_PATH,
    BASIC_AUTH_PATH,
    CALLS,
    LATENCY_CALL,
    NGINX_AUTH_PATH,
    OIDC_AUTH_PATH,
    PEER_ROWS,
    PERMISSIONS_OFF_PATH,
    PERMISSIONS_ON_PATH,
    Results,
)

# What each row checks per request, for the summary: a peer doing more is not comparable row for row.
CHECKS = {
    "direct": "nothing",
    BASIC_AUTH_PATH: "password, permissions",
    BASIC_AUTH_CACHED_PATH: "password (cached), permissions",
    OIDC_AUTH_PATH: "token, permissions",
    NGINX_AUTH_PATH: "password",
    PERMISSIONS_OFF_PATH: "key",
    PERMISSIONS_ON_PATH: "key, permissions (in MLflow)",
}
# The gateway's rows, measured in the Real MLflow section and described there.
GATEWAY_HOW = {
    "direct": "`mlflow server --serve-artifacts` (SQLite, 2 workers, uvloop) without an auth app: the "
    "reference",
    PERMISSIONS_OFF_PATH: "this gateway (one worker) with an API key, permissions off, in front of the "
    "direct MLflow",
    PERMISSIONS_ON_PATH: "this gateway with permissions on, in front of an MLflow of the same kind whose "
    "auth app decides per resource on the gateway's signed assertion (see Per-resource permissions)",
}
METHODS = ("PUT", "GET")


def rows(results: Results) -> list[str]:
    """The peers table's rows that were measured in this run, in PEER_ROWS order."""
    measured = {path for rates in results.mlflow.values() for path in rates}
    return [path for path in PEER_ROWS if path in measured]


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}×" if reference else "-"


def _best(values: dict[str, float], higher: bool = True) -> str | None:
    """The peer (not direct) with the best value, to print in bold."""
    candidates = {path: value for path, value in values.items() if path != "direct"}
    if not candidates:
        return None
    pick = max if higher else min
    return pick(candidates, key=lambda path: candidates[path])


def summary_table(results: Results) -> list[str]:
    """One row per peer: ratio to direct for each call and transfer, and the latency it adds at c=1; the
    best peer of each column in bold."""
    paths = rows(results)
    columns: list[tuple[str, dict[str, float], str]] = []
    for call in CALLS:
        rates = results.mlflow.get(call, {})
        columns.append((f"`{call}`", {p: rates[p].rps for p in paths if p in rates}, "direct"))
    for method in METHODS:
        speeds = {p: results.artifacts[p][method] for p in paths if p in results.artifacts}
        columns.append((f"artifact {method}", speeds, "direct"))
    header = "| Path | checks per request | " + " | ".join(name for name, _, _ in columns)
    out = [header + " | added p50 at c=1 ms |", "|---|---|" + "---|" * (len(columns) + 1)]
    latency = results.latency
    added = {
        p: latency[p].p50_ms - latency["direct"].p50_ms for p in paths if p in latency and "direct" in latency
    }
    best_added = _best(added, higher=False)
    best = [_best(values) for _, values, _ in columns]
    for path in paths:
        cells = []
        for (_, values, reference), winner in zip(columns, best, strict=True):
            if path not in values or reference not in values:
                cells.append("-")
                continue
            cell = _ratio(values[path], values[reference])
            cells.append(f"**{cell}**" if path == winner else cell)
        lag = "-" if path not in added else f"{added[path]:+.2f}"
        lag = f"**{lag}**" if path == best_added else lag
        out.append(f"| {path} | {CHECKS[path]} | " + " | ".join(cells) + f" | {lag} |")
    return out


def _rate_row(label: str, path: str, rate: Rate, direct: Rate) -> str:
    if not rate.requests and rate.rps == 0:  # nothing answered within the run: no latency to show
        latencies = "none answered | - | -"
    else:
        latencies = f"{rate.p50_ms:.2f} | {rate.p99_ms:.2f} | {rate.p50_ms - direct.p50_ms:+.2f}"
    return (
        f"| {label} | {path} | {rate.rps:,.0f} req/s | {_ratio(rate.rps, direct.rps)} | {latencies} "
        f"| {rate.spread} | {rate.errors} |"
    )


def detail_table(results: Results) -> list[str]:
    """Every measurement of every peer: rate, ratio to direct, latencies and the runs' range."""
    paths = rows(results)
    out = [
        "| Measurement | Path | median | ratio to direct | p50 ms | p99 ms | added p50 ms | min–max "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for call in CALLS:
        rates = results.mlflow.get(call, {})
        for path in paths:
            if path in rates and "direct" in rates:
                out.append(_rate_row(f"`{call}`, c=8", path, rates[path], rates["direct"]))
    for path in paths:
        if path in results.latency and "direct" in results.latency:
            out.append(
                _rate_row(f"`{LATENCY_CALL}`, c=1", path, results.latency[path], results.latency["direct"])
            )
    for method in METHODS:
        for path in paths:
            if path in results.artifacts and "direct" in results.artifacts:
                speed, direct = results.artifacts[path][method], results.artifacts["direct"][method]
                low, high = results.artifact_ranges.get(path, {}).get(method, (speed, speed))
                out.append(
                    f"| artifact {method} | {path} | {speed:,.0f} MB/s | {_ratio(speed, direct)} | - | - | - "
                    f"| {low:,.0f}–{high:,.0f} | 0 |"
                )
    return out


def section(results: Results, artifact_mb: int, chart_name: str | None) -> list[str]:
    """The peers section: what each peer is, the summary and detail tables, the chart, and the peers that
    could not run with the reason."""
    if not results.peers and not results.peer_skipped:
        return []
    how = {**GATEWAY_HOW, **results.peers}
    out = [
        "## Peers",
        "",
        "Who is fastest at what: the same calls as Real MLflow (8 connections), `experiments/get` on one "
        f"connection, and a {artifact_mb} MiB artifact PUT and GET, through each way of putting "
        "authentication in front of MLflow, in the same interleaved rounds as direct MLflow. Each peer "
        "fronts its own MLflow of the same kind (SQLite, `--serve-artifacts`, 2 workers, uvloop); its caller "
        "is an ordinary user (not an administrator) who created, and so owns, the experiment and runs it "
        "calls. The peers check different things per request (the second column): only rows that check "
        "the same compare like for like.",
        "",
        *[f"- **{path}**: {how[path]}." for path in rows(results) if path in how],
        "",
        "Ratio to direct (higher is faster; the best peer of each column in bold) and the p50 latency each "
        "adds to `experiments/get` on one connection (lower is better):",
        "",
        *summary_table(results),
        "",
    ]
    if chart_name:
        out += [f"![peers chart]({chart_name})", ""]
    out += [
        "Every measurement (median of the runs; min–max: the slowest and fastest run):",
        "",
        *detail_table(results),
        "",
    ]
    for path, reason in results.peer_skipped.items():
        out += [f"Not measured: {path}: {reason}.", ""]
    return out


def chart(results: Results, path: Path) -> bool:
    """Ratio to direct per call and transfer for each peer, with each run's range as an error bar, and
    the latency each adds at c=1; False (nothing written) without peers."""
    paths = [p for p in rows(results) if p != "direct"]
    if not results.peers or not paths:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*CALLS, *(f"artifact {method}" for method in METHODS)]
    figure, (ratios, latency) = plt.subplots(
        1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [3, 1]}, squeeze=True
    )
    width = 0.8 / len(paths)
    for index, name in enumerate(paths):
        values, low, high = _series(results, name)
        offset = (index - (len(paths) - 1) / 2) * width
        xs = [x + offset for x in range(len(groups))]
        errors = [
            [v - lo for v, lo in zip(values, low, strict=True)],
            [hi - v for v, hi in zip(values, high, strict=True)],
        ]
        ratios.bar(xs, values, width, yerr=errors, capsize=2, label=name)
    ratios.axhline(1.0, color="#333", linewidth=0.8, linestyle="--")
    ratios.set_xticks(list(range(len(groups))), groups)
    ratios.set_ylabel("ratio to direct MLflow (higher is faster)")
    ratios.set_title(
        "Peers: throughput relative to direct MLflow (bars: median; whiskers: slowest–fastest run)"
    )
    ratios.legend(fontsize=8)
    direct = results.latency.get("direct")
    names = [name for name in paths if name in results.latency and direct]
    if direct:
        added = [results.latency[name].p50_ms - direct.p50_ms for name in names]
        latency.barh(names, added, color="#36c")
        for row, value in enumerate(added):
            latency.annotate(
                f"{value:+.1f}",
                (max(value, 0), row),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        # One slow peer (a password hash per request) would flatten the rest on a linear axis.
        latency.set_xscale("symlog", linthresh=1)
        latency.invert_yaxis()
    latency.set_title(f"Added p50 ms, {LATENCY_CALL}, c=1")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _relative(median: float, low: float, high: float, reference: float) -> tuple[float, float, float]:
    return median / reference, (low or median) / reference, (high or median) / reference


def _series(results: Results, name: str) -> tuple[list[float], list[float], list[float]]:
    """Median, slowest and fastest run of `name` over direct's median, per call then per transfer (zero
    where not measured)."""
    triples: list[tuple[float, float, float]] = []
    for call in CALLS:
        rates = results.mlflow.get(call, {})
        rate, direct = rates.get(name), rates.get("direct")
        triples.append(
            _relative(rate.rps, rate.rps_min, rate.rps_max, direct.rps)
            if rate and direct
            else (0.0, 0.0, 0.0)
        )
    for method in METHODS:
        speeds = results.artifacts
        if name in speeds and "direct" in speeds:
            speed = speeds[name][method]
            low, high = results.artifact_ranges.get(name, {}).get(method, (speed, speed))
            triples.append(_relative(speed, low, high, speeds["direct"][method]))
        else:
            triples.append((0.0, 0.0, 0.0))
    return [t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]
