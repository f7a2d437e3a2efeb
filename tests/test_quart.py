"""Quart apps on the extension: each request uses its own app, errors answer
as under Flask, recording, the shell, background tasks, and a clean exit.

The same views are registered on a Flask and on a Quart app; where both
frameworks must agree, the test runs on both and compares.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import flask
import pytest
import quart
from cassandra.cluster import Cluster

from flask_cqlalchemy import ConfigError, get_recorded_queries
from flask_cqlalchemy.aio import AsyncCQLAlchemy

from .conftest import HOSTS
from .support.frameworks import FRAMEWORKS, get, make_framework_app

ROOT = Path(__file__).resolve().parent.parent
KEYSPACE_A = "flask_cqlalchemy_quart_a"
KEYSPACE_B = "flask_cqlalchemy_quart_b"

notes_db = AsyncCQLAlchemy()  # the facade, under a name of the user's choosing


class QuartNote(notes_db.Model):
    owner = notes_db.columns.Text(partition_key=True)
    note_id = notes_db.columns.UUID(primary_key=True, default=uuid.uuid4)
    body = notes_db.columns.Text(max_length=20)


def create_app(framework: str, keyspace: str, **config: Any) -> Any:
    """An app of ``framework`` on ``notes_db``, with the same views for both."""
    app = make_framework_app(framework, f"{__name__}.{framework}.{keyspace}", CASSANDRA_KEYSPACE=keyspace, **config)
    notes_db.init_app(app)
    request = quart.request if framework == "quart" else flask.request

    @app.post("/notes/<owner>")
    async def create(owner: str) -> Any:
        note = await QuartNote.acreate(owner=owner, body=request.args.get("body", ""))
        return {"note_id": str(note.note_id)}, 201

    @app.post("/notes/<owner>/sync")
    async def create_with_the_sync_api(owner: str) -> Any:
        note = QuartNote.create(owner=owner, body="sync")
        return {"note_id": str(note.note_id)}, 201

    @app.get("/notes/<owner>/<uuid:note_id>")
    async def read(owner: str, note_id: uuid.UUID) -> Any:
        return {"body": (await QuartNote.aget(owner=owner, note_id=note_id)).body}

    @app.get("/notes/<owner>/<uuid:note_id>/or-404")
    async def read_or_404(owner: str, note_id: uuid.UUID) -> Any:
        return {"body": (await QuartNote.aget_or_404(owner=owner, note_id=note_id)).body}

    @app.get("/notes/<owner>/<uuid:note_id>/sync-or-404")
    async def read_sync_or_404(owner: str, note_id: uuid.UUID) -> Any:
        return {"body": QuartNote.get_or_404(owner=owner, note_id=note_id).body}

    @app.get("/notes/<owner>")
    async def page(owner: str) -> Any:
        found = await QuartNote.objects(owner=owner).apaginate(
            request.args.get("per_page", 2), cursor=request.args.get("cursor")
        )
        return {"bodies": [note.body for note in found.items], "next": found.next_cursor}

    @app.get("/slow")
    async def slow() -> Any:
        await notes_db.execute(f"SELECT * FROM {keyspace}.quart_note", timeout=0.000001)
        return "never"

    @app.get("/recorded/<owner>")
    async def recorded(owner: str) -> Any:
        await QuartNote.objects(owner=owner).acount()
        QuartNote.objects(owner=owner).count()
        return {"queries": [[q.cql, q.mode, q.location] for q in get_recorded_queries()]}

    return app


def rows(session: Any, keyspace: str) -> dict[str, list[str]]:
    """owner -> bodies, as stored in ``keyspace``."""
    stored: dict[str, list[str]] = {}
    for row in session.execute(f"SELECT owner, body FROM {keyspace}.quart_note"):
        stored.setdefault(row.owner, []).append(row.body)
    return {owner: sorted(bodies) for owner, bodies in stored.items()}


@pytest.fixture(scope="module")
def session():
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect()
    for keyspace in (KEYSPACE_A, KEYSPACE_B):
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} "
            "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {keyspace}.quart_note "
            "(owner text, note_id uuid, body text, PRIMARY KEY (owner, note_id))"
        )
    yield session
    for keyspace in (KEYSPACE_A, KEYSPACE_B):
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    cluster.shutdown()


@pytest.fixture(scope="module")
def apps(session):
    """Per framework, an app on keyspace A and one on keyspace B, all on ``notes_db``
    (the Flask app of keyspace B initialised last: the one used outside any app)."""
    made = {framework: {} for framework in FRAMEWORKS}
    for framework in ("quart", "flask"):
        for keyspace in (KEYSPACE_A, KEYSPACE_B):
            made[framework][keyspace] = create_app(framework, keyspace)
    yield made
    notes_db.sync.shutdown()


@pytest.fixture()
def empty(session, apps):
    for keyspace in (KEYSPACE_A, KEYSPACE_B):
        session.execute(f"TRUNCATE {keyspace}.quart_note")


def post(app: Any, path: str) -> tuple[int, Any]:
    if isinstance(app, quart.Quart):

        async def send() -> tuple[int, Any]:
            response = await app.test_client().post(path)
            return response.status_code, await response.get_json()

        return asyncio.run(send())
    response = app.test_client().post(path)
    return response.status_code, response.get_json()


# -- each request uses its own app ------------------------------------------------------------


def test_two_quart_apps_one_extension_each_row_lands_in_its_own_keyspace(apps, empty, session):
    app_a, app_b = apps["quart"][KEYSPACE_A], apps["quart"][KEYSPACE_B]

    async def interleaved() -> list[int]:
        # both apps served on one loop, their requests in flight together
        clients = [app_a.test_client(), app_b.test_client()]
        responses = await asyncio.gather(
            *(clients[i % 2].post(f"/notes/{'ab'[i % 2]}?body=n{i}") for i in range(20)),
            clients[0].post("/notes/a/sync"),
            clients[1].post("/notes/b/sync"),
        )
        return [response.status_code for response in responses]

    assert asyncio.run(interleaved()) == [201] * 22
    assert rows(session, KEYSPACE_A) == {"a": sorted([f"n{i}" for i in range(0, 20, 2)] + ["sync"])}
    assert rows(session, KEYSPACE_B) == {"b": sorted([f"n{i}" for i in range(1, 20, 2)] + ["sync"])}


def test_a_flask_and_a_quart_app_on_one_extension_keep_apart(apps, empty, session):
    assert post(apps["quart"][KEYSPACE_A], "/notes/q?body=quart")[0] == 201
    assert post(apps["flask"][KEYSPACE_B], "/notes/f?body=flask")[0] == 201
    assert rows(session, KEYSPACE_A) == {"q": ["quart"]}
    assert rows(session, KEYSPACE_B) == {"f": ["flask"]}


def test_a_quart_request_inside_a_flask_app_context_uses_the_quart_app(apps, empty, session):
    # e.g. a test fixture pushing a Flask app context while a Quart app on
    # the same extension serves: the app serving the request is the current one
    with apps["flask"][KEYSPACE_B].app_context():
        assert post(apps["quart"][KEYSPACE_A], "/notes/in-flask-context?body=q")[0] == 201
        assert notes_db.sync.state().keyspace == KEYSPACE_B  # outside the request: the pushed app
    assert rows(session, KEYSPACE_A) == {"in-flask-context": ["q"]}
    assert rows(session, KEYSPACE_B) == {}


def test_a_flask_request_inside_a_quart_app_context_uses_the_flask_app(apps, empty, session):
    from flask_cqlalchemy.frameworks import app_context

    with app_context(apps["quart"][KEYSPACE_B]):
        assert post(apps["flask"][KEYSPACE_A], "/notes/in-quart-context?body=f")[0] == 201
        assert notes_db.sync.state().keyspace == KEYSPACE_B
    assert rows(session, KEYSPACE_A) == {"in-quart-context": ["f"]}
    assert rows(session, KEYSPACE_B) == {}


def test_quart_error_handlers_answer_on_the_loop_without_a_worker_thread(apps, empty):
    app = apps["quart"][KEYSPACE_A]
    handed_to_threads: list[Any] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            handed_to_threads.append(fn)
            return super().submit(fn, *args, **kwargs)

    async def ask() -> list[int]:
        asyncio.get_running_loop().set_default_executor(Recording(max_workers=1))
        client = app.test_client()
        paths = [f"/notes/x/{uuid.uuid4()}", f"/notes/x/{uuid.uuid4()}/or-404", "/notes/x?cursor=bad", "/slow"]
        return [(await client.get(path)).status_code for path in paths]

    assert asyncio.run(ask()) == [404, 404, 400, 503]
    assert handed_to_threads == []


def test_a_task_started_before_serving_keeps_querying_its_app_while_requests_are_served(apps, empty, session):
    app = create_app("quart", KEYSPACE_A)
    create_app("quart", KEYSPACE_B)  # initialised last: the one a lost context would use
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            try:
                seen.append(await QuartNote.objects(owner="bg").acount())
            except Exception as exc:  # counted, and the test fails on it
                errors.append(exc)
            await asyncio.sleep(0)

    @app.before_serving
    async def start_polling() -> None:
        QuartNote.create(owner="bg", body="startup")  # the sync API in a startup function
        app.config["poller"] = asyncio.create_task(poll())

    @app.after_serving
    async def stop_polling() -> None:
        stop.set()
        await app.config["poller"]

    async def serve() -> list[int]:
        async with app.test_app() as test_app:
            client = test_app.test_client()
            statuses = []
            for i in range(30):
                statuses.append((await client.post(f"/notes/bg?body=r{i}")).status_code)
                await asyncio.sleep(0.005)
            return statuses

    try:
        assert asyncio.run(serve()) == [201] * 30
    finally:
        notes_db.sync.shutdown(app)
    assert errors == []
    assert len(seen) >= 10 and seen == sorted(seen)  # read again and again, never going back
    assert seen[0] >= 1 and seen[-1] <= 31 and max(seen) > 1  # its own app's rows, growing
    assert len(rows(session, KEYSPACE_A)["bg"]) == 31
    assert "bg" not in rows(session, KEYSPACE_B)


# -- errors answer the same under both frameworks ------------------------------------------------


def answers(app: Any, owner: str, note_id: uuid.UUID) -> dict[str, tuple[int, str, Any]]:
    """path -> (status, content type, JSON body or text) for the error cases."""
    paths = {
        "missing": f"/notes/{owner}/{uuid.uuid4()}",
        "missing-or-404": f"/notes/{owner}/{uuid.uuid4()}/or-404",
        "missing-sync-or-404": f"/notes/{owner}/{uuid.uuid4()}/sync-or-404",
        "bad cursor": f"/notes/{owner}?cursor=not-a-cursor",
        "bad page size": f"/notes/{owner}?per_page=0",
        "unavailable": "/slow",
        "found": f"/notes/{owner}/{note_id}/or-404",
    }
    found: dict[str, tuple[int, str, Any]] = {}
    for name, path in paths.items():
        status, body, headers = get(app, path)
        kind = headers.get("Content-Type", "").split(";")[0]
        value = json.loads(body) if kind == "application/json" else body.decode()
        if isinstance(value, dict) and "message" in value:
            value["message"] = value["message"].split(" (")[0]  # the keys differ: random ids
        found[name] = (status, kind, value)
    return found


def test_errors_answer_json_and_the_same_under_flask_and_quart(apps, empty):
    by_framework = {}
    for framework in FRAMEWORKS:
        app = apps[framework][KEYSPACE_A]
        status, created = post(app, "/notes/err?body=kept")
        assert status == 201
        by_framework[framework] = answers(app, "err", uuid.UUID(created["note_id"]))
    flask_answers = by_framework["flask"]
    assert flask_answers == by_framework["quart"]
    assert flask_answers["missing"][:2] == (404, "application/json")
    assert flask_answers["missing"][2]["error"] == "not found"
    # *_or_404 answer the same shape as a plain aget that misses
    for name in ("missing-or-404", "missing-sync-or-404"):
        status, kind, body = flask_answers[name]
        assert (status, kind, body["error"]) == (404, "application/json", "not found"), name
        assert "QuartNote" in body["message"]
    assert flask_answers["bad cursor"][:2] == (400, "application/json")
    assert flask_answers["bad cursor"][2]["field"] == "cursor" and "cursor" in flask_answers["bad cursor"][2]["message"]
    assert flask_answers["bad page size"][2]["field"] == "per_page"
    assert flask_answers["unavailable"] == (
        503,
        "application/json",
        {"error": "database unavailable", "message": "OperationTimedOut"},
    )
    assert flask_answers["found"] == (200, "application/json", {"body": "kept"})


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_validation_error_is_a_400_naming_the_field(apps, empty, framework, session):
    status, body = post(apps[framework][KEYSPACE_A], "/notes/v?body=" + "x" * 21)
    assert status == 400 and body["error"] == "invalid value" and "body" in body["message"]
    assert rows(session, KEYSPACE_A) == {}  # nothing written


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_without_the_error_handlers_or_404_is_the_frameworks_own_page(framework, session):
    app = create_app(framework, KEYSPACE_A, CASSANDRA_ERROR_HANDLERS=False)
    try:
        status, body, headers = get(app, f"/notes/x/{uuid.uuid4()}/or-404")
        assert status == 404 and headers["Content-Type"].startswith("text/html")
        assert b"QuartNote" in body  # the description is kept
    finally:
        notes_db.sync.shutdown(app)


class LazyText:
    """A translation resolved when rendered, as flask-babel's ``lazy_gettext`` gives."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __html__(self) -> str:
        return self.text


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_or_404_with_a_lazy_description_answers_json_through_the_apps_provider(framework, session):
    app = create_app(framework, KEYSPACE_B)

    @app.get("/notes/<owner>/<uuid:note_id>/lazy-or-404")
    async def read_lazy_or_404(owner: str, note_id: uuid.UUID) -> Any:
        found = await QuartNote.aget_or_404(owner=owner, note_id=note_id, description=LazyText("no such note"))
        return {"body": found.body}

    try:
        status, body, headers = get(app, f"/notes/x/{uuid.uuid4()}/lazy-or-404")
        assert (status, headers["Content-Type"]) == (404, "application/json"), body
        assert json.loads(body) == {"error": "not found", "message": "no such note"}
    finally:
        notes_db.sync.shutdown(app)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_apps_own_404_handler_wins(framework, session):
    app = create_app(framework, KEYSPACE_B)

    @app.errorhandler(404)
    def own_page(error: Any) -> Any:
        return {"mine": error.description}, 404

    try:
        status, body, _ = get(app, f"/notes/x/{uuid.uuid4()}/or-404")
        assert status == 404 and "QuartNote" in json.loads(body)["mine"]
    finally:
        notes_db.sync.shutdown(app)


# -- recording, the shell, settings ------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_queries_are_recorded_in_the_requests_app_context(framework, session):
    app = create_app(framework, KEYSPACE_B, CASSANDRA_RECORD_QUERIES=True)
    try:
        status, body, _ = get(app, "/recorded/someone")
        assert status == 200
        queries = json.loads(body)["queries"]
        assert [mode for _, mode, _ in queries] == ["async", "sync"]
        assert all("quart_note" in cql for cql, _, _ in queries)
        assert all(location.startswith(__file__) and "in recorded" in location for _, _, location in queries)
    finally:
        notes_db.sync.shutdown(app)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_shell_context_has_the_facade_under_its_name(apps, framework):
    context = apps[framework][KEYSPACE_A].make_shell_context()
    assert context["db"] is notes_db.sync
    assert context["notes_db"] is notes_db
    assert context["QuartNote"] is QuartNote


def test_shell_context_leaves_lazy_modules_and_non_modules_of_the_package_alone(apps, tmp_path, monkeypatch):
    # A module of the app's package loaded lazily (importlib.util.LazyLoader)
    # runs on first attribute access: here it would fail, as with a missing
    # optional dependency. sys.modules may also hold an object without __dict__.
    source = tmp_path / "lazy_reports.py"
    source.write_text("raise ImportError('an optional dependency is missing')\n")
    spec = importlib.util.spec_from_file_location(f"{__package__}.lazy_reports", source)
    assert spec is not None and spec.loader is not None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    lazy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lazy)
    monkeypatch.setitem(sys.modules, spec.name, lazy)
    monkeypatch.setitem(sys.modules, f"{__package__}.not_a_module", object())

    context = apps["quart"][KEYSPACE_A].make_shell_context()
    assert context["notes_db"] is notes_db and context["db"] is notes_db.sync


def test_shell_context_names_an_unnamed_facade_adb():
    app = make_framework_app("quart", "shell_app_with_no_module")
    facade = AsyncCQLAlchemy(app)
    try:
        context = app.make_shell_context()
        assert context["adb"] is facade and context["db"] is facade.sync
    finally:
        facade.sync.shutdown()


def test_per_thread_loops_are_refused_for_a_quart_app():
    app = make_framework_app("quart", "per_thread_quart", CASSANDRA_ASYNC_LOOPS="per-thread")
    with pytest.raises(ConfigError, match="CASSANDRA_ASYNC_LOOPS") as info:
        AsyncCQLAlchemy(app)
    assert info.value.key == "CASSANDRA_ASYNC_LOOPS" and "Quart" in str(info.value)
    assert "cqlalchemy" not in app.extensions


# -- the process: imports and exit ---------------------------------------------------------------


def python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_importing_the_extension_does_not_import_quart():
    result = python(
        """
        import sys
        import flask_cqlalchemy, flask_cqlalchemy.aio, flask_cqlalchemy.testing, flask_cqlalchemy.cli
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("quart", "hypercorn")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_no_driver_error_at_interpreter_exit(framework, session):
    # A driver task falling due while the interpreter exits (here: while a
    # non-daemon thread keeps it alive) used to fail in the driver's
    # "Task Scheduler" thread: the interpreter refuses new work to thread
    # pools before the driver's own exit hook closes the cluster.
    result = python(
        f"""
        import threading, time
        from {framework} import {"Quart" if framework == "quart" else "Flask"} as App
        from flask_cqlalchemy import CQLAlchemy

        app = App("exiting")
        app.config.update(CASSANDRA_HOSTS={HOSTS!r}, CASSANDRA_KEYSPACE={KEYSPACE_A!r})
        db = CQLAlchemy(app)
        db.execute("SELECT release_version FROM system.local")
        db.cluster.scheduler.schedule(0.5, print, "task ran")
        threading.Thread(target=time.sleep, args=(1.5,)).start()
        print("main done")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "main done"
    assert "cannot schedule new futures" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_thread_still_running_at_exit_keeps_querying_until_it_ends(session):
    # The interpreter waits for non-daemon threads after main returns: their
    # queries must still be answered, as without the extension.
    result = python(
        f"""
        import threading, time
        from flask import Flask
        from flask_cqlalchemy import CQLAlchemy

        app = Flask("exiting")
        app.config.update(CASSANDRA_HOSTS={HOSTS!r}, CASSANDRA_KEYSPACE={KEYSPACE_A!r})
        db = CQLAlchemy(app)

        def report() -> None:
            time.sleep(0.5)
            for _ in range(3):
                print(len(list(db.execute("SELECT key FROM system.local"))))

        threading.Thread(target=report).start()
        print("main done")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["main", "done", "1", "1", "1"], result.stderr
    assert "Traceback" not in result.stderr, result.stderr
