"""A small app for the ``flask cql`` tests, loadable by the real ``flask`` command:

    flask --app tests.cli_app cql status
    flask --app "tests.cli_app:create_app(port=1, lazy=True)" cql status
    quart --app "tests.cli_app:create_quart_app(lazy=True)" cql status

Its keyspace, ``flask_cqlalchemy_cli``, belongs to tests/test_cli.py alone.

It connects lazily, as recommended for the CLI.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from flask import Flask

from flask_cqlalchemy import CQLAlchemy

HOSTS = [h.strip() for h in os.environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",") if h.strip()]
KEYSPACE = "flask_cqlalchemy_cli"

db = CQLAlchemy()


def create_app(
    keyspace: str = KEYSPACE, *, lazy: bool = False, port: int | None = None, framework: type[Any] = Flask
) -> Any:
    app = framework(__name__)
    app.config.update(
        CASSANDRA_HOSTS=HOSTS,
        CASSANDRA_KEYSPACE=keyspace,
        CASSANDRA_LAZY_CONNECT=lazy,
        SECRET_KEY="cli tests",
    )
    if port is not None:
        app.config["CASSANDRA_PORT"] = port
    db.init_app(app)
    return app


def create_quart_app(keyspace: str = KEYSPACE, *, lazy: bool = False, port: int | None = None) -> Any:
    """The same app on Quart (``quart --app ... cql``), on the same extension."""
    from quart import Quart

    return create_app(keyspace, lazy=lazy, port=port, framework=Quart)


app = create_app(lazy=True)


class CliAddress(db.UserType):
    street = db.columns.Text()
    city = db.columns.Text()


class CliUser(db.Model):
    uid = db.columns.UUID(primary_key=True, default=uuid.uuid4)
    name = db.columns.Text()
    email = db.columns.Text(index=True)
    address = db.columns.UserDefinedType(CliAddress)


class CliEvent(db.Model):
    user_id = db.columns.UUID(partition_key=True)
    at = db.columns.TimeUUID(primary_key=True, clustering_order="DESC", default=uuid.uuid1)
    kind = db.columns.Text()
    tags = db.columns.Set(db.columns.Text())
