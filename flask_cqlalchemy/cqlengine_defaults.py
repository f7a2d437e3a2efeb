"""cqlengine's process-wide defaults, for plain cqlengine code in the process.

The original Flask-CQLAlchemy ran ``connection.setup()`` in every
``init_app``: plain cqlengine code (models without ``__connection__``,
``cassandra.cqlengine.management`` calls) then used the cluster and keyspace
of the app initialised last. This keeps that: each ``init_app`` makes its
app's connection cqlengine's default connection and its keyspace
``models.DEFAULT_KEYSPACE``; ``set_keyspace`` on that app moves the default
keyspace too; and when that app is shut down, the app initialised before it
(still running) becomes the default again, or there is no default at all.

``db.Model`` does not use these defaults: each model asks its extension for
the current app's connection and keyspace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cassandra.cqlengine import connection as cqlengine_connection
from cassandra.cqlengine import models

if TYPE_CHECKING:
    from .extension import AppState

#: Apps that were cqlengine's default, oldest first; the last one is it now.
_defaults: list[AppState] = []


def adopt(state: AppState) -> None:
    """Make the app of ``state`` cqlengine's default connection and keyspace."""
    if state in _defaults:
        _defaults.remove(state)
    _defaults.append(state)
    _apply(state)


def keyspace_changed(state: AppState) -> None:
    """``set_keyspace`` ran on the app of ``state``."""
    if _defaults and _defaults[-1] is state:
        models.DEFAULT_KEYSPACE = state.keyspace


def release(state: AppState) -> None:
    """The app of ``state`` was shut down (its connections already
    unregistered, which removed cqlengine's default if it was this app's):
    the app that was the default before it takes over again, if any."""
    was_default = bool(_defaults) and _defaults[-1] is state
    if state in _defaults:
        _defaults.remove(state)
    if not was_default or cqlengine_connection.DEFAULT_CONNECTION in cqlengine_connection._connections:
        return  # not the default, or plain cqlengine code set its own since
    if _defaults:
        _apply(_defaults[-1])
    else:
        models.DEFAULT_KEYSPACE = None


def _apply(state: AppState) -> None:
    if state.connection_name in cqlengine_connection._connections:
        cqlengine_connection.set_default_connection(state.connection_name)
    models.DEFAULT_KEYSPACE = state.keyspace
