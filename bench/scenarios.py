"""Scenarios 1-3: point reads, inserts and the 10,000-row scan, in one long-lived loop.

Every round runs every contender once on the same workload (the same keys,
in the same order), the order of the contenders rotating from round to
round; the figures kept are per-round, so medians and per-round ratios can
be taken afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import common
from .contenders import Contender


@dataclass
class Sample:
    """One contender, one round."""

    value: float  # ops/s or rows/s
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class ScenarioResult:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    #: contender key -> samples, one per round
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def drive(operation: Callable[[Any], Awaitable[Any]], items: list[Any], concurrency: int) -> float:
    """Run ``operation`` over ``items`` with ``concurrency`` tasks in this loop; return ops/s."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await operation(item)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(items) / (time.perf_counter() - started)


_NODE = common.node_process()


def _cpu_split() -> tuple[float, float, float]:
    """CPU seconds of (this thread, this whole process, the local Cassandra node)."""
    return time.thread_time(), time.process_time(), common.cpu_seconds(_NODE)


def _cpu_sample(rate: float, before: tuple[float, float, float], after: tuple[float, float, float], ops: int) -> Sample:
    return Sample(
        rate,
        {
            "loop_cpu_us_per_op": (after[0] - before[0]) / ops * 1e6,
            "process_cpu_us_per_op": (after[1] - before[1]) / ops * 1e6,
            "node_cpu_us_per_op": (after[2] - before[2]) / ops * 1e6,
        },
    )


async def point_reads(
    contenders: list[Contender], rounds: int, per_round: int, concurrency: int, log: Any
) -> ScenarioResult:
    result = ScenarioResult("reads", f"1. Point read by primary key, {concurrency} concurrent", "reads/s", True)
    for contender in contenders:  # warm-up: connections, prepared statements, caches
        await drive(contender.read, common.key_sequence(min(per_round, 1000), seed=-1), concurrency)
    for r in range(rounds):
        keys = common.key_sequence(per_round, seed=r)
        for contender in common.rotated(contenders, r):
            gc.collect()
            before = _cpu_split()
            rate = await drive(contender.read, keys, concurrency)
            result.samples.setdefault(contender.key, []).append(_cpu_sample(rate, before, _cpu_split(), per_round))
        log(
            f"  reads round {r + 1}/{rounds}: "
            + ", ".join(f"{c.key} {result.samples[c.key][-1].value:,.0f}/s" for c in contenders)
        )
    return result


async def inserts(
    contenders: list[Contender], rounds: int, per_round: int, concurrency: int, log: Any
) -> ScenarioResult:
    result = ScenarioResult("inserts", f"2. Insert, {concurrency} concurrent", "inserts/s", True)
    values = [common.user_values(i) for i in range(per_round)]

    def batch() -> list[tuple[uuid.UUID, dict[str, Any]]]:
        return [(uuid.uuid4(), v) for v in values]

    for contender in contenders:
        await drive(lambda item, c=contender: c.insert(*item), batch()[: min(per_round, 1000)], concurrency)
    for r in range(rounds):
        for contender in common.rotated(contenders, r):
            items = batch()
            gc.collect()
            before = _cpu_split()
            rate = await drive(lambda item, c=contender: c.insert(*item), items, concurrency)
            result.samples.setdefault(contender.key, []).append(_cpu_sample(rate, before, _cpu_split(), per_round))
        log(
            f"  inserts round {r + 1}/{rounds}: "
            + ", ".join(f"{c.key} {result.samples[c.key][-1].value:,.0f}/s" for c in contenders)
        )
    return result


async def scan_once(contender: Contender, fetch_size: int) -> Sample:
    gc.collect()
    with common.GcPauses() as gc_pauses:
        async with common.Ticker() as ticker:
            started = time.perf_counter()
            seen = 0
            async for _ in contender.scan(fetch_size):
                seen += 1
            took = time.perf_counter() - started
    if seen != common.PRELOADED_ROWS:
        raise RuntimeError(f"{contender.key} scanned {seen} rows, expected {common.PRELOADED_ROWS}")
    return Sample(
        seen / took,
        {
            "largest_gap_ms": ticker.largest_gap * 1000,
            "largest_gc_pause_ms": gc_pauses.largest * 1000,
            "gc_collections": float(len(gc_pauses.pauses)),
            "seconds": took,
        },
    )


async def scan(contenders: list[Contender], rounds: int, fetch_size: int, log: Any) -> ScenarioResult:
    result = ScenarioResult(
        "scan", f"3. Scan of {common.PRELOADED_ROWS:,} rows, fetch_size({fetch_size})", "rows/s", True
    )
    for contender in contenders:
        await scan_once(contender, fetch_size)
    for r in range(rounds):
        for contender in common.rotated(contenders, r):
            result.samples.setdefault(contender.key, []).append(await scan_once(contender, fetch_size))
        log(
            f"  scan round {r + 1}/{rounds}: "
            + ", ".join(
                f"{c.key} {result.samples[c.key][-1].value:,.0f} rows/s "
                f"(gap {result.samples[c.key][-1].extra['largest_gap_ms']:.1f} ms)"
                for c in contenders
            )
        )
    return result


async def idle_gap(seconds: float) -> float:
    """Largest ticker gap of an idle loop over ``seconds``: the machine's own noise."""
    async with common.Ticker() as ticker:
        await asyncio.sleep(seconds)
    return ticker.largest_gap * 1000


async def scan_gc_variants(contenders: list[Contender], fetch_size: int, passes: int) -> dict[str, dict[str, float]]:
    """Median largest loop gap per contender with the garbage collector changed:

    * ``gc_off``: collector disabled, so what is left is the contender's own blocking;
    * ``gc_frozen``: ``gc.freeze()`` first (what long-running servers do after
      start-up), so full collections no longer walk the objects that existed before.
    """
    found: dict[str, dict[str, list[float]]] = {"gc_off": {}, "gc_frozen": {}}
    for p in range(passes):
        for contender in common.rotated(contenders, p):
            for mode in found:
                gc.collect()
                if mode == "gc_off":
                    gc.disable()
                else:
                    gc.freeze()
                try:
                    sample = await scan_once(contender, fetch_size)
                finally:
                    gc.enable()
                    gc.unfreeze()
                found[mode].setdefault(contender.key, []).append(sample.extra["largest_gap_ms"])
    return {mode: {key: common.median(gaps) for key, gaps in by_key.items()} for mode, by_key in found.items()}
