"""docs/benchmarks.md and its chart, from one run's results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench import peers_report
from bench.load import Rate
from bench.model import (
    PERMISSIONS_OFF_PATH,
    PERMISSIONS_ON_PATH,
    PERMISSIONS_READER_PATH,
    Plan,
    Results,
)

# Issue 19: the small-request figure as ratios to references measured in the same run, which hold on any
# machine of a kind where an absolute rate does not.
MIN_OVER_NGINX = 0.25
MIN_OVER_HELLO_WORLD = 0.4
# The Real MLflow and Artifacts sections' paths; the peers have their own section.
OWN_PATHS = ("direct", "nginx", PERMISSIONS_OFF_PATH, PERMISSIONS_ON_PATH, PERMISSIONS_READER_PATH)

# Issue 16: what per-resource permissions may cost MLflow calls through the gateway.
PERMISSIONS_MAX_LOSS = 0.10

# Measured once by hand (2026-12-02, 2 cores under other load, loopback, SQLite, `experiments/get`, medians
# of 30-60 requests on one connection): the figures a bench run cannot make, because the stall needs an
# environment the product no longer creates.
NAGLE_NOTE = [
    "### Kept-alive connections and Nagle's algorithm",
    "",
    "MLflow answers each request in more than one write (head, then body). When its socket has Nagle's "
    "algorithm on, the second write waits until the first is acknowledged, and on a kept-alive connection "
    "Linux delays that ACK by ~40 ms (a new connection acknowledges at once for its first segments). uvicorn "
    "0.54 and older bind the listening socket of `--workers N` without `IPPROTO_TCP` (Kludex/uvicorn#3149, "
    "fixed in 0.55); accepted sockets inherit protocol 0, and the asyncio loop sets `TCP_NODELAY` only on "
    "sockets of protocol `IPPROTO_TCP`. uvloop sets it on every TCP connection, whatever the listener.",
    "",
    "| MLflow 3.17.2, 2 workers | kept-alive p50 ms | fresh p50 ms |",
    "|---|---|---|",
    "| uvicorn 0.54.0, asyncio loop (issue 20, on PostgreSQL: 52 vs 11; 1 worker 8) | 55.5 | 13.4 |",
    "| uvicorn 0.54.0, uvloop | 21.4 | 37.2 |",
    "| uvicorn 0.55.0, uvloop (`serve`, `hokusai-registry mlflow`, the image) | 11.8 | 14.0 |",
    "",
    "What removes it:",
    "",
    "- **The MLflow the product starts** (`serve`, `hokusai-registry mlflow`, and so the image, compose and "
    'Terraform) runs uvicorn with `--uvicorn-opts "--loop uvloop"`: `TCP_NODELAY` on every accepted '
    "connection with any uvicorn. `--fd` is no alternative (uvicorn takes the descriptor for a Unix "
    "socket, and neither loop then sets `TCP_NODELAY`); no other uvicorn option sets it.",
    "- **The gateway, in front of an MLflow someone else started**, enters quick-ack mode (`TCP_QUICKACK`, "
    "Linux) on its upstream connection once each request is out, so the first write is acknowledged at "
    "once and the rest follows without waiting. Measured with a plain client against the stalling MLflow "
    "above: 56.0 ms without, 60.1 ms with `TCP_QUICKACK` set once at connect (the kernel leaves quick-ack "
    "mode when the connection sends), 15.4 ms with it set after each request. Through the gateway "
    "(tests/e2e/test_mlflow_stall.py, `/version`): kept-alive 51.9 ms before (MLflow direct: 52.0 "
    "kept-alive, 19.8 fresh), 8.6 ms after (direct: 48.0 and 5.5); in this section's scenario run with the "
    "gateway of before the change: 60.05 ms kept-alive, 59.80 ms fresh (every request waits: the gateway's "
    "upstream connection is pooled).",
    "- **`doctor`** compares `/health` on one kept-alive connection with new connections and names the stall "
    "and the fix for the server it talks to.",
    "",
    "A note for MLflow and uvicorn: *`mlflow server --workers N` (N > 1) on uvicorn <= 0.54 with the "
    "asyncio loop answers every kept-alive request ~40 ms late on Linux: uvicorn's `Config.bind_socket()` "
    "creates the listener as `socket.socket(family=family)` (protocol 0), accepted sockets inherit it, "
    "and asyncio's `_set_nodelay` skips them, so Nagle's algorithm meets the client's delayed ACK whenever a "
    "response goes out in two writes. uvicorn 0.55 passes `proto=IPPROTO_TCP` (Kludex/uvicorn#3149). "
    "MLflow could require `uvicorn>=0.55` for its server, or pass `--loop uvloop` where uvloop is "
    "installed; `--fd` does not help (it is taken as `AF_UNIX`).*",
    "",
]


# Measured by hand (2026-12-07, `python -m bench.permission_checks --requests 300`, 2 cores, a quiet
# machine): where the calls' time goes with permissions on, which a bench run cannot tell.
PERMISSIONS_NOTE = [
    "On a loaded machine these rates move from run to run (see the load average above); the CPU per request "
    "below is the figure other load moves least. Its ratio off / on, what a CPU-bound MLflow serves with its "
    "auth app against without, is **0.53×** for `experiments/get`, **0.69×** for `runs/log-batch` and "
    "**0.67×** for `runs/search` (0.45×, 0.43× and 0.55× before MLflow looked the caller up once per "
    "request and a run's experiment once per worker): still far from the ≤ 10 % loss issue 16 aims for.",
    "",
    "### Where the time goes",
    "",
    "`python -m bench.permission_checks` (by hand, not by `make bench`; 2026-12-07, 300 requests per row, "
    "a quiet machine) runs MLflow's Flask app in-process as `hokusai-registry mlflow` configures it "
    "(SQLite), without and with the auth app, and counts per request the CPU time of the worker (this "
    "thread's, so other load moves it less than wall time; only the ratios carry to another machine), the "
    "auth app's hooks, the assertion check, the auth store's lookups that reach its database and the SQL "
    "statements:",
    "",
    "| Call | Caller | off CPU ms | on CPU ms | before/after hooks ms | assertion check ms "
    "| `get_user` calls (ms) | `list_grants` calls (ms) | auth DB statements (ms) "
    "| tracking DB statements off / on |",
    "|---|---|---|---|---|---|---|---|---|---|",
    "| `experiments/get` | owner (MANAGE) | 2.61 | 4.89 | 2.22 | 0.06 | 1 (0.89) | 1 (1.09) | 8 (0.31) "
    "| 5 / 5 |",
    "| `runs/log-batch` | owner (MANAGE) | 5.86 | 8.55 | 2.70 | 0.06 | 1 (0.98) | 1 (1.16) | 8 (0.33) "
    "| 9 / 9 |",
    "| `runs/search` | owner (MANAGE) | 6.60 | 9.90 | 1.99 | 0.08 | 1 (0.95) | 1 (1.16) | 8 (0.33) | 9 / 9 |",
    "| `experiments/get` | other owner (READ by default) | 2.61 | 5.01 | 2.26 | 0.06 | 1 (0.92) "
    "| 1 (1.11) | 8 (0.31) | 5 / 5 |",
    "| `runs/search` | other owner (READ by default) | 6.65 | 9.88 | 1.97 | 0.08 | 1 (0.94) | 1 (1.13) "
    "| 8 (0.32) | 9 / 9 |",
    "",
    "- **The assertion check is not the cost**: 0.06–0.08 ms per request (HMAC, the nonce, the user-exists "
    "check cached 30 s); signing on the gateway's side is in the Auth section.",
    "- **What MLflow's auth app asked for, and what it asks now** (`mlflow_app/lookups.py`, "
    'docs/permissions.md "Cost"). It asked its auth store for the caller (`get_user`) twice per request, '
    "four times for `runs/search` (the admin check before the request, in the search's experiment filter "
    "and in the response's model-link redaction), each in a session of its own (on SQLite four statements: "
    "three `PRAGMA`s and the query); the first answer now serves the request. To decide `runs/log-batch` "
    "it loaded the whole run (tags, params, latest metrics, inputs: 19 tracking statements instead of 9, a "
    "cost that grows with the run) for its experiment id, which each worker now remembers. The same "
    "harness on the commit before (83dfe0b), in the same session: on CPU ms 5.69 / 13.46 / 12.54 / 5.73 / "
    "12.42 (the rows above in order), `get_user` 2 / 2 / 4 / 2 / 4 per request, auth DB statements 12 / 12 "
    "/ 20 / 12 / 20, `runs/log-batch` 19 tracking statements.",
    "- **What is left is the decision itself**: one `get_user` and one `list_grants` per request, read so "
    "that a grant, a revoke or a DENY applies to the next request (MLflow's `auth_cache_ttl_seconds` caches "
    "basic-auth password checks only). They are ~2 of the 2.2–2.7 ms the hooks take.",
    "- On PostgreSQL (compose, Terraform) the `PRAGMA`s go, but each lookup is a session on the network: "
    "2 per request, each with its round trips.",
    "",
    "What would cut it further (proposals, not in the product):",
    "",
    "1. **Cache the caller's admin flag and grants for a few seconds per worker** (what "
    "`auth_cache_ttl_seconds` does for passwords): removes the remaining two lookups, ~2 of the 2.2 ms "
    "the hooks take for `experiments/get`; the price is that a grant, revoke or DENY takes up to that TTL "
    "to apply in each worker, so it would be a setting, off by default, in `docs/permissions.md`.",
    "2. **Upstream in MLflow**: one user lookup per request and a validator that reads only the run's "
    "experiment id would make `mlflow_app/lookups.py` unnecessary (it wraps MLflow internals: "
    "`mlflow.server.auth.store` and `_get_tracking_store`; `tests/e2e/test_mlflow_lookups.py` fails when "
    "MLflow changes them).",
    "3. **More MLflow workers** (`HOKUSAI_MLFLOW_WORKERS`) on more cores: the checks are CPU in MLflow's "
    "workers, so this raises throughput, not the cost per request.",
    "",
]


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def permission_pairs(results: Results) -> list[tuple[str, str, Rate, Rate]]:
    """(call, path with permissions on, the gateway with them off, with them on) for each call measured
    both ways; the owner's path first."""
    pairs = []
    for call, rates in results.mlflow.items():
        for path in (PERMISSIONS_ON_PATH, PERMISSIONS_READER_PATH):
            if PERMISSIONS_OFF_PATH in rates and path in rates:
                pairs.append((call, path, rates[PERMISSIONS_OFF_PATH], rates[path]))
    return pairs


def workers_section(results: Results) -> list[str]:
    """Gateway worker processes against the stub: rate, scaling over one worker and per worker."""
    if not results.workers:
        return []
    one = results.workers[min(results.workers)].rps
    return [
        "### Workers",
        "",
        f"The gateway with N worker processes sharing one listening socket, 64 connections, on "
        f"{len(os.sched_getaffinity(0))} cores that the stub and wrk share.",
        "",
        "| Gateway worker processes | req/s (c=64) | scaling | per worker | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
        *[
            f"| {workers} | {rate.rps:,.0f} | {rate.rps / one:.2f}× | {rate.rps / one / workers:.2f}× "
            f"| {rate.p50_ms:.3f} | {rate.p99_ms:.3f} |"
            for workers, rate in sorted(results.workers.items())
        ],
        "",
    ]


def targets(results: Results) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each target of issue 3, where measured in this run."""
    rows: list[tuple[str, str, bool]] = []
    small = results.small
    if "gateway" in small and "nginx" in small:
        gateway32, nginx32 = small["gateway"][32].rps, small["nginx"][32].rps
        rows.append(
            (
                f"1 worker, auth on, fast stub, c=32: ≥ {MIN_OVER_NGINX}× nginx in the same run",
                f"{gateway32 / nginx32:.2f}× ({gateway32:,.0f} req/s)",
                gateway32 >= MIN_OVER_NGINX * nginx32,
            )
        )
        if "hello world" in small:
            hello32 = small["hello world"][32].rps
            rows.append(
                (
                    f"… and ≥ {MIN_OVER_HELLO_WORLD}× the bare ASGI hello world in the same run",
                    f"{gateway32 / hello32:.2f}×",
                    gateway32 >= MIN_OVER_HELLO_WORLD * hello32,
                )
            )
        added = small["gateway"][1].p50_ms - small["direct"][1].p50_ms
        rows.append(("added p50 latency at c=1: ≤ 0.5 ms", f"{added:.3f} ms", added <= 0.5))
    if results.artifacts:
        for method in ("PUT", "GET"):
            ratio = results.artifacts["gateway"][method] / results.artifacts["direct"][method]
            rows.append((f"artifact {method}: ≥ 0.95× direct MLflow", f"{ratio:.2f}×", ratio >= 0.95))
        rows.append(
            (
                "gateway peak RSS during the transfer: ≤ 150 MB",
                f"{results.gateway_peak_rss_mb:.0f} MB",
                results.gateway_peak_rss_mb <= 150,
            )
        )
    for call, path, off, on in permission_pairs(results):
        if path == PERMISSIONS_ON_PATH:
            ratio = on.rps / off.rps
            rows.append(
                (
                    f"`{call}` through the gateway, permissions on / off: ≥ {1 - PERMISSIONS_MAX_LOSS:.2f}×",
                    f"{ratio:.2f}×",
                    ratio >= 1 - PERMISSIONS_MAX_LOSS,
                )
            )
    keepalive = results.keepalive
    if "1 worker" in keepalive and "2 workers" in keepalive:
        one, two = (keepalive[label]["gateway kept-alive"].p50_ms for label in ("1 worker", "2 workers"))
        rows.append(
            (
                "kept-alive experiments/get via the gateway, MLflow 2 workers: within 2 ms of 1 worker",
                f"{two:.2f} ms vs {one:.2f} ms",
                abs(two - one) <= 2,
            )
        )
    if results.auth_us:
        rows.append(
            (
                "cached key check: ≤ 20 µs",
                f"{results.auth_us['cached']:.1f} µs",
                results.auth_us["cached"] <= 20,
            )
        )
    return rows


def summary(results: Results) -> str:
    return "\n".join(f"{_mark(ok)} {name}: {value}" for name, value, ok in targets(results))


# Sections written by hand from a one-off measurement, kept when `make bench` rewrites the report.
KEPT_SECTIONS = ("## Server choice", "## Where a small request's time goes")


def kept_sections(previous: str) -> str:
    """The hand-written sections of the previous report, to follow the new one."""
    kept = []
    for title in KEPT_SECTIONS:
        start = previous.find(f"\n{title}\n")
        if start >= 0:
            end = previous.find("\n## ", start + 1)
            kept.append(previous[start : end if end >= 0 else None].rstrip("\n") + "\n")
    return "".join(kept)


def peers_chart_name(chart_name: str) -> str:
    """The peers chart beside the main one: benchmarks.png, benchmarks-peers.png."""
    return chart_name.removesuffix(".png") + "-peers.png"


def markdown(results: Results, plan: Plan, chart_name: str, elapsed: float) -> str:
    m = results.machine
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); every figure is the median of "
        f"{plan.runs} run(s) of {plan.seconds:g} s, measured in the same run as its references, on loopback.",
        "Load from `wrk -t1` on the same machine, so the load generator shares the cores with what it "
        "measures.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}; Python {m['python']}; MLflow {m['mlflow']}; nginx "
        f"{m['nginx']}; "
        f"{m['date']}; run took {elapsed:.0f} s.",
        f"Load average (1, 5, 15 min): {m.get('load', '-')} at the start, {m.get('load_end', '-')} at the "
        "end; "
        "on a machine shared with other work only the comparisons within one table hold.",
        "",
        "## Targets",
        "",
        "| Target | Measured | Met |",
        "|---|---|---|",
        *[f"| {name} | {value} | {_mark(ok)} |" for name, value, ok in targets(results)],
        "",
    ]
    if results.small:
        out += [
            "## Small requests, fast upstream",
            "",
            "A stub (nginx `return 200`, ~120-byte JSON) answers `GET /api/2.0/mlflow/experiments/get`; "
            "nginx (a second nginx process, one worker, upstream keep-alive) and the gateway proxy to it. "
            "The gateway runs one worker with auth on (a cached key), permissions on (it signs every "
            "request; the stub ignores the assertion) and its default access log. The hello world "
            "(bench/hello.py) is the floor of a Python server: a bare ASGI app on uvicorn with uvloop and "
            "httptools, one worker, no access log, answering the same JSON with no upstream. The bare "
            "proxy (bench/bare_proxy.py) is the floor of the gateway's design: the gateway's server, "
            "protocol and upstream pool forwarding to the stub with no policy at all (no key, checks, "
            "assertion, header rules, log or metrics), so the gateway's distance from it is what its "
            "policy costs.",
            "",
            "| Path | c | req/s | p50 ms | p99 ms | min–max req/s | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("direct", "nginx", "hello world", "bare proxy", "gateway"):
            for connections, rate in sorted(results.small.get(name, {}).items()):
                out.append(
                    f"| {name} | {connections} | {rate.rps:,.0f} | {rate.p50_ms:.3f} | {rate.p99_ms:.3f} | "
                    f"{rate.spread} | {rate.errors} |"
                )
        g, n, d = results.small["gateway"], results.small["nginx"], results.small["direct"]
        hello = results.small.get("hello world")
        beside_hello = f", gateway / hello world **{g[32].rps / hello[32].rps:.2f}×**" if hello else ""
        bare = results.small.get("bare proxy")
        if bare and hello:
            beside_hello += (
                f"; the bare proxy reaches {bare[32].rps / hello[32].rps:.2f}× the hello world and "
                f"{bare[32].rps / n[32].rps:.2f}× nginx, the gateway {g[32].rps / bare[32].rps:.2f}× the "
                "bare proxy"
            )
        out += [
            "",
            f"At c=32: gateway / nginx **{g[32].rps / n[32].rps:.2f}×**{beside_hello}; gateway added p50 at "
            f"c=1: **{g[1].p50_ms - d[1].p50_ms:.3f} ms** (nginx adds {n[1].p50_ms - d[1].p50_ms:.3f} ms).",
            "",
            *cost_section(results),
            *workers_section(results),
        ]
    if results.mlflow:
        out += [
            "## Real MLflow",
            "",
            "`mlflow server --serve-artifacts` (SQLite, 2 workers) without its auth app directly, through "
            "nginx and through the gateway with permissions off; an MLflow of the same kind with its auth "
            "app behind a gateway with permissions on (see Per-resource permissions); 8 connections.",
            "",
            "| Call | Path | req/s | ratio to direct | p50 ms | added p50 ms |",
            "|---|---|---|---|---|---|",
        ]
        for call, rates in results.mlflow.items():
            direct = rates["direct"]
            for name, rate in rates.items():
                if name not in OWN_PATHS:
                    continue
                out.append(
                    f"| `{call}` | {name} | {rate.rps:,.0f} | {rate.rps / direct.rps:.2f}× "
                    f"| {rate.p50_ms:.2f} | {rate.p50_ms - direct.p50_ms:.2f} |"
                )
        out += [
            "",
            "MLflow is CPU-bound here and its worker processes share one listening socket, so how a proxy's "
            "kept-alive connections happen to spread over MLflow's workers moves these figures more than the "
            "proxy's own cost; nginx, also a keep-alive pool, is the reference for that effect.",
            "",
        ]
    out += peers_report.section(
        results, plan.artifact_mb, peers_chart_name(chart_name) if results.peers else None
    )
    if pairs := permission_pairs(results):
        out += [
            "## Per-resource permissions",
            "",
            "The same calls through two gateways, in the same rounds as the rows above: one with permissions "
            "off in front of MLflow without its auth app, one with permissions on (`HOKUSAI_PERMISSIONS`, "
            "the default) in front of an MLflow of the same kind (SQLite, 2 workers) with it "
            "(`--app-name basic-auth`, the gateway's signed assertion checked by "
            "`mlflow_app/authorization.py`, grants in its SQLite auth database). On that MLflow the objects "
            f"were created through the gateway by the key's owner, who has MANAGE on them as their creator; "
            f"`{PERMISSIONS_READER_PATH}` is another owner's key, allowed to read by the default permission. "
            "8 connections.",
            "",
            "| Call | Caller | off req/s | on req/s | on / off | off p50 ms | on p50 ms | added p50 ms "
            "| errors off / on |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for call, path, off, on in pairs:
            caller = "owner (MANAGE)" if path == PERMISSIONS_ON_PATH else "other owner (READ by default)"
            out.append(
                f"| `{call}` | {caller} | {off.rps:,.0f} | {on.rps:,.0f} | **{on.rps / off.rps:.2f}×** "
                f"| {off.p50_ms:.2f} | {on.p50_ms:.2f} | {on.p50_ms - off.p50_ms:+.2f} "
                f"| {off.errors} / {on.errors} |"
            )
        out += ["", *PERMISSIONS_NOTE]
    if results.keepalive:
        out += [
            "## Kept-alive connections to MLflow",
            "",
            "`experiments/get` on one connection (c=1), kept alive or new for every request "
            "(`Connection: close`), direct and through the gateway, to MLflows running side by side: the "
            "product's (`mlflow_command`, SQLite) with one and two workers, and one that leaves Nagle's "
            "algorithm on as MLflow does when someone else starts it with several workers on uvicorn <= 0.54 "
            "and the asyncio loop (tests/support/legacy_listener).",
            "",
            "| MLflow | Path | kept-alive p50 ms | fresh p50 ms | kept-alive − fresh ms |",
            "|---|---|---|---|---|",
        ]
        for label, rates in results.keepalive.items():
            for path in ("direct", "gateway"):
                kept, fresh = rates[f"{path} kept-alive"], rates[f"{path} fresh"]
                out.append(
                    f"| {label} | {path} | {kept.p50_ms:.2f} | {fresh.p50_ms:.2f} "
                    f"| {kept.p50_ms - fresh.p50_ms:+.2f} |"
                )
        out += [
            "",
            "A fresh connection through the gateway still reaches MLflow on a pooled, kept-alive one.",
            "",
        ]
        out += NAGLE_NOTE
    if results.artifacts:
        a = results.artifacts
        out += [
            f"## Artifacts ({plan.artifact_mb} MiB)",
            "",
            f"Median of {plan.artifact_runs} run(s); in each, one streamed PUT and one streamed GET, "
            "direct to MLflow, through nginx (no buffering) and through the gateway with permissions off "
            "and on (`requests`, 1 MiB chunks); the peers' are in Peers. Gateway RSS is sampled from /proc "
            "every 20 ms during its transfers (permissions off).",
            "",
            "| Direction | Path | MB/s | ratio to direct | min–max MB/s |",
            "|---|---|---|---|---|",
            *[
                f"| {method} | {name} | {a[name][method]:,.0f} "
                f"| {a[name][method] / a['direct'][method]:.2f}× "
                f"| {_range(results.artifact_ranges.get(name, {}).get(method))} |"
                for method in ("PUT", "GET")
                for name in a
                if name in OWN_PATHS
            ],
            "",
            f"Gateway peak RSS during the transfers: **{results.gateway_peak_rss_mb:.0f} MB**.",
            "",
        ]
    if results.auth_us:
        out += [
            "## Auth",
            "",
            "In-process, per check: a cached check is a keyed MAC (BLAKE2s) of the presented key and a dict "
            "lookup; with a rate limit it adds the failure-throttle check and a per-key count in memory "
            "(`limits`, sliding window); an uncached one adds a worker-thread hop and one indexed SQLite "
            "read. With permissions on, the gateway signs each request to MLflow (HMAC-SHA256 over user, "
            "method, target and time) and MLflow verifies it. A bearer token (JWT) not yet cached costs its "
            "RS256 signature and claims, with the issuer's keys already fetched; a cached one a MAC and a "
            "lookup.",
            "",
            "| Check | µs |",
            "|---|---|",
            f"| cached | {results.auth_us['cached']:.1f} |",
            f"| cached, with a per-key rate limit | {results.auth_us['cached_rate_limited']:.1f} |",
            f"| uncached | {results.auth_us['uncached']:.0f} |",
            "| sign an MLflow assertion (gateway, permissions on) "
            f"| {results.auth_us['assertion_sign']:.1f} |",
            f"| verify it (MLflow) | {results.auth_us['assertion_verify']:.1f} |",
            f"| bearer token (JWT), verified (RS256, JWKS cached) | {results.auth_us['jwt_verify']:.0f} |",
            f"| bearer token (JWT), cached | {results.auth_us['jwt_cached']:.1f} |",
            "",
        ]
    for reason in results.skipped:
        out += [f"Not measured: {reason}.", ""]
    out += [f"![benchmark chart]({chart_name})", ""]
    return "\n".join(out)


def _range(spread: tuple[float, float] | None) -> str:
    return "-" if spread is None else f"{spread[0]:,.0f}–{spread[1]:,.0f}"


def cost_section(results: Results) -> list[str]:
    """What one small request costs each server: CPU and system calls (bench/syscalls.py)."""
    if not results.costs:
        return []
    out = [
        "### Cost per request",
        "",
        "`python -m bench.syscalls` measures the same by hand, for before/after comparisons of the hot path. "
        "At c=32: CPU is the user + system time of the server's process tree (from /proc) over one run, "
        "divided by the requests wrk counted; system calls are counted by `strace -c -f` attached to every "
        "thread of that tree for a second run (which strace slows, so its rate is not shown), divided by "
        "the requests of that run.",
        "",
        "| Server | req/s | µs CPU per request | syscalls per request | most frequent (per request) |",
        "|---|---|---|---|---|",
    ]
    for name, cost in results.costs.items():
        syscalls = "-" if cost.syscalls is None else f"{cost.syscalls:.2f}"
        top = ", ".join(f"`{call}` {per:.2f}" for call, per in cost.top) or cost.note
        out.append(f"| {name} | {cost.rate.rps:,.0f} | {cost.cpu_us:.1f} | {syscalls} | {top} |")
    out.append("")
    for note in sorted({cost.note for cost in results.costs.values() if cost.syscalls is None}):
        out += [f"System calls not counted: {note}.", ""]
    return out


def peers_chart(results: Results, path: Path) -> bool:
    """The peers chart (bench/peers_report.py); False when no peer ran."""
    return peers_report.chart(results, path)


def _grouped(axis: Any, groups: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        offset = (index - (len(series) - 1) / 2) * width
        axis.bar([x + offset for x in range(len(groups))], values, width, label=name)
    axis.set_xticks(list(range(len(groups))), groups)
    axis.legend()


def chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("small", "mlflow", "artifacts") if getattr(results, p)]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=False):
        if panel == "small":
            names = [
                n for n in ("direct", "nginx", "hello world", "bare proxy", "gateway") if n in results.small
            ]
            colors = {
                "direct": "#999",
                "nginx": "#4a7",
                "hello world": "#c93",
                "bare proxy": "#a6c",
                "gateway": "#36c",
            }
            axis.bar(names, [results.small[n][32].rps for n in names], color=[colors[n] for n in names])
            axis.set_title("Small requests, c=32 (req/s)")
        elif panel == "mlflow":
            calls = list(results.mlflow)
            paths = {
                "direct": "direct",
                PERMISSIONS_OFF_PATH: "gateway",
                PERMISSIONS_ON_PATH: "permissions on",
            }
            series = {
                label: [results.mlflow[c][path].rps if path in results.mlflow[c] else 0.0 for c in calls]
                for path, label in paths.items()
                if any(path in results.mlflow[c] for c in calls)
            }
            _grouped(axis, calls, series)
            axis.set_title("Real MLflow, c=8 (req/s)")
        else:
            methods = ["PUT", "GET"]
            width = 0.38
            xs = range(len(methods))
            axis.bar(
                [x - width / 2 for x in xs],
                [results.artifacts["direct"][m] for m in methods],
                width,
                label="direct",
            )
            axis.bar(
                [x + width / 2 for x in xs],
                [results.artifacts["gateway"][m] for m in methods],
                width,
                label="gateway",
            )
            axis.set_xticks(list(xs), methods)
            axis.set_title("Artifacts (MB/s)")
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
