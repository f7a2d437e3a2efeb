"""Turns the measurements into ``results.md``, ``results.json``, ``results.png``
and ``environment.md``.

Ratios are taken per round (both contenders measured in the same round,
minutes apart at most) and the median of those per-round ratios is reported;
they are "times the baseline's speed": above 1 is faster than the baseline,
for throughput and for latency alike.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import common, quart_app
from .contenders import BASELINE
from .http_scenario import HttpResult
from .runners_scenario import RunnersResult, comparisons, summarize
from .scenarios import ScenarioResult

LABELS = {
    "facade": "flask-cqlalchemy facade",
    "raw": "raw driver limit (prepared, execute_async, minimal bridge)",
    "aiocqlengine": "aiocqlengine 0.3.2 (one long-lived loop)",
    "threadpool": "sync cqlengine in thread pool (sync_to_async)",
}


@dataclass
class Row:
    scenario: str
    contender: str
    median: str
    spread: str
    ratio: str
    target: str
    met: str  # "yes", "**no**", "" (no target on this row)


@dataclass
class Verdict:
    target: str
    measured: str
    met: bool
    miss: str = ""  # by how much, when missed


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt(value: float, digits: int = 0) -> str:
    if value != value:  # nan
        return "n/a"
    return f"{value:,.{digits}f}"


def per_round_ratio(numerator: list[float], denominator: list[float]) -> float:
    ratios = [n / d for n, d in zip(numerator, denominator, strict=False) if d]
    return common.median(ratios)


def throughput_rows(report: Report, result: ScenarioResult, targets: dict[str, Any]) -> None:
    base = [s.value for s in result.samples.get(BASELINE, [])]
    facade = [s.value for s in result.samples.get("facade", [])]
    for key, samples in result.samples.items():
        values = [s.value for s in samples]
        ratio = per_round_ratio(values, base) if base else float("nan")
        target, met = "", ""
        if key == BASELINE:
            target = "baseline"
        elif key == "facade":
            goal = targets["facade_vs_raw"]
            target = f"≥ {goal}× raw"
            ok = ratio >= goal
            met = "yes" if ok else "**no**"
            report.verdicts.append(
                Verdict(
                    f"{result.title}: facade ≥ {goal}× the raw-driver limit",
                    f"{ratio:.2f}×",
                    ok,
                    ""
                    if ok
                    else f"short by {(goal - ratio) / goal * 100:.0f} % (needs {goal / ratio:.2f}× more speed)",
                )
            )
        elif facade:
            goal = targets["facade_vs_other"]
            advantage = per_round_ratio(facade, values)
            target = f"facade ≥ {goal}× this (is {advantage:.2f}×)"
            ok = advantage >= goal
            met = "yes" if ok else "**no**"
            report.verdicts.append(
                Verdict(
                    f"{result.title}: facade ≥ {goal}× {LABELS.get(key, key)}",
                    f"{advantage:.2f}×",
                    ok,
                    "" if ok else f"short by {(goal - advantage) / goal * 100:.1f} %",
                )
            )
        cpu_loop = common.median([s.extra.get("loop_cpu_us_per_op", float("nan")) for s in samples])
        cpu_all = common.median([s.extra.get("process_cpu_us_per_op", float("nan")) for s in samples])
        cpu_node = common.median([s.extra.get("node_cpu_us_per_op", float("nan")) for s in samples])
        spread = (
            f"{_fmt(min(values))}–{_fmt(max(values))}; CPU per op: {cpu_loop:.0f} µs loop thread, "
            f"{cpu_all:.0f} µs whole bench process, {_fmt(cpu_node)} µs Cassandra"
        )
        report.rows.append(
            Row(
                result.title,
                LABELS.get(key, key),
                f"{_fmt(common.median(values))} {result.unit}",
                spread,
                f"{ratio:.2f}×",
                target,
                met,
            )
        )


def scan_rows(report: Report, result: ScenarioResult, targets: dict[str, Any], diagnostics: dict[str, Any]) -> None:
    base = [s.value for s in result.samples.get(BASELINE, [])]
    goal = targets["scan_gap_ms"]
    for key, samples in result.samples.items():
        values = [s.value for s in samples]
        gaps = [s.extra["largest_gap_ms"] for s in samples]
        gc_pauses = [s.extra["largest_gc_pause_ms"] for s in samples]
        ratio = per_round_ratio(values, base) if base else float("nan")
        gap = common.median(gaps)
        no_gc = diagnostics.get("gap_without_gc_ms", {}).get(key)
        frozen = diagnostics.get("gap_gc_frozen_ms", {}).get(key)
        detail = (
            f"{_fmt(min(values))}–{_fmt(max(values))} rows/s; largest loop gap median {gap:.1f} ms "
            f"(worst {max(gaps):.1f}), largest GC pause median {common.median(gc_pauses):.1f} ms"
            + (f"; gap with GC off {no_gc:.1f} ms" if no_gc is not None else "")
            + (f", after gc.freeze() {frozen:.1f} ms" if frozen is not None else "")
        )
        target, met = ("baseline" if key == BASELINE else ""), ""
        if key == "facade":
            target = f"largest loop gap < {goal} ms (is {gap:.1f} ms)"
            ok = gap < goal
            met = "yes" if ok else "**no**"
            report.verdicts.append(
                Verdict(
                    f"{result.title}: largest event-loop gap < {goal} ms (facade)",
                    f"{gap:.1f} ms (worst round {max(gaps):.1f} ms)"
                    + (f"; with GC off {no_gc:.1f} ms" if no_gc is not None else "")
                    + (f", after gc.freeze() {frozen:.1f} ms" if frozen is not None else ""),
                    ok,
                    "" if ok else f"over by {gap - goal:.1f} ms ({gap / goal:.1f}× the budget)",
                )
            )
        report.rows.append(
            Row(
                result.title,
                LABELS.get(key, key),
                f"{_fmt(common.median(values))} rows/s",
                detail,
                f"{ratio:.2f}×",
                target,
                met,
            )
        )


def http_title(result: HttpResult) -> str:
    """Scenario 4's title for one client count; 4b (through the latency proxy) says so."""
    clients = f"{result.clients} concurrent client{'s' if result.clients > 1 else ''}"
    if not result.latency_ms:
        return f"4. HTTP view with 10 reads, {clients}"
    return (
        f"4b. HTTP view with 10 reads, {result.latency_ms:g} ms simulated network round trip "
        f"(user-space delay proxy), {clients}"
    )


def http_rows(report: Report, result: HttpResult, targets: dict[str, Any]) -> None:
    title = http_title(result)
    baseline_path = "/sync"
    base = result.views[baseline_path]
    base_p50 = [common.median(r) for r in base.rounds]
    base_p50_pooled = common.percentile([t for r in base.rounds for t in r], 50) * 1000
    goal = targets["gather_vs_sync_p50"]
    for path, samples in result.views.items():
        pooled = [t for r in samples.rounds for t in r]
        p50s = [common.median(r) for r in samples.rounds]
        speedup = per_round_ratio(base_p50, p50s)
        p50 = common.percentile(pooled, 50) * 1000
        p99 = common.percentile(pooled, 99) * 1000
        target, met = ("baseline" if path == baseline_path else ""), ""
        if path == "/facade":
            target = f"p50 ≥ {goal}× faster than sync view"
            ok = speedup >= goal
            met = "yes" if ok else "**no**"
            report.verdicts.append(
                Verdict(
                    f"{title}: gather view ≥ {goal}× faster at p50 than the sequential sync view",
                    f"{speedup:.2f}× (p50 {p50:.1f} ms vs {base_p50_pooled:.1f} ms)",
                    ok,
                    "" if ok else f"short by {(goal - speedup) / goal * 100:.0f} %",
                )
            )
        errors = f"; {samples.errors} errors ({samples.first_error[:80]})" if samples.errors else ""
        report.rows.append(
            Row(
                title,
                f"`{path}`: {samples.label}",
                f"p50 {p50:.2f} ms",
                f"p99 {p99:.2f} ms; {len(pooled)} requests{errors}",
                f"{speedup:.2f}×",
                target,
                met,
            )
        )


def runners_title(result: RunnersResult, clients: int) -> str:
    servers = f"waitress, {result.threads} threads each"
    if "quart" in result.runners:
        servers += f"; Quart: hypercorn, {quart_app.WORKERS} worker"
    return f"6. HTTP runners ({servers}), {clients} concurrent client{'s' if clients > 1 else ''}"


def _vs_others(row: dict[str, Any]) -> str:
    """A row's req/s and p50 ratios against the runners it is compared with besides sync."""
    return "; ".join(f"vs {k}: {rps:.2f}× req/s, {p50:.2f}× p50" for k, rps, p50 in comparisons(row))


def runners_rows(report: Report, result: RunnersResult, targets: dict[str, Any]) -> None:
    """Scenario 6: a row per (runner, endpoint, clients), and its targets' verdicts.

    The one-read targets apply at the largest client count, the gather
    target at the smallest (16 and 1 by default), p99 at every count.
    """
    summary = summarize(result)
    inactive = "" if result.per_thread_active else " [per-thread mode NOT active: the extension ignored the key]"
    found = {(r["runner"], r["endpoint"], r["clients"]): r for r in summary}
    busiest, single = max(result.clients), min(result.clients)

    def at_least(title: str, ratio: float, goal: float, detail: str) -> None:
        ok = ratio >= goal
        report.verdicts.append(
            Verdict(
                f"{title}{inactive}",
                f"{ratio:.2f}× ({detail}; {(ratio - goal) / goal * 100:+.0f} % vs the goal)",
                ok,
                "" if ok else f"short by {(goal - ratio) / goal * 100:.0f} %",
            )
        )

    read, sync_read = found[("per-thread", "read", busiest)], found[("sync", "read", busiest)]
    goal = targets["runner_read_vs_sync_rps"]
    at_least(
        f"{runners_title(result, busiest)}: async one-read per-thread ≥ {goal}× the sync view's req/s",
        read["rps_vs_sync"],
        goal,
        f"{_fmt(read['rps'])} vs {_fmt(sync_read['rps'])} req/s",
    )
    goal = targets["runner_read_vs_per_request_rps"]
    at_least(
        f"{runners_title(result, busiest)}: async one-read per-thread ≥ {goal}× per-request req/s",
        read["rps_vs_per_request"],
        goal,
        f"{_fmt(read['rps'])} vs {_fmt(found[('per-request', 'read', busiest)]['rps'])} req/s",
    )
    gather, sync_gather = found[("per-thread", "reads10", single)], found[("sync", "reads10", single)]
    goal = targets["runner_gather_vs_sync_p50"]
    at_least(
        f"{runners_title(result, single)}: 10-read gather per-thread ≥ {goal}× faster at p50 "
        "than the sync 10-sequential view",
        gather["p50_vs_sync"],
        goal,
        f"p50 {gather['p50_ms']:.2f} ms vs {sync_gather['p50_ms']:.2f} ms",
    )

    for row in summary:
        target, met = ("baseline" if row["runner"] == "sync" else ""), ""
        if row["runner"] == "per-thread":
            base = found[("sync", row["endpoint"], row["clients"])]
            ok = row["p99_ms"] <= base["p99_ms"]
            target = "p99 ≤ sync's"
            met = "yes" if ok else "**no**"
            report.verdicts.append(
                Verdict(
                    f"{runners_title(result, row['clients'])}: `{row['endpoint']}` per-thread p99 not above "
                    f"the sync view's{inactive}",
                    f"p99 {row['p99_ms']:.2f} ms vs {base['p99_ms']:.2f} ms "
                    f"({row['p99_ms'] - base['p99_ms']:+.2f} ms, {row['p99_ms'] / base['p99_ms'] * 100 - 100:+.0f} %; "
                    f"per-round p99s: {row['p99_vs_sync_per_round']:.2f}× sync's speed, median)",
                    ok,
                    "" if ok else f"over by {row['p99_ms'] - base['p99_ms']:.2f} ms",
                )
            )
        vs_others = "".join(f"; {found}" for found in [_vs_others(row)] if found)
        errors = f"; {row['errors']} errors ({row['first_error'][:80]})" if row["errors"] else ""
        report.rows.append(
            Row(
                runners_title(result, row["clients"]),
                f"`{row['endpoint']}` {row['runner']} (`{row['view']}`)",
                f"{_fmt(row['rps'])} req/s",
                f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms; {_fmt(row['rps_min'])}–"
                f"{_fmt(row['rps_max'])} req/s; p50 {row['p50_vs_sync']:.2f}× sync's{vs_others}; "
                f"{row['requests']} requests{errors}",
                f"{row['rps_vs_sync']:.2f}×",
                target,
                met,
            )
        )


def runners_section(result: RunnersResult, chart_name: str) -> list[str]:
    """results.md's section of scenario 6: one table with every figure, then Quart beside Flask."""
    summary = summarize(result)
    quart = "quart" in result.runners
    lines = [
        "## 6. HTTP runners: sync views, async per-request, async per-thread" + (", Quart" if quart else ""),
        "",
        f"![runners chart]({chart_name})",
        "",
        f"The same app served three ways by waitress ({result.threads} threads each, one process each): plain "
        "`def` views, and the same endpoints as `async def` views with `CASSANDRA_ASYNC_LOOPS` `per-request` "
        "(Flask's asgiref bridge: a new thread and event loop per request) and `per-thread` (one long-lived loop "
        "per server thread)"
        + (
            f"; and the one-read and dashboard endpoints' async views on a Quart app (`bench/quart_app.py`, the same "
            f"extension and models), served by hypercorn ({quart_app.WORKERS} worker process, asyncio's event loop)"
            if quart
            else ""
        )
        + ". *vs sync* are medians of per-round ratios to the sync runner measured in the same "
        "round (req/s: this / sync; p50 and p99: sync / this, i.e. times faster); p99 is over all rounds' requests "
        "(the p99 target compares these), *p99 vs sync* is the median of per-round p99 ratios (less swayed by "
        "one noisy round).",
        "",
    ]
    for runner in result.active:
        info = result.servers.get(runner.key, {})
        if runner.kind != "async" or "event_loops" not in info:
            continue
        if runner.server == "hypercorn":
            setup = (
                f"{info.get('framework')} on {info.get('server')}, {info.get('workers')} worker, worker class "
                f"`{info.get('worker_class')}`, event loop `{info.get('event_loop')}` (uvloop "
                f"{'installed' if info.get('uvloop_installed') else 'not installed'}), keep-alive timeout "
                f"{info.get('keep_alive_timeout_s')} s, access log {'on' if info.get('access_log') else 'off'}; "
            )
        else:
            setup = f"`app.async_to_sync` replaced: {info.get('async_to_sync_replaced')}; "
        loops = "event loop" if info["event_loops"] == 1 else "event loops"
        lines.append(
            f"* `{runner.key}` server: {setup}its async views ran in {info['event_loops']:,} distinct "
            f"{loops} over {info['async_requests']:,} requests."
        )
    for key, reason in result.unavailable.items():
        lines.append(f"* The `{key}` runner was left out: {reason}.")
    if not result.per_thread_active:
        lines.append(
            "* **The per-thread mode was not active** (the extension ignored `CASSANDRA_ASYNC_LOOPS`): the "
            "per-thread server ran Flask's default bridge, so its figures are per-request ones."
        )
    lines += [
        "",
        "| endpoint | clients | runner | req/s | p50 ms | p99 ms | req/s vs sync | p50 vs sync | p99 vs sync | "
        "vs Flask async runners (req/s, p50) | requests | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in summary:
        vs = "; ".join(f"{k}: {rps:.2f}×, {p50:.2f}×" for k, rps, p50 in comparisons(row))
        lines.append(
            f"| {row['endpoint']} | {row['clients']} | {row['runner']} | {_fmt(row['rps'])} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['rps_vs_sync']:.2f}× | {row['p50_vs_sync']:.2f}× | "
            f"{row['p99_vs_sync_per_round']:.2f}× | {vs} | "
            f"{row['requests']} | {row['errors']} |"
        )
    lines.append("")
    if quart:
        lines += quart_table(summary)
    return lines


def quart_table(summary: list[dict[str, Any]]) -> list[str]:
    """Quart beside the three Flask runners, per endpoint Quart serves and client count."""
    found = {(r["runner"], r["endpoint"], r["clients"]): r for r in summary}
    quart_rows = [r for r in summary if r["runner"] == "quart"]

    def cell(row: dict[str, Any]) -> str:
        return f"{_fmt(row['rps'])}/s, {row['p50_ms']:.1f} / {row['p99_ms']:.1f}"

    lines = [
        "### Quart on hypercorn beside Flask",
        "",
        "Per cell: req/s (median over rounds), then p50 / p99 in ms (over all rounds' requests). Ratios: medians "
        "of per-round ratios, Quart against each Flask runner measured in the same round, req/s (this / that) "
        "and p50 (that / this: times faster).",
        "",
        "| endpoint | clients | Flask sync | Flask async per-request | Flask async per-thread | Quart (hypercorn) | "
        "Quart vs sync (req/s, p50) | vs per-request | vs per-thread |",
        "|---|---:|---|---|---|---|---:|---:|---:|",
    ]
    for row in quart_rows:
        key = (row["endpoint"], row["clients"])
        flask = [found.get((runner, *key)) for runner in ("sync", "per-request", "per-thread")]
        ratios = {k: f"{rps:.2f}×, {p50:.2f}×" for k, rps, p50 in comparisons(row)}
        lines.append(
            f"| {row['endpoint']} | {row['clients']} | "
            + " | ".join(cell(f) if f else "" for f in flask)
            + f" | {cell(row)} | {row['rps_vs_sync']:.2f}×, {row['p50_vs_sync']:.2f}× | "
            f"{ratios.get('per-request', '')} | {ratios.get('per-thread', '')} |"
        )
    lines.append("")
    return lines


def memory_rows(report: Report, results: list[dict[str, Any]], targets: dict[str, Any]) -> None:
    goal = targets["rss_growth_pct"]
    for found in results:
        key = found["contender"]
        title = f"5. RSS over {found.get('reads', 0):,} point reads"
        if "unavailable" in found:
            report.rows.append(Row(title, LABELS.get(key, key), "n/a", found["unavailable"], "", "", ""))
            continue
        growth = found["growth_pct"]
        target, met = "", ""
        if key == "facade":
            target = f"growth < {goal} %"
            ok = growth < goal
            met = "yes" if ok else "**no**"
            report.verdicts.append(
                Verdict(
                    f"{title}: RSS growth < {goal} % (facade)",
                    f"{growth:+.2f} %",
                    ok,
                    "" if ok else f"over by {growth - goal:.2f} points",
                )
            )
        mb = 1024 * 1024
        detail = (
            f"{found['rss_before'] / mb:.1f} → {found['rss_after'] / mb:.1f} MiB; tracked objects "
            f"{found['gc_objects_before']:,} → {found['gc_objects_after']:,}; collections by generation "
            f"{found['gc_collections_by_generation']}"
        )
        report.rows.append(Row(title, LABELS.get(key, key), f"{growth:+.2f} %", detail, "", target, met))


def markdown(report: Report, environment: dict[str, Any], extra_sections: list[str], analysis: bool = False) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` on {environment['finished']} ({environment['mode']} run, "
        f"{environment['settings']['rounds']} rounds, {environment['duration_s']:.0f} s). "
        "Machine, versions and settings: [environment.md](environment.md); method: `bench/README.md`; "
        "profiles: [profile.md](profile.md); per-round figures: `results.json`."
        + (
            " Why the missed targets are missed: [analysis.md](analysis.md) "
            "(written by hand; it names the run it was written from)."
            if analysis
            else ""
        ),
        "",
        "![results chart](results.png)",
        "",
        "*Median* is the median over rounds; *ratio* is the median over rounds of the per-round ratio to the "
        "scenario's baseline, as times the baseline's speed (above 1× = faster than the baseline, for "
        "throughput and latency alike).",
        "",
        "## Targets",
        "",
        "| target | measured | met? | miss |",
        "|---|---|---|---|",
    ]
    for v in report.verdicts:
        lines.append(f"| {v.target} | {v.measured} | {'yes' if v.met else '**no**'} | {v.miss} |")
    lines += [
        "",
        "## All figures",
        "",
        "| scenario | contender | median | spread and details | ratio to baseline | target | met? |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for r in report.rows:
        lines.append(f"| {r.scenario} | {r.contender} | {r.median} | {r.spread} | {r.ratio} | {r.target} | {r.met} |")
    lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in report.notes] + [""]
    lines += extra_sections
    return "\n".join(lines)


def plain_table(report: Report) -> str:
    """The table for stdout."""
    out = []
    width = max(len(r.contender) for r in report.rows) if report.rows else 20
    current = None
    for r in report.rows:
        if r.scenario != current:
            current = r.scenario
            out.append(f"\n{current}")
        target = f"  [{r.target}{': ' + r.met.strip('*') if r.met else ''}]" if r.target else ""
        out.append(f"  {r.contender:<{width}}  {r.median:>18}  {r.ratio:>7}{target}")
    out.append("\nTargets:")
    for v in report.verdicts:
        out.append(f"  [{'met ' if v.met else 'MISS'}] {v.target}: {v.measured}{' — ' + v.miss if v.miss else ''}")
    return "\n".join(out)


# -- chart ---------------------------------------------------------------------

COLORS = {"facade": "#1f77b4", "raw": "#7f7f7f", "aiocqlengine": "#ff7f0e", "threadpool": "#2ca02c"}


def chart(
    out_file: Path,
    scenarios: dict[str, ScenarioResult],
    http: list[HttpResult],
    memory: list[dict[str, Any]],
    targets: dict[str, Any],
    subtitle: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    fig.suptitle(f"flask-cqlalchemy benchmarks — {subtitle}", fontsize=12)

    def bars(ax: Any, result: ScenarioResult | None, title: str, unit: str) -> None:
        if result is None:
            ax.set_visible(False)
            return
        keys = list(result.samples)
        medians = [common.median([s.value for s in result.samples[k]]) for k in keys]
        ax.bar(range(len(keys)), medians, color=[COLORS.get(k, "#999") for k in keys], alpha=0.85)
        for i, k in enumerate(keys):
            ax.scatter([i] * len(result.samples[k]), [s.value for s in result.samples[k]], color="black", s=8, zorder=3)
        ax.set_xticks(range(len(keys)), keys, rotation=15)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        if "raw" in result.samples:
            raw = common.median([s.value for s in result.samples["raw"]])
            ax.axhline(
                raw * targets["facade_vs_raw"],
                color="red",
                linestyle="--",
                linewidth=1,
                label=f"{targets['facade_vs_raw']}× raw (facade target)",
            )
            ax.legend(fontsize=8, loc="upper right")

    bars(
        axes[0][0],
        scenarios.get("reads"),
        scenarios["reads"].title if "reads" in scenarios else "",
        "reads/s (median, dots = rounds)",
    )
    bars(
        axes[0][1], scenarios.get("inserts"), scenarios["inserts"].title if "inserts" in scenarios else "", "inserts/s"
    )

    scan = scenarios.get("scan")
    ax = axes[0][2]
    if scan is not None:
        keys = list(scan.samples)
        gaps = [common.median([s.extra["largest_gap_ms"] for s in scan.samples[k]]) for k in keys]
        gcs = [common.median([s.extra["largest_gc_pause_ms"] for s in scan.samples[k]]) for k in keys]
        xs = range(len(keys))
        ax.bar(
            [x - 0.2 for x in xs],
            gaps,
            width=0.4,
            color=[COLORS.get(k, "#999") for k in keys],
            label="largest loop gap",
        )
        ax.bar([x + 0.2 for x in xs], gcs, width=0.4, color="#cccccc", label="largest GC pause")
        ax.axhline(
            targets["scan_gap_ms"],
            color="red",
            linestyle="--",
            linewidth=1,
            label=f"{targets['scan_gap_ms']} ms target",
        )
        ax.set_yscale("log")
        ax.set_xticks(
            list(xs),
            [f"{k}\n{common.median([s.value for s in scan.samples[k]]):,.0f} rows/s" for k in keys],
            fontsize=8,
        )
        ax.set_ylabel("ms (median over rounds, log scale)")
        ax.set_title(scan.title + ": loop gap", fontsize=10)
        ax.legend(fontsize=8)
    else:
        ax.set_visible(False)

    ax = axes[1][0]
    if http:
        groups = []
        for h in http:
            for view, samples in h.views.items():
                pooled = [t for r in samples.rounds for t in r]
                groups.append(
                    (
                        f"{view}\n{h.clients}c" + (f" +{h.latency_ms:g}ms" if h.latency_ms else ""),
                        common.percentile(pooled, 50) * 1000,
                        common.percentile(pooled, 99) * 1000,
                        view,
                        h.latency_ms,
                    )
                )
        xs = range(len(groups))
        ax.bar(
            [x - 0.2 for x in xs],
            [g[1] for g in groups],
            width=0.4,
            label="p50",
            color=[COLORS.get(g[3].strip("/"), "#9467bd") for g in groups],
            hatch=["//" if g[4] else "" for g in groups],
        )
        ax.bar([x + 0.2 for x in xs], [g[2] for g in groups], width=0.4, label="p99", color="#cccccc")
        ax.set_xticks(list(xs), [g[0] for g in groups], fontsize=7, rotation=60)
        ax.set_ylabel("latency, ms")
        latencies = sorted({h.latency_ms for h in http if h.latency_ms})
        ax.set_title(
            "4. HTTP view with 10 reads (waitress)" + "".join(f"; hatched: 4b, +{d:g} ms RTT" for d in latencies),
            fontsize=10,
        )
        ax.legend(fontsize=8)
    else:
        ax.set_visible(False)

    ax = axes[1][1]
    if http:
        # The last (largest) client count of each variant: loopback, then each simulated latency.
        variants = list({h.latency_ms: h for h in http}.values())
        names = [p for p in variants[0].views if not p.startswith("/noop")]
        width = 0.8 / len(variants)
        for i, h in enumerate(variants):
            base = [common.median(r) for r in h.views["/sync"].rounds]
            speedups = [per_round_ratio(base, [common.median(r) for r in h.views[p].rounds]) for p in names]
            ax.bar(
                [x - 0.4 + width * (i + 0.5) for x in range(len(names))],
                speedups,
                width=width,
                color=[COLORS.get(p.strip("/"), "#9467bd") for p in names],
                hatch="//" if h.latency_ms else "",
                edgecolor="white" if h.latency_ms else None,
                label=f"{h.clients}c, " + (f"+{h.latency_ms:g} ms simulated RTT" if h.latency_ms else "loopback"),
            )
        ax.axhline(
            targets["gather_vs_sync_p50"],
            color="red",
            linestyle="--",
            linewidth=1,
            label=f"{targets['gather_vs_sync_p50']}× target (facade)",
        )
        ax.axhline(1, color="black", linewidth=0.5)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel("p50 speed-up over /sync (×)")
        ax.set_title("4. p50 speed-up over the sequential sync view (plain: loopback, hatched: 4b)", fontsize=10)
        ax.legend(fontsize=8)
    else:
        ax.set_visible(False)

    ax = axes[1][2]
    shown = [m for m in memory if "rss_checkpoints" in m]
    if shown:
        for m in shown:
            reads = m["reads"]
            points = m["rss_checkpoints"]
            done = [i * reads / (len(points) - 1) for i in range(len(points))]
            ax.plot(
                done,
                [p / 1024 / 1024 for p in points],
                marker="o",
                markersize=3,
                color=COLORS.get(m["contender"], "#999"),
                label=f"{m['contender']} ({m['growth_pct']:+.1f} %)",
            )
        ax.set_xlabel("reads after warm-up")
        ax.set_ylabel("RSS, MiB")
        ax.set_title("5. RSS during point reads (fresh process each)", fontsize=10)
        ax.legend(fontsize=8)
    else:
        ax.set_visible(False)

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(out_file, dpi=100)
    plt.close(fig)


RUNNER_COLORS = {"sync": "#7f7f7f", "per-request": "#ff7f0e", "per-thread": "#1f77b4", "quart": "#2ca02c"}


def runners_chart(out_file: Path, result: RunnersResult, targets: dict[str, Any], subtitle: str) -> None:
    """Scenario 6: per client count, req/s as × the sync runner (top) and p50/p99 latency (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    summary = summarize(result)
    found = {(r["runner"], r["endpoint"], r["clients"]): r for r in summary}
    endpoints = list(dict.fromkeys(r["endpoint"] for r in summary))
    runners = result.runners
    columns = len(result.clients)
    fig, axes = plt.subplots(2, columns, figsize=(7 * columns, 10), squeeze=False)
    mode = "" if result.per_thread_active else " — per-thread mode NOT active (key ignored)"
    fig.suptitle(f"6. HTTP runners — {subtitle}{mode}", fontsize=11)
    width = 0.8 / len(runners)
    for column, clients in enumerate(result.clients):
        top, bottom = axes[0][column], axes[1][column]
        for i, runner in enumerate(runners):
            # The Quart server has only some of the endpoints: no bar where it has none.
            served = [
                (x, found[(runner, e, clients)]) for x, e in enumerate(endpoints) if (runner, e, clients) in found
            ]
            xs = [x - 0.4 + width * (i + 0.5) for x, _ in served]
            rows = [row for _, row in served]
            bars = top.bar(xs, [r["rps_vs_sync"] for r in rows], width=width, color=RUNNER_COLORS[runner], label=runner)
            for bar, r in zip(bars, rows, strict=True):
                top.annotate(
                    f"{r['rps']:,.0f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
            bottom.bar(xs, [r["p50_ms"] for r in rows], width=width, color=RUNNER_COLORS[runner], label=f"{runner} p50")
            bottom.scatter(xs, [r["p99_ms"] for r in rows], color=RUNNER_COLORS[runner], marker="_", s=200, zorder=3)
        top.axhline(1, color="black", linewidth=0.5)
        if clients == max(result.clients):
            top.axhline(
                targets["runner_read_vs_sync_rps"],
                color="red",
                linestyle="--",
                linewidth=1,
                label=f"{targets['runner_read_vs_sync_rps']}× sync (one-read target)",
            )
        top.set_xticks(range(len(endpoints)), endpoints)
        top.set_ylabel("req/s as × the sync runner\n(median of per-round ratios; labels: req/s)")
        top.set_title(f"throughput, {clients} client{'s' if clients > 1 else ''}", fontsize=10)
        top.legend(fontsize=8)
        bottom.scatter([], [], color="black", marker="_", s=200, label="p99 (dash, runner's colour)")
        bottom.set_yscale("log")
        bottom.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        bottom.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        bottom.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        bottom.set_xticks(range(len(endpoints)), endpoints)
        bottom.set_ylabel("latency, ms (log scale)\nbars: p50 over all rounds, dashes: p99")
        bottom.set_title(f"latency, {clients} client{'s' if clients > 1 else ''}", fontsize=10)
        bottom.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(out_file, dpi=100)
    plt.close(fig)


# -- environment -----------------------------------------------------------------


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(cassandra_version: str) -> dict[str, Any]:
    import psutil
    from cassandra import cluster as driver_cluster

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu_model = platform.processor()
    try:
        from cassandra import cython_deps

        cython = bool(cython_deps.HAVE_CYTHON)
    except ImportError:
        cython = False
    import gc

    import flask_cqlalchemy

    dirty = _git("status", "--porcelain", "--", "flask_cqlalchemy")
    return {
        "cpu": cpu_model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cassandra": cassandra_version,
        "cassandra_hosts": ",".join(common.HOSTS),
        "packages": {
            p: _version(p)
            for p in (
                "flask-cqlalchemy",
                "cassandra-driver",
                "Flask",
                "asgiref",
                "waitress",
                "requests",
                "aiocqlengine",
                "six",
                "matplotlib",
                "psutil",
                "pyinstrument",
                "quart",
                "hypercorn",
                "uvloop",
            )
        },
        "driver_cython": cython,
        "driver_reactor": driver_cluster.DefaultConnection.__name__,
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "flask_cqlalchemy_imported_from": str(Path(flask_cqlalchemy.__file__).resolve().parent),
        "flask_cqlalchemy_uncommitted": dirty.splitlines() if dirty else [],
        "gc_thresholds": list(gc.get_threshold()),
        "default_executor_workers": min(32, (os.cpu_count() or 1) + 4),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def environment_markdown(env: dict[str, Any]) -> str:
    s = env["settings"]
    lines = [
        "# Benchmark environment",
        "",
        f"Run finished {env['finished']}, {env['mode']} mode, {env['duration_s']:.0f} s. "
        "The machine is shared with other people's work, so absolute figures drift; only the "
        "per-round ratios in results.md are meant to be compared across runs.",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {env['cpu']} |",
        f"| cores | {env['logical_cores']} logical ({env['physical_cores']} physical) |",
        f"| RAM | {env['ram_gib']} GiB |",
        f"| OS | {env['os']} |",
        f"| Python | {env['python_implementation']} {env['python']} |",
        f"| Cassandra | {env['cassandra']} (system.local release_version), "
        f"single local node at {env['cassandra_hosts']} |",
        f"| cassandra-driver | {env['packages']['cassandra-driver']}, "
        f"Cython extensions {'on' if env['driver_cython'] else 'off'}, "
        f"reactor {env['driver_reactor']}, protocol v{common.PROTOCOL_VERSION} |",
        f"| flask-cqlalchemy | {env['packages']['flask-cqlalchemy']} at git {env['git_head']}"
        + (
            f", with uncommitted changes in: {', '.join(env['flask_cqlalchemy_uncommitted'])}"
            if env["flask_cqlalchemy_uncommitted"]
            else ", clean"
        )
        + f" (imported from `{env['flask_cqlalchemy_imported_from']}`) |",
        "| other packages | "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if k not in ("flask-cqlalchemy", "cassandra-driver"))
        + " |",
        f"| load average (1, 5, 15 min) | start {env['load_average_start']}, end {env['load_average_end']} |",
        f"| GC thresholds | {env['gc_thresholds']} |",
        f"| loop's default thread pool | {env['default_executor_workers']} workers "
        "(used by `sync_to_async(thread_sensitive=False)`) |",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for key, value in s.items():
        lines.append(f"| `{key}` | {value} |")
    lines.append("")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    def default(o: Any) -> Any:
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        if isinstance(o, float) and math.isnan(o):
            return None
        return str(o)

    path.write_text(json.dumps(payload, indent=1, default=default) + "\n")
