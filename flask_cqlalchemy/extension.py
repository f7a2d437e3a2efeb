"""The Flask extension: config, connections and schema helpers."""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401 - its exit hook is registered before ours (see the end)
import contextlib
import functools
import itertools
import logging
import os
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cassandra import DriverException, OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import _NOT_SET, Cluster, NoHostAvailable, ResultSet, Session
from cassandra.cqlengine import ValidationError, management
from cassandra.cqlengine import connection as cqlengine_connection
from cassandra.cqlengine.query import DoesNotExist, MultipleObjectsReturned, QueryException
from cassandra.cqlengine.usertype import UserType
from cassandra.query import SimpleStatement

from . import columns, cqlengine_defaults, execution, frameworks, json_provider, runner, sai, topology
from .cli import register_cli
from .config import Settings, parse_consistency, read_binds, read_settings, validate_keyspace_name
from .errors import ConfigError, NotInitializedError, SchemaError
from .model import make_model_base, make_user_type_base
from .pagination import CursorCodec

if TYPE_CHECKING:
    from flask.sansio.app import App

    from .aio import AsyncCQLAlchemy

log = logging.getLogger("flask_cqlalchemy")

EXTENSION_KEY = "cqlalchemy"
_connection_ids = itertools.count(1)

#: Driver errors that mean "the cluster cannot serve this now", answered 503.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    NoHostAvailable,
    OperationTimedOut,
    Unavailable,
    ReadTimeout,
    WriteTimeout,
)


@dataclass
class Bind:
    """One cluster connection of an app: the default one or a named bind."""

    settings: Settings
    connection_name: str
    keyspace: str


@dataclass
class AppState:
    """What one app holds in ``app.extensions["cqlalchemy"]``."""

    ext: CQLAlchemy
    app_name: str
    settings: Settings
    connection_name: str
    keyspace: str
    cursor_codec: CursorCodec
    binds: dict[str, Bind]
    #: ``CASSANDRA_ERROR_HANDLERS``: the extension's errors answer JSON.
    json_errors: bool = False
    _default_bind: Bind | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def connection(self) -> cqlengine_connection.Connection:
        return cqlengine_connection.get_connection(self.connection_name)

    def bind(self, name: str | None) -> Bind:
        """The default connection (``name`` None) or the bind called ``name``.

        Raises :class:`~flask_cqlalchemy.errors.ConfigError` for an unknown bind.
        """
        if name is None:
            # Asked for on every query: kept, and made again after set_keyspace.
            default = self._default_bind
            if default is None or default.keyspace != self.keyspace or default.connection_name != self.connection_name:
                default = self._default_bind = Bind(self.settings, self.connection_name, self.keyspace)
            return default
        try:
            return self.binds[name]
        except KeyError:
            raise ConfigError(
                "CASSANDRA_BINDS", f"a model uses __bind__ = {name!r}, but app {self.app_name!r} has no such bind"
            ) from None


class _Connection(cqlengine_connection.Connection):  # type: ignore[misc]
    """cqlengine's connection (lazy and retry connect included), whose
    session is routed through :mod:`flask_cqlalchemy.execution` and knows
    this extension's user-defined types from the first query on."""

    cluster: Any
    session: Any
    lazy_connect: bool

    #: Every connection of this extension in the process, for the fork hook.
    live: weakref.WeakSet[_Connection] = weakref.WeakSet()

    def __init__(self, name: str, settings: Settings, ext: CQLAlchemy, key_prefix: str = "") -> None:
        _Connection.live.add(self)
        self._settings = settings
        #: How this connection's config keys are named in errors: "" for the
        #: app's own, ``CASSANDRA_BINDS['name'].`` for a bind's.
        self._key_prefix = key_prefix
        super().__init__(
            name,
            hosts=list(settings.hosts),
            consistency=settings.consistency,
            lazy_connect=settings.lazy_connect,
            retry_connect=settings.retry_connect,
            cluster_options=settings.cluster_options(),
        )
        self._keyspace = settings.keyspace
        self._ext = ext

    def setup(self) -> None:
        if self.lazy_connect:
            return
        log.debug("connecting %s to %s", self.name, ", ".join(self.hosts))
        try:
            super().setup()
            topology.check_connected(self.cluster, self._settings, self.name, self._key_prefix)
        except Exception as exc:
            # cqlengine would leave a failed lazy connection half made and no
            # longer lazy, so it would never try again: close what was made
            # and connect anew at the next use.
            cluster, self.cluster, self.session = self.cluster, None, None
            self.lazy_connect = True
            try:
                if cluster is not None and isinstance(exc, NoHostAvailable):
                    topology.explain_no_host(cluster, self._settings, self._key_prefix)
            finally:
                if cluster is not None:
                    cluster.shutdown()
            if self._settings.cloud is not None and type(exc) is DriverException:
                # Cluster() could not get the node list from the database's
                # metadata service: for a cloud database that is "no host
                # answered" (503 in a view, retried with RETRY_CONNECT).
                raise NoHostAvailable(f"{exc} [{self._key_prefix}CASSANDRA_CLOUD]", {}) from exc
            raise

    def setup_session(self) -> None:
        super().setup_session()
        execution.route_session(
            self.session,
            prepare=self._settings.prepare_statements,
            record=self._settings.record_queries,
            trace=self._settings.tracing,
        )
        for user_type in self._ext.user_types:
            with contextlib.suppress(Exception):
                self.cluster.register_user_type(self._keyspace, user_type.type_name(), user_type)
        log.debug("connected %s (protocol v%s)", self.name, self.cluster.protocol_version)

    def handle_lazy_connect(self) -> None:
        # cqlengine clears its lazy flag before connecting, so a second
        # thread (or request) arriving meanwhile would go on with no session.
        # "Connected" here means a session exists; others wait on the lock.
        if self.session is not None:
            return
        with self.lazy_connect_lock:
            if self.session is None:
                self.lazy_connect = False
                self.setup()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's cluster without touching its
        sockets (they are the parent's), and connect anew at first use."""
        if self.session is None and not self.lazy_connect:
            return
        self.cluster = None
        self.session = None
        self.lazy_connect = True
        self.lazy_connect_lock = threading.RLock()


def _forget_connections_after_fork() -> None:
    for connection in list(_Connection.live):
        connection.forget_after_fork()
    if cqlengine_connection.DEFAULT_CONNECTION in cqlengine_connection._connections:
        cqlengine_connection.cluster = None
        cqlengine_connection.session = None


# A pre-forking server (gunicorn --preload) forks after init_app connected:
# each worker must open its own connections, never share the parent's sockets.
os.register_at_fork(after_in_child=_forget_connections_after_fork)


def _stop_schedulers_at_exit() -> None:
    """Stop the task scheduler of this process's clusters as the interpreter
    begins to exit.

    The interpreter refuses new work to every thread pool in its exit hooks
    for threads, which run before it waits for the non-daemon threads; the
    driver closes its clusters in an ``atexit`` hook, after that wait. A task
    of the driver's scheduler falling due in between failed with "Exception
    in thread Task Scheduler: RuntimeError: cannot schedule new futures after
    shutdown". The scheduler only hands tasks to the driver's pool, which
    refuses them from here on anyway, so it is stopped here, before the pools
    are; the clusters stay open for the non-daemon threads still querying,
    and the driver closes them once those threads have ended.
    """
    for connection in list(_Connection.live):
        cluster = connection.cluster
        if cluster is not None and not cluster.is_shutdown and not cluster.scheduler.is_shutdown:
            with contextlib.suppress(Exception):
                cluster.scheduler.shutdown()


# Hooks for threads run in reverse order of registration: this one runs
# before the one concurrent.futures registered when it was imported (above).
threading._register_atexit(_stop_schedulers_at_exit)  # type: ignore[attr-defined]


@contextlib.contextmanager
def _schema_change() -> Iterator[None]:
    """Around every schema call of this extension.

    An explicit schema call is the user's consent to schema management, so
    cqlengine's CQLENG_ALLOW_SCHEMA_MANAGEMENT warning is not raised for it.
    Afterwards (even after a failure half-way) no statement prepared before
    it is used again: its types may be gone.
    """
    key = management.CQLENG_ALLOW_SCHEMA_MANAGEMENT
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        execution.schema_changed()


class CQLAlchemy:
    """Cassandra for a Flask app, through cqlengine models.

    ``CQLAlchemy(app)`` or ``CQLAlchemy()`` then :meth:`init_app`. Declare
    models on :attr:`Model`, columns from :attr:`columns`, user-defined
    types on :attr:`UserType`.
    """

    def __init__(self, app: App | None = None) -> None:
        self.columns = columns
        self.Model: Any = make_model_base(self)
        self.UserType: Any = make_user_type_base(self)
        self._states: list[AppState] = []
        self._aio: AsyncCQLAlchemy | None = None
        if app is not None:
            self.init_app(app)

    # -- set-up -------------------------------------------------------------

    def init_app(self, app: App) -> None:
        """Read the app's ``CASSANDRA_*`` config and connect (unless lazy).

        ``app`` is a Flask or a Quart app.

        Raises :class:`~flask_cqlalchemy.errors.ConfigError` naming the
        missing or malformed key, ``RuntimeError`` if the app already has a
        CQLAlchemy, and the driver's ``NoHostAvailable`` if no host answers
        (unless ``CASSANDRA_LAZY_CONNECT`` or ``CASSANDRA_RETRY_CONNECT``).
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"A CQLAlchemy instance is already registered on app {app.name!r}; "
                "call init_app once per app (use one CQLAlchemy per app, or app.extensions['cqlalchemy'])."
            )
        settings = read_settings(app.config)
        bind_settings = read_binds(app.config)
        quart = frameworks.is_quart(app)
        loops = runner.read_mode(app.config, quart=quart)
        secret = settings.cursor_secret or _as_bytes(app.secret_key)
        if settings.json_provider:
            # Before connecting: its ConfigError (an app.json that is not a
            # JSONProvider) must leave nothing half set up.
            json_provider.install(app)
        name = self._connect(app, "", settings)
        binds = {}
        try:
            for bind, bind_config in bind_settings.items():
                binds[bind] = Bind(bind_config, self._connect(app, bind, bind_config), bind_config.keyspace)
        except BaseException:
            for registered in [name, *(b.connection_name for b in binds.values())]:
                cqlengine_connection.unregister_connection(registered)
            raise
        json_errors = bool(app.config.get("CASSANDRA_ERROR_HANDLERS", True))
        state = AppState(self, app.name, settings, name, settings.keyspace, CursorCodec(secret), binds, json_errors)
        frameworks.adopt(app)
        app.extensions[EXTENSION_KEY] = state
        self._states.append(state)
        cqlengine_defaults.adopt(state)
        if not quart:  # Quart runs every coroutine on the server's loop already
            runner.install(app, loops)  # type: ignore[arg-type]
        if json_errors:
            _register_error_handlers(app)
        app.shell_context_processor(functools.partial(self._shell_context, app))
        register_cli(app)
        log.debug("initialised for app %s, keyspace %s", app.name, settings.keyspace)

    def _connect(self, app: App, bind: str, settings: Settings) -> str:
        """Register (and, unless lazy, open) one cqlengine connection; return its name."""
        name = f"flask_cqlalchemy.{next(_connection_ids)}.{app.name}" + (f".{bind}" if bind else "")
        connection = _Connection(name, settings, self, f"CASSANDRA_BINDS[{bind!r}]." if bind else "")
        cqlengine_connection._connections[name] = connection
        try:
            connection.setup()
        except NoHostAvailable:
            if not settings.retry_connect:
                del cqlengine_connection._connections[name]
                raise
            log.warning("no Cassandra host answered at start; %s will retry on first use", name)
        except BaseException:
            del cqlengine_connection._connections[name]
            raise
        return name

    def initialized_state(self) -> AppState | None:
        """Like :meth:`state`, but None instead of raising before any ``init_app``."""
        return self.state() if self._states else None

    def state(self) -> AppState:
        """The state of the current app (Flask's or Quart's app context), or
        of the last app initialised when no app context is active (scripts,
        the Python shell).

        Raises :class:`~flask_cqlalchemy.errors.NotInitializedError` before any ``init_app``.
        """
        # Asked for on every query: the frameworks' context variables read
        # directly rather than through a current_app proxy.
        for app_context in frameworks.app_contexts():
            state = app_context.app.extensions.get(EXTENSION_KEY)
            if state is not None and state.ext is self:
                return state
        if not self._states:
            raise NotInitializedError(
                "CQLAlchemy is not initialised: call db.init_app(app) (or CQLAlchemy(app)) before using models."
            )
        return self._states[-1]

    def shutdown(self, app: App | None = None) -> None:
        """Close the cluster connections of ``app``, or of every app this
        extension serves. A closed app must be initialised again to be used."""
        states = [s for s in self._states if app is None or app.extensions.get(EXTENSION_KEY) is s]
        for state in states:
            for name in [state.connection_name, *(b.connection_name for b in state.binds.values())]:
                cqlengine_connection.unregister_connection(name)
                log.debug("shut down %s", name)
            self._states.remove(state)
            cqlengine_defaults.release(state)
        if app is None or runner.uses_thread_loops(app):  # type: ignore[arg-type]
            # The loops are the process's, not one app's: an app still
            # serving makes itself a new one at its next async call.
            runner.close_idle_loops()
        if app is not None:
            app.extensions.pop(EXTENSION_KEY, None)

    # -- models ---------------------------------------------------------------

    @property
    def models(self) -> list[Any]:
        """Every concrete model declared on :attr:`Model`, parents first."""
        return [m for m in _subclasses(self.Model) if not m.__abstract__ and not m._is_context_clone()]

    @property
    def user_types(self) -> list[type[UserType]]:
        """Every user-defined type declared on :attr:`UserType`."""
        return _subclasses(self.UserType)

    # -- schema ---------------------------------------------------------------

    def sync_db(self) -> None:
        """Create or alter the table of every model of this extension, and its
        user-defined types. Raises :class:`~flask_cqlalchemy.errors.SchemaError`
        when a keyspace does not exist.
        """
        state = self.state()
        models = self.models
        self._require_keyspaces(
            {state.keyspace, *(m._get_keyspace() for m in models if m._get_connection() == state.connection_name)}
        )
        for bind in state.binds.values():
            self._require_keyspaces(
                {m._get_keyspace() for m in models if m._get_connection() == bind.connection_name}, bind.connection_name
            )
        with _schema_change():
            for user_type in self.user_types:
                management.sync_type(state.keyspace, user_type, connection=state.connection_name)
            for model in models:
                log.debug("syncing table %s", model.column_family_name())
                management.sync_table(model)
                sai.sync_indexes(model)

    def sync_table(self, model: Any) -> None:
        """Create or alter the table of one model."""
        self._require_keyspaces({model._get_keyspace()}, model._get_connection())
        with _schema_change():
            management.sync_table(model)
            sai.sync_indexes(model)

    def sync_type(self, type_model: type[UserType], keyspace: str | None = None) -> None:
        """Create or alter one user-defined type (in the app's keyspace by default).
        Raises :class:`~flask_cqlalchemy.errors.SchemaError` when the keyspace does not exist."""
        state = self.state()
        keyspace = validate_keyspace_name(keyspace or state.keyspace)
        self._require_keyspaces({keyspace}, state.connection_name)
        with _schema_change():
            management.sync_type(keyspace, type_model, connection=state.connection_name)

    def drop_table(self, model: Any) -> None:
        """Drop the table of one model."""
        with _schema_change():
            management.drop_table(model)

    def truncate(self, *models: Any) -> None:
        """Remove every row of the given models' tables (all models by default)."""
        for model in models or self.models:
            self.session.execute(f"TRUNCATE {model.column_family_name()}")

    def create_keyspace_simple(self, name: str, replication_factor: int, durable_writes: bool = True) -> None:
        """Create keyspace ``name`` with SimpleStrategy, unless it exists."""
        validate_keyspace_name(name)
        if isinstance(replication_factor, bool) or not isinstance(replication_factor, int) or replication_factor < 1:
            raise SchemaError(f"replication_factor must be a whole number of at least 1, got {replication_factor!r}")
        self._refresh_schema()
        with _schema_change():
            management.create_keyspace_simple(
                name, replication_factor, durable_writes, connections=[self.state().connection_name]
            )

    def create_keyspace_network_topology(
        self, name: str, dc_replication_map: dict[str, int], durable_writes: bool = True
    ) -> None:
        """Create keyspace ``name`` with NetworkTopologyStrategy, unless it exists."""
        validate_keyspace_name(name)
        self._refresh_schema()
        with _schema_change():
            management.create_keyspace_network_topology(
                name, dc_replication_map, durable_writes, connections=[self.state().connection_name]
            )

    def drop_keyspace(self, name: str) -> None:
        """Drop keyspace ``name`` and everything in it, if it exists."""
        validate_keyspace_name(name)
        self._refresh_schema()
        with _schema_change():
            management.drop_keyspace(name, connections=[self.state().connection_name])

    def migrate(
        self, to: str | None = None, *, bind: str | None = None, echo: Callable[[str], None] | None = None
    ) -> list[Any]:
        """Run the current app's pending migrations, as ``flask cql migrate
        upgrade`` does: its default connection's, then each bind's (``bind``
        for one only), under the migration lock. ``echo`` receives each
        progress line. Returns the migrations run (``Entry`` objects).

        Raises the errors of :mod:`flask_cqlalchemy.migrations.errors`:
        ``MigrationRefused`` (a migration failed, is in progress or changed:
        nothing ran), ``MigrationFailed``, ``LockTimeout``.
        """
        from .migrations.migrator import upgrade_app

        state = self.state()
        app = frameworks.current_app()
        assert app is not None  # state() found one
        return upgrade_app(app, state, to, bind=bind, echo=echo)

    def set_keyspace(self, name: str | None = None) -> None:
        """Use keyspace ``name`` for this app's models that do not set
        ``__keyspace__``; with no name, go back to ``CASSANDRA_KEYSPACE``."""
        state = self.state()
        state.keyspace = state.settings.keyspace if name is None else validate_keyspace_name(name)
        cqlengine_defaults.keyspace_changed(state)
        log.debug("app %s now uses keyspace %s", state.app_name, state.keyspace)

    def _refresh_schema(self, cluster: Cluster | None = None) -> None:
        # cqlengine decides whether a keyspace exists from the driver's
        # metadata, which learns of another client's DDL only after a refresh
        # window: a drop would be skipped, a create would fail. A refresh that
        # times out (a busy node) leaves the metadata as it was: go on with it.
        try:
            (cluster or self.cluster).refresh_schema_metadata()
        except DriverException as exc:
            log.warning("could not refresh schema metadata, using what the driver has: %s", exc)

    def _require_keyspaces(self, keyspaces: set[str], connection: str | None = None) -> None:
        cluster = cqlengine_connection.get_cluster(connection) if connection else self.cluster
        if not keyspaces <= set(cluster.metadata.keyspaces):
            # Schema events reach the driver after a refresh window (2 s by
            # default): a keyspace created by another client may not be known yet.
            self._refresh_schema(cluster)
        for keyspace in sorted(keyspaces):
            if keyspace not in cluster.metadata.keyspaces:
                raise SchemaError(
                    f"keyspace {keyspace!r} does not exist; create it first, e.g. "
                    f"db.create_keyspace_simple({keyspace!r}, replication_factor=1)"
                )

    # -- raw access -----------------------------------------------------------

    @property
    def session(self) -> Session:
        """The driver session of the current app (connects if lazy)."""
        return self.state().connection.session

    @property
    def cluster(self) -> Cluster:
        """The driver cluster of the current app (connects if lazy)."""
        return self.state().connection.cluster

    def execute(
        self, cql: str, params: Any = None, *, timeout: float | None = None, consistency: Any = None
    ) -> ResultSet:
        """Run one CQL statement with bound ``params``; return the driver's ResultSet."""
        statement = SimpleStatement(cql, consistency_level=parse_consistency(consistency, "consistency"))
        return self.session.execute(statement, params, timeout if timeout is not None else _NOT_SET)

    @property
    def aio(self) -> AsyncCQLAlchemy:
        """The async facade of this extension."""
        if self._aio is None:
            from .aio import AsyncCQLAlchemy

            self._aio = AsyncCQLAlchemy(sync=self)
        return self._aio

    def _shell_context(self, app: App) -> dict[str, Any]:
        """``flask shell`` / ``quart shell``: the extension as ``db``, its async
        facade under the name the app's code gave it (``adb`` if none is
        found), and every model by its class name."""
        context: dict[str, Any] = {"db": self}
        names = _global_names(app.import_name)
        facade = self.aio
        context[names.get(id(facade), "adb")] = facade
        own_name = names.get(id(self))
        if own_name is not None and own_name not in context:
            context[own_name] = self
        context.update((model.__name__, model) for model in self.models)
        return context

    def __repr__(self) -> str:
        return f"<CQLAlchemy apps={[s.app_name for s in self._states]}>"


def _global_names(import_name: str) -> dict[int, str]:
    """id -> name of the public module-level objects of the app's package
    (``import_name``'s top-level package) and of ``__main__``."""
    top = import_name.partition(".")[0]
    names: dict[int, str] = {}
    for module_name, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType) or not (
            module_name in (top, "__main__") or module_name.startswith(top + ".")
        ):
            continue
        # Read past the module's own attribute lookup: a lazy module
        # (importlib.util.LazyLoader) would run its code on any access, and
        # until it has run it holds no name of the user's.
        for name, value in list(object.__getattribute__(module, "__dict__").items()):
            if not name.startswith("_"):
                names.setdefault(id(value), name)
    return names


def _subclasses(base: type) -> list[Any]:
    found: list[Any] = []
    pending: list[Any] = list(base.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found


def _as_bytes(secret: Any) -> bytes | None:
    if isinstance(secret, str):
        return secret.encode()
    return secret if isinstance(secret, bytes) else None


def _register_error_handlers(app: App) -> None:
    """A user's invalid value or filter is a 400, a row that is not there a
    404, a cluster that cannot answer a 503. Several rows where one was
    expected stays a server error: that is the code's mistake, not the user's.
    The extension's own HTTP errors (``*_or_404``, cursors) answer JSON by
    themselves (:class:`~flask_cqlalchemy.errors.HTTPError`)."""

    def invalid(error: Exception) -> Any:
        return frameworks.json_response(app, 400, {"error": "invalid value", "message": str(error)})

    def not_found(error: Exception) -> Any:
        return frameworks.json_response(app, 404, {"error": "not found", "message": str(error) or type(error).__name__})

    def server_error(error: Exception) -> Any:
        raise error

    def unavailable(error: Exception) -> Any:
        log.warning("Cassandra unavailable: %s", error)
        return frameworks.json_response(app, 503, {"error": "database unavailable", "message": _cause(error)})

    handlers = [
        (ValidationError, invalid),
        (QueryException, invalid),
        (DoesNotExist, not_found),
        (MultipleObjectsReturned, server_error),
        *((error_type, unavailable) for error_type in UNAVAILABLE_ERRORS),
    ]
    quart = frameworks.is_quart(app)
    for error_type, handler in handlers:
        # Quart runs a plain function handler on a worker thread: these do
        # nothing that blocks, so they are handed to it as coroutines.
        app.register_error_handler(error_type, _as_coroutine(handler) if quart else handler)


def _cause(error: Exception) -> str:
    """The name a 503 gives: the driver's retry policy turns a coordinator's
    ``Unavailable`` (too few replicas alive) into ``NoHostAvailable`` once no
    other host is left to try; when every host answered the same, that
    answer is the cause."""
    if isinstance(error, NoHostAvailable) and len(error.args) > 1 and isinstance(error.args[1], dict):
        causes = {type(cause) for cause in error.args[1].values()}
        if len(causes) == 1:
            (cause,) = causes
            if issubclass(cause, UNAVAILABLE_ERRORS):
                return cause.__name__
    return type(error).__name__


def _as_coroutine(handler: Callable[[Exception], Any]) -> Callable[[Exception], Any]:
    @functools.wraps(handler)
    async def on_the_loop(error: Exception) -> Any:
        return handler(error)

    return on_the_loop


__all__ = ["CQLAlchemy", "AppState", "Bind"]
