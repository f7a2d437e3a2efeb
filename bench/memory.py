"""Scenario 5: RSS before and after N point reads, in a fresh process per contender.

``python -m bench.memory --contender facade --reads 100000`` connects, warms
up (``--warmup`` reads), collects garbage, notes RSS and the number of
objects the collector tracks, does the reads (100 concurrent, one event
loop), collects again and notes them again; RSS is also sampled every tenth
of the run, so a steady climb (a leak) can be told from a one-off step
(an allocator arena). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import common
from .contenders import ALL


def rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


async def _measure(contender: Any, reads: int, warmup: int, concurrency: int) -> dict[str, Any]:
    from .scenarios import drive

    await drive(contender.read, common.key_sequence(warmup, seed=1000), concurrency)
    gc.collect()
    before = rss()
    objects_before = len(gc.get_objects())
    collections_before = [s["collections"] for s in gc.get_stats()]
    checkpoints = [before]
    step = max(reads // 10, 1)
    started = time.perf_counter()
    for i in range(0, reads, step):
        await drive(contender.read, common.key_sequence(min(step, reads - i), seed=2000 + i), concurrency)
        checkpoints.append(rss())
    took = time.perf_counter() - started
    gc.collect()
    after = rss()
    return {
        "contender": contender.key,
        "reads": reads,
        "warmup": warmup,
        "concurrency": concurrency,
        "seconds": took,
        "rss_before": before,
        "rss_after": after,
        "growth_pct": (after - before) / before * 100,
        "rss_checkpoints": checkpoints,
        "gc_objects_before": objects_before,
        "gc_objects_after": len(gc.get_objects()),
        "gc_collections_by_generation": [
            s["collections"] - b for s, b in zip(gc.get_stats(), collections_before, strict=False)
        ],
        "gc_count_after": list(gc.get_count()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contender", required=True, choices=[c.key for c in ALL])
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    node = common.connect("bench_memory")
    contender = next(c for c in ALL if c.key == args.contender)()

    async def run() -> dict[str, Any]:
        await contender.setup(node)
        if contender.unavailable:
            return {"contender": contender.key, "unavailable": contender.unavailable}
        return await _measure(contender, args.reads, args.warmup, args.concurrency)

    with node.app.app_context():
        found = asyncio.run(run())
    node.shutdown()
    print("RESULT " + json.dumps(found), flush=True)


def run_in_subprocess(contender: str, reads: int, warmup: int, concurrency: int, log_path: Path) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    with open(log_path, "a") as log:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.memory",
                "--contender",
                contender,
                "--reads",
                str(reads),
                "--warmup",
                str(warmup),
                "--concurrency",
                str(concurrency),
            ],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            timeout=1800,
        )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"contender": contender, "unavailable": f"exit status {completed.returncode}; see {log_path.name}"}


if __name__ == "__main__":
    main()
