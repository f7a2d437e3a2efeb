"""Scenario 4: a view needing 10 independent reads, over a real WSGI server.

The server (:mod:`bench.http_app`, waitress with 8 threads) runs in its own
process on a loopback port; this process drives it with a thread pool of
clients, each with its own ``requests.Session`` (keep-alive). Every round
sends the same number of requests to every view, the order of the views
rotating from round to round; each request's latency is measured by the
client (send to last byte).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import common

#: (view path, label); the first one is the baseline
VIEWS = [
    ("/sync", "sync view, 10 reads one after another (BenchUser.get)"),
    ("/facade", "async view, asyncio.gather of 10 BenchUser.aget (facade)"),
    ("/raw", "async view, gather of 10 raw prepared execute_async"),
    ("/threadpool", "async view, gather of 10 sync_to_async(Model.get)"),
]
DIAGNOSTIC_VIEWS = [
    ("/noop_sync", "sync view, no query (fixed cost of a request)"),
    ("/noop_async", "async view, no query (fixed cost of Flask's async bridge)"),
]
PROBE_VIEWS = [
    ("/aiocqlengine_bound_once", "aiocqlengine, session bound once at start-up (its README's way)"),
    ("/aiocqlengine_rebound", "aiocqlengine, session re-bound to each request's loop"),
]
REQUEST_TIMEOUT = 10.0
PROBE_TIMEOUT = 5.0


@dataclass
class ViewSamples:
    path: str
    label: str
    #: per round: the latencies (seconds) of that round's requests
    rounds: list[list[float]] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


@dataclass
class HttpResult:
    clients: int
    per_round: int
    views: dict[str, ViewSamples] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)


class Server:
    """``python -m bench.http_app`` in a subprocess, on a free loopback port."""

    def __init__(self, log_path: Path, threads: int = 8) -> None:
        self.log_path = log_path
        self.threads = threads
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> Server:
        root = Path(__file__).resolve().parent.parent
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.http_app", "--port", "0", "--threads", str(self.threads)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=os.environ.copy(),
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                break
            if not line and self.process.poll() is not None:
                break
        if not self.port:
            self.__exit__()
            raise RuntimeError(f"the benchmark's HTTP server did not start; see {self.log_path}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Clients:
    """A pool of client threads, each with its own keep-alive ``requests.Session``."""

    def __init__(self, count: int, timeout: float = REQUEST_TIMEOUT) -> None:
        self.count = count
        self.timeout = timeout
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="bench-client")

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _one(self, url: str) -> tuple[float, str | None]:
        started = time.perf_counter()
        try:
            response = self._session().get(url, timeout=self.timeout)
            body = response.content
            took = time.perf_counter() - started
        except requests.RequestException as exc:
            return time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return took, f"HTTP {response.status_code}: {body[:300]!r}"
        return took, None

    def run(self, url: str, count: int) -> list[tuple[float, str | None]]:
        return list(self._pool.map(self._one, [url] * count))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def measure(server: Server, clients: int, rounds: int, per_round: int, log: Any) -> HttpResult:
    result = HttpResult(clients, per_round)
    views = VIEWS + DIAGNOSTIC_VIEWS
    for path, label in views:
        result.views[path] = ViewSamples(path, label)
    pool = Clients(clients)
    try:
        for path, _ in views:  # warm-up: connections, prepared statements, keep-alive sessions
            pool.run(server.url(path), max(clients * 5, 20))
        for r in range(rounds):
            for path, _ in common.rotated(views, r):
                samples = result.views[path]
                outcomes = pool.run(server.url(path), per_round)
                samples.rounds.append([took for took, error in outcomes if error is None])
                for _, error in outcomes:
                    if error is not None:
                        samples.errors += 1
                        samples.first_error = samples.first_error or error
            log(
                f"  http ({clients} clients) round {r + 1}/{rounds}: "
                + ", ".join(f"{p} p50 {common.median(result.views[p].rounds[-1]) * 1000:.1f} ms" for p, _ in views)
            )
    finally:
        pool.close()
    return result


def probe_aiocqlengine(server: Server, clients: int, requests_count: int) -> dict[str, dict[str, Any]]:
    """Can aiocqlengine serve Flask's per-request loops? Count what its views answer."""
    found: dict[str, dict[str, Any]] = {}
    pool = Clients(clients, timeout=PROBE_TIMEOUT)
    try:
        for path, label in PROBE_VIEWS:
            outcomes = pool.run(server.url(path), requests_count)
            errors = [e for _, e in outcomes if e is not None]
            found[path] = {
                "label": label,
                "requests": requests_count,
                "ok": requests_count - len(errors),
                "errors": len(errors),
                "timeouts": sum("Timeout" in e for e in errors),
                "first_error": errors[0] if errors else "",
            }
    finally:
        pool.close()
    return found


def run(
    rounds: int, per_round: int, client_levels: list[int], probe_requests: int, workdir: Path, log: Any
) -> list[HttpResult]:
    results = []
    with Server(workdir / "http_server.log") as server:
        log(f"  HTTP server (waitress, {server.threads} threads) on 127.0.0.1:{server.port}")
        for clients in client_levels:
            results.append(measure(server, clients, rounds, per_round, log))
        if probe_requests and results:
            # Last: a request whose answer never reaches its (closed) loop keeps
            # a server thread waiting for good.
            results[-1].probes = probe_aiocqlengine(server, min(client_levels[-1], 4), probe_requests)
            for path, found in results[-1].probes.items():
                log(
                    f"  probe {path}: {found['ok']}/{found['requests']} ok, {found['errors']} errors "
                    f"({found['timeouts']} timeouts) {found['first_error'][:160]}"
                )
    return results
