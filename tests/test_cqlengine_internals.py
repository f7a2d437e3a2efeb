"""Every private name and internal behaviour of cassandra-driver, cqlengine,
Flask, Quart, asgiref, asyncio, wrapt and opentelemetry-instrumentation-cassandra
that flask_cqlalchemy overrides, calls, reads or relies on.

This docstring is THE list: one line per internal, grouped by the module it
lives in, saying what we rely on. ``INTERNALS`` below has one row per line
here (``test_docstring_lists_every_internal`` keeps the two in step), each
checked by ``test_internal_still_there``: present, of the kind we use
(method, classmethod, property, attribute, class), with the parameters we
pass in the order we pass them. The behaviour tests further down check what
a shape cannot show. Marked [node]: checked against the test node. Marked
[tracing]: the behaviour is checked by tests/test_tracing.py
(test_driver_internals_the_tracing_relies_on and its span tests). "(test_x)"
names the tests/test_x.py whose tests against real nodes show the behaviour.

Checked with cassandra-driver 3.29.3 and 3.30.1, whose cqlengine packages
are identical (`make test-drivers`). When an upgrade breaks one of these,
the failing row names the internal and the file of ours that uses it.

cassandra.cqlengine.connection
    _connections                        the registry by name: we put our Connection subclass in it and read it directly
    DEFAULT_CONNECTION                  the key of cqlengine's default connection in _connections
    NOT_SET                             is cassandra.cluster._NOT_SET: the "no timeout given" an instance starts with
    cluster                             module global of the default connection's cluster, cleared after a fork
    session                             module global of the default connection's session, cleared after a fork
    CQLEngineException                  reachable from this module, raised for an unknown connection name
    execute                             session.execute(query, params, timeout=...), the session instance's attribute
    get_connection                      calls the connection's handle_lazy_connect() before handing it out
    set_default_connection              aliases DEFAULT_CONNECTION and sets the module's cluster/session
    unregister_connection               drops the DEFAULT_CONNECTION alias (and module cluster/session) of the default
    Connection                          subclassed by extension._Connection
    Connection.__init__                 name, hosts, consistency, lazy_connect, retry_connect, cluster_options
    Connection.setup                    overridden: connects (no hosts given 'cloud'), or returns while lazy_connect
    Connection.setup_session            overridden, called: dict_factory on the default profile, rows are dicts [node]
    Connection.handle_lazy_connect      overridden (cqlengine clears the lazy flag before it connects)
    Connection.lazy_connect_lock        an RLock per connection: taken by our handle_lazy_connect, replaced after a fork
    Connection.lazy_connect             read and set: connect at first use
    Connection.cluster                  read, and set to None on failure and after a fork
    Connection.session                  read ("connected" = has a session), set to None on failure and after a fork
cassandra.cqlengine.models
    DEFAULT_KEYSPACE                    written by cqlengine_defaults: plain cqlengine models follow the last app
    connection                          the cqlengine.connection module, as models.connection (NOT_SET)
    ModelException                      raised by our _discover_polymorphic_submodels, as cqlengine raises it
    ModelMetaClass                      type(models.Model): builds each extension's abstract db.Model
    hybrid_classmethod                  class-or-instance dispatch: our own _get_connection is one
    _clone_model_class                  using(keyspace)/ContextQuery clones have __module__ cassandra.cqlengine.models
    BaseModel.__init__                  re-done by model._fill: exactly the instance attributes below, value managers
    BaseModel._values                   the value managers by column name (instance attribute)
    BaseModel._is_persisted             instance attribute, saved and restored around an async save
    BaseModel._timestamp                instance attribute, reset after a save
    BaseModel._ttl                      instance attribute set by __init__ and create
    BaseModel._conditional              instance attribute set by __init__
    BaseModel._batch                    instance attribute set by __init__ and create
    BaseModel._timeout                  instance attribute set by __init__ (NOT_SET)
    BaseModel._connection               instance attribute: using(connection=...) comes first
    BaseModel._if_not_exists            class default, set on the instance by create
    BaseModel._if_exists                class default, set on the instance by create
    BaseModel.__consistency__           class default, set on the instance by create
    BaseModel.__queryset__              the queryset class of a model: ours is query.QuerySet
    BaseModel.__dmlquery__              DMLQuery unless overridden: compiled inserts only for the plain one
    BaseModel.create                    a classmethod: model.py calls create.__func__ to run cqlengine's own create
    BaseModel.save                      a plain function: compiled inserts only when a model does not override it
    BaseModel._construct_instance       overridden: Model(**row), _set_persisted(force=True); super() if polymorphic
    BaseModel._set_persisted            overridden (force): changed values become previous, explicit cleared
    BaseModel._get_keyspace             overridden: asked at class creation (UDT registration) and for every query
    BaseModel.column_family_name        overridden (include_keyspace), calls super()
    BaseModel._raw_column_family_name   the bare table name (cli)
    BaseModel._get_column               the Column of a name (compiled)
    BaseModel._class_get_connection     overridden: the app's connection of the model
    BaseModel._inst_get_connection      overridden: the instance's using(), then __connection__, then the app's
    BaseModel._get_connection           a hybrid_classmethod of the two, which cqlengine calls everywhere
    BaseModel._discover_polymorphic_submodels   overridden: called by _construct_instance for unknown discriminators
    Model._columns                      columns by name, in order (set on every class by ModelMetaClass)
    Model._clustering_keys              clustering columns by name (compiled: static-only saves)
    Model._db_map                       db_field -> column name, for rows read
    Model._is_polymorphic               polymorphic models go cqlengine's way
    Model._is_polymorphic_base          polymorphic base (our _discover_polymorphic_submodels)
    Model._discriminator_map            discriminator value -> model, filled by _discover_polymorphic_submodels
    Model._has_counter                  counter models are never compiled inserts
cassandra.cqlengine.query
    ModelQuerySet                       subclassed by query.QuerySet
    AbstractQuerySet.__deepcopy__       overridden: per-execution attributes reset, _batch/_timeout/model shared
    AbstractQuerySet._select_query      the SelectStatement of the queryset, captured and sent by the async face
    AbstractQuerySet._execute           sends a statement through connection.execute (captured by us)
    AbstractQuerySet._maybe_inject_deferred   wraps the row constructor to add the filter values left out of the select
    AbstractQuerySet._deferred_values   those values (instance attribute), added to rows of compiled reads
    AbstractQuerySet._connection        using(connection=...) of the queryset (instance attribute)
    AbstractQuerySet._consistency       read (ANN serial check); a level's name is sent on as is (test_consistency)
    AbstractQuerySet.limit              returns the same queryset for an unchanged limit (we clone then)
    AbstractQuerySet.create             model(**kw).batch().ttl().consistency().if_not_exists().timestamp().if_exists()
    ModelQuerySet._get_result_constructor   the row -> instance (or values_list) constructor
    DMLQuery                            the default __dmlquery__ (compiled inserts compare with it)
    check_applied                       reads result.was_applied (and one() when not applied), raises LWTException
    BatchQuery._callbacks               the callbacks execute() runs, looked up when it runs (swapped out by AsyncBatch)
    BatchQuery._execute_callbacks       runs them (AsyncBatch, after the awaited send)
    BatchQuery._execute_on_exception    the execute_on_exception flag (AsyncBatch.__aexit__)
    BatchQuery._connection              the connection the batch is sent on
    BatchQuery.queries                  the statements queued (AsyncBatch: none queued, nothing to await)
    BatchQuery.execute                  one session.execute for the batch, then the callbacks; empty: callbacks only
    ValidationError                     cqlengine's ValidationError, importable from this module
cassandra.cqlengine.statements
    ValueQuoter                         a parameter cqlengine quotes itself (IN lists): such statements stay unprepared
    SelectStatement.count               instance attribute: set to True for SELECT COUNT(*) (acount)
    BaseCQLStatement.get_context        params named "0", "1"... in the order of the %(N)s markers of str(statement)
cassandra.cqlengine.columns
    BaseValueManager                    the plain value manager: immutable values kept as previous without a deepcopy
    BaseValueManager.__init__           instance, column, value
    BaseValueManager.instance           instance attribute: we store a weak proxy, and pickle without it
    BaseValueManager.value              instance attribute
    BaseValueManager.previous_value     instance attribute, saved and restored around an async save
    BaseValueManager.explicit           instance attribute, saved and restored around an async save
    BaseValueManager.changed            a property
    BaseValueManager.deleted            a property (compiled: a deleted column is not a plain insert)
    BaseValueManager.getval             the value a column attribute returns
    BaseValueManager.reset_previous_value   previous_value = deepcopy(value)
    BaseContainerColumn                 container columns convert None with to_python
    Column.value_manager                the manager class of a column
    Column.has_default                  a property (read as a bool, never called)
    Column.get_default                  the default value
    Column.to_python                    value -> python, as __init__ converts
    Column.to_database                  value -> database value, as filters and inserts convert
    Column._val_is_null                 whether a value counts as null (None, empty collection)
    resolve_udts                        collects the UDT classes of a column (cli)
cassandra.cqlengine.usertype
    BaseUserType                        the base of UserType: json_provider tells user type values by it
    UserType._fields                    the fields of a user type, in order (cli, json_provider)
    UserType.type_name                  the type's CQL name
cassandra.cqlengine.management
    CQLENG_ALLOW_SCHEMA_MANAGEMENT      the environment variable that silences the schema management warning
    _validate_pk                        raises when a table's primary key differs from the model (schema_plan)
    _get_create_table                   the CREATE TABLE of a model (schema_plan: sync --dry-run, autogenerate)
    _get_index_name_by_column           whether a column of a table is indexed (schema_plan)
    _options_map_from_strings           table options as a dict, for comparison (schema_plan)
    get_create_type                     the CREATE TYPE of a user type (schema_plan)
cassandra.cqlengine.functions
    BaseQueryFunction                   query functions (token(), MinTimeUUID...) stay with cqlengine
cassandra.cluster
    _NOT_SET                            the "no timeout given" default of Session.execute, passed on as is
    _watch_callback                     the control connection's relay: looks the handler up by name at each event
    Session                             instances take an instance attribute "execute" (our route)
    Session.execute                     its arguments in order, ours takes the same; execute_async().result() [tracing]
    Session.execute_async               query, parameters and as keywords Session.execute's other arguments [tracing]
    Session.submit                      runs fn(*args) on the driver's executor (background prepares)
    ResponseFuture._reprepare           patched: called as self._reprepare(prepare_message, host, connection, pool)
    ResponseFuture._set_final_exception   fails the request, calling its errbacks
    ResponseFuture.query                instance attribute: the statement sent (ours: a CqlengineBound)
    ResponseFuture.add_callbacks        callback/errback(_args), at once if answered; kept across pages [tracing]
    ResponseFuture.start_fetching_next_page   shadowed per future by an instance attribute that calls it [tracing]
    ResponseFuture.coordinator_host     the host that answered, None until then [tracing]
    ResponseFuture._current_host        the host asked, read when no answer came (a timeout) [tracing]
    ResponseFuture.message              the request sent: its consistency_level and fetch_size [tracing]
    ResponseFuture.result               shadowed per future by an instance attribute that calls it [tracing]
    ResponseFuture._set_final_result    wakes result() before it runs the callbacks: result() ends the span [tracing]
    ResultSet.__init__                  built by us from a future and its first page of rows
    ResultSet.fetch_next_page           calls response_future.start_fetching_next_page(), an instance lookup [tracing]
    ControlConnection._handle_schema_change   wrapped per instance: each SCHEMA_CHANGE event (a dict) passes [node]
    ControlConnection.wait_for_schema_agreement   asked via the node that ran a DDL statement (migrations)
    ResponseFuture._connection          the connection the answer came on: the node that ran it (migrations)
    Cluster.control_connection          the cluster's control connection [node]
    Cluster.scheduler                   the cluster's task scheduler, stopped as the interpreter begins to exit
    _Scheduler.shutdown                 stops the scheduler's thread; Cluster.shutdown calls it again, harmlessly
    _Scheduler.is_shutdown              whether the scheduler was stopped
    Cluster.profile_manager             the cluster's execution profiles (topology)
    ProfileManager.default              a property: the default profile, with our load_balancing_policy (topology)
    NoHostAvailable.__init__            message, errors: args[1] is host -> error (each Unavailable: test_multidc)
cassandra.query
    BatchStatement.__len__              the number of statements added (the span's batch size) [tracing]
    BatchStatement._statements_and_parameters   (is prepared, text or query id, values); values inlined [tracing]
    BoundStatement.prepared_statement   instance attribute: the prepared statement of a bound one
    PreparedStatement.column_metadata   instance attribute: the bind markers' columns (name, type)
cassandra.policies
    TokenAwarePolicy._child_policy      the policy it wraps: our DCAwareRoundRobinPolicy (topology)
    DCAwareRoundRobinPolicy.local_dc    given "": set at connect to the first contact point's DC (test_multidc)
cassandra.datastax.cloud
    read_metadata_info                  a plain DriverException when the metadata service is down (test_security)
cassandra
    AlreadyExists.__init__              keyspace, table: no protocol code in its message (see below) [tracing]
cassandra.protocol
    ColumnMetadata                      each bind marker's column: .type, .keyspace_name, .table_name (staleness)
    ErrorMessage                        a node's error; raised as is when it has no exception (ServerError) [tracing]
    ErrorMessage.code                   instance attribute: the protocol code (db.response.status_code) [tracing]
    ErrorMessage.summary_msg            "Error from server: code=XXXX ...": args[0] of its exceptions [tracing]
    AlreadyExistsException.error_code   0x2400, the code of an AlreadyExists [tracing]
cassandra.cqltypes
    _CassandraType.subtypes             the parameter types of a parameterized type (empty otherwise)
    UserType.fieldnames                 field names of a UDT type class (make_udt_class)
    UserType                            a TupleType subclass
    TupleType                           tuples (and UDTs): per-field value adjustment
    FrozenType                          frozen<...>: one subtype
    ReversedType                        reversed clustering order: one subtype
    ListType                            list<...>
    SetType                             set<...>: unordered, not bound when nested
    MapType                             map<...>: unordered, not bound when nested
    FloatType                           rounded as the node rounds cqlengine's literal
    DoubleType                          NaN sent as the node's NaN
    DecimalType                         decimals bound as cqlengine's literal stores them (see below)
    InetAddressType                     IPv4-mapped IPv6 addresses bound as the node reads their literal
cassandra.encoder
    Encoder.cql_encode_decimal          cqlengine's decimal literal goes through float: Decimal("1.50") is 1.5
cassandra.metadata
    TableMetadata._make_option_strings  classmethod: a table's options as CQL (schema_plan) [node]
    TableMetadataV3._make_option_strings   classmethod: a model's __options__ as CQL (schema_plan)
    TableMetadata.options               instance attribute: the table's options
flask.globals
    _cv_app                             the app context variable: .get(None) is the AppContext, with .app, .g
    _cv_request                         the request context variable: None outside a request (runner, frameworks)
flask.json.provider
    DefaultJSONProvider                 app.json's class (Quart's too): install swaps an instance's __class__ in place
    DefaultJSONProvider.default         Flask's fallback, called by super().default(o); app.json.default = fn hides it
    DefaultJSONProvider.dumps           json.dumps(obj, **kwargs), default=self.default unless given (test_json)
    DefaultJSONProvider.response        jsonify's: writes with self.dumps, our override (NaN written null)
quart.json.provider
    DefaultJSONProvider                 Quart's app.json class: Flask's DefaultJSONProvider, which install extends
quart.globals
    _cv_app                             Quart's app context variable: .get(None) is its AppContext, with .app, .g
    _cv_request                         Quart's request context variable: None outside a request (frameworks)
    _cv_websocket                       Quart's websocket context variable: None outside a websocket (frameworks)
threading
    _register_atexit                    exit hooks, newest first, before thread pools refuse work
asyncio
    _get_running_loop                   the loop running in this thread, or None (runner)
asgiref.sync
    SyncToAsync.threadlocal             main_event_loop(_pid): set in threads serving an outer loop (runner)
    AsyncToSync.loop_thread_executors   loop -> executor for thread-sensitive sync_to_async on that loop (runner)
wrapt
    FunctionWrapper._self_wrapper       the wrapper function of a wrapt-wrapped method [tracing]
opentelemetry.instrumentation.cassandra
    _instrument                         wraps Session.execute_async (class dict) in a function of this module [tracing]
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import importlib
import inspect
import re
import threading
import types
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cassandra import cqltypes
from cassandra.cluster import _NOT_SET, Cluster, ResponseFuture, ResultSet, Session, _watch_callback
from cassandra.cqlengine import columns, models, statements
from cassandra.cqlengine import connection as cqlengine_connection
from cassandra.cqlengine import query as cqlengine_query
from cassandra.cqlengine.query import BatchQuery, LWTException, ModelQuerySet, check_applied
from cassandra.metadata import TableMetadata
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.protocol import ErrorMessage
from cassandra.query import BatchStatement, SimpleStatement, dict_factory
from flask import Flask
from flask.globals import _cv_app
from flask.json.provider import DefaultJSONProvider, JSONProvider

import flask_cqlalchemy.query as our_query
from flask_cqlalchemy import CQLAlchemy
from flask_cqlalchemy.model import ModelMixin

from .conftest import HOSTS, KEYSPACE, make_app

# -- the kinds of internal ---------------------------------------------------------


def _parameters(function: Callable[..., Any]) -> list[str]:
    """Parameter names, without a leading self/cls."""
    names = list(inspect.signature(function).parameters)
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return names


@dataclass(frozen=True)
class Kind:
    what: str
    params: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    type: Any = None

    def check(self, owner: Any, name: str, static: Any, value: Any, instance: Any = None) -> None:
        if self.what in ("method", "classmethod"):
            assert callable(value), f"{name} is no longer callable: {value!r}"
            if self.what == "classmethod":
                assert isinstance(static, classmethod), f"{name} is no longer a classmethod: {static!r}"
            elif inspect.isclass(owner):
                assert not isinstance(static, (classmethod, staticmethod)), f"{name} is now {static!r}"
            names = _parameters(value)
            assert names[: len(self.params)] == list(self.params), f"{name}{inspect.signature(value)}"
            for keyword in self.keywords:
                assert keyword in names, f"{name}{inspect.signature(value)} has no {keyword!r}"
        elif self.what == "property":
            assert isinstance(static, property), f"{name} is no longer a property: {static!r}"
        elif self.what == "class":
            assert inspect.isclass(value), f"{name} is no longer a class: {value!r}"
            if self.type is not None:
                assert issubclass(value, self.type), f"{name} is no longer a subclass of {self.type.__name__}"
        elif self.what == "attribute":
            if self.type is not None:  # as stored: a descriptor is checked as such
                assert isinstance(static, self.type), f"{name} is {static!r}, not a {self.type}"
        elif self.what == "instance":
            assert name in vars(instance), f"{name} is no longer set on instances: {sorted(vars(instance))}"
            if self.type is not None:
                assert isinstance(vars(instance)[name], self.type), f"{name} is {vars(instance)[name]!r}"
        else:  # pragma: no cover - a typo in the table
            raise AssertionError(f"unknown kind {self.what}")


def method(*params: str, kw: tuple[str, ...] = ()) -> Kind:
    """A function or method taking ``params`` first, in this order, and the keywords ``kw``."""
    return Kind("method", params, kw)


def classmeth(*params: str) -> Kind:
    return Kind("classmethod", params)


def prop() -> Kind:
    return Kind("property")


def klass(base: Any = None) -> Kind:
    return Kind("class", type=base)


def attr(type_: Any = None) -> Kind:
    """A module or class attribute (of type ``type_``)."""
    return Kind("attribute", type=type_)


def inst(type_: Any = None) -> Kind:
    """An attribute each instance gets in ``__init__`` (instances from ``INSTANCES``)."""
    return Kind("instance", type=type_)


class Internal(NamedTuple):
    owner: str  # "module" or "module:Class"
    name: str
    kind: Kind
    where: str  # the flask_cqlalchemy module(s) relying on it

    @property
    def label(self) -> str:
        module, _, cls = self.owner.partition(":")
        return f"{module}:{cls + '.' if cls else ''}{self.name}"


C = "cassandra.cqlengine.connection"
M = "cassandra.cqlengine.models"
Q = "cassandra.cqlengine.query"
S = "cassandra.cqlengine.statements"
COL = "cassandra.cqlengine.columns"
MGMT = "cassandra.cqlengine.management"
CL = "cassandra.cluster"
CT = "cassandra.cqltypes"

CONN = f"{C}:Connection"
BM = f"{M}:BaseModel"
MODEL = f"{M}:Model"
AQS = f"{Q}:AbstractQuerySet"
BATCH = f"{Q}:BatchQuery"
VM = f"{COL}:BaseValueManager"
COLUMN = f"{COL}:Column"
SESSION = f"{CL}:Session"
FUTURE = f"{CL}:ResponseFuture"

#: ``Session.execute``'s arguments after the parameters, in order: tracing maps them by name.
EXECUTE_ARGUMENTS = ("timeout", "trace", "custom_payload", "execution_profile", "paging_state", "host", "execute_as")

# One row per line of the module docstring, in its order.
INTERNALS = [
    Internal(C, "_connections", attr(dict), "extension, execution, compiled, cqlengine_defaults"),
    Internal(C, "DEFAULT_CONNECTION", attr(), "execution, extension, cqlengine_defaults"),
    Internal(C, "NOT_SET", attr(), "model"),
    Internal(C, "cluster", attr(), "extension"),
    Internal(C, "session", attr(), "extension"),
    Internal(C, "CQLEngineException", klass(Exception), "execution"),
    Internal(C, "execute", method("query", "params", "consistency_level", "timeout", "connection"), "execution"),
    Internal(C, "get_connection", method("name"), "extension, execution"),
    Internal(C, "set_default_connection", method("name"), "cqlengine_defaults"),
    Internal(C, "unregister_connection", method("name"), "extension, cqlengine_defaults"),
    Internal(C, "Connection", klass(), "extension"),
    Internal(
        CONN,
        "__init__",
        method("name", "hosts", "consistency", "lazy_connect", "retry_connect", "cluster_options"),
        "extension",
    ),
    Internal(CONN, "setup", method(), "extension"),
    Internal(CONN, "setup_session", method(), "extension"),
    Internal(CONN, "handle_lazy_connect", method(), "extension, execution"),
    Internal(CONN, "lazy_connect_lock", inst(), "extension"),
    Internal(CONN, "lazy_connect", inst(bool), "extension"),
    Internal(CONN, "cluster", attr(), "extension, cli"),
    Internal(CONN, "session", attr(), "extension, execution, compiled"),
    Internal(M, "DEFAULT_KEYSPACE", attr(), "cqlengine_defaults"),
    Internal(M, "connection", attr(types.ModuleType), "model"),
    Internal(M, "ModelException", klass(Exception), "model"),
    Internal(M, "ModelMetaClass", klass(type), "model"),
    Internal(M, "hybrid_classmethod", klass(), "model"),
    Internal(M, "_clone_model_class", method("model", "attrs"), "model, extension"),
    Internal(BM, "__init__", method(), "model"),
    Internal(BM, "_values", inst(dict), "model, compiled, json_provider"),
    Internal(BM, "_is_persisted", inst(bool), "model"),
    Internal(BM, "_timestamp", inst(), "model, compiled"),
    Internal(BM, "_ttl", inst(), "model"),
    Internal(BM, "_conditional", inst(), "model"),
    Internal(BM, "_batch", inst(), "model"),
    Internal(BM, "_timeout", inst(), "model"),
    Internal(BM, "_connection", inst(), "model"),
    Internal(BM, "_if_not_exists", attr(bool), "model"),
    Internal(BM, "_if_exists", attr(bool), "model"),
    Internal(BM, "__consistency__", attr(), "model"),
    Internal(BM, "__queryset__", klass(ModelQuerySet), "model"),
    Internal(BM, "__dmlquery__", klass(cqlengine_query.DMLQuery), "compiled"),
    Internal(BM, "create", classmeth(), "model"),
    Internal(BM, "save", method(), "compiled"),
    Internal(BM, "_construct_instance", classmeth("values"), "model, query"),
    Internal(BM, "_set_persisted", method("force"), "model, compiled"),
    Internal(BM, "_get_keyspace", classmeth(), "model, compiled, extension, cli, testing"),
    Internal(BM, "column_family_name", classmeth("include_keyspace"), "model"),
    Internal(BM, "_raw_column_family_name", classmeth(), "cli"),
    Internal(BM, "_get_column", classmeth("name"), "compiled"),
    Internal(BM, "_class_get_connection", classmeth(), "model"),
    Internal(BM, "_inst_get_connection", method(), "model"),
    Internal(BM, "_get_connection", attr(models.hybrid_classmethod), "model, query, extension, cli"),
    Internal(BM, "_discover_polymorphic_submodels", classmeth(), "model"),
    Internal(MODEL, "_columns", attr(dict), "model, compiled, cli, json_provider"),
    Internal(MODEL, "_clustering_keys", attr(dict), "compiled"),
    Internal(MODEL, "_db_map", attr(dict), "model"),
    Internal(MODEL, "_is_polymorphic", attr(bool), "model, compiled"),
    Internal(MODEL, "_is_polymorphic_base", attr(bool), "model"),
    Internal(MODEL, "_discriminator_map", attr(), "model"),
    Internal(MODEL, "_has_counter", attr(bool), "compiled"),
    Internal(Q, "ModelQuerySet", klass(cqlengine_query.AbstractQuerySet), "query"),
    Internal(AQS, "__deepcopy__", method("memo"), "query"),
    Internal(AQS, "_select_query", method(), "query"),
    Internal(AQS, "_execute", method("statement"), "query"),
    Internal(AQS, "_maybe_inject_deferred", method("constructor"), "query"),
    Internal(AQS, "_deferred_values", inst(dict), "model"),
    Internal(AQS, "_connection", inst(), "query"),
    Internal(AQS, "_consistency", inst(), "query, execution"),
    Internal(AQS, "limit", method("v"), "query"),
    Internal(AQS, "create", method(), "model"),
    Internal(f"{Q}:ModelQuerySet", "_get_result_constructor", method(), "query"),
    Internal(Q, "DMLQuery", klass(), "compiled"),
    Internal(Q, "check_applied", method("result"), "query, aio"),
    Internal(BATCH, "_callbacks", inst(list), "aio"),
    Internal(BATCH, "_execute_callbacks", method(), "aio"),
    Internal(BATCH, "_execute_on_exception", inst(bool), "aio"),
    Internal(BATCH, "_connection", inst(), "aio"),
    Internal(BATCH, "queries", inst(list), "aio"),
    Internal(BATCH, "execute", method(), "aio"),
    Internal(Q, "ValidationError", klass(Exception), "model"),
    Internal(S, "ValueQuoter", klass(), "prepared"),
    Internal(f"{S}:SelectStatement", "count", inst(bool), "query"),
    Internal(f"{S}:BaseCQLStatement", "get_context", method(), "prepared, compiled"),
    Internal(COL, "BaseValueManager", klass(), "model"),
    Internal(VM, "__init__", method("instance", "column", "value"), "model"),
    Internal(VM, "instance", inst(), "model"),
    Internal(VM, "value", inst(), "model, json_provider"),
    Internal(VM, "previous_value", inst(), "model"),
    Internal(VM, "explicit", inst(bool), "model, compiled"),
    Internal(VM, "changed", prop(), "model, compiled, json_provider"),
    Internal(VM, "deleted", prop(), "compiled"),
    Internal(VM, "getval", method(), "compiled"),
    Internal(VM, "reset_previous_value", method(), "model"),
    Internal(COL, "BaseContainerColumn", klass(columns.Column), "model"),
    Internal(COLUMN, "value_manager", klass(columns.BaseValueManager), "model"),
    Internal(COLUMN, "has_default", prop(), "model, compiled"),
    Internal(COLUMN, "get_default", method(), "model"),
    Internal(COLUMN, "to_python", method("value"), "model"),
    Internal(COLUMN, "to_database", method("value"), "compiled"),
    Internal(COLUMN, "_val_is_null", method("val"), "compiled"),
    Internal(COL, "resolve_udts", method("col_def", "out_list"), "schema_plan"),
    Internal("cassandra.cqlengine.usertype", "BaseUserType", klass(), "json_provider"),
    Internal("cassandra.cqlengine.usertype:UserType", "_fields", attr(dict), "schema_plan, cli, json_provider"),
    Internal("cassandra.cqlengine.usertype:UserType", "type_name", classmeth(), "extension, cli"),
    Internal(MGMT, "CQLENG_ALLOW_SCHEMA_MANAGEMENT", attr(str), "extension"),
    Internal(MGMT, "_validate_pk", method("model", "table_meta"), "schema_plan"),
    Internal(MGMT, "_get_create_table", method("model"), "schema_plan"),
    Internal(MGMT, "_get_index_name_by_column", method("table", "column_name"), "schema_plan"),
    Internal(MGMT, "_options_map_from_strings", method("option_strings"), "schema_plan"),
    Internal(MGMT, "get_create_type", method("type_model", "keyspace"), "schema_plan"),
    Internal("cassandra.cqlengine.functions", "BaseQueryFunction", klass(), "compiled"),
    Internal(CL, "_NOT_SET", attr(), "execution, extension, aio"),
    Internal(CL, "_watch_callback", method("obj_weakref", "method_name"), "schema_watch"),
    Internal(CL, "Session", klass(), "execution"),
    Internal(SESSION, "execute", method("query", "parameters", *EXECUTE_ARGUMENTS), "execution, tracing"),
    Internal(SESSION, "execute_async", method("query", "parameters", kw=EXECUTE_ARGUMENTS), "execution, tracing"),
    Internal(SESSION, "submit", method("fn"), "prepared"),
    Internal(FUTURE, "_reprepare", method("prepare_message", "host", "connection", "pool"), "schema_watch"),
    Internal(FUTURE, "_set_final_exception", method("response"), "schema_watch"),
    Internal(FUTURE, "query", inst(), "schema_watch"),
    Internal(
        FUTURE,
        "add_callbacks",
        method("callback", "errback", kw=("callback_args", "errback_args")),
        "execution, tracing",
    ),
    Internal(FUTURE, "start_fetching_next_page", method(), "tracing"),
    Internal(FUTURE, "coordinator_host", attr(), "tracing"),
    Internal(FUTURE, "_current_host", attr(), "tracing"),
    Internal(FUTURE, "message", inst(), "tracing"),
    Internal(FUTURE, "result", method(), "tracing"),
    Internal(FUTURE, "_set_final_result", method("response"), "tracing"),
    Internal(f"{CL}:ResultSet", "__init__", method("response_future", "initial_response"), "execution"),
    Internal(f"{CL}:ResultSet", "fetch_next_page", method(), "tracing"),
    Internal(f"{CL}:ControlConnection", "_handle_schema_change", method("event"), "schema_watch"),
    Internal(
        f"{CL}:ControlConnection",
        "wait_for_schema_agreement",
        method("connection", "preloaded_results", "wait_time"),
        "migrations.migrator",
    ),
    Internal(FUTURE, "_connection", attr(), "migrations.migrator"),
    Internal(f"{CL}:Cluster", "control_connection", attr(), "schema_watch"),
    Internal(f"{CL}:Cluster", "scheduler", attr(), "extension"),
    Internal(f"{CL}:_Scheduler", "shutdown", method(), "extension"),
    Internal(f"{CL}:_Scheduler", "is_shutdown", attr(bool), "extension"),
    Internal(f"{CL}:Cluster", "profile_manager", attr(), "topology"),
    Internal(f"{CL}:ProfileManager", "default", prop(), "topology"),
    Internal(f"{CL}:NoHostAvailable", "__init__", method("message", "errors"), "extension"),
    Internal("cassandra.query:BatchStatement", "__len__", method(), "tracing"),
    Internal("cassandra.query:BatchStatement", "_statements_and_parameters", inst(list), "tracing"),
    Internal("cassandra.query:BoundStatement", "prepared_statement", inst(), "schema_watch"),
    Internal("cassandra.query:PreparedStatement", "column_metadata", inst(list), "prepared"),
    Internal("cassandra.policies:TokenAwarePolicy", "_child_policy", inst(), "topology"),
    Internal("cassandra.policies:DCAwareRoundRobinPolicy", "local_dc", inst(str), "topology"),
    Internal("cassandra.datastax.cloud", "read_metadata_info", method("config", "cloud_config"), "extension"),
    Internal("cassandra:AlreadyExists", "__init__", method("keyspace", "table"), "tracing"),
    Internal("cassandra.protocol", "ColumnMetadata", klass(tuple), "prepared"),
    Internal("cassandra.protocol", "ErrorMessage", klass(Exception), "tracing"),
    Internal("cassandra.protocol:ErrorMessage", "code", inst(int), "tracing"),
    Internal("cassandra.protocol:ErrorMessage", "summary_msg", method(), "tracing"),
    Internal("cassandra.protocol:AlreadyExistsException", "error_code", attr(int), "tracing"),
    Internal(f"{CT}:_CassandraType", "subtypes", attr(tuple), "prepared"),
    Internal(f"{CT}:UserType", "fieldnames", inst(tuple), "prepared"),
    Internal(CT, "UserType", klass(cqltypes.TupleType), "prepared"),
    Internal(CT, "TupleType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "FrozenType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "ReversedType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "ListType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "SetType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "MapType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "FloatType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "DoubleType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "DecimalType", klass(cqltypes._CassandraType), "prepared"),
    Internal(CT, "InetAddressType", klass(cqltypes._CassandraType), "prepared"),
    Internal("cassandra.encoder:Encoder", "cql_encode_decimal", method("val"), "prepared"),
    Internal("cassandra.metadata:TableMetadata", "_make_option_strings", classmeth("options_map"), "schema_plan"),
    Internal("cassandra.metadata:TableMetadataV3", "_make_option_strings", classmeth("options_map"), "schema_plan"),
    Internal("cassandra.metadata:TableMetadata", "options", inst(dict), "schema_plan"),
    Internal("flask.globals", "_cv_app", attr(contextvars.ContextVar), "frameworks"),
    Internal("flask.json.provider", "DefaultJSONProvider", klass(JSONProvider), "json_provider"),
    Internal("flask.json.provider:DefaultJSONProvider", "default", attr(), "json_provider"),
    Internal("flask.json.provider:DefaultJSONProvider", "dumps", method("obj"), "json_provider"),
    Internal("flask.json.provider:DefaultJSONProvider", "response", method(), "json_provider"),
    Internal("quart.json.provider", "DefaultJSONProvider", klass(DefaultJSONProvider), "json_provider"),
    Internal("quart.globals", "_cv_app", attr(contextvars.ContextVar), "frameworks"),
    Internal("quart.globals", "_cv_request", attr(contextvars.ContextVar), "frameworks"),
    Internal("quart.globals", "_cv_websocket", attr(contextvars.ContextVar), "frameworks"),
    Internal("threading", "_register_atexit", method("func"), "extension"),
    Internal("flask.globals", "_cv_request", attr(contextvars.ContextVar), "runner"),
    Internal("asyncio", "_get_running_loop", method(), "runner"),
    Internal("asgiref.sync:SyncToAsync", "threadlocal", attr(threading.local), "runner"),
    Internal("asgiref.sync:AsyncToSync", "loop_thread_executors", attr(dict), "runner"),
    Internal("wrapt:FunctionWrapper", "_self_wrapper", attr(), "tracing"),
    Internal("opentelemetry.instrumentation.cassandra", "_instrument", method("tracer_provider"), "tracing"),
]

#: Functions flask_cqlalchemy replaces on a driver class: where it keeps the driver's own.
REPLACED_BY_US = {"cassandra.cluster:ResponseFuture._reprepare": ("flask_cqlalchemy.schema_watch", "_driver_reprepare")}


# -- a model of each kind, and the fakes the behaviour checks use ----------------------

PROBE_KEYSPACE = "flask_cqlalchemy_internals"
PROBE_CONNECTION = "flask_cqlalchemy_internals"


def _probe_columns() -> dict[str, Any]:
    return {
        "part": columns.Integer(partition_key=True),
        "sort": columns.Integer(primary_key=True),
        "note": columns.Text(db_field="note_text"),
        "tags": columns.List(columns.Text),
        "level": columns.Integer(default=7),
        "__keyspace__": PROBE_KEYSPACE,
        "__module__": __name__,
    }


#: A plain cqlengine model: the reference our overrides must match.
Plain = models.ModelMetaClass("Plain", (models.Model,), {**_probe_columns(), "__connection__": PROBE_CONNECTION})

#: The same model on an extension (never initialised: nothing here connects).
probe_db = CQLAlchemy()
Ours = type(probe_db.Model)("Ours", (probe_db.Model,), _probe_columns())

ROW = {"part": 1, "sort": 2, "note_text": "hello", "tags": ["a", "b"], "level": 3}


class _LoadBalancer:
    def make_query_plan(self, working_keyspace: Any = None, query: Any = None) -> Iterator[Any]:
        return iter(())


def _response_future(query: Any = None) -> ResponseFuture:
    """A ResponseFuture that was never sent (a stand-in session, no connection)."""
    session = types.SimpleNamespace(row_factory=dict_factory, keyspace=None, cluster=None)
    return ResponseFuture(session, None, query or SimpleStatement("SELECT 1"), None, load_balancer=_LoadBalancer())


def _prepared() -> Any:
    from cassandra.query import PreparedStatement

    return PreparedStatement(
        column_metadata=[],
        query_id=b"id",
        routing_key_indexes=None,
        query="SELECT * FROM ks.t WHERE k = ?",
        keyspace="ks",
        protocol_version=5,
        result_metadata=None,
        result_metadata_id=None,
    )


def _bound() -> Any:
    from cassandra.query import BoundStatement

    return BoundStatement(_prepared())


def _udt_type() -> Any:
    return cqltypes.UserType.make_udt_class(PROBE_KEYSPACE, "internals_probe", ("x",), (cqltypes.FloatType,))


#: A fresh instance of each owner whose ``inst()`` attributes are checked.
INSTANCES: dict[str, Callable[[], Any]] = {
    CONN: lambda: cqlengine_connection.Connection("internals", hosts=[]),
    BM: lambda: Plain(part=1, sort=2),
    AQS: lambda: ModelQuerySet(Plain),
    BATCH: lambda: BatchQuery(),
    f"{S}:SelectStatement": lambda: statements.SelectStatement("ks.t"),
    VM: lambda: Plain(part=1, sort=2)._values["note"],
    FUTURE: _response_future,
    "cassandra.query:BoundStatement": _bound,
    "cassandra.query:BatchStatement": lambda: BatchStatement(),
    "cassandra.protocol:ErrorMessage": lambda: ErrorMessage(0x2200, "probe", None),
    "cassandra.query:PreparedStatement": _prepared,
    f"{CT}:UserType": _udt_type,  # a UDT type class: fieldnames is set on each
    "cassandra.metadata:TableMetadata": lambda: TableMetadata("ks", "t"),
    "cassandra.policies:TokenAwarePolicy": lambda: TokenAwarePolicy(DCAwareRoundRobinPolicy()),
    "cassandra.policies:DCAwareRoundRobinPolicy": lambda: DCAwareRoundRobinPolicy(local_dc=""),
}


def _resolve(owner: str) -> Any:
    module_name, _, qualname = owner.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in filter(None, qualname.split(".")):
        found = getattr(found, part)
    return found


def _driver_source(module: Any) -> str:
    """The Python source of a driver module (3.30's wheel ships it beside the compiled module)."""
    path = Path(module.__file__)
    source = path.with_name(path.name.split(".")[0] + ".py")
    assert source.exists(), f"no source of {module.__name__} beside {path}"
    return source.read_text()


# -- the table --------------------------------------------------------------------------


def _docstring_entries() -> dict[str, str]:
    """``module:Qual.name`` -> what we rely on, from this module's docstring."""
    entries: dict[str, str] = {}
    module = None
    for line in (__doc__ or "").splitlines():
        if re.fullmatch(r"(cassandra|flask|quart|threading|asyncio|asgiref|wrapt|opentelemetry)[\w.]*", line):
            module = line
        elif module and line.startswith("    ") and line.strip():
            name, _, why = line.strip().partition(" ")
            entries[f"{module}:{name}"] = why.strip()
        elif not line.strip():
            continue
        elif module:
            module = None
    return entries


def test_docstring_lists_every_internal() -> None:
    documented = _docstring_entries()
    listed = [entry.label for entry in INTERNALS]
    assert len(listed) == len(set(listed)), "an internal is listed twice"
    assert sorted(set(listed) - set(documented)) == [], "in INTERNALS but not in the module docstring"
    assert sorted(set(documented) - set(listed)) == [], "in the module docstring but not in INTERNALS"
    assert all(documented.values()), "every docstring line says what we rely on"


@pytest.mark.parametrize("entry", INTERNALS, ids=[entry.label for entry in INTERNALS])
def test_internal_still_there(entry: Internal) -> None:
    why = _docstring_entries().get(entry.label, "")
    context = f"{entry.label} (used by flask_cqlalchemy {entry.where}: {why})"
    try:
        owner = _resolve(entry.owner)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{entry.owner} is gone: {exc} -- {context}")
    instance = None
    if entry.kind.what == "instance":
        factory = INSTANCES.get(entry.owner)
        assert factory is not None, f"no instance factory for {entry.owner} in INSTANCES"
        instance = factory()
        static = value = vars(instance).get(entry.name)
    else:
        try:
            static = inspect.getattr_static(owner, entry.name)
            value = getattr(owner, entry.name)
        except AttributeError:
            pytest.fail(f"{entry.name} is gone from {entry.owner} -- {context}")
        replaced = REPLACED_BY_US.get(entry.label)
        if replaced is not None and getattr(value, "__module__", "").startswith("flask_cqlalchemy"):
            value = static = getattr(importlib.import_module(replaced[0]), replaced[1])
    try:
        entry.kind.check(owner, entry.name, static, value, instance)
    except AssertionError as exc:
        raise AssertionError(f"{exc} -- {context}") from None


# -- cqlengine's queryset clone ---------------------------------------------------------

#: A fresh cqlengine queryset's attributes (cassandra-driver 3.29.3 and 3.30.1).
#: A new one must be classified in query.QuerySet.__deepcopy__ (per-execution,
#: shared, or deep-copied as cqlengine does) before it is added here.
QUERYSET_ATTRIBUTES = frozenset(
    {
        "model",
        "_where",
        "_conditional",
        "_order",
        "_allow_filtering",
        "_limit",
        "_defer_fields",
        "_deferred_values",
        "_only_fields",
        "_values_list",
        "_flat_values_list",
        "_result_cache",
        "_result_idx",
        "_result_generator",
        "_materialize_results",
        "_distinct_fields",
        "_count",
        "_batch",
        "_ttl",
        "_consistency",
        "_timestamp",
        "_if_not_exists",
        "_timeout",
        "_if_exists",
        "_fetch_size",
        "_connection",
    }
)


def test_queryset_attributes_are_the_ones_our_deepcopy_knows() -> None:
    fresh = set(vars(ModelQuerySet(Plain)))
    assert fresh - QUERYSET_ATTRIBUTES == set(), "cqlengine's queryset has new attributes: classify them"
    assert QUERYSET_ATTRIBUTES - fresh == set(), "cqlengine's queryset lost attributes"
    assert our_query._SHARED <= fresh


def test_cqlengine_deepcopy_resets_and_shares_what_ours_does() -> None:
    queryset = ModelQuerySet(Plain)
    extra = {"_con", "_cur", "_construct_result"}  # not set by __init__, reset all the same
    markers = {}
    for key in set(vars(queryset)) | extra:
        if key != "model":
            markers[key] = vars(queryset)[key] = [key]  # a distinct mutable value each
    clone = ModelQuerySet.__deepcopy__(queryset, {})
    reset = {k for k, v in vars(clone).items() if v is None}
    shared = {k for k, v in vars(clone).items() if v is vars(queryset)[k]}
    assert reset == our_query._PER_EXECUTION
    assert shared == our_query._SHARED
    copied = set(vars(clone)) - reset - shared
    assert all(vars(clone)[k] == markers[k] for k in copied)


def test_our_deepcopy_clones_like_cqlengine() -> None:
    queryset = Ours.objects.filter(part=1, sort__in=[2, 3]).limit(5).defer(["note"])
    ours = copy.deepcopy(queryset)
    theirs = ModelQuerySet.__deepcopy__(queryset, {})
    assert set(vars(ours)) == set(vars(theirs))
    for key in vars(theirs):
        assert vars(ours)[key] == vars(theirs)[key] or key == "_where", key
    ours_select, theirs_select = ours._select_query(), theirs._select_query()
    assert str(ours_select) == str(theirs_select)
    assert ours_select.get_context() == theirs_select.get_context()
    # Clauses are numbered in place when a statement is built: never shared.
    assert all(a is not b for a, b in zip(ours._where, queryset._where, strict=True))


def test_limit_returns_the_same_queryset_when_unchanged() -> None:
    queryset = ModelQuerySet(Plain)
    assert queryset.limit(queryset._limit) is queryset
    assert queryset.limit(5) is not queryset


def test_queryset_create_chain_is_the_one_model_created_mirrors() -> None:
    source = inspect.getsource(cqlengine_query.AbstractQuerySet.create)
    chain = re.findall(r"\)[\s\\]*\.(\w+)\(", source)  # the calls chained on self.model(**kwargs)
    assert chain == ["batch", "ttl", "consistency", "if_not_exists", "timestamp", "if_exists", "using", "save"]


# -- model instances ----------------------------------------------------------------------


def _state(instance: Any) -> dict[str, Any]:
    """What an instance holds, value managers as (type, value, previous, explicit, attribute names)."""
    state = {k: v for k, v in vars(instance).items() if k != "_values"}
    state["_values"] = {
        name: (type(m), m.value, m.previous_value, m.explicit, sorted(vars(m))) for name, m in instance._values.items()
    }
    return state


@pytest.mark.parametrize(
    "values", [{}, {"part": 1, "sort": 2}, {"part": 1, "sort": 2, "note": "x", "tags": ["a"], "level": None}]
)
def test_init_sets_what_cqlengine_init_sets(values: dict[str, Any]) -> None:
    assert _state(Ours(**values)) == _state(Plain(**values))


def test_construct_instance_matches_cqlengine() -> None:
    assert _state(Ours._construct_instance(dict(ROW))) == _state(Plain._construct_instance(dict(ROW)))
    assert Plain._db_map == {"note_text": "note"}


def test_set_persisted_matches_cqlengine() -> None:
    for force in (False, True):
        ours, theirs = Ours(part=1, sort=2, note="a"), Plain(part=1, sort=2, note="a")
        for instance in (ours, theirs):
            instance.tags = ["x"]
            instance._set_persisted(force=force)
        assert _state(ours) == _state(theirs)


def test_value_manager_shape() -> None:
    manager = Plain(part=1, sort=2)._values["part"]
    assert type(manager) is columns.BaseValueManager
    assert set(vars(manager)) == {"instance", "column", "value", "previous_value", "explicit"}
    manager.reset_previous_value()
    assert manager.previous_value == manager.value


def test_base_model_create_func_runs_cqlengine_create(recording: _RecordingSession) -> None:
    instance = models.BaseModel.create.__func__(Plain, part=1, sort=2)  # as model._CQLENGINE_CREATE is called
    assert isinstance(instance, Plain) and instance._is_persisted
    [(query, params, kwargs)] = recording.calls
    assert query.query_string.startswith("INSERT INTO") and kwargs == {"timeout": _NOT_SET}
    assert "create" in vars(ModelMixin)  # ours overrides it
    assert Plain.save is models.BaseModel.save  # what compiled._insertable compares


def test_hybrid_classmethod_dispatch() -> None:
    both = models.hybrid_classmethod(classmethod(lambda cls: ("class", cls)), lambda self: ("instance", self))
    holder = type("Holder", (), {"which": both})
    assert holder.which() == ("class", holder)
    instance = holder()
    assert instance.which() == ("instance", instance)


def test_context_clones_live_in_cqlengine_models() -> None:
    assert models._clone_model_class(Plain, {}).__module__ == models.__name__
    with cqlengine_query.ContextQuery(Plain, keyspace="elsewhere") as clone:
        assert clone.__module__ == models.__name__
    assert ModelQuerySet(Plain).using(keyspace="elsewhere").model.__module__ == models.__name__
    assert Ours.__module__ == __name__ and not Ours._is_context_clone()


# -- statements -------------------------------------------------------------------------------


def test_statement_markers_and_context() -> None:
    select = ModelQuerySet(Plain).filter(part=1, sort=2)._select_query()
    assert re.findall(r"%\((\w+)\)s", str(select)) == ["0", "1"]
    assert select.get_context() == {"0": 1, "1": 2}
    select.count = True
    assert "COUNT(*)" in str(select)


def test_in_lists_are_value_quoters() -> None:
    select = ModelQuerySet(Plain).filter(part__in=[1, 2])._select_query()
    assert [type(v) for v in select.get_context().values()] == [statements.InQuoter]
    assert issubclass(statements.InQuoter, statements.ValueQuoter)


# -- cqlengine's connections and the driver session ------------------------------------------


class _RecordingSession:
    """A session whose instance attribute ``execute`` records cqlengine's calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, dict[str, Any]]] = []
        self.execute = self._record

    def _record(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self.calls.append((query, params, kwargs))
        return types.SimpleNamespace(was_applied=True)


@pytest.fixture()
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[Any, Any]:
    """cqlengine's connection registry and default globals, empty, restored afterwards."""
    connections: dict[Any, Any] = {}
    monkeypatch.setattr(cqlengine_connection, "_connections", connections)
    monkeypatch.setattr(cqlengine_connection, "cluster", None)
    monkeypatch.setattr(cqlengine_connection, "session", None)
    return connections


@pytest.fixture()
def recording(registry: dict[Any, Any]) -> _RecordingSession:
    """A registered connection PROBE_CONNECTION whose session records."""
    connection = cqlengine_connection.Connection(PROBE_CONNECTION, hosts=[])
    connection.session = _RecordingSession()
    connection.cluster = types.SimpleNamespace(protocol_version=5)
    registry[PROBE_CONNECTION] = connection
    return connection.session


def test_cqlengine_sends_through_the_session_instance_attribute(recording: _RecordingSession) -> None:
    queryset = ModelQuerySet(Plain).filter(part=1, sort=2)
    queryset._execute(queryset._select_query())
    [(query, params, kwargs)] = recording.calls
    assert type(query) is SimpleStatement
    assert params == {"0": 1, "1": 2}
    assert kwargs == {"timeout": _NOT_SET}
    assert cqlengine_connection.NOT_SET is _NOT_SET
    assert inspect.signature(Session.execute).parameters["timeout"].default is _NOT_SET


def test_session_instances_take_an_execute_attribute() -> None:
    session = Session.__new__(Session)
    replacement = lambda *args, **kwargs: "routed"  # noqa: E731
    session.execute = replacement
    assert session.execute is replacement


def test_batch_execute_sends_then_runs_the_callbacks_it_holds(recording: _RecordingSession) -> None:
    called: list[str] = []
    empty = BatchQuery()
    empty.add_callback(called.append, "empty")
    empty.execute()
    assert called == ["empty"] and recording.calls == []

    batch = BatchQuery(connection=PROBE_CONNECTION)
    Plain.batch(batch).create(part=1, sort=2)
    batch.add_callback(called.append, "sent")
    held, batch._callbacks = batch._callbacks, []  # what AsyncBatch does around execute()
    batch.execute()
    assert len(recording.calls) == 1 and "BATCH" in recording.calls[0][0].query_string
    assert called == ["empty"]
    batch._callbacks = held
    batch._execute_callbacks()
    assert called == ["empty", "sent"]


def test_check_applied_reads_was_applied() -> None:
    check_applied(object())  # not an LWT result
    check_applied(types.SimpleNamespace(was_applied=True))
    with pytest.raises(LWTException):
        check_applied(types.SimpleNamespace(was_applied=False, one=lambda: {"[applied]": False}))


def test_get_connection_calls_handle_lazy_connect(registry: dict[Any, Any]) -> None:
    calls: list[str] = []

    class Lazy(cqlengine_connection.Connection):
        def handle_lazy_connect(self) -> None:
            calls.append(self.name)

    registry["lazy"] = Lazy("lazy", hosts=["127.0.0.1"], lazy_connect=True)
    assert cqlengine_connection.get_connection("lazy") is registry["lazy"]
    assert calls == ["lazy"]
    with pytest.raises(cqlengine_connection.CQLEngineException):
        cqlengine_connection.get_connection("missing")


def test_setup_returns_at_once_while_lazy() -> None:
    connection = cqlengine_connection.Connection("lazy", hosts=["127.0.0.1"], lazy_connect=True)
    connection.setup()
    assert connection.cluster is None and connection.session is None
    assert isinstance(connection.lazy_connect_lock, type(threading.RLock()))


def test_default_connection_alias_and_unregister(registry: dict[Any, Any]) -> None:
    connection = cqlengine_connection.Connection("app", hosts=[])
    connection.session = object()
    registry["app"] = connection
    cqlengine_connection.set_default_connection("app")
    assert registry[cqlengine_connection.DEFAULT_CONNECTION] is connection
    assert cqlengine_connection.session is connection.session
    cqlengine_connection.unregister_connection("app")
    assert registry == {}
    assert cqlengine_connection.session is None and cqlengine_connection.cluster is None


# -- the driver's request futures and control connection --------------------------------------


def test_response_future_callbacks() -> None:
    got: list[Any] = []
    pending = _response_future()
    pending.add_callbacks(lambda rows: got.append(("rows", rows)), lambda exc: got.append(("error", exc)))
    assert got == []
    error = ValueError("stale")
    pending._set_final_exception(error)
    assert got == [("error", error)]

    done = _response_future()
    done._set_final_result([{"a": 1}])
    done.add_callbacks(lambda rows: got.append(("late", rows)), lambda exc: got.append(("late error", exc)))
    assert got[-1] == ("late", [{"a": 1}])  # at once, in this thread
    result = ResultSet(done, [{"a": 1}])
    assert result.current_rows == [{"a": 1}] and result.paging_state is None and result.one() == {"a": 1}


def test_reprepare_is_looked_up_on_the_future_when_needed() -> None:
    from cassandra import cluster

    assert re.search(r"self\.session\.submit\(\s*self\._reprepare\s*,", _driver_source(cluster))


def test_schema_events_reach_the_handler_by_name() -> None:
    from cassandra import cluster

    registration = r"\"SCHEMA_CHANGE\":\s*partial\(\s*_watch_callback,\s*self_weakref,\s*'_handle_schema_change'"
    assert re.search(registration, _driver_source(cluster))
    seen: list[Any] = []

    class Control:
        def _handle_schema_change(self, event: Any) -> None:
            raise AssertionError("the class's handler, not the instance's")

    control = Control()
    control._handle_schema_change = seen.append  # type: ignore[method-assign]
    _watch_callback(weakref.ref(control), "_handle_schema_change", {"keyspace": "k"})
    assert seen == [{"keyspace": "k"}]


# -- cqltypes -------------------------------------------------------------------------------------


def test_parameterized_types_expose_subtypes_and_fieldnames() -> None:
    nested = cqltypes.MapType.apply_parameters(
        [cqltypes.FloatType, cqltypes.SetType.apply_parameters([cqltypes.DoubleType])]
    )
    assert nested.subtypes[0] is cqltypes.FloatType
    assert list(nested.subtypes[1].subtypes) == [cqltypes.DoubleType]
    frozen = cqltypes.FrozenType.apply_parameters([cqltypes.ListType.apply_parameters([cqltypes.FloatType])])
    assert list(frozen.subtypes[0].subtypes) == [cqltypes.FloatType]
    udt = _udt_type()
    assert udt.fieldnames == ("x",) and udt.subtypes == (cqltypes.FloatType,)
    assert issubclass(udt, cqltypes.TupleType)
    assert cqltypes.FloatType.subtypes == ()
    from cassandra.protocol import ColumnMetadata

    column = ColumnMetadata("ks", "t", "c", cqltypes.FloatType)
    assert (column.keyspace_name, column.table_name, column.type) == ("ks", "t", cqltypes.FloatType)


def test_decimal_literal_goes_through_float() -> None:
    from decimal import Decimal

    from cassandra.encoder import Encoder

    encoder = Encoder()
    assert encoder.mapping[Decimal] == encoder.cql_encode_decimal
    assert encoder.cql_encode_decimal(Decimal("1.50")) == "1.5"
    assert encoder.cql_encode_decimal(Decimal("12345678901234567890.123")) == repr(12345678901234567890.123)


# -- Flask ----------------------------------------------------------------------------------------------


def test_app_context_variable() -> None:
    app = Flask("internals")
    with app.app_context():
        assert _cv_app.get(None).app is app


# -- against the node -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_session() -> Iterator[Any]:
    """A session of a plain driver cluster (no extension wraps its control connection)."""
    cluster = Cluster(HOSTS, protocol_version=5)
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def live() -> Iterator[CQLAlchemy]:
    app = make_app("internals_live")
    live_db = CQLAlchemy(app)
    with app.app_context():
        yield live_db
    live_db.shutdown()


def test_rows_are_dicts(live: CQLAlchemy) -> None:
    row = live.session.execute("SELECT release_version FROM system.local").one()
    assert type(row) is dict and "release_version" in row


def test_schema_change_events_go_through_the_instance_attribute(plain_session: Any) -> None:
    control = plain_session.cluster.control_connection
    assert "_handle_schema_change" not in vars(control)
    relay = control._handle_schema_change
    table = f"internals_probe_{uuid.uuid4().hex[:8]}"
    arrived = threading.Event()

    def handle(event: Any) -> Any:  # schema_watch reads event["keyspace"]
        if event.get("keyspace") == KEYSPACE and event.get("table") == table:
            arrived.set()
        return relay(event)

    control._handle_schema_change = handle
    try:
        plain_session.execute(f"CREATE TABLE {KEYSPACE}.{table} (k int PRIMARY KEY)")
        assert arrived.wait(30), "the SCHEMA_CHANGE event did not reach the instance attribute"
    finally:
        del control._handle_schema_change
        with contextlib.suppress(Exception):
            plain_session.execute(f"DROP TABLE IF EXISTS {KEYSPACE}.{table}")


def test_table_metadata_option_strings(live: CQLAlchemy) -> None:
    table = live.cluster.metadata.keyspaces["system_schema"].tables["tables"]
    strings = table._make_option_strings(table.options)
    assert strings and all(isinstance(s, str) for s in strings)
    from cassandra.cqlengine import management

    assert isinstance(management._options_map_from_strings(set(strings)), dict)
