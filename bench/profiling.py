"""Where each contender's per-operation CPU time goes, on the event loop's thread.

pyinstrument samples the loop's thread while a contender runs the workload
of scenario 1 (point reads) or 2 (inserts), 100 concurrent. Its clock is
set to the thread's **CPU time** (``time.thread_time``) instead of wall
time: on a machine shared with other people's work, a thread spends much
of its wall time waiting for a core, and a wall-clock sampler charges those
waits to whatever line happened to be running, in lumps. With the CPU
clock, only the thread's own work is counted.

The profiler's own cost is per Python call, so it inflates call-heavy code
(``copy.deepcopy``, cqlengine's statement classes) more than C calls; the
figures are therefore given as each function's *share* of the profiled CPU
time, and as an estimate in µs per operation = share × the loop thread's CPU
per operation measured on the same workload *without* the profiler.

The driver's own I/O thread (socket reads, row decoding, the bridge's
callbacks) is not sampled; its cost is in the "whole process" CPU figures
of results.md.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import common
from .contenders import Contender
from .scenarios import drive

IDLE = {"select", "poll", "epoll", "EpollSelector.select"}


@dataclass
class Profile:
    contender: str
    workload: str
    operations: int
    #: the loop thread's / whole process's CPU per operation, measured without the profiler
    loop_cpu_us: float = 0.0
    process_cpu_us: float = 0.0
    #: the same with the garbage collector disabled: the difference is what collections cost
    loop_cpu_gc_off_us: float = 0.0
    #: CPU seconds recorded by the profiler in total
    profiled: float = 0.0
    #: (function, file) -> CPU seconds with the function on top of the stack
    own: dict[tuple[str, str], float] = field(default_factory=dict)
    #: (function, file) -> CPU seconds with the function anywhere on the stack (once per stack)
    inclusive: dict[tuple[str, str], float] = field(default_factory=dict)
    tree: str = ""

    def share(self, seconds: float) -> float:
        return seconds / self.profiled if self.profiled else float("nan")

    def estimate_us(self, seconds: float) -> float:
        """µs per operation, scaled to the unprofiled CPU per operation."""
        return self.share(seconds) * self.loop_cpu_us

    def top(
        self, table: dict[tuple[str, str], float], count: int, keep: Callable[[str, str], bool] = lambda f, p: True
    ) -> list[tuple[str, str, float]]:
        rows = [(f, p, t) for (f, p), t in table.items() if keep(f, p)]
        return sorted(rows, key=lambda r: -r[2])[:count]


def _where(frame: Any) -> str:
    path = frame.file_path_short or frame.file_path or "?"
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def _name(frame: Any) -> str:
    owner = getattr(frame, "class_name", None)
    return f"{owner}.{frame.function}" if owner else frame.function


def _walk(frame: Any, profile: Profile, ancestors: frozenset[tuple[str, str]]) -> None:
    key = (_name(frame), _where(frame))
    real = [c for c in frame.children if not c.is_synthetic]
    own = frame.time - sum(c.time for c in real)  # includes "[self]" children
    if own > 0:
        profile.own[key] = profile.own.get(key, 0.0) + own
    if key not in ancestors:
        profile.inclusive[key] = profile.inclusive.get(key, 0.0) + frame.time
    for child in real:
        _walk(child, profile, ancestors | {key})


async def _workload(
    contender: Contender, workload: str, operations: int
) -> tuple[Callable[[Any], Awaitable[Any]], list[Any]]:
    if workload == "reads":
        return contender.read, common.key_sequence(operations, seed=4242)
    values = common.user_values(7)

    async def insert(key: Any) -> Any:
        return await contender.insert(key, values)

    return insert, [uuid.uuid4() for _ in range(operations)]


async def profile(contender: Contender, workload: str, operations: int, concurrency: int, interval: float) -> Profile:
    from pyinstrument import Profiler
    from pyinstrument.stack_sampler import get_stack_sampler

    operation, items = await _workload(contender, workload, operations)
    found = Profile(contender.key, workload, operations)
    await drive(operation, items[: min(operations, 1000)], concurrency)  # warm
    loop_cpu, process_cpu = time.thread_time(), time.process_time()
    await drive(operation, items, concurrency)
    found.loop_cpu_us = (time.thread_time() - loop_cpu) / operations * 1e6
    found.process_cpu_us = (time.process_time() - process_cpu) / operations * 1e6
    gc.collect()
    gc.disable()
    try:
        loop_cpu = time.thread_time()
        await drive(operation, items, concurrency)
        found.loop_cpu_gc_off_us = (time.thread_time() - loop_cpu) / operations * 1e6
    finally:
        gc.enable()

    sampler = get_stack_sampler()
    sampler.timer_func = time.thread_time  # sample this thread's CPU time, not wall time
    profiler = Profiler(interval=interval, async_mode="disabled")
    try:
        profiler.start()
        await drive(operation, items, concurrency)
        session = profiler.stop()
    finally:
        sampler.timer_func = None
    root = session.root_frame()
    if root is not None:
        found.profiled = root.time
        _walk(root, found, frozenset())
    # Library frames are folded by default; keep the ORM's, the facade's and the contenders' open.
    found.tree = profiler.output_text(
        unicode=False,
        color=False,
        show_all=False,
        processor_options={
            "show_regex": r".*(cqlengine|flask_cqlalchemy|aiocqlengine|bench)/.*",
            "filter_threshold": 0.01,
        },
    )
    return found


def _is_orm(function: str, path: str) -> bool:
    return path.startswith(("flask_cqlalchemy", "cassandra/cqlengine", "aiocqlengine")) or "contenders.py" in path


def by_package(p: Profile) -> dict[str, float]:
    """Estimated µs per operation of own time, grouped by package."""
    grouped: dict[str, float] = defaultdict(float)
    for (_function, path), seconds in p.own.items():
        if path.startswith("cassandra/cqlengine"):
            package = "cqlengine (ORM)"
        elif path.startswith("cassandra"):
            package = "cassandra-driver core"
        elif path.startswith(("asyncio", "selectors")):
            package = "asyncio"
        elif path.startswith("flask_cqlalchemy"):
            package = "flask_cqlalchemy"
        elif path.startswith("aiocqlengine"):
            package = "aiocqlengine"
        elif path.startswith("bench"):
            package = "benchmark harness / raw bridge"
        elif path in ("copy.py", "uuid.py", "threading.py", "<built-in>"):
            package = f"stdlib {path}"
        else:
            package = "other"
        grouped[package] += p.estimate_us(seconds)
    return dict(sorted(grouped.items(), key=lambda kv: -kv[1]))


def summarize(profiles: list[Profile], top: int = 15) -> str:
    lines = [
        "# Where the event loop's CPU time goes, per operation (pyinstrument)",
        "",
        "Generated by `make bench` (`bench/profiling.py`). pyinstrument sampled the event loop's thread on its "
        "**CPU clock** (`time.thread_time`) while the contender ran the workload of scenario 1 or 2, 100 "
        "concurrent in one loop. *Share* is the share of the profiled CPU time; *est. µs/op* scales that share "
        "to the loop thread's CPU per operation measured without the profiler (the profiler's per-call cost "
        "inflates call-heavy code, so shares lean towards cqlengine's many small calls). The driver's I/O "
        "thread is not sampled. Call trees: `profile_*_tree.txt` beside this file.",
        "",
        "| contender, workload | loop thread CPU/op (no profiler) | the same with GC disabled | whole process CPU/op |",
        "|---|---:|---:|---:|",
    ]
    for p in profiles:
        lines.append(
            f"| {p.contender} {p.workload} | {p.loop_cpu_us:.0f} µs | {p.loop_cpu_gc_off_us:.0f} µs "
            f"| {p.process_cpu_us:.0f} µs |"
        )
    lines.append("")
    for p in profiles:
        lines += [
            f"## {p.contender}: {p.workload}, {p.operations:,} operations",
            "",
            "Own time (the function itself on top of the stack):",
            "",
            "| share | est. µs/op | function | file |",
            "|---:|---:|---|---|",
        ]
        for function, path, seconds in p.top(p.own, top):
            lines.append(f"| {p.share(seconds) * 100:.1f} % | {p.estimate_us(seconds):.1f} | `{function}` | `{path}` |")
        lines += [
            "",
            "Inclusive time of the facade's / ORM's functions (anywhere on the stack):",
            "",
            "| share | est. µs/op | function | file |",
            "|---:|---:|---|---|",
        ]
        for function, path, seconds in p.top(p.inclusive, top, _is_orm):
            lines.append(f"| {p.share(seconds) * 100:.1f} % | {p.estimate_us(seconds):.1f} | `{function}` | `{path}` |")
        lines.append("")
    return "\n".join(lines)
