"""An app for the migration tests run through the real ``flask`` command:

    MIGRATE_KEYSPACE=ks MIGRATE_DIR=/tmp/m flask --app "tests.migrate_app:create_app()" cql migrate upgrade

Configured from the environment (so that two processes can run it at once
against any node): ``CASSANDRA_HOSTS``, ``MIGRATE_PORT``, ``MIGRATE_KEYSPACE``,
``MIGRATE_DIR``, ``MIGRATE_LOCK_TTL``, ``MIGRATE_LOCK_WAIT``, and
``MIGRATE_START_AT`` (a Unix time: the factory returns only then, so that
two processes start their command at the same moment). It has no models:
the migration files are the schema.
"""

from __future__ import annotations

import os
import time

from flask import Flask

from flask_cqlalchemy import CQLAlchemy

db = CQLAlchemy()


def create_app() -> Flask:
    env = os.environ
    app = Flask(__name__)
    app.config.update(
        CASSANDRA_HOSTS=[h for h in env.get("CASSANDRA_HOSTS", "127.0.0.1").split(",") if h],
        CASSANDRA_KEYSPACE=env["MIGRATE_KEYSPACE"],
        CASSANDRA_MIGRATIONS_DIR=env["MIGRATE_DIR"],
        CASSANDRA_LAZY_CONNECT=True,
        CASSANDRA_CONSISTENCY="QUORUM",
        CASSANDRA_SETUP_KWARGS={"connect_timeout": 10, "control_connection_timeout": 10},
    )
    if "MIGRATE_PORT" in env:
        app.config["CASSANDRA_PORT"] = int(env["MIGRATE_PORT"])
    for key in ("LOCK_TTL", "LOCK_WAIT"):
        if f"MIGRATE_{key}" in env:
            app.config[f"CASSANDRA_MIGRATIONS_{key}"] = int(env[f"MIGRATE_{key}"])
    db.init_app(app)
    if "MIGRATE_START_AT" in env:
        time.sleep(max(0.0, float(env["MIGRATE_START_AT"]) - time.time()))
    return app
