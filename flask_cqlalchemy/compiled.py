"""Compiled plans: point reads and inserts of a known shape, bound straight
into their prepared statement.

cqlengine builds every statement anew: it clones the queryset for each
filter, renders the CQL text, computes the routing key, and only then can
the prepared fast path (:mod:`.prepared`) look that text up. For the two
hottest calls, ``Model.get``/``aget`` by equality filters and
``Model.create``/``acreate``, both without queryset options, statements of
one *shape* (model, table with its keyspace, filter names or inserted
columns) differ only in their values. So the first call of a shape goes
through cqlengine as always and its finished statement becomes the shape's
plan; once the node has prepared that statement, later calls convert their
values with the column methods cqlengine itself uses (``to_database``) and
bind them straight into it.

A plan is kept only if, for the call that taught it, it gives exactly the
parameters cqlengine gave. Whatever a plan does not cover (filter operators,
tokens and query functions, a value the column or the node refuses, a column
explicitly set to None, static-only saves, polymorphic or counter models, an
overridden ``save``, a model with its own queryset class, abstract models)
goes the usual way and raises the usual errors.

Plans live on the session's :class:`~.execution.Route`, so a new session (a
reconnect, a forked worker) starts without any. They are plain dict entries:
two threads may learn the same shape at once, and one plan simply replaces
the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cassandra.cqlengine import connection as cqlengine_connection
from cassandra.cqlengine import models
from cassandra.cqlengine.functions import BaseQueryFunction
from cassandra.cqlengine.query import DMLQuery
from cassandra.query import PreparedStatement, SimpleStatement

from . import execution
from .prepared import bind_like

#: Most shapes an application has is models x filter/column combinations;
#: past this many, the plans of a session are dropped and learnt again.
MAX_PLANS = 1024

_UNSUITABLE = object()
#: Kinds of plan: a read and an insert may name the same columns.
READ, INSERT = "read", "insert"


def plan_key(kind: str, model: Any, keyspace: str | None, names: tuple[str, ...]) -> tuple[Any, ...]:
    """Where the plan of a shape is kept in ``Route.plans``."""
    return (kind, model, keyspace, names)


class Plan:
    """The statement of one shape, as cqlengine built it once."""

    __slots__ = ("template", "timeout", "names", "prepared")

    def __init__(self, template: SimpleStatement, timeout: Any, names: tuple[str, ...]) -> None:
        self.template = template
        self.timeout = timeout
        #: cqlengine's marker names (``%(0)s``...), in the order values come
        self.names = names
        self.prepared: PreparedStatement | None = None

    def statement(self, route: execution.Route, session: Any, values: list[Any]) -> execution.Statement | None:
        """The statement of these (converted) values, or None when it cannot
        go prepared (not prepared yet, or the node's types refuse a value)."""
        prepared = self.prepared_for(route)
        if prepared is None:
            return None
        bound = bind_like(prepared, values, self.template)
        if bound is None:
            return None
        params = dict(zip(self.names, values, strict=True))
        return execution.Statement(session, self.template, params, self.timeout, bound)

    def prepared_for(self, route: execution.Route) -> PreparedStatement | None:
        """The prepared statement, once the node has prepared it."""
        if self.prepared is not None:
            return self.prepared
        if route.prepared is None:
            return None
        entry = route.prepared.lookup(self.template.query_string)
        if entry is None or tuple(entry[1]) != self.names:
            return None
        self.prepared = entry[0]
        return self.prepared


def _route_of(connection_name: str) -> tuple[execution.Route, Any] | None:
    """The route and session of a connection, if connected and preparing."""
    connection = cqlengine_connection._connections.get(connection_name)
    session = None if connection is None else connection.session
    if session is None:
        return None
    route = getattr(session, execution._ROUTE_ATTRIBUTE, None)
    if route is None or route.prepared is None:
        return None
    return route, session


def _remember(route: execution.Route, key: Any, plan: Any) -> None:
    if len(route.plans) >= MAX_PLANS:
        route.plans.clear()
    route.plans[key] = plan


def _learnt(statements: list[execution.Statement], params: dict[str, Any]) -> Plan | Any:
    """A plan from the one statement cqlengine built, if it matches ``params``."""
    if len(statements) != 1:
        return _UNSUITABLE
    statement = statements[0]
    if type(statement.query) is not SimpleStatement or statement.wire is not None or statement.params != params:
        return _UNSUITABLE
    return Plan(statement.query, statement.timeout, tuple(params))


# -- point reads ---------------------------------------------------------------


def _read_key(model: Any, filters: Mapping[str, Any]) -> tuple[Any, ...] | None:
    if any("__" in name for name in filters):
        return None  # a filter operator (id__in=...): cqlengine's way
    return plan_key(READ, model, model._get_keyspace(), tuple(filters))


def _converted(model: Any, filters: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]] | None:
    """The filters' database values, and the values cqlengine's filter() keeps
    to put into each row it constructs; None when cqlengine's way must
    handle them (and raise its own error, if any)."""
    values = []
    deferred = {}
    try:
        for name, value in filters.items():
            if value is None or isinstance(value, BaseQueryFunction):
                return None
            column = model._get_column(name)
            values.append(column.to_database(value))
            deferred[column.db_field_name] = value
    except Exception:
        return None
    return values, deferred


def read_statement(
    model: Any, connection: str, filters: Mapping[str, Any]
) -> tuple[execution.Statement, dict[str, Any]] | None:
    """``(statement, deferred values)`` of ``model.get(**filters)`` from its
    plan, or None: go the usual way (and :func:`learn_read` from it)."""
    found = _route_of(connection)
    if found is None:
        return None
    route, session = found
    plan = route.plans.get(plan_key(READ, model, model._get_keyspace(), tuple(filters)))
    if plan is None or plan is _UNSUITABLE:
        return None
    converted = _converted(model, filters)
    if converted is None:
        return None
    values, deferred = converted
    statement = plan.statement(route, session, values)
    if statement is None:
        return None
    return statement, deferred


def learn_read(
    model: Any, connection: str, filters: Mapping[str, Any], build: Callable[[], execution.Statement]
) -> None:
    """Keep the plan of ``model.get(**filters)``, unless known: ``build`` gives
    the statement cqlengine builds for it."""
    found = _route_of(connection)
    key = _read_key(model, filters)
    if found is None or key is None or key in found[0].plans:
        return
    converted = _converted(model, filters)
    if converted is None:
        return
    try:
        statement = build()
    except Exception:  # the usual way raises it
        return
    plan = _learnt([statement], {str(i): v for i, v in enumerate(converted[0])})
    _remember(found[0], key, plan)


# -- inserts -----------------------------------------------------------------


def _insertable(model: Any) -> bool:
    """Whether ``model.create`` is cqlengine's plain insert, which a plan can replay."""
    return (
        not model._is_polymorphic
        and not model._has_counter
        and model.save is models.BaseModel.save
        and model.__dmlquery__ is DMLQuery
    )


def _inserted(model: Any, instance: Any, convert: bool = True) -> tuple[tuple[str, ...], list[Any]] | None:
    """The columns cqlengine's save would insert and (``convert``) their
    database values, or None when its save would do more than one plain insert."""
    # A column's value is its manager's getval(), which is what the
    # attribute (cqlengine's column descriptor) returns.
    managers = instance._values
    clustering = model._clustering_keys
    if clustering and all(column._val_is_null(managers[name].getval()) for name, column in clustering.items()):
        return None  # a static-only save
    names: list[str] = []
    values: list[Any] = []
    for name, column in model._columns.items():
        manager = managers[name]
        value = manager.getval()
        if column._val_is_null(value):
            if manager.deleted:
                return None  # cqlengine follows the insert with a DELETE of that column
            continue
        names.append(name)
        if convert:
            values.append(column.to_database(value))
    return tuple(names), values


def insert_statement(model: Any, connection: str, instance: Any) -> execution.Statement | None:
    """The statement of saving ``instance``, new from ``model.create``, from
    its plan, the instance left in the state cqlengine's save leaves it in;
    or None: save it the usual way (and :func:`learn_insert` from that).

    The instance is validated only once a usable plan is found, so that the
    usual way validates it once too. Validation errors are raised here,
    before anything is sent, as ``save`` raises them.
    """
    if not _insertable(model):
        return None
    found = _route_of(connection)
    if found is None:
        return None
    route, session = found
    shape = _inserted(model, instance, convert=False)
    if shape is None:
        return None
    plan = route.plans.get(plan_key(INSERT, model, model._get_keyspace(), shape[0]))
    if plan is None or plan is _UNSUITABLE or plan.prepared_for(route) is None:
        return None
    instance.validate()
    try:
        inserted = _inserted(model, instance)
    except Exception:  # the usual way raises cqlengine's own error for it
        return None
    # A validate() that changed which columns are set (not cqlengine's) goes
    # the usual way, as does a value the node's types refuse.
    if inserted is None or inserted[0] != shape[0]:
        return None
    names, db_values = inserted
    statement = plan.statement(route, session, db_values)
    if statement is None:
        return None
    # What cqlengine's save does to the instance around its insert.
    managers = instance._values
    columns = model._columns
    for name in names:
        manager = managers[name]
        if columns[name].has_default and not manager.changed:
            manager.explicit = True
    instance._set_persisted()
    instance._timestamp = None
    return statement


def learn_insert(model: Any, connection: str, instance: Any, statements: list[execution.Statement]) -> None:
    """Keep the plan of ``model.create`` from the statement cqlengine built for ``instance``."""
    if not _insertable(model):
        return
    found = _route_of(connection)
    if found is None:
        return
    try:
        inserted = _inserted(model, instance)
    except Exception:
        return
    if inserted is None:
        return
    names, db_values = inserted
    key = plan_key(INSERT, model, model._get_keyspace(), names)
    if key not in found[0].plans:
        _remember(found[0], key, _learnt(statements, {str(i): v for i, v in enumerate(db_values)}))
