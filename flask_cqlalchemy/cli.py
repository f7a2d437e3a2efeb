"""The ``flask cql`` command group, registered on the app by ``init_app``."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

cql = AppGroup("cql", help="Manage the app's Cassandra schema and connection.")


def register_cli(app: Flask) -> None:
    """Add ``flask cql`` to ``app`` (once)."""
    if "cql" not in app.cli.commands:
        app.cli.add_command(cql)


@cql.command("sync")
def sync_command() -> None:
    """Create or alter every model's table."""
    from flask import current_app

    current_app.extensions["cqlalchemy"].ext.sync_db()
    click.echo("synced")
