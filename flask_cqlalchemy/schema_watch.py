"""Prepared statements and plans live for one version of the schema.

A prepared statement carries the column types of the schema it was prepared
against; values bound into it after the table was re-created with other
types, or after a field was added to one of its user-defined types, are
encoded with the old types (an error, or a new UDT field silently dropped).
Three things end a prepared statement's life here:

* this extension's own DDL (``sync_db``, ``sync_table``, ``sync_type``,
  ``drop_table``, keyspace calls): the routes are invalidated as soon as it
  returns;
* a schema change made by anyone else: the node pushes a ``SCHEMA_CHANGE``
  event to the driver's control connection, which invalidates the routes of
  that cluster when it arrives (before the driver's own metadata refresh,
  which waits for a quiet window);
* a node that no longer knows a statement (it evicts prepared statements of
  a table whose schema changed): the driver would prepare the text again and
  re-send the values it already encoded with the old types. For statements
  bound here that becomes :class:`~.prepared.StalePreparedStatement`, upon
  which cqlengine's own statement is sent unprepared (:mod:`.execution`).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from cassandra.cluster import Cluster, ResponseFuture

from .prepared import CqlengineBound, StalePreparedStatement

log = logging.getLogger("flask_cqlalchemy")

_guard_lock = threading.Lock()
_driver_reprepare: Callable[..., Any] | None = None


def guard_repreparing() -> None:
    """Once per process: a statement bound here that the node no longer
    knows fails with :class:`StalePreparedStatement` instead of being re-sent
    with values encoded for the old schema. Every other statement keeps the
    driver's behaviour."""
    global _driver_reprepare
    with _guard_lock:
        if _driver_reprepare is not None:
            return
        _driver_reprepare = ResponseFuture._reprepare

        def _reprepare(future: Any, prepare_message: Any, host: Any, connection: Any, pool: Any) -> None:
            if isinstance(future.query, CqlengineBound):
                # Runs in the driver's executor: the connection of the failed
                # request was given back already, nothing else is held.
                future._set_final_exception(StalePreparedStatement(future.query.prepared_statement.query_string))
                return
            assert _driver_reprepare is not None
            _driver_reprepare(future, prepare_message, host, connection, pool)

        ResponseFuture._reprepare = _reprepare


def on_schema_change(cluster: Cluster, callback: Callable[[str | None, str | None], None]) -> None:
    """Call ``callback(keyspace, table)`` (on the driver's I/O thread) for
    every schema-change event the node pushes to ``cluster``: ``table`` is
    the table changed, or None when the change may touch any table of the
    keyspace (a user-defined type, a function, the keyspace itself).

    The control connection relays events to its ``_handle_schema_change``
    looked up by name at each event (and after every reconnect), so an
    instance attribute wrapping it sees them all. The callback is held
    weakly if it is a bound method: a route that went away stops listening.
    """
    control = cluster.control_connection
    relay = control._handle_schema_change
    target: Callable[[], Callable[[str | None, str | None], None] | None]
    if hasattr(callback, "__self__"):
        target = weakref.WeakMethod(callback)  # type: ignore[arg-type]
    else:
        target = lambda: callback  # noqa: E731

    def handle_schema_change(event: Any) -> Any:
        function = target()
        if function is not None:
            try:
                function(*_changed(event))
            except Exception:  # never break the driver's own handling
                log.exception("invalidating prepared statements after %s failed", event)
        return relay(event)

    control._handle_schema_change = handle_schema_change


def _changed(event: Any) -> tuple[str | None, str | None]:
    """``(keyspace, table)`` a schema-change event may have made stale."""
    if not isinstance(event, dict):
        return None, None
    table = event.get("table") if event.get("target_type") == "TABLE" else None
    return event.get("keyspace"), table
