"""The app factory, its configuration from the environment, and the schema command.

Environment variables (all optional):

=========================  ==================================================
CASSANDRA_HOSTS            contact points, comma-separated (127.0.0.1)
CASSANDRA_PORT             native protocol port (the driver's 9042)
NOTES_KEYSPACE             keyspace of the service's tables (notes_demo)
NOTES_REPLICATION_FACTOR   replication factor ``init-db`` creates it with (1)
CASSANDRA_LAZY_CONNECT     connect on first query instead of at start (false)
CASSANDRA_RETRY_CONNECT    start even if no node answers, retry on use (false)
CASSANDRA_CONSISTENCY      default consistency level, e.g. LOCAL_QUORUM
CASSANDRA_ASYNC_LOOPS      per-thread (this service's default) or per-request
CASSANDRA_USERNAME/..._PASSWORD   credentials, both or neither
SECRET_KEY                 signs pagination cursors; set it in production
=========================  ==================================================
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import click
from cassandra.cluster import NoHostAvailable
from flask import Flask, current_app, jsonify
from werkzeug.exceptions import HTTPException

from flask_cqlalchemy import InvalidCursor, InvalidPageSize

from .extensions import adb
from .validation import FieldError
from .views import bp

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def config_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The app config the environment asks for. Raises ValueError naming a malformed variable."""
    env = os.environ if env is None else env
    config: dict[str, Any] = {
        "CASSANDRA_HOSTS": env.get("CASSANDRA_HOSTS", "127.0.0.1"),
        "CASSANDRA_KEYSPACE": env.get("NOTES_KEYSPACE", "notes_demo"),
        "CASSANDRA_LAZY_CONNECT": _env_bool(env, "CASSANDRA_LAZY_CONNECT", False),
        "CASSANDRA_RETRY_CONNECT": _env_bool(env, "CASSANDRA_RETRY_CONNECT", False),
        "NOTES_REPLICATION_FACTOR": _env_int(env, "NOTES_REPLICATION_FACTOR", 1),
    }
    if "CASSANDRA_PORT" in env:
        config["CASSANDRA_PORT"] = _env_int(env, "CASSANDRA_PORT", 9042)
    for key in (
        "CASSANDRA_CONSISTENCY",
        "CASSANDRA_ASYNC_LOOPS",
        "CASSANDRA_USERNAME",
        "CASSANDRA_PASSWORD",
        "SECRET_KEY",
    ):
        if env.get(key):
            config[key] = env[key]
    return config


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the notes app: defaults, then the environment, then ``config``.

    Connects to Cassandra unless ``CASSANDRA_LAZY_CONNECT`` is true, and
    raises ``NoHostAvailable`` if no node answers, unless
    ``CASSANDRA_RETRY_CONNECT`` is true (then requests answer 503 until a
    node does). Once connected, the driver reconnects by itself after an
    outage; requests meanwhile answer 503.
    """
    app = Flask(__name__, static_folder=None)
    configure(
        app.config,
        config,
        # Every view is async: run them on one event loop per server thread
        # instead of a new thread and loop per request (README, "Event loops").
        CASSANDRA_ASYNC_LOOPS="per-thread",
    )
    adb.init_app(app)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    register_init_db(app, lambda replication_factor: init_schema(app, replication_factor))
    return app


def configure(app_config: MutableMapping[str, Any], config: Mapping[str, Any] | None, **defaults: Any) -> None:
    """Fill an app's config (Flask's or Quart's): the service's defaults and
    ``defaults``, then the environment, then ``config``. Raises ValueError
    naming a malformed environment variable."""
    app_config.update(CASSANDRA_MAX_PER_PAGE=100, MAX_CONTENT_LENGTH=256 * 1024, **defaults)
    app_config.update(config_from_env())
    if config:
        app_config.update(config)
    if not app_config.get("SECRET_KEY") and not app_config.get("CASSANDRA_CURSOR_SECRET"):
        # Unsigned cursors could be forged; a per-process key cannot. Cursors
        # then die with the process (and differ between worker processes).
        log.warning("no SECRET_KEY set: pagination cursors are signed with a random per-process key")
        app_config["CASSANDRA_CURSOR_SECRET"] = secrets.token_bytes(32)


def init_schema(app: Flask | None = None, replication_factor: int | None = None) -> None:
    """Create the keyspace (SimpleStrategy) if missing, then create or alter the tables."""
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    rf = replication_factor if replication_factor is not None else app.config["NOTES_REPLICATION_FACTOR"]
    with app.app_context():
        keyspace = adb.sync.state().keyspace
        adb.sync.create_keyspace_simple(keyspace, rf)
        adb.sync.sync_db()


def connect(app: Flask) -> str:
    """Connect now and return the node's Cassandra version.

    A lazily connected app otherwise connects on its first query; calling
    this before serving (e.g. in gunicorn's ``post_worker_init``) means no
    request ever races the connection being set up.
    """
    with app.app_context():
        return adb.sync.execute("SELECT release_version FROM system.local").one()["release_version"]


def register_init_db(app: Any, create_schema: Callable[[int | None], None]) -> None:
    """``flask init-db`` (``quart init-db`` for the Quart app): run
    ``create_schema(replication_factor)``, one line of error if no node answers."""

    @app.cli.command("init-db")
    @click.option(
        "--replication-factor",
        type=click.IntRange(min=1),
        default=None,
        help="Replication factor of a newly created keyspace (default: $NOTES_REPLICATION_FACTOR or 1).",
    )
    def init_db(replication_factor: int | None) -> None:
        """Create the keyspace and the tables of the notes service."""
        try:
            create_schema(replication_factor)
        except NoHostAvailable as exc:
            raise click.ClickException(f"no Cassandra node answers at {app.config['CASSANDRA_HOSTS']}: {exc}") from None
        click.echo(f"keyspace {app.config['CASSANDRA_KEYSPACE']} is ready")


def error_body(error: HTTPException) -> dict[str, Any]:
    """The JSON body of an HTTP error: ``error`` and ``message``, plus
    ``field`` when one field of the request is at fault. The extension's own
    handlers (503 when the cluster cannot answer, 400 for a cqlengine
    validation error) use the same ``error``/``message`` keys."""
    body: dict[str, Any] = {"error": error.name.lower(), "message": error.description}
    if isinstance(error, FieldError):
        body.update(error=error.error, field=error.field)
    elif isinstance(error, (InvalidCursor, InvalidPageSize)):
        # The extension's pagination errors: name the query parameter too.
        body.update(error="invalid value", field="cursor" if isinstance(error, InvalidCursor) else "per_page")
    return body


def error_headers(error: HTTPException) -> list[tuple[str, str]]:
    """What the error adds to its own response (Allow on a 405, ...), without its content type."""
    return [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]


def _http_error(error: HTTPException) -> Any:
    """Every HTTP error as JSON (:func:`error_body`)."""
    if error.response is not None or error.code is None:
        return error
    response = jsonify(error_body(error))
    response.status_code = error.code
    for name, value in error_headers(error):
        response.headers.add(name, value)
    return response


def _env_bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    value = env.get(key)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"{key}: expected true or false, got {value!r}")


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}: expected a whole number, got {value!r}") from None
