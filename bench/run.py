"""Run every benchmark scenario against the local node and write the results.

    python -m bench.run                 # full run (what `make bench` does), ~15-20 min here
    python -m bench.run --quick         # smoke run, under ~2 min
    python -m bench.run --rounds 9 --out docs/benchmarks
    python -m bench.run --only runners --out /tmp/bench_runners   # scenario 6 alone
    python -m bench.run --only vector                             # scenario 7 (ANN) alone

Writes results.md, results.json, results.png, environment.md, profile.md and
profile_*.txt into --out; prints the results table. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import common, http_scenario, memory, profiling, report, runners_scenario, scenarios, vector_scenario
from . import contenders as contenders_module

TARGETS = {
    "facade_vs_raw": 0.9,
    "facade_vs_other": 2.0,
    "gather_vs_sync_p50": 5.0,
    "scan_gap_ms": 5.0,
    "rss_growth_pct": 5.0,
    # scenario 6 (HTTP runners): per-thread async views against sync and per-request ones
    "runner_read_vs_sync_rps": 0.95,
    "runner_read_vs_per_request_rps": 2.5,
    "runner_gather_vs_sync_p50": 1.5,
}

PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "rounds": 9,
        "concurrency": 100,
        "reads_per_round": 2000,
        "inserts_per_round": 2000,
        "scan_fetch_size": 500,
        "scan_gc_passes": 3,
        "http_requests_per_round": 150,
        "http_clients": [1, 4],
        "http_server_threads": 8,
        "http_latency_ms": [1.0, 2.0],
        "aiocqlengine_probe_requests": 24,
        "runners_requests_per_round": 70,
        "runners_requests_per_client": 10,
        "runners_clients": [1, 16],
        "memory_reads": 100_000,
        "memory_warmup": 30_000,
        "memory_contenders": ["facade", "raw", "aiocqlengine", "threadpool"],
        "profile_reads": 10_000,
        "profile_read_contenders": ["facade", "raw", "aiocqlengine"],
        "profile_inserts": 10_000,
        "profile_insert_contenders": ["facade", "raw"],
        "profile_interval_s": 0.0002,
        "vector_queries_per_round": 2000,
    },
    "quick": {
        "rounds": 2,
        "concurrency": 100,
        "reads_per_round": 500,
        "inserts_per_round": 500,
        "scan_fetch_size": 500,
        "scan_gc_passes": 1,
        "http_requests_per_round": 40,
        "http_clients": [4],
        "http_server_threads": 8,
        "http_latency_ms": [1.0],
        "aiocqlengine_probe_requests": 8,
        "runners_requests_per_round": 12,
        "runners_requests_per_client": 2,
        "runners_clients": [1, 16],
        "memory_reads": 10_000,
        "memory_warmup": 2_000,
        "memory_contenders": ["facade", "raw"],
        "profile_reads": 3_000,
        "profile_read_contenders": ["facade", "raw"],
        "profile_inserts": 0,
        "profile_insert_contenders": [],
        "profile_interval_s": 0.0002,
        "vector_queries_per_round": 200,
    },
}

SCENARIOS = ["reads", "inserts", "scan", "http", "runners", "memory", "profile", "vector"]


def log(message: str) -> None:
    print(message, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (fewer rounds and operations)")
    parser.add_argument("--rounds", type=int, help="rounds per comparison (default 9; quick: 2)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default docs/benchmarks; quick: a folder in the "
        "system's temp dir, so a smoke run never overwrites the published results)",
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--memory-reads", type=int, help="reads of scenario 5 (default 100,000)")
    parser.add_argument(
        "--http-clients",
        type=lambda s: [int(x) for x in s.split(",")],
        help="comma-separated client counts for scenario 4 (default 1,4)",
    )
    parser.add_argument(
        "--runners-clients",
        type=lambda s: [int(x) for x in s.split(",")],
        help="comma-separated client counts for scenario 6, HTTP runners (default 1,16)",
    )
    parser.add_argument(
        "--runners-requests",
        type=int,
        help="scenario 6: requests per (runner, endpoint) per round, at least; each client count "
        "sends at least 10 (quick: 2) per client (default 70; quick: 12)",
    )
    parser.add_argument(
        "--http-latency-ms",
        type=lambda s: [float(x) for x in s.split(",") if float(x) > 0],
        help="scenario 4b: run scenario 4 again with the server's Cassandra connections through a "
        "proxy adding each of these comma-separated round trips, ms (default 1,2; 0 skips 4b)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    mode = "quick" if args.quick else "full"
    settings = dict(PRESETS[mode])
    if args.rounds:
        settings["rounds"] = args.rounds
    if args.memory_reads:
        settings["memory_reads"] = args.memory_reads
    if args.http_clients:
        settings["http_clients"] = args.http_clients
    if args.http_latency_ms is not None:
        settings["http_latency_ms"] = args.http_latency_ms
    if args.runners_clients:
        settings["runners_clients"] = args.runners_clients
    if args.runners_requests:
        settings["runners_requests_per_round"] = args.runners_requests
    wanted = set(args.only or SCENARIOS)
    out: Path = args.out or (
        Path(tempfile.gettempdir()) / "flask-cqlalchemy-bench-quick" if args.quick else Path("docs/benchmarks")
    )
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="flask-cqlalchemy-bench-"))
    # The driver warns that no load-balancing policy is set (its default is used, the same for every contender).
    logging.getLogger("cassandra.cluster").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    if "vector" in wanted:
        log("scenario 7: ANN top-10 over 100,000 vectors of dimension 256, 16 in flight (first run: loads them)")
        found = vector_scenario.run(settings["rounds"], settings["vector_queries_per_round"], log)
        log(f"  {vector_scenario.write(found, out)}; wrote {out}/results_vector.md")
        wanted.discard("vector")
        if not wanted:
            return 0

    started = time.perf_counter()
    log(f"flask-cqlalchemy benchmarks: {mode} run, {settings['rounds']} rounds, output in {out}/ (logs in {workdir})")
    node = common.connect()
    cassandra_version = common.cassandra_version(node)
    env = report.environment(cassandra_version)
    log(
        f"Cassandra {cassandra_version} at {','.join(common.HOSTS)}; "
        f"cassandra-driver {env['packages']['cassandra-driver']}, "
        f"flask-cqlalchemy at {env['git_head']}"
        + (" (uncommitted changes)" if env["flask_cqlalchemy_uncommitted"] else "")
    )
    settings["preload_seconds"] = round(common.ensure_schema_and_data(node, log), 1)

    results: dict[str, scenarios.ScenarioResult] = {}
    diagnostics: dict[str, Any] = {}
    profiles: list[profiling.Profile] = []
    unavailable: dict[str, str] = {}

    async def in_loop() -> None:
        all_contenders = [cls() for cls in contenders_module.ALL]
        for contender in all_contenders:
            await contender.setup(node)
            if contender.unavailable:
                unavailable[contender.key] = contender.unavailable
                log(f"contender {contender.key} unavailable: {contender.unavailable}")
        active = [c for c in all_contenders if not c.unavailable]
        if "reads" in wanted:
            log("scenario 1: point reads")
            results["reads"] = await scenarios.point_reads(
                active, settings["rounds"], settings["reads_per_round"], settings["concurrency"], log
            )
        if "inserts" in wanted:
            log("scenario 2: inserts")
            results["inserts"] = await scenarios.inserts(
                active, settings["rounds"], settings["inserts_per_round"], settings["concurrency"], log
            )
        if "scan" in wanted:
            log("scenario 3: scan")
            results["scan"] = await scenarios.scan(active, settings["rounds"], settings["scan_fetch_size"], log)
            diagnostics["idle_loop_gap_ms"] = [await scenarios.idle_gap(1.0) for _ in range(3)]
            variants = await scenarios.scan_gc_variants(active, settings["scan_fetch_size"], settings["scan_gc_passes"])
            diagnostics["gap_without_gc_ms"] = variants["gc_off"]
            diagnostics["gap_gc_frozen_ms"] = variants["gc_frozen"]
            log(
                f"  idle loop largest gap over 1 s: {[round(g, 1) for g in diagnostics['idle_loop_gap_ms']]} ms; "
                "scan gap "
                f"with GC off: { {k: round(v, 1) for k, v in variants['gc_off'].items()} }, "
                f"after gc.freeze(): { {k: round(v, 1) for k, v in variants['gc_frozen'].items()} }"
            )
        if "profile" in wanted:
            log("profiles (pyinstrument on the loop thread's CPU clock)")
            by_key = {c.key: c for c in active}
            plan = [(k, "reads", settings["profile_reads"]) for k in settings["profile_read_contenders"]]
            plan += [(k, "inserts", settings["profile_inserts"]) for k in settings["profile_insert_contenders"]]
            for key, workload, operations in plan:
                if key not in by_key or not operations:
                    continue
                found = await profiling.profile(
                    by_key[key], workload, operations, settings["concurrency"], settings["profile_interval_s"]
                )
                profiles.append(found)
                log(
                    f"  {key} {workload}: loop thread {found.loop_cpu_us:.0f} µs/op "
                    f"({found.loop_cpu_gc_off_us:.0f} with GC off), "
                    f"process {found.process_cpu_us:.0f} µs/op; "
                    + ", ".join(f"{k} {v:.0f}" for k, v in list(profiling.by_package(found).items())[:4])
                )

    # Like a view: models find this app's connection through the app context.
    with node.app.app_context():
        asyncio.run(in_loop())
    node.shutdown()

    http_results: list[http_scenario.HttpResult] = []
    http_notes: list[str] = []
    if "http" in wanted:
        log("scenario 4: HTTP view with 10 reads")
        http_results = http_scenario.run(
            settings["rounds"],
            settings["http_requests_per_round"],
            settings["http_clients"],
            settings["aiocqlengine_probe_requests"],
            workdir,
            log,
        )
        latencies = settings["http_latency_ms"]
        if latencies and len(common.HOSTS) > 1:
            # The driver would find the other nodes' own addresses and bypass the proxy.
            http_notes.append(
                "Scenario 4b (simulated network round trip) was skipped: the latency proxy stands for a single "
                "node, and CASSANDRA_HOSTS names several."
            )
            log(http_notes[-1])
            latencies = []
        for latency_ms in latencies:
            log(f"scenario 4b: the same with a {latency_ms:g} ms simulated network round trip (user-space proxy)")
            http_results += http_scenario.run(
                settings["rounds"],
                settings["http_requests_per_round"],
                settings["http_clients"],
                0,
                workdir,
                log,
                latency_ms=latency_ms,
            )

    runners: runners_scenario.RunnersResult | None = None
    if "runners" in wanted:
        log("scenario 6: HTTP runners (Flask: sync views, async views per-request and per-thread; Quart on hypercorn)")
        runners = runners_scenario.run(
            settings["rounds"],
            settings["runners_requests_per_round"],
            settings["runners_clients"],
            workdir,
            log,
            threads=settings["http_server_threads"],
            per_client=settings["runners_requests_per_client"],
        )

    memory_results: list[dict[str, Any]] = []
    if "memory" in wanted:
        log(f"scenario 5: RSS over {settings['memory_reads']:,} point reads (fresh process per contender)")
        for key in settings["memory_contenders"]:
            found = memory.run_in_subprocess(
                key,
                settings["memory_reads"],
                settings["memory_warmup"],
                settings["concurrency"],
                workdir / "memory.log",
            )
            memory_results.append(found)
            if "unavailable" in found:
                log(f"  {key}: unavailable: {found['unavailable']}")
            else:
                log(
                    f"  {key}: {found['rss_before'] / 2**20:.1f} -> {found['rss_after'] / 2**20:.1f} MiB "
                    f"({found['growth_pct']:+.2f} %) in {found['seconds']:.0f} s"
                )

    # -- report --------------------------------------------------------------
    env["finished"] = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    env["mode"] = mode
    env["duration_s"] = time.perf_counter() - started
    env["load_average_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    env["settings"] = {
        **settings,
        "targets": TARGETS,
        "baseline": "raw driver (scenarios 1-3), /sync view (scenario 4)",
    }

    rep = report.Report()
    for key in ("reads", "inserts"):
        if key in results:
            report.throughput_rows(rep, results[key], TARGETS)
    if "scan" in results:
        report.scan_rows(rep, results["scan"], TARGETS, diagnostics)
    for h in http_results:
        report.http_rows(rep, h, TARGETS)
    if runners is not None:
        report.runners_rows(rep, runners, TARGETS)
    report.memory_rows(rep, memory_results, TARGETS)
    for key, reason in unavailable.items():
        rep.notes.append(f"Contender {key} could not run: {reason}")
    if "idle_loop_gap_ms" in diagnostics:
        rep.notes.append(
            "Scenario 3 context: an idle loop's largest ticker gap over 1 s on this machine was "
            + ", ".join(f"{g:.1f}" for g in diagnostics["idle_loop_gap_ms"])
            + " ms (the ticker sleeps 1 ms, so ~1.1 ms is a perfect score). 'Gap with GC off' is the median "
            "largest gap of scans run with the garbage collector disabled, i.e. the contender's own blocking; "
            "'after gc.freeze()' the same with the collector on but the objects that existed before the scan frozen."
        )
    rep.notes += http_notes
    latency_checks = {h.latency_ms: h.rtt_check for h in http_results if h.latency_ms}
    for latency_ms, check in latency_checks.items():
        rep.notes.append(
            f"Scenario 4b simulates a database across a network: the HTTP server's Cassandra connections "
            f"(all three clusters, so every view) go through `bench/latency_proxy.py`, a user-space TCP proxy that "
            f"delays every chunk by {latency_ms / 2:g} ms in each direction (+{latency_ms:g} ms per round trip; "
            "this machine has no netem). Check before the run: `SELECT release_version FROM system.local` "
            f"median {check.get('direct_ms', float('nan')):.2f} ms direct, "
            f"{check.get('proxied_ms', float('nan')):.2f} ms through the proxy. The client-to-server HTTP hop "
            "stays on loopback. The driver's sockets keep its default (Nagle's algorithm on), as over a real "
            "network: a request written while an earlier one is unacknowledged waits for that acknowledgement."
        )
    for h in http_results:
        for path, found in h.probes.items():
            rep.notes.append(
                f"Scenario 4 probe `{path}` ({found['label']}): "
                f"{found['ok']}/{found['requests']} requests answered 200, "
                f"{found['errors']} failed ({found['timeouts']} timed out after {http_scenario.PROBE_TIMEOUT:.0f} s)"
                + (f"; first failure: `{found['first_error'][:240]}`" if found["first_error"] else "")
                + ". aiocqlengine stores one loop on the session, while Flask gives each async view a fresh loop, "
                "so it is not a contender of scenario 4."
            )
    extra_sections = []
    if runners is not None:
        extra_sections += report.runners_section(runners, "results_runners.png")
    if profiles:
        extra_sections += [
            "## Where the event loop's CPU time goes",
            "",
            "CPU µs per operation of the event loop's thread, measured without a profiler, then split by package "
            "with pyinstrument sampling that thread's CPU clock (functions: [profile.md](profile.md)). "
            "Whole process = loop thread + the driver's I/O thread + any thread pool.",
            "",
            "| | " + " | ".join(f"{p.contender} {p.workload}" for p in profiles) + " |",
            "|---|" + "---:|" * len(profiles),
            "| **whole process CPU/op** | " + " | ".join(f"{p.process_cpu_us:.0f}" for p in profiles) + " |",
            "| **loop thread CPU/op** | " + " | ".join(f"{p.loop_cpu_us:.0f}" for p in profiles) + " |",
            "| loop thread CPU/op with GC disabled | "
            + " | ".join(f"{p.loop_cpu_gc_off_us:.0f}" for p in profiles)
            + " |",
        ]
        packages: list[str] = []
        for p in profiles:
            for k in profiling.by_package(p):
                if k not in packages:
                    packages.append(k)
        for k in packages:
            values = [profiling.by_package(p).get(k, 0.0) for p in profiles]
            if max(values) >= 2:
                extra_sections.append(f"| loop thread: {k} | " + " | ".join(f"{v:.0f}" for v in values) + " |")
        extra_sections.append("")
        (out / "profile.md").write_text(profiling.summarize(profiles) + "\n")
        for p in profiles:
            (out / f"profile_{p.contender}_{p.workload}_tree.txt").write_text(p.tree)

    (out / "results.md").write_text(report.markdown(rep, env, extra_sections, analysis=(out / "analysis.md").exists()))
    (out / "environment.md").write_text(report.environment_markdown(env))
    report.write_json(
        out / "results.json",
        {
            "environment": env,
            "targets": TARGETS,
            "scenarios": {k: asdict(v) for k, v in results.items()},
            "scan_diagnostics": diagnostics,
            "http": [_http_summary(h) for h in http_results],
            "memory": memory_results,
            "runners": _runners_summary(runners) if runners is not None else None,
            "verdicts": [asdict(v) for v in rep.verdicts],
            "unavailable": unavailable,
        },
    )
    subtitle = (
        f"{env['finished']}, {mode} run, {settings['rounds']} rounds, Cassandra {cassandra_version}, "
        f"{env['logical_cores']} cores, git {env['git_head']}"
        + ("+changes" if env["flask_cqlalchemy_uncommitted"] else "")
    )
    report.chart(out / "results.png", results, http_results, memory_results, TARGETS, subtitle)
    if runners is not None:
        report.runners_chart(out / "results_runners.png", runners, TARGETS, subtitle)
    print(report.plain_table(rep))
    if not any("unavailable" in m for m in memory_results):
        shutil.rmtree(workdir, ignore_errors=True)  # only logs; kept when something failed
    log(
        f"\nwrote {out}/results.md, results.png, results.json, environment.md"
        + (", results_runners.png" if runners is not None else "")
        + (", profile.md" if profiles else "")
        + f" in {env['duration_s']:.0f} s"
    )
    return 0


def _http_summary(h: http_scenario.HttpResult) -> dict[str, Any]:
    """Per view and round: count and percentiles (ms), not every latency."""
    return {
        "clients": h.clients,
        "latency_ms": h.latency_ms,
        "rtt_check": h.rtt_check,
        "per_round": h.per_round,
        "probes": h.probes,
        "views": {
            path: {
                "label": v.label,
                "errors": v.errors,
                "first_error": v.first_error,
                "rounds": [
                    {"count": len(r), **{f"p{q}": round(common.percentile(r, q) * 1000, 3) for q in (50, 90, 99)}}
                    for r in v.rounds
                ],
            }
            for path, v in h.views.items()
        },
    }


def _runners_summary(r: runners_scenario.RunnersResult) -> dict[str, Any]:
    """Scenario 6: settings, the runners, the servers' settings and loop tallies, and per cell the summary
    with per-round figures."""
    return {
        "clients": r.clients,
        "requests_per_round": r.per_round,
        "rounds": r.rounds,
        "server_threads": r.threads,
        "per_thread_active": r.per_thread_active,
        "runners": r.runners,
        "unavailable": r.unavailable,
        "servers": r.servers,
        "cells": runners_scenario.summarize(r),
    }


if __name__ == "__main__":
    sys.exit(main())
