"""CASSANDRA_ASYNC_LOOPS: one long-lived event loop per server thread.

One extension serves two apps (the app-factory pattern): ``per_thread``
with ``CASSANDRA_ASYNC_LOOPS = "per-thread"`` and ``per_request`` with
Flask's default. Where a view could tell the two apart only by speed, the
same requests go to both and must get the same answers; what differs on
purpose (the loop is kept, context variables do not leak into the next
request, pending tasks are logged, nested sync calls work) is asserted for
``per_thread``, with ``per_request`` showing what Flask's default does.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import logging
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from asgiref.wsgi import WsgiToAsgi
from cassandra.cqlengine import connection as cqlengine_connection
from flask import Flask, abort, copy_current_request_context, g, jsonify, request

from flask_cqlalchemy import CQLAlchemy, runner
from flask_cqlalchemy.aio import AsyncCQLAlchemy
from flask_cqlalchemy.errors import ConfigError

from .conftest import HOSTS, KEYSPACE, make_app
from .support.launcher import REPO_ROOT
from .support.server import clean_env

adb = AsyncCQLAlchemy()
db = adb.sync

REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request_var")
LEFT_BY_TEARDOWN: contextvars.ContextVar[str] = contextvars.ContextVar("left_by_teardown")
MEETING = threading.Barrier(2, timeout=10)
SHUTDOWN_STARTED = threading.Event()
SHUTDOWN_DONE = threading.Event()
events: list[str] = []
seen_loops: list[asyncio.AbstractEventLoop] = []
seen_threads: list[threading.Thread] = []


class LoopNote(adb.Model):
    note_id = adb.columns.UUID(primary_key=True, default=uuid.uuid4)
    body = adb.columns.Text()


async def sleeper() -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        events.append("sleeper cancelled")


async def ticks():
    try:
        for i in range(10):
            yield i
    finally:
        events.append("generator closed")


def build(name: str, **config: object) -> Flask:
    app = make_app(name, **config)

    @app.before_request
    async def remember_loop():
        g.before_loop = asyncio.get_running_loop()
        if request.path == "/var/from-before-request":
            REQUEST_VAR.set("set by before_request")

    @app.after_request
    async def check_loop(response):
        response.headers["X-Same-Loop"] = str(asyncio.get_running_loop() is g.before_loop)
        return response

    @app.get("/loop")
    async def loop_view():
        seen_loops.append(asyncio.get_running_loop())
        return str(id(asyncio.get_running_loop()))

    @app.post("/notes")
    async def create_note():
        note = await LoopNote.acreate(body=request.get_json()["body"])
        return jsonify(note_id=str(note.note_id)), 201

    @app.get("/notes/<uuid:note_id>")
    async def read_note(note_id):
        note = await LoopNote.aget(note_id=note_id)
        return jsonify(body=note.body)

    @app.get("/var/set")
    async def set_var():
        before = REQUEST_VAR.get("unset")
        REQUEST_VAR.set(f"set by {request.path}")
        return before

    @app.get("/var/from-before-request")
    async def var_async():
        return REQUEST_VAR.get("unset")

    @app.get("/var/sync")
    def var_sync():
        return REQUEST_VAR.get("unset")

    @app.get("/leave-a-task")
    async def leave_a_task():
        asyncio.get_running_loop().create_task(sleeper())
        await asyncio.sleep(0)
        return "left"

    @app.get("/leave-a-query")
    async def leave_a_query():
        asyncio.ensure_future(LoopNote.objects.limit(5).aall())
        return "left"

    @app.get("/leave-a-generator")
    async def leave_a_generator():
        async for tick in ticks():
            return str(tick)
        return "none"

    @app.get("/raise")
    async def raise_error():
        raise LookupError("boom")

    @app.get("/abort/<int:status>")
    async def abort_view(status):
        abort(status)

    @app.get("/cancelled")
    async def cancelled():
        raise asyncio.CancelledError()

    @app.get("/timeout")
    async def timeout():
        await asyncio.wait_for(asyncio.sleep(10), 0.01)

    @app.get("/teapot")
    async def teapot():
        raise KeyError("teapot")

    @app.errorhandler(KeyError)
    async def async_handler(error):
        return jsonify(handler_loop_is_views=asyncio.get_running_loop() is g.before_loop), 418

    @app.get("/copied-helper")
    async def copied_helper():
        @copy_current_request_context
        async def helper():
            await asyncio.sleep(0)
            return f"{request.path} in {threading.current_thread().name}"

        direct = helper()
        in_thread = await asyncio.to_thread(helper)
        return jsonify(direct=direct, in_thread=in_thread)

    @app.get("/calls-another-view")
    async def calls_another_view():
        inner = app.ensure_sync(loop_view)()
        return jsonify(outer=id(asyncio.get_running_loop()), inner=int(inner))

    @app.get("/executor")
    async def executor():
        seen_threads.append(await asyncio.to_thread(threading.current_thread))
        return "ok"

    @app.get("/shutdown-inside")
    async def shutdown_inside():
        seen_loops.append(asyncio.get_running_loop())
        runner.close_idle_loops()
        await asyncio.sleep(0)
        return str(asyncio.get_running_loop().is_closed())

    @app.teardown_request
    def teardown_sees(error):
        if request.path == "/var/from-before-request":
            events.append(f"teardown_request saw {REQUEST_VAR.get('unset')}")

    @app.teardown_appcontext
    async def teardown_sets(error):
        if REQUEST_VAR.get("unset") == "set by before_request":
            events.append(f"teardown_appcontext saw {REQUEST_VAR.get('unset')}")
        LEFT_BY_TEARDOWN.set("left by an async teardown")

    @app.get("/left-by-teardown")
    def left_by_teardown():
        return LEFT_BY_TEARDOWN.get("unset")

    @app.get("/stop-the-loop")
    async def stop_the_loop():
        async def helper():
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0)  # a cleanup that needs more turns of the loop
                await asyncio.sleep(0)
                events.append("helper cleaned up")

        asyncio.get_running_loop().create_task(helper())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()
        await asyncio.sleep(10)
        return "unreachable"

    @app.get("/sync-to-async")
    async def sync_to_async_view():
        def meet() -> str:
            MEETING.wait()  # both requests' functions must run at once
            return threading.current_thread().name

        return await sync_to_async(meet)()

    @app.get("/to-thread-after-shutdown")
    async def to_thread_after_shutdown():
        SHUTDOWN_STARTED.set()
        assert SHUTDOWN_DONE.wait(10)
        return await asyncio.to_thread(lambda: "ran")

    return app


per_thread = build("loops_per_thread", CASSANDRA_ASYNC_LOOPS="per-thread")
per_request = build("loops_per_request")
adb.init_app(per_thread)
adb.init_app(per_request)
APPS = {"per-thread": per_thread, "per-request": per_request}


@pytest.fixture(autouse=True)
def fresh(clean_db):
    # Flask's default (per_request) leaks context variables into this thread
    REQUEST_VAR.set("unset")
    LEFT_BY_TEARDOWN.set("unset")
    events.clear()
    seen_loops.clear()
    seen_threads.clear()
    yield


@pytest.fixture(params=["per-thread", "per-request"])
def app(request) -> Flask:
    return APPS[request.param]


def on_threads(serve, count: int) -> None:
    """Run ``serve`` on ``count`` new threads at once, as a server's threads would; wait for all."""
    workers = [threading.Thread(target=serve) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def loop_ids(client, n: int) -> set[str]:
    return {client.get("/loop").text for _ in range(n)}


# -- configuration ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["per_thread", "thread", "PER-THREAD", "", None, 1, True])
def test_an_unknown_mode_is_refused_naming_the_key_and_connects_nothing(value):
    connections = set(cqlengine_connection._connections)
    app = make_app("loops_bad_value", CASSANDRA_ASYNC_LOOPS=value)
    with pytest.raises(ConfigError, match="CASSANDRA_ASYNC_LOOPS") as caught:
        CQLAlchemy(app)
    assert "per-request" in str(caught.value) and "per-thread" in str(caught.value)
    assert set(cqlengine_connection._connections) == connections
    assert "cqlalchemy" not in app.extensions
    assert "async_to_sync" not in app.__dict__


def test_per_request_is_the_default_and_leaves_flask_alone():
    assert "async_to_sync" not in per_request.__dict__
    assert runner.uses_thread_loops(per_thread)
    assert len(loop_ids(per_request.test_client(), 3)) == 3


# -- the loop is kept ------------------------------------------------------------------


def test_one_loop_per_thread_serves_every_request_and_queries_on_it():
    client = per_thread.test_client()
    created = [client.post("/notes", json={"body": f"note {i}"}) for i in range(5)]
    assert [r.status_code for r in created] == [201] * 5
    bodies = [client.get(f"/notes/{r.json['note_id']}").json["body"] for r in created]
    assert bodies == [f"note {i}" for i in range(5)]
    assert len(loop_ids(client, 5)) == 1
    assert all(response.headers["X-Same-Loop"] == "True" for response in [client.get("/loop")])

    other_threads: list[set[str]] = []

    def serve() -> None:
        other_threads.append(loop_ids(per_thread.test_client(), 3))

    on_threads(serve, 2)
    main_loop = loop_ids(client, 1)
    assert [len(ids) for ids in other_threads] == [1, 1]
    assert len(main_loop | other_threads[0] | other_threads[1]) == 3


def test_a_sync_extension_gets_the_same_loops():
    app = make_app("loops_sync_ext", CASSANDRA_ASYNC_LOOPS="per-thread")
    sync_db = CQLAlchemy(app)

    @app.get("/count")
    async def count():
        seen_loops.append(asyncio.get_running_loop())
        return str(await LoopNote.objects.acount())

    try:
        LoopNote.create(body="counted")
        client = app.test_client()
        assert [client.get("/count").text for _ in range(3)] == ["1", "1", "1"]
        assert runner.uses_thread_loops(app)
        assert len(seen_loops) == 3 and seen_loops[0] is seen_loops[1] is seen_loops[2]
    finally:
        sync_db.shutdown()


def test_error_handlers_and_request_hooks_run_on_the_views_loop(app):
    client = app.test_client()
    response = client.get("/teapot")
    assert response.status_code == 418
    same = response.json["handler_loop_is_views"]
    assert same is (app is per_thread)  # per-request: every function gets a loop of its own
    assert client.get("/loop").headers["X-Same-Loop"] == str(app is per_thread)


def test_every_thread_loop_shares_one_default_executor():
    def serve() -> None:
        client = per_thread.test_client()
        for _ in range(3):
            assert client.get("/executor").text == "ok"

    on_threads(serve, 4)
    assert len(seen_threads) == 12
    assert all(thread.name.startswith(runner.EXECUTOR_THREAD_PREFIX) for thread in seen_threads)
    assert len(set(map(id, seen_threads))) <= runner.EXECUTOR_WORKERS


def test_the_default_executor_is_reused(app):
    client = app.test_client()
    assert client.get("/executor").text == "ok"
    alive = set(threading.enumerate())
    seen_threads.clear()
    requests = runner.EXECUTOR_WORKERS + 4
    for _ in range(requests):
        assert client.get("/executor").text == "ok"
    distinct = set(map(id, seen_threads))
    if app is per_thread:
        # One pool for every request: never more threads than the pool has,
        # all of them still there for the next request. (Which of its threads
        # takes a call is the pool's business: a worker that has set a result
        # but not yet said it is idle makes the pool start another one.)
        assert len(distinct) <= runner.EXECUTOR_WORKERS < requests
        assert all(thread.name.startswith(runner.EXECUTOR_THREAD_PREFIX) for thread in seen_threads)
        assert all(thread.is_alive() for thread in seen_threads)
    else:
        # Flask's default: an executor (and its thread) per request, gone after it
        assert not any(thread in alive for thread in seen_threads) and len(distinct) == requests
        assert not any(thread.is_alive() for thread in seen_threads)


# -- what a view can observe ---------------------------------------------------------


def test_a_context_variable_set_by_one_request_is_unset_in_the_next():
    client = per_thread.test_client()
    REQUEST_VAR.set("unset")
    assert [client.get("/var/set").text for _ in range(3)] == ["unset"] * 3
    assert client.get("/var/sync").text == "unset"
    assert REQUEST_VAR.get() == "unset"


def test_flask_default_lets_it_leak_into_the_thread():
    # What per-thread fixes: asgiref copies the view's variables back into
    # the server thread, where the next request finds them.
    client = per_request.test_client()
    REQUEST_VAR.set("unset")
    assert [client.get("/var/set").text for _ in range(2)] == ["unset", "set by /var/set"]
    REQUEST_VAR.set("unset")


def test_what_an_async_before_request_sets_is_seen_by_the_view(app):
    REQUEST_VAR.set("unset")
    assert app.test_client().get("/var/from-before-request").text == "set by before_request"


def test_teardown_sees_what_async_hooks_set_and_nothing_leaks_from_it():
    REQUEST_VAR.set("unset")
    client = per_thread.test_client()
    assert client.get("/var/from-before-request").text == "set by before_request"
    assert events == [
        "teardown_request saw set by before_request",
        "teardown_appcontext saw set by before_request",
    ]
    # an async teardown_appcontext ran after that request, and after the next
    assert [client.get("/left-by-teardown").text for _ in range(2)] == ["unset", "unset"]


def test_flask_default_leaks_what_teardown_sets():
    client = per_request.test_client()
    LEFT_BY_TEARDOWN.set("unset")
    client.get("/loop")
    assert client.get("/left-by-teardown").text == "left by an async teardown"
    LEFT_BY_TEARDOWN.set("unset")


def test_a_view_that_stops_the_loop_fails_like_flask_default_and_cleans_up(caplog):
    caplog.set_level(logging.WARNING, logger="flask_cqlalchemy")
    for mode, app in APPS.items():
        events.clear()
        assert app.test_client().get("/stop-the-loop").status_code == 500, mode
        assert events == ["helper cleaned up"], mode
    caplog.clear()
    assert per_thread.test_client().get("/loop").status_code == 200
    assert [r for r in caplog.records if r.name == "flask_cqlalchemy.runner"] == []


def test_thread_sensitive_sync_to_async_runs_per_server_thread_in_parallel():
    answers: list[str] = []

    def serve() -> None:
        answers.append(per_thread.test_client().get("/sync-to-async").text)

    MEETING.reset()
    on_threads(serve, 2)
    # each met the other inside the function: not queued on one thread for the process
    assert len(answers) == 2 and all(a.startswith(runner.SYNC_THREAD_PREFIX) for a in answers), answers


def test_pending_tasks_are_cancelled_before_the_response_and_logged(app, caplog):
    caplog.set_level(logging.WARNING, logger="flask_cqlalchemy")
    assert app.test_client().get("/leave-a-task").text == "left"
    assert events == ["sleeper cancelled"]
    warnings = [r for r in caplog.records if r.name == "flask_cqlalchemy.runner"]
    if app is per_thread:
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "sleeper" in warnings[0].getMessage() and "leave_a_task" in warnings[0].getMessage()
    else:
        assert warnings == []  # Flask's default cancels them silently


def test_an_abandoned_query_leaves_the_loop_usable(caplog):
    caplog.set_level(logging.WARNING, logger="flask_cqlalchemy")
    LoopNote.create(body="there")
    client = per_thread.test_client()
    for _ in range(5):
        assert client.get("/leave-a-query").text == "left"
    created = client.post("/notes", json={"body": "after"})
    assert client.get(f"/notes/{created.json['note_id']}").json == {"body": "after"}
    assert len(loop_ids(client, 3)) == 1
    names = [r.getMessage() for r in caplog.records if r.name == "flask_cqlalchemy.runner"]
    assert len(names) == 5 and all("aall" in name for name in names), names


def test_async_generators_left_open_are_closed(app):
    assert app.test_client().get("/leave-a-generator").text == "0"
    assert events == ["generator closed"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/raise", 500),
        ("/abort/404", 404),
        ("/abort/400", 400),
        ("/timeout", 500),
        ("/notes/" + str(uuid.uuid4()), 404),
    ],
)
def test_errors_give_the_same_status_as_flask_default(path, status):
    answers = {mode: app.test_client().get(path) for mode, app in APPS.items()}
    assert {mode: r.status_code for mode, r in answers.items()} == {"per-thread": status, "per-request": status}
    assert answers["per-thread"].data == answers["per-request"].data


def test_errors_reach_the_caller_with_their_type(app):
    app.testing = True  # exceptions propagate to the test client
    try:
        with pytest.raises(LookupError, match="boom"):
            app.test_client().get("/raise")
        with pytest.raises(TimeoutError):
            app.test_client().get("/timeout")
    finally:
        app.testing = False


def test_a_cancelled_view_raises_cancelled_error(app):
    with pytest.raises(asyncio.CancelledError):
        app.test_client().get("/cancelled")
    assert app.test_client().get("/loop").status_code == 200


# -- calls from inside a loop -------------------------------------------------------


def test_copy_current_request_context_around_an_async_helper():
    answer = per_thread.test_client().get("/copied-helper")
    assert answer.status_code == 200, answer.text
    assert answer.json["direct"].startswith("/copied-helper in flask_cqlalchemy nested")
    assert answer.json["in_thread"].startswith(f"/copied-helper in {runner.EXECUTOR_THREAD_PREFIX}")


def test_copy_current_request_context_direct_call_fails_under_flask_default():
    per_request.testing = True
    try:
        with pytest.raises(RuntimeError, match="cannot use AsyncToSync in the same thread as an async event loop"):
            per_request.test_client().get("/copied-helper")
    finally:
        per_request.testing = False


def test_a_view_calling_another_view():
    answer = per_thread.test_client().get("/calls-another-view")
    assert answer.status_code == 200, answer.text
    assert answer.json["inner"] != answer.json["outer"]
    gc.collect()
    assert len(seen_loops) == 1 and seen_loops[0].is_closed()  # the nested call's thread and loop are gone


@pytest.mark.parametrize("mode", ["per-thread", "per-request"])
def test_a_thread_running_its_own_loop_gets_flask_default(mode):
    # A notebook (Jupyter runs a loop in its main thread) calling the app:
    # exactly what Flask's default does there.
    app = APPS[mode]

    async def notebook_cell():
        return app.test_client().get("/loop")

    app.testing = True
    try:
        with pytest.raises(RuntimeError, match="cannot use AsyncToSync in the same thread as an async event loop"):
            asyncio.run(notebook_cell())
    finally:
        app.testing = False


@pytest.mark.parametrize("mode", ["per-thread", "per-request"])
def test_under_wsgi_to_asgi_views_run_on_the_servers_loop(mode):
    asgi_app = WsgiToAsgi(APPS[mode])

    async def serve_one() -> tuple[list[dict], int]:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/loop",
            "raw_path": b"/loop",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test")],
            "server": ("test", 80),
            "client": ("127.0.0.1", 1234),
        }
        await asgi_app(scope, receive, send)
        return sent, id(asyncio.get_running_loop())

    sent, server_loop = asyncio.run(serve_one())
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body") == str(server_loop).encode()


# -- closing -------------------------------------------------------------------------


def test_a_threads_loop_is_closed_when_the_thread_ends():
    def serve() -> None:
        assert per_thread.test_client().get("/loop").status_code == 200

    on_threads(serve, 1)
    gc.collect()
    assert len(seen_loops) == 1 and seen_loops[0].is_closed()


def test_shutdown_closes_the_loops_and_other_apps_make_new_ones():
    app = make_app("loops_shutdown", CASSANDRA_ASYNC_LOOPS="per-thread")
    ext = AsyncCQLAlchemy(app)

    @app.get("/loop")
    async def loop_view():
        seen_loops.append(asyncio.get_running_loop())
        return str(await LoopNote.objects.acount())

    assert app.test_client().get("/loop").text == "0"
    assert runner.live_loops() >= 1
    ext.sync.shutdown(app)
    assert seen_loops[0].is_closed()
    assert runner.live_loops() == 0
    assert per_thread.test_client().get("/loop").status_code == 200
    assert seen_loops[1] is not seen_loops[0] and not seen_loops[1].is_closed()
    assert runner.live_loops() == 1


def test_shutdown_while_another_thread_serves_leaves_its_request_working():
    SHUTDOWN_STARTED.clear()
    SHUTDOWN_DONE.clear()
    answer: list[Any] = []

    def serve() -> None:
        answer.append(per_thread.test_client().get("/to-thread-after-shutdown"))

    worker = threading.Thread(target=serve)
    worker.start()
    assert SHUTDOWN_STARTED.wait(10)
    runner.close_idle_loops()
    SHUTDOWN_DONE.set()
    worker.join()
    assert answer[0].status_code == 200 and answer[0].text == "ran"
    assert per_thread.test_client().get("/executor").text == "ok"


def test_closing_the_loops_from_inside_a_view_waits_for_it_to_return():
    client = per_thread.test_client()
    assert client.get("/shutdown-inside").text == "False"
    assert seen_loops[0].is_closed()
    assert client.get("/loop").status_code == 200
    assert seen_loops[1] is not seen_loops[0]


def test_a_forked_child_never_reuses_the_parents_loop():
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.loop_fork_check", ",".join(HOSTS), KEYSPACE],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["child"]["status"] == 200 and report["child"]["rows"] == report["parent"]["rows"]
    assert report["child"]["reused_parents_loop"] is False
    assert report["child"]["parents_loop_run_in_child"] is False
    assert report["child"]["same_loop_next_request"] is True
    assert report["parent_after"] == {"status": 200, "rows": report["parent"]["rows"], "same_loop_as_before": True}
    assert report["other_thread_after"] == {"answers": [200, 200], "hung": False}
