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

What goes prepared must store and match exactly what cqlengine's unprepared
statement would. So a statement stays unprepared when a prepared one could
differ:

* literal ``%`` in the text, ``IN`` lists cqlengine quotes itself, a value
  the prepared metadata refuses (the node then answers as it always did);
* a bound column whose type holds a set or a map *inside* another value (a
  UDT, a tuple, a collection): the node sorts a set or map literal, and a
  top-level bound set or map, but keeps one nested in a bound value in the
  order it was sent, and compares frozen values byte by byte;
* values the driver binds otherwise than the node reads cqlengine's literal
  of them are put in the literal's form first, at any depth: single-precision
  floats half-way between two floats (:func:`_float_for_node`), NaN,
  decimals (the driver's literal goes through ``float``:
  :func:`_decimal_for_node`) and IPv4-mapped IPv6 addresses
  (:func:`_inet_for_node`).

A prepared statement is valid for one version of the schema of its table
and types: see :meth:`PreparedCache.invalidate` and :mod:`.schema_watch`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from cassandra import DriverException, cqltypes
from cassandra.cluster import Session
from cassandra.cqlengine.statements import ValueQuoter
from cassandra.query import BoundStatement, PreparedStatement, SimpleStatement

log = logging.getLogger("flask_cqlalchemy")

_NAMED_MARKER = re.compile(r"%\((\w+)\)s")
_UNSUITABLE = object()


class CqlengineBound(BoundStatement):  # type: ignore[misc]
    """A statement cqlengine built, bound into its prepared statement here.

    The driver answers a node's "unprepared" by preparing the text again and
    re-sending the values it already encoded with the old statement's types.
    For these statements :mod:`.schema_watch` makes that answer an error
    (:class:`StalePreparedStatement`) instead, so that cqlengine's own
    statement is sent, unprepared, and nothing is stored with stale types.
    """


class StalePreparedStatement(DriverException):  # type: ignore[misc]
    """The node no longer knows a statement prepared here (its table or one
    of its types changed since): send cqlengine's statement unprepared."""


class PreparedCache:
    """Prepared statements of one session, by CQL text (which names the
    keyspace of every table cqlengine queries); the oldest leave first."""

    def __init__(self, session: Session, size: int = 1024) -> None:
        self._session = session
        self._size = size
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._preparing: set[str] = set()
        self._lock = threading.Lock()
        #: Bumped by :meth:`invalidate`, which also records what changed: a
        #: prepare that started before a change it depends on is not kept (it
        #: may have been prepared against the old schema).
        self._generation = 0
        self._changes: deque[tuple[int, str | None, str | None]] = deque(maxlen=256)

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

    def invalidate(self, keyspace: str | None = None, table: str | None = None) -> None:
        """Forget the prepared statements of ``table`` in ``keyspace``, of
        any table of ``keyspace`` (no table), or all (neither): that schema
        changed (our DDL, a schema-change event from the node, or a node that
        no longer knows a statement). Each text is prepared again at its
        next use."""
        with self._lock:
            self._generation += 1
            self._changes.append((self._generation, keyspace, table))
            if keyspace is None:
                self._entries.clear()
                return
            for text, entry in list(self._entries.items()):
                if entry is _UNSUITABLE or depends_on(entry[0], keyspace, table):
                    del self._entries[text]

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
            generation = self._generation
        try:
            self._session.submit(self._prepare, text, generation)
        except Exception:  # session shutting down: stay unprepared
            with self._lock:
                self._preparing.discard(text)

    def _prepare(self, text: str, generation: int) -> None:
        names = _NAMED_MARKER.findall(text)
        positional = _NAMED_MARKER.sub("?", text)
        entry: Any = _UNSUITABLE
        prepared: PreparedStatement | None = None
        if names and "%" not in positional:
            try:
                prepared = self._session.prepare(positional)
            except Exception as exc:
                # Most often a table that does not exist yet: try again on a later use.
                log.debug("could not prepare %r: %s", text, exc)
                with self._lock:
                    self._preparing.discard(text)
                return
            if _binds_exactly(prepared):
                entry = (prepared, names)
        with self._lock:
            self._preparing.discard(text)
            if prepared is not None and self._changed_since(generation, prepared):
                return  # its schema changed meanwhile: prepare again at the next use
            self._entries[text] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def _changed_since(self, generation: int, prepared: PreparedStatement) -> bool:
        """Whether a change recorded after ``generation`` may touch ``prepared`` (under the lock)."""
        if generation == self._generation:
            return False
        if not self._changes or self._changes[0][0] > generation + 1:
            return True  # more changes than remembered: assume the worst
        return any(
            keyspace is None or depends_on(prepared, keyspace, table)
            for number, keyspace, table in self._changes
            if number > generation
        )


def depends_on(prepared: PreparedStatement, keyspace: str, table: str | None) -> bool:
    """Whether ``prepared`` was prepared against the schema of ``table`` in
    ``keyspace`` (of any table of it when ``table`` is None)."""
    # The bind markers' metadata names the table (the statement's own
    # ``keyspace`` is the one given to prepare(), None here).
    metadata = prepared.column_metadata
    if not metadata:
        return True  # nothing says where it belongs: forget it to be safe
    if metadata[0].keyspace_name != keyspace:
        return False
    return table is None or metadata[0].table_name == table


def bind_like(prepared: PreparedStatement, values: list[Any], template: SimpleStatement) -> BoundStatement | None:
    """``values`` bound into ``prepared``, with the options cqlengine gave
    ``template``; None when the node's types refuse a value (sent unprepared
    instead, the node then says so, as before)."""
    adjust = _ADJUSTERS.get(prepared)
    try:
        if adjust:
            values = list(values)
            for index, function in adjust:
                values[index] = function(values[index])
        bound = CqlengineBound(prepared).bind(values)
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


# -- values as the node would store cqlengine's literal ----------------------------

#: Per prepared statement: (bind position, value adjuster) for the columns
#: whose values the driver binds differently from cqlengine's literal.
_ADJUSTERS: dict[PreparedStatement, list[tuple[int, Callable[[Any], Any]]]] = {}
_ADJUSTERS_LOCK = threading.Lock()


def _binds_exactly(prepared: PreparedStatement) -> bool:
    """Whether binding into ``prepared`` can store exactly what cqlengine's
    literal stores; records the value adjusters it needs."""
    adjust = []
    for index, column in enumerate(prepared.column_metadata or ()):
        if _nested_unordered(column.type, top=True):
            return False
        function = _value_adjuster(column.type)
        if function is not None:
            adjust.append((index, function))
    if adjust:
        with _ADJUSTERS_LOCK:
            if len(_ADJUSTERS) > 4096:  # prepared statements of long-gone sessions
                _ADJUSTERS.clear()
            _ADJUSTERS[prepared] = adjust
    return True


def _inner(cql_type: Any) -> tuple[Any, ...]:
    return tuple(getattr(cql_type, "subtypes", ()) or ())


def _nested_unordered(cql_type: Any, top: bool) -> bool:
    """Whether a set or map lies anywhere below the top of ``cql_type``."""
    if issubclass(cql_type, (cqltypes.FrozenType, cqltypes.ReversedType)):
        return any(_nested_unordered(inner, top) for inner in _inner(cql_type))
    if not top and issubclass(cql_type, (cqltypes.SetType, cqltypes.MapType)):
        return True
    return any(_nested_unordered(inner, False) for inner in _inner(cql_type))


def _value_adjuster(cql_type: Any) -> Callable[[Any], Any] | None:
    """A function putting every value of ``cql_type`` (at any depth) in the
    form the node stores cqlengine's literal of it, or None if the driver's
    binding already stores exactly that."""
    for leaf_type, function in _LEAVES:
        if issubclass(cql_type, leaf_type):
            return function
    inner = _inner(cql_type)
    if not inner:
        return None
    adjusters = [_value_adjuster(t) for t in inner]
    if not any(adjusters):
        return None
    if issubclass(cql_type, (cqltypes.FrozenType, cqltypes.ReversedType)):
        return adjusters[0]
    if issubclass(cql_type, (cqltypes.ListType, cqltypes.SetType)) and adjusters[0] is not None:
        element = adjusters[0]
        return lambda value: value if value is None else type(value)(element(v) for v in value)
    if issubclass(cql_type, cqltypes.MapType):
        key = adjusters[0] or _same
        item = adjusters[1] or _same
        return lambda value: value if value is None else {key(k): item(v) for k, v in value.items()}
    if issubclass(cql_type, cqltypes.TupleType):  # UDTs too
        names = getattr(cql_type, "fieldnames", None) or [None] * len(inner)
        fields = [(i, name, adjusters[i] or _same) for i, name in enumerate(names)]
        return lambda value: value if value is None else tuple(f(_field(value, i, n)) for i, n, f in fields)
    return None


def _field(value: Any, index: int, name: str | None) -> Any:
    """A tuple's or UDT's field, found as the driver finds it when binding."""
    try:
        return value[index]
    except TypeError:
        return getattr(value, name, None) if name is not None else None


def _same(value: Any) -> Any:
    return value


_FLOAT = struct.Struct(">f")


def _float_for_node(value: Any) -> Any:
    """A single-precision value as the node stores cqlengine's literal of it.

    cqlengine writes a float as ``repr(value)`` and the node parses that
    decimal text straight to single precision; the driver rounds the double
    instead. The two differ only for a double exactly half-way between two
    floats, where the decimal text lies a little to one side. Also NaN: the
    node's literal NaN is one bit pattern, a Python NaN may carry a sign.
    """
    if type(value) is not float:
        return value
    if value != value:
        return math.nan
    mantissa, _ = math.frexp(value)
    scaled = mantissa * 33554432.0  # 2**25: a half-way double has at most 25 significant bits
    if scaled != int(scaled) or math.isinf(value):
        return value  # nearly every value: not half-way, both round alike
    try:
        rounded = _FLOAT.unpack(_FLOAT.pack(value))[0]
    except OverflowError:
        return value  # out of range: the driver refuses it, it goes unprepared
    if rounded == value:
        return value
    # The other float next to the value: one unit past ``rounded``, towards it.
    toward = math.inf if value > rounded else -math.inf
    other = _FLOAT.unpack(_FLOAT.pack(math.nextafter(rounded, toward)))[0]
    if other == rounded:  # nextafter stayed within this float: step by its bits
        other = _next_float(rounded, toward)
    if (rounded + other) / 2 != value:
        return value
    text, exact = Decimal(repr(value)), Decimal(value)
    if text == exact:
        return value  # a true tie: to even, both ways
    # The node rounds the decimal text, which lies a little to one side.
    return other if (text > exact) == (other > rounded) else rounded


def _next_float(value: float, toward: float) -> float:
    """The single-precision neighbour of ``value`` (itself single) towards ``toward``."""
    (bits,) = struct.unpack(">i", _FLOAT.pack(value))
    step = 1 if (toward > value) == (value >= 0 and bits >= 0) else -1
    if value == 0:
        return _FLOAT.unpack(struct.pack(">i", 1 if toward > 0 else -(2**31) + 1))[0]  # type: ignore[no-any-return]
    return _FLOAT.unpack(struct.pack(">i", bits + step))[0]  # type: ignore[no-any-return]


def _double_for_node(value: Any) -> Any:
    """A double as the node stores cqlengine's literal of it (NaN unsigned)."""
    if type(value) is float and value != value:
        return math.nan
    return value


def _decimal_for_node(value: Any) -> Any:
    """A decimal as the node stores cqlengine's literal of it.

    The driver writes a ``Decimal`` literal through ``float`` (its encoder's
    ``cql_encode_decimal``), so cqlengine stores ``Decimal("1.50")`` as 1.5 and
    keeps only a double's digits. Rows written by cqlengine must be found by
    the same key, so the prepared path stores what that literal stores.
    """
    if type(value) is not Decimal:
        return value
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError("not a finite decimal literal")  # goes unprepared, the node refuses it
    return Decimal(repr(as_float))


def _inet_for_node(value: Any) -> Any:
    """An address as the node stores cqlengine's literal of it: the node
    reads an IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) as the IPv4 one."""
    if type(value) is not str or ":" not in value:
        return value
    try:
        mapped = ipaddress.IPv6Address(value).ipv4_mapped
    except ValueError:
        return value
    return value if mapped is None else str(mapped)


#: The leaf types whose bound value is not what the node makes of cqlengine's literal.
_LEAVES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (cqltypes.FloatType, _float_for_node),
    (cqltypes.DoubleType, _double_for_node),
    (cqltypes.DecimalType, _decimal_for_node),
    (cqltypes.InetAddressType, _inet_for_node),
)
