"""The node goes away while the async example app serves requests.

The app (examples/async_app) runs in waitress with 8 threads, in its own
process, against a throw-away node (``scripts/cassandra --faults``:
127.0.0.4:9044), so stopping that node never touches the suite's node.
While the node hangs (SIGSTOP) or is stopped, every request must answer 503
with the extension's JSON error within the configured driver timeout, never
500 and never hang; once the node is back, the same server process answers
200 again without a restart.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from flask_cqlalchemy import runner

from .support.launcher import LocalCluster, local_cluster
from .support.server import ServerProcess, waitress_app

pytestmark = pytest.mark.slow

KEYSPACE = "faults_notes"
# The driver's per-request timeout configured for the app: short, so a hung
# node costs little, but well above what a healthy node takes on a busy box.
REQUEST_TIMEOUT = 3.0
CONNECT_TIMEOUT = 2.0
RECONNECT_DELAY = 1.0  # ConstantReconnectionPolicy: how often a down node is retried
# What a request may take beyond the driver's timeout: Flask, waitress and
# HTTP on a busy 2-core machine. A hang would take the 30 s client timeout.
MARGIN = 1.5
RECOVERY_LIMIT = 30.0
UNAVAILABLE = {"NoHostAvailable", "OperationTimedOut", "Unavailable", "ReadTimeout", "WriteTimeout"}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with local_cluster("faults") as cluster:
        # The app creates its keyspace and tables when it starts with the node
        # up; a few hundred requests then warm the fresh node's JIT, so its
        # first slow answers do not pass for faults.
        with serve(cluster, tmp_path_factory.mktemp("schema") / "server.log", create_schema=True) as server:
            Client(server, "warm-up").both(300, concurrency=4)
        yield cluster


def serve(node: LocalCluster, log_path, **options) -> ServerProcess:
    return waitress_app(
        "tests.support.apps:notes_app",
        log_path,
        threads=8,
        hosts=node.hosts,
        port=node.port,
        keyspace=KEYSPACE,
        request_timeout=REQUEST_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        reconnect_delay=RECONNECT_DELAY,
        **options,
    )


class Client:
    """Writes and reads notes through the app and times every request."""

    def __init__(self, server: ServerProcess, user: str) -> None:
        self.server, self.user = server, user
        self.note_id: str | None = None

    def write(self) -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = self.server.post(f"/users/{self.user}/notes", json={"title": "still there?"})
        took = time.monotonic() - started
        if response.status_code == 201:
            self.note_id = response.json()["note_id"]
        return response, took

    def read(self) -> tuple[requests.Response, float]:
        if self.note_id is None:  # nothing written yet to read back
            return self.write()
        started = time.monotonic()
        response = self.server.get(f"/users/{self.user}/notes/{self.note_id}")
        return response, time.monotonic() - started

    def both(self, n: int, concurrency: int = 1) -> list[tuple[requests.Response, float]]:
        """``n`` requests, writes and reads alternating."""
        calls: list[Callable[[], tuple[requests.Response, float]]] = [
            self.write if i % 2 == 0 else self.read for i in range(n)
        ]
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda call: call(), calls))

    def wait_for_200(self, limit: float = RECOVERY_LIMIT) -> float:
        """Seconds until a read answers 200 again (polling every 0.1 s)."""
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < limit:
            response, _ = self.read()
            if response.status_code == 200:
                return time.monotonic() - started
            statuses.append(response.status_code)
            time.sleep(0.1)
        raise AssertionError(
            f"no 200 within {limit} s after the node came back; statuses seen: {sorted(set(statuses))}"
        )


def assert_all_ok(results, phase: str) -> None:
    bad = [(r.status_code, r.text[:300]) for r, _ in results if r.status_code not in (200, 201)]
    assert not bad, f"{phase}: {len(bad)} of {len(results)} requests failed: {bad[:5]}"


def assert_all_503_within(results, limit: float, phase: str) -> float:
    """Every request answered the extension's JSON 503 within ``limit`` seconds; returns the slowest."""
    for response, took in results:
        assert response.status_code == 503, f"{phase}: expected 503, got {response.status_code}: {response.text[:500]}"
        body = response.json()
        assert body["error"] == "database unavailable", body
        assert body["message"] in UNAVAILABLE, body
        assert "Traceback" not in response.text
        assert took <= limit, f"{phase}: a request took {took:.2f} s, more than the {limit:.1f} s allowed"
    return max(took for _, took in results)


class BackgroundTraffic:
    """Clients that write and read without pause for the whole test, each
    request labelled with the phase (set by the test) in which it started."""

    def __init__(self, server: ServerProcess, clients: int = 3) -> None:
        self.phase = "healthy"
        self.phase_started = time.monotonic()
        self.phase_times = {"healthy": self.phase_started}
        self.records: list[tuple[str, float, int, str, float]] = []  # phase, started, status, body, seconds
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(Client(server, f"faults-bg-{n}"),), daemon=True)
            for n in range(clients)
        ]

    def set_phase(self, phase: str) -> None:
        self.phase, self.phase_started = phase, time.monotonic()
        self.phase_times[phase] = self.phase_started

    def _run(self, client: Client) -> None:
        while not self._stop.is_set():
            phase, started = self.phase, time.monotonic()
            try:
                response, took = client.write() if client.note_id is None or len(self.records) % 2 else client.read()
                status, body = response.status_code, response.text[:300]
            except requests.RequestException as exc:  # a hang past the client's 30 s, a reset
                status, body, took = 0, f"{type(exc).__name__}: {exc}", time.monotonic() - started
            self.records.append((phase, started, status, body, took))

    def __enter__(self) -> BackgroundTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def counts(self) -> dict[str, Counter[int]]:
        counts: dict[str, Counter[int]] = {}
        for phase, _, status, _, _ in self.records:
            counts.setdefault(phase, Counter())[status] += 1
        return counts


def assert_no_unhandled_error(server: ServerProcess) -> None:
    """Flask logs "Exception on <path>" with the traceback of every error that
    became a 500. (The driver's own warnings about refused connections carry
    tracebacks too; those are not the app failing.)"""
    log = server.log()
    assert "Exception on " not in log, f"the app failed with an unhandled exception:\n{log[-4000:]}"


def test_node_hangs_then_stops_requests_fail_fast_with_503_and_recover(node, tmp_path, record_figure):
    with serve(node, tmp_path / "server.log", retry_connect=True, create_schema=False) as server:
        client = Client(server, "faults-1")
        with BackgroundTraffic(server) as traffic:
            assert_all_ok(client.both(20), "healthy node")

            # The node hangs: its sockets stay open but nothing answers, so
            # only the driver's request timeout can end a request.
            traffic.set_phase("hung")
            node.pause()
            try:
                # 4 at once + 3 background clients: fewer than waitress's 8
                # threads, so no request also waits for a thread.
                hung = client.both(8, concurrency=4) + client.both(2)
            finally:
                node.resume()
            traffic.set_phase("resumed")
            slowest_hung = assert_all_503_within(hung, REQUEST_TIMEOUT + MARGIN, "hung node")
            recovered_from_hang = client.wait_for_200()
            assert_all_ok(client.both(20), "after the node resumed")

            # The node stops (drains, then exits): connections are closed, then refused.
            traffic.set_phase("stopping")
            stop_took = node.stop()
            down_since = time.monotonic()
            traffic.set_phase("down")
            stopped = client.both(12, concurrency=4) + client.both(8)
            slowest_stopped = assert_all_503_within(stopped, CONNECT_TIMEOUT + MARGIN, "stopped node")
            traffic.set_phase("starting")  # the node answers before `start` returns
            start_took = node.start()
            traffic.set_phase("restarted")
            recovery = client.wait_for_200()
            downtime = time.monotonic() - down_since
            traffic.set_phase("recovered")
            assert_all_ok(client.both(40, concurrency=4), "after the node restarted")
            time.sleep(1.0)
        assert_no_unhandled_error(server)

    # Every request of the background clients, whatever the moment: a 2xx or
    # the JSON 503, never past the driver timeout (+ margin), never a 500.
    for phase, started, status, body, took in traffic.records:
        assert status in (200, 201, 503), f"background request in phase {phase!r}: {status} {body}"
        if status == 503:
            assert '"database unavailable"' in body, body
        assert took <= REQUEST_TIMEOUT + MARGIN, (
            f"background request in phase {phase!r} took {took:.2f} s: {status} {body}"
        )
        # Requests wholly inside a healthy stretch must succeed (one still in
        # flight when the node was paused is a fault request, rightly a 503).
        healthy = phase == "healthy" and started + took < traffic.phase_times["hung"]
        if healthy or (phase == "recovered" and started > traffic.phase_times["recovered"] + 1.0):
            assert status in (200, 201), f"background request in phase {phase!r}: {status} {body}"
    counts = {phase: dict(sorted(c.items())) for phase, c in traffic.counts().items()}
    assert counts.get("hung", {}).get(503) and counts.get("down", {}).get(503), counts

    record_figure(
        f"faults, hung node (SIGSTOP): {len(hung)} requests all 503 in at most {slowest_hung:.2f} s "
        f"(driver request timeout {REQUEST_TIMEOUT} s); first 200 {recovered_from_hang:.2f} s after resume"
    )
    record_figure(
        f"faults, stopped node (stop took {stop_took:.1f} s): {len(stopped)} requests all 503 in at most "
        f"{slowest_stopped * 1000:.0f} ms; restart took {start_took:.1f} s; first 200 {recovery:.2f} s after "
        f"`start` returned (reconnection every {RECONNECT_DELAY} s; {downtime:.1f} s down in all), same server process"
    )
    record_figure(
        f"faults, background clients (3, no pause) by phase, status: count: {counts}; slowest "
        f"{max(r[4] for r in traffic.records):.2f} s"
    )


@pytest.mark.parametrize(
    "connect_mode",
    [{"retry_connect": True}, {"lazy_connect": True, "retry_connect": False}],
    ids=["retry_connect", "lazy_connect"],
)
def test_app_started_while_node_down_answers_503_then_200(node, tmp_path, record_figure, connect_mode):
    node.stop()
    try:
        with serve(node, tmp_path / "server.log", create_schema=False, **connect_mode) as server:
            client = Client(server, "faults-2")
            threads_before = server.get("/_test/stats").json()["threads"]
            writes = [client.write() for _ in range(10)]
            slowest = assert_all_503_within(writes, CONNECT_TIMEOUT + MARGIN, "node down since the app started")
            # A failed connection attempt must not leave its threads behind.
            # It runs in the default executor of the request's event loop:
            # per request, Flask closes that loop and its executor (without
            # waiting) when the view returns; per thread (the example's
            # setting), every loop shares one bounded executor that lives on,
            # whose idle threads are not the attempt's. Give them a moment.
            deadline = time.monotonic() + 5
            while True:
                stats = server.get("/_test/stats").json()
                others = [n for n in stats["thread_names"] if not n.startswith(runner.EXECUTOR_THREAD_PREFIX)]
                pool = len(stats["thread_names"]) - len(others)
                if len(others) <= threads_before + 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert len(others) <= threads_before + 2, stats["thread_names"]
            assert pool <= runner.EXECUTOR_WORKERS, stats["thread_names"]

            start_took = node.start()
            started = time.monotonic()
            while True:
                response, _ = client.write()
                if response.status_code == 201:
                    break
                assert response.status_code == 503, response.text[:500]
                assert time.monotonic() - started < RECOVERY_LIMIT, "no 201 after the node came back"
                time.sleep(0.1)
            recovery = time.monotonic() - started
            assert_all_ok(client.both(20, concurrency=4), "after the node came up")
            assert_no_unhandled_error(server)
    finally:
        node.start()  # whatever happened, the next test finds the node up (a no-op if it is)
    record_figure(
        f"faults, app started with the node down ({next(iter(connect_mode))}): 10 writes all 503 in at most "
        f"{slowest * 1000:.0f} ms; first 201 {recovery:.2f} s after the node (start took {start_took:.1f} s) was back"
    )
