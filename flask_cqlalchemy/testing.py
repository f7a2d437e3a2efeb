"""Test helpers: a throw-away keyspace for your app's models.

As a pytest plugin, enabled in your top-level ``conftest.py``::

    pytest_plugins = ["flask_cqlalchemy.testing"]

    @pytest.fixture(scope="session")
    def cql_app():
        return create_app({"CASSANDRA_HOSTS": ["127.0.0.1"], "CASSANDRA_KEYSPACE": "myapp"})

it gives these fixtures:

``cql_app`` (session, yours to define)
    Your Flask or Quart app, the one ``db.init_app(app)`` ran on.
``cql_db`` (session)
    The app's :class:`~flask_cqlalchemy.CQLAlchemy`, found on ``cql_app``;
    define it yourself to pick another.
``cql_keyspace`` (session)
    The name of a new keyspace, ``test_<random>``, made for this test
    session: the app is switched to it (``db.set_keyspace``), the models'
    tables and types are created in it, and it is dropped when the session
    ends (``--cql-keep-keyspace`` keeps it for a look afterwards).
``cql_clean_db`` (function)
    ``cql_db`` with every table of the keyspace emptied before the test and
    the app's context current for the test's duration (for a Quart app: the
    extension's lookups and ``g``; Quart's app-context signals and teardown
    functions run only in ``async with app.app_context()``).

Options (command line or ini file): ``--cql-keep-keyspace``,
``cql_keyspace_prefix`` (default ``test_``), ``cql_replication_factor``
(default 1).

Without pytest, :func:`temporary_keyspace` and :func:`empty_tables` do the same.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .config import validate_keyspace_name
from .frameworks import app_context, framework_name

if TYPE_CHECKING:
    from flask.sansio.app import App

    from .extension import CQLAlchemy

EXTENSION_KEY = "cqlalchemy"
#: Seconds to wait for a TRUNCATE (the node's own limit is truncate_request_timeout, 60 s by default).
TRUNCATE_TIMEOUT = 60.0
#: The keyspaces kept, each with the command of its app's framework (``flask``, ``quart``).
_kept_keyspaces = pytest.StashKey[list[tuple[str, str]]]()


class KeyspaceWarning(UserWarning):
    """A model lives outside the throw-away keyspace and was left alone."""


def extension_of(app: App) -> CQLAlchemy:
    """The :class:`~flask_cqlalchemy.CQLAlchemy` that ``init_app`` registered on ``app``."""
    state = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise LookupError(f"app {app.name!r} has no CQLAlchemy: call db.init_app(app) before the tests use it")
    return state.ext


def new_keyspace_name(prefix: str = "test_") -> str:
    """``prefix`` + 8 random hex digits (+ the pytest-xdist worker, if any)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return validate_keyspace_name(f"{prefix}{worker + '_' if worker else ''}{secrets.token_hex(4)}", "keyspace prefix")


@contextlib.contextmanager
def temporary_keyspace(
    app: App,
    db: CQLAlchemy | None = None,
    *,
    name: str | None = None,
    prefix: str = "test_",
    replication_factor: int = 1,
    keep: bool = False,
) -> Iterator[str]:
    """Create a keyspace, point ``app``'s models at it and sync them; drop it on exit.

    Yields the keyspace name. Models with their own ``__keyspace__`` (or bound
    elsewhere) are not moved: they are neither synced nor emptied, and a
    :class:`KeyspaceWarning` names them. On exit the app goes back to its
    ``CASSANDRA_KEYSPACE``; the keyspace is dropped unless ``keep``.
    """
    db = db if db is not None else extension_of(app)
    name = validate_keyspace_name(name) if name is not None else new_keyspace_name(prefix)
    with app_context(app):
        db.create_keyspace_simple(name, replication_factor)
        try:
            db.set_keyspace(name)
            _sync_into(db, name)
        except BaseException:
            db.set_keyspace(None)
            if not keep:
                db.drop_keyspace(name)
            raise
    try:
        yield name
    finally:
        with app_context(app):
            db.set_keyspace(None)
            if not keep:
                db.drop_keyspace(name)


def _sync_into(db: CQLAlchemy, keyspace: str) -> None:
    models = db.models
    outside = [m for m in models if m._get_keyspace() != keyspace]
    if not outside:
        db.sync_db()
        return
    warnings.warn(
        KeyspaceWarning(
            f"not synced into the test keyspace {keyspace} (they name their own keyspace or bind): "
            + ", ".join(f"{m.__name__} ({m._get_keyspace()})" for m in outside)
        ),
        stacklevel=3,
    )
    for user_type in db.user_types:
        db.sync_type(user_type, keyspace)
    for model in models:
        if model not in outside:
            db.sync_table(model)


def empty_tables(db: CQLAlchemy, keyspace: str) -> list[str]:
    """Truncate every table of ``keyspace`` that holds a row; return their names.

    Call it in an app context of the app whose connection should be used.
    ``TRUNCATE`` costs a round of all nodes (and a snapshot, unless the node
    runs with ``auto_snapshot: false``), so tables with no row are skipped.
    """
    validate_keyspace_name(keyspace)
    metadata = db.cluster.metadata
    if keyspace not in metadata.keyspaces:
        db.cluster.refresh_schema_metadata()
    truncated = []
    for table in sorted(metadata.keyspaces[keyspace].tables):
        if db.session.execute(f"SELECT * FROM {keyspace}.{table} LIMIT 1").one() is not None:
            db.session.execute(f"TRUNCATE {keyspace}.{table}", timeout=TRUNCATE_TIMEOUT)
            truncated.append(table)
    return truncated


# -- the pytest plugin ----------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flask-cqlalchemy")
    group.addoption(
        "--cql-keep-keyspace",
        action="store_true",
        default=None,
        help="keep the throw-away Cassandra keyspace after the session (its name is printed)",
    )
    parser.addini("cql_keep_keyspace", "keep the throw-away keyspace after the session", type="bool", default=False)
    parser.addini("cql_keyspace_prefix", "prefix of the throw-away keyspace's name", default="test_")
    parser.addini("cql_replication_factor", "replication factor of the throw-away keyspace", default="1")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_kept_keyspaces] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    kept = config.stash.get(_kept_keyspaces, [])
    if kept:
        command = kept[-1][1]
        terminalreporter.write_line(
            "flask-cqlalchemy kept keyspace(s) "
            + ", ".join(name for name, _ in kept)
            + f" (drop with `{command} cql drop-keyspace NAME`)"
        )


@pytest.fixture(scope="session")
def cql_app() -> App:
    """Your Flask or Quart app: define a session-scoped ``cql_app`` fixture in your conftest.py."""
    pytest.fail(
        "flask_cqlalchemy.testing needs your app: define a session-scoped fixture in conftest.py,\n"
        "    @pytest.fixture(scope='session')\n"
        "    def cql_app():\n"
        "        return create_app()   # the app db.init_app(app) ran on",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def cql_db(cql_app: App) -> CQLAlchemy:
    """The CQLAlchemy registered on ``cql_app``."""
    try:
        return extension_of(cql_app)
    except LookupError as exc:
        pytest.fail(f"flask_cqlalchemy.testing: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def cql_keyspace(request: pytest.FixtureRequest, cql_app: App, cql_db: CQLAlchemy) -> Iterator[str]:
    """A throw-away keyspace holding the app's tables for this test session."""
    config = request.config
    keep = config.getoption("--cql-keep-keyspace") or config.getini("cql_keep_keyspace")
    try:
        replication_factor = int(config.getini("cql_replication_factor"))
    except ValueError:
        raise pytest.UsageError(
            f"cql_replication_factor: expected a whole number, got {config.getini('cql_replication_factor')!r}"
        ) from None
    with temporary_keyspace(
        cql_app,
        cql_db,
        prefix=config.getini("cql_keyspace_prefix"),
        replication_factor=replication_factor,
        keep=bool(keep),
    ) as name:
        if keep:
            config.stash.setdefault(_kept_keyspaces, []).append((name, framework_name(cql_app)))
        yield name


@pytest.fixture()
def cql_clean_db(cql_app: App, cql_db: CQLAlchemy, cql_keyspace: str) -> Iterator[CQLAlchemy]:
    """``cql_db`` with every table of the test keyspace empty, in an app context."""
    with app_context(cql_app):
        empty_tables(cql_db, cql_keyspace)
        yield cql_db


__all__ = ["KeyspaceWarning", "empty_tables", "extension_of", "new_keyspace_name", "temporary_keyspace"]
