"""Per-request event loops, a loop that never blocks, cancellation, concurrency.

Flask runs each ``async def`` view in a fresh loop on a fresh thread and
closes it afterwards; these tests prove nothing is bound to a loop, later
pages never block the loop, and abandoned awaits leave no trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cassandra.cluster import ResponseFuture
from cassandra.cqlengine import management
from flask import jsonify

from flask_cqlalchemy import execution
from flask_cqlalchemy.aio import AsyncCQLAlchemy

from .conftest import make_app

app = make_app(__name__)
adb = AsyncCQLAlchemy(app)
db = adb.sync


class LoopRow(adb.Model):
    bucket = adb.columns.Integer(partition_key=True)
    seq = adb.columns.Integer(primary_key=True)
    body = adb.columns.Text()


@app.get("/rows/<int:bucket>/<int:seq>")
async def get_row(bucket: int, seq: int):
    row = await LoopRow.aget_or_404(bucket=bucket, seq=seq)
    count = await LoopRow.objects(bucket=bucket).acount()
    return jsonify(body=row.body, count=count, loop=id(asyncio.get_running_loop()))


@app.get("/abandon/<int:bucket>")
async def abandon(bucket: int):
    # Starts a query and returns without awaiting it: the request's loop is
    # closed while the driver is still working.
    asyncio.ensure_future(LoopRow.objects(bucket=bucket).aall())
    return "started"


@pytest.fixture()
def rows(clean_db):
    for seq in range(10):
        LoopRow.create(bucket=1, seq=seq, body=f"b{seq}")


class Ticker:
    """Measures the largest gap between wake-ups of a 1 ms sleeper; with a
    ``probe``, also records what it returns at each wake-up."""

    def __init__(self, probe: Callable[[], object] | None = None) -> None:
        self.largest_gap = 0.0
        self.seen: list[object] = []
        self._probe = probe
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.largest_gap = max(self.largest_gap, now - last)
            last = now
            if self._probe is not None:
                self.seen.append(self._probe())

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@contextlib.contextmanager
def quiet_collector():
    """Freeze what exists so a full garbage collection of the test session's
    heap (tens of ms, nothing to do with I/O) does not pass for a blocked
    loop; yields the GC pauses that still happen."""
    pauses: list[float] = []
    started = [0.0]

    def timer(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.collect()
    gc.freeze()
    gc.callbacks.append(timer)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(timer)
        gc.unfreeze()


@pytest.fixture()
def driver_errors(caplog):
    """Errors logged by the driver or asyncio during the test."""
    caplog.set_level(logging.WARNING)

    def errors() -> list[str]:
        gc.collect()
        return [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith(("cassandra", "asyncio", "flask_cqlalchemy")) and r.levelno >= logging.ERROR
        ]

    return errors


def test_two_hundred_requests_each_in_its_own_loop(rows):
    client = app.test_client()
    loops = set()
    for i in range(200):
        response = client.get(f"/rows/1/{i % 10}")
        assert response.status_code == 200, response.text
        assert response.json["body"] == f"b{i % 10}" and response.json["count"] == 10
        loops.add(response.json["loop"])
    assert client.get("/rows/1/99").status_code == 404
    assert len(loops) > 1  # really distinct loops, not one reused


def test_concurrent_requests_on_a_threaded_wsgi_server(rows):
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    port = server.effective_port
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:

        def fetch(i: int) -> tuple[int, str]:
            response = requests.get(f"http://127.0.0.1:{port}/rows/1/{i % 10}", timeout=30)
            return response.status_code, response.json()["body"]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(fetch, range(400)))
        assert results == [(200, f"b{i % 10}") for i in range(400)]
    finally:
        server.close()


def test_scan_of_ten_thousand_rows_never_blocks_the_loop(clean_db, record_figure, monkeypatch):
    async def load():
        for start in range(0, 10_000, 500):
            await asyncio.gather(*(LoopRow.acreate(bucket=7, seq=s, body="x" * 20) for s in range(start, start + 500)))

    asyncio.run(load())

    blocking_waits = []
    loop_threads = set()
    original_result = ResponseFuture.result

    def spying_result(self):  # a blocking wait on a ResponseFuture
        if threading.get_ident() in loop_threads:
            blocking_waits.append(self.query)
        return original_result(self)

    monkeypatch.setattr(ResponseFuture, "result", spying_result)

    async def scan():
        loop_threads.add(threading.get_ident())
        seen: list[int] = []
        # The ticker notes how many rows were handed out each time it runs.
        async with Ticker(probe=lambda: len(seen)) as ticker:
            async for row in LoopRow.objects(bucket=7).fetch_size(100):
                seen.append(row.seq)
        return seen, ticker

    with quiet_collector() as pauses:
        seen, ticker = asyncio.run(scan())
    assert seen == list(range(10_000))  # each row exactly once, in order
    assert blocking_waits == []  # no page waited for on the loop's thread
    # Other tasks ran in the middle of pages too, not only between them: the
    # stream hands the loop back while it turns a page's rows into instances.
    assert any(count % 100 for count in ticker.seen), ticker.seen[:50]
    # How long the loop went without a turn depends on the machine (and on
    # the driver's own thread holding the GIL): a figure, not an assertion.
    record_figure(
        f"largest loop gap during async for over 10,000 rows at fetch_size(100): {ticker.largest_gap * 1000:.1f} ms "
        f"(largest GC pause {max(pauses, default=0) * 1000:.1f} ms)"
    )


def test_sync_db_runs_off_the_loop(module_db, record_figure, monkeypatch):
    scratch = AsyncCQLAlchemy(make_app("scratch", CASSANDRA_KEYSPACE="flask_cqlalchemy_scratch"))

    # Kept referenced: a model nothing refers to is no longer a subclass of
    # Model once collected, and sync_db would not see it.
    tables = [
        type(scratch.Model)(
            name,
            (scratch.Model,),
            {
                "__module__": __name__,
                "key": scratch.columns.Text(primary_key=True),
                "value": scratch.columns.Text(),
                "count": scratch.columns.Integer(),
            },
        )
        for name in ("scratch_a", "scratch_b", "scratch_c")
    ]
    assert scratch.sync.models == tables
    first = tables[0]

    # Each table's sync (cqlengine's sync_table, which sync_db calls) notes
    # its thread, and before it returns waits until the loop has turned
    # while it was running: the ticker, when it wakes up, hands that turn
    # over. On the loop's own thread the wait could only time out.
    syncing = threading.Event()
    loop_turned = threading.Event()
    sync_threads: list[int] = []
    turned_while_syncing: list[bool] = []
    original_sync_table = management.sync_table

    def spying_sync_table(model, *args, **kwargs):
        sync_threads.append(threading.get_ident())
        loop_turned.clear()
        syncing.set()
        try:
            result = original_sync_table(model, *args, **kwargs)
            turned_while_syncing.append(loop_turned.wait(10))
            return result
        finally:
            syncing.clear()

    def on_tick() -> None:
        if syncing.is_set():
            loop_turned.set()

    async def scenario():
        await scratch.drop_keyspace("flask_cqlalchemy_scratch")
        await scratch.create_keyspace_simple("flask_cqlalchemy_scratch", 1)
        monkeypatch.setattr(management, "sync_table", spying_sync_table)
        async with Ticker(probe=on_tick) as ticker:
            started = time.perf_counter()
            await scratch.sync_db()
            took = time.perf_counter() - started
        monkeypatch.setattr(management, "sync_table", original_sync_table)
        await first.acreate(key="k", value="v")
        assert (await first.aget(key="k")).value == "v"
        await scratch.drop_keyspace("flask_cqlalchemy_scratch")
        return threading.get_ident(), ticker.largest_gap, took

    try:
        with quiet_collector():
            loop_thread, gap, took = asyncio.run(scenario())
    finally:
        scratch.sync.shutdown()
    # Run on the loop, sync_db would stall it for its whole duration; in a
    # worker thread the loop keeps turning while each table is created.
    assert len(sync_threads) == 3 and loop_thread not in sync_threads, (loop_thread, sync_threads)
    assert turned_while_syncing == [True, True, True]
    # How long the loop went without a turn depends on the machine: a figure.
    record_figure(
        f"largest loop gap during await sync_db() of 3 new tables (took {took * 1000:.0f} ms): {gap * 1000:.1f} ms"
    )


def test_cancelled_awaits_leave_no_error_and_next_request_works(rows, driver_errors):
    unhandled = []

    async def scenario():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))
        for _ in range(50):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(LoopRow.objects(bucket=1).fetch_size(2).aall(), timeout=0.0001)
        await asyncio.sleep(0.5)  # let the abandoned answers arrive
        return await LoopRow.aget(bucket=1, seq=3)

    row = asyncio.run(scenario())
    assert row.body == "b3"
    gc.collect()
    assert unhandled == [] and driver_errors() == []


def test_answer_after_its_loop_closed_is_dropped_quietly(rows, driver_errors):
    loop = asyncio.new_event_loop()

    async def start():
        await execution.ensure_connected(LoopRow._get_connection())
        return execution.send(LoopRow.objects(bucket=1)._capture_select())

    pending = loop.run_until_complete(start())
    loop.close()
    time.sleep(0.5)
    assert not pending.done()
    assert asyncio.run(LoopRow.aget(bucket=1, seq=1)).body == "b1"
    assert driver_errors() == []


def test_views_that_end_before_their_queries_leave_no_trace(rows, driver_errors):
    client = app.test_client()
    for _ in range(100):
        assert client.get("/abandon/1").status_code == 200
    time.sleep(0.5)
    assert client.get("/rows/1/2").json["body"] == "b2"
    assert driver_errors() == []


def test_early_break_from_async_for_drops_the_page_ahead(rows, driver_errors):
    async def scenario():
        async for row in LoopRow.objects(bucket=1).fetch_size(2):
            if row.seq == 1:
                break
        await asyncio.sleep(0.2)
        return await LoopRow.objects(bucket=1).acount()

    assert asyncio.run(scenario()) == 10
    assert driver_errors() == []


def test_thousand_concurrent_agets_in_one_loop(clean_db):
    keys = [(uuid.uuid4().int % 50, i) for i in range(1000)]

    async def scenario():
        await asyncio.gather(*(LoopRow.acreate(bucket=b, seq=s, body=f"{b}-{s}") for b, s in keys))
        found = await asyncio.gather(*(LoopRow.aget(bucket=b, seq=s) for b, s in keys))
        return [row.body for row in found]

    assert asyncio.run(scenario()) == [f"{b}-{s}" for b, s in keys]
