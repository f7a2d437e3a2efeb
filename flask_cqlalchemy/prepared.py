"""The prepared-statement fast path.

cqlengine sends every statement as an unprepared query, so the node parses
each one again. For the statements cqlengine generates with named bind
markers (``%(0)s``: point reads, inserts, updates, deletes, page fetches),
this sends the same statement prepared instead, with the same consistency,
serial consistency, page size and retry policy, and the routing key and
keyspace the prepared metadata gives (the same as cqlengine's); the timeout
and paging state travel with the request as before.

Preparing takes a round trip, so a statement text is first sent unprepared
while the driver's own thread pool prepares it in the background; from then
on it goes prepared. Nothing waits for a prepare, on a loop or elsewhere.
Anything this cannot reproduce exactly (literal ``%``, ``IN`` lists quoted by
cqlengine, a value the prepared metadata refuses) goes unprepared.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from typing import Any

from cassandra.cluster import Session
from cassandra.cqlengine.statements import ValueQuoter
from cassandra.query import BoundStatement, PreparedStatement, SimpleStatement

log = logging.getLogger("flask_cqlalchemy")

_NAMED_MARKER = re.compile(r"%\((\w+)\)s")
_UNSUITABLE = object()


class PreparedCache:
    """Prepared statements of one session, by CQL text (which names the
    keyspace of every table cqlengine queries); the oldest leave first."""

    def __init__(self, session: Session, size: int = 1024) -> None:
        self._session = session
        self._size = size
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._preparing: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(1 for entry in self._entries.values() if entry is not _UNSUITABLE)

    def bind(self, query: Any, params: Any) -> tuple[Any, Any]:
        """Return ``(query, params)`` to send: a bound prepared statement and
        no params when possible, else the statement unchanged."""
        if type(query) is not SimpleStatement or not isinstance(params, dict) or not params:
            return query, params
        entry = self.lookup(query.query_string)
        if entry is None:
            return query, params
        prepared, names = entry
        values = []
        for name in names:
            value = params[name]
            if isinstance(value, ValueQuoter):
                return query, params
            values.append(value)
        bound = bind_like(prepared, values, query)
        return (query, params) if bound is None else (bound, None)

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until no statement is being prepared in the background;
        whether that happened within ``timeout`` seconds. For tests and
        benchmarks that need the prepared path from a known point on."""
        deadline = time.monotonic() + timeout
        while self._preparing:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def lookup(self, text: str) -> tuple[PreparedStatement, list[str]] | None:
        """The prepared statement of ``text`` and its marker names in order,
        or None (not prepared yet: preparing starts in the background now;
        or not preparable)."""
        entry = self._entries.get(text)
        if entry is None:
            self._prepare_later(text)
            return None
        if entry is _UNSUITABLE:
            return None
        return entry  # type: ignore[no-any-return]

    def _prepare_later(self, text: str) -> None:
        with self._lock:
            if text in self._preparing or text in self._entries:
                return
            self._preparing.add(text)
        try:
            self._session.submit(self._prepare, text)
        except Exception:  # session shutting down: stay unprepared
            with self._lock:
                self._preparing.discard(text)

    def _prepare(self, text: str) -> None:
        names = _NAMED_MARKER.findall(text)
        positional = _NAMED_MARKER.sub("?", text)
        entry: Any = _UNSUITABLE
        if names and "%" not in positional:
            try:
                prepared: PreparedStatement = self._session.prepare(positional)
                entry = (prepared, names)
            except Exception as exc:
                # Most often a table that does not exist yet: try again on a later use.
                log.debug("could not prepare %r: %s", text, exc)
                with self._lock:
                    self._preparing.discard(text)
                return
        with self._lock:
            self._preparing.discard(text)
            self._entries[text] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def bind_like(prepared: PreparedStatement, values: list[Any], template: SimpleStatement) -> BoundStatement | None:
    """``values`` bound into ``prepared``, with the options cqlengine gave
    ``template``; None when the node's types refuse a value (sent unprepared
    instead, the node then says so, as before)."""
    try:
        bound = prepared.bind(values)
    except Exception:
        return None
    bound.consistency_level = template.consistency_level
    bound.serial_consistency_level = template.serial_consistency_level
    bound.fetch_size = template.fetch_size
    bound.retry_policy = template.retry_policy
    if template.is_idempotent:
        bound.is_idempotent = True
    # The routing key and keyspace come from the prepared metadata (the
    # partition key's bind positions), equal to what cqlengine computed.
    return bound
