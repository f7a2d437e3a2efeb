"""Many concurrent HTTP clients: one thread and one keep-alive session each."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import requests


@dataclass
class LoadResult:
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # exceptions and unexpected statuses, first ones
    error_count: int = 0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0

    def summary(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.1f} s ({self.requests / self.seconds:.0f}/s), "
            f"statuses {dict(sorted(self.statuses.items()))}, errors {self.error_count}, "
            f"latency p50 {self.percentile(0.5) * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms, "
            f"max {max(self.latencies, default=0) * 1000:.0f} ms"
        )


#: One request: (session, request number) -> response; the response is
#: "ok" when ``expected(response)`` says so.
Request = Callable[[requests.Session, int], requests.Response]


def hammer(
    request: Request, total: int, concurrency: int, expected: Callable[[requests.Response], bool] = lambda r: r.ok
) -> LoadResult:
    """Send ``total`` requests from ``concurrency`` threads; every thread keeps
    its own session (keep-alive connection) for all of its requests."""
    result = LoadResult()
    numbers = itertools.count()
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    i = next(numbers)
                if i >= total:
                    return
                started = time.perf_counter()
                try:
                    response = request(session, i)
                    status, ok, what = response.status_code, expected(response), response.text[:200]
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    status, ok, what = 0, False, f"{type(exc).__name__}: {exc}"
                took = time.perf_counter() - started
                with lock:
                    result.requests += 1
                    result.statuses[status] += 1
                    result.latencies.append(took)
                    if not ok:
                        result.error_count += 1
                        if len(result.errors) < 20:
                            result.errors.append(f"#{i}: {status} {what}")

    threads = [threading.Thread(target=worker, name=f"load-client-{n}") for n in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result
