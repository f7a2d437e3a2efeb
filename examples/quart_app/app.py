"""The app factory on Quart and its schema command.

The configuration is ``examples/async_app``'s (the same environment
variables, defaults and ``config`` keys; see that app's ``app.py``), except
``CASSANDRA_ASYNC_LOOPS``: Quart runs every view on the server's event loop,
so flask-cqlalchemy refuses ``per-thread`` for a Quart app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from quart import Quart, ResponseReturnValue, jsonify
from werkzeug.exceptions import HTTPException

from examples.async_app.app import configure, error_body, error_headers, register_init_db
from examples.async_app.extensions import adb

from .views import bp


def create_app(config: Mapping[str, Any] | None = None) -> Quart:
    """Build the notes app on Quart: defaults, then the environment, then ``config``.

    Connects to Cassandra unless ``CASSANDRA_LAZY_CONNECT`` is true, and
    raises ``NoHostAvailable`` if no node answers, unless
    ``CASSANDRA_RETRY_CONNECT`` is true (then requests answer 503 until a
    node does). Raises ``ValueError`` naming a malformed environment
    variable, and flask-cqlalchemy's ``ConfigError`` naming a bad config key.
    """
    app = Quart(__name__, static_folder=None)
    configure(app.config, config)
    adb.init_app(app)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    register_init_db(app, lambda replication_factor: asyncio.run(init_schema(app, replication_factor)))
    return app


async def init_schema(app: Quart, replication_factor: int | None = None) -> None:
    """Create the keyspace (SimpleStrategy) if missing, then create or alter the tables."""
    rf = replication_factor if replication_factor is not None else app.config["NOTES_REPLICATION_FACTOR"]
    async with app.app_context():
        await adb.create_keyspace_simple(adb.sync.state().keyspace, rf)
        await adb.sync_db()


async def _http_error(error: HTTPException) -> ResponseReturnValue | HTTPException:
    """Every HTTP error as JSON, in the body the Flask app answers (``error_body``)."""
    if error.response is not None or error.code is None:
        return error
    response = jsonify(error_body(error))
    response.status_code = error.code
    for name, value in error_headers(error):
        response.headers.add(name, value)
    return response
