"""The ``flask cql`` command group, registered on the app by ``init_app``.

* ``flask cql sync [--dry-run]``: create or alter every model's table and
  user-defined type; ``--dry-run`` prints the CQL instead of running it.
* ``flask cql create-keyspace NAME``: SimpleStrategy with
  ``--replication-factor N``, or ``--strategy NetworkTopologyStrategy
  --dc DC=N ...``.
* ``flask cql drop-keyspace NAME [--yes]``.
* ``flask cql status [--check]``: the cluster, its hosts, the keyspace and
  whether every model's table matches the model.

A Quart app gets the same group as ``quart cql ...``: the same commands,
options, messages and exit codes.

Every command turns "no host answered" and a missing keyspace into a one-line
error and exit code 1. A node that cannot be reached while the app loads
(``init_app`` connects eagerly) fails before any command runs: set
``CASSANDRA_LAZY_CONNECT`` for command-line use to get the same one-line error.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click
from cassandra import OperationTimedOut
from cassandra.cluster import NoHostAvailable
from cassandra.cqlengine import CQLEngineException, columns, management
from cassandra.cqlengine import connection as cqlengine_connection
from cassandra.metadata import TableMetadataV3
from flask.cli import AppGroup

from . import frameworks
from .errors import CQLAlchemyError

if TYPE_CHECKING:
    from cassandra.cluster import Cluster
    from cassandra.metadata import TableMetadata
    from flask.sansio.app import App

    from .config import Settings
    from .extension import AppState

F = TypeVar("F", bound=Callable[..., Any])

cql = AppGroup("cql", help="Manage the app's Cassandra schema and connection.")

#: Keyspaces Cassandra owns; ``drop-keyspace`` refuses them.
SYSTEM_KEYSPACES = frozenset(
    {
        "system",
        "system_auth",
        "system_distributed",
        "system_schema",
        "system_traces",
        "system_views",
        "system_virtual_schema",
    }
)


def register_cli(app: App) -> None:
    """Add ``flask cql`` (``quart cql`` to a Quart app) to ``app`` (once)."""
    if "cql" not in app.cli.commands:
        app.cli.add_command(_quart_group() if frameworks.is_quart(app) else cql)


@functools.lru_cache(maxsize=1)
def _quart_group() -> click.Group:
    """The commands of :data:`cql`, each run in Quart's app context instead
    of Flask's (Flask's ``AppGroup`` cannot find a Quart app)."""
    from quart.cli import AppGroup as QuartAppGroup
    from quart.cli import with_appcontext

    group = QuartAppGroup(cql.name, help=cql.help)
    for command in cql.commands.values():
        quart_command = copy.copy(command)
        if command.help is not None:  # it names other commands to run
            quart_command.help = command.help.replace("`flask cql ", "`quart cql ")
        # Flask's AppGroup wrapped the callback in its with_appcontext
        quart_command.callback = with_appcontext(_abort_with_args(command.callback.__wrapped__))  # type: ignore[union-attr]
        group.add_command(quart_command)
    return group


def _abort_with_args(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback``, raising click's ``Abort`` (a declined confirmation) with
    an argument: Quart's ``with_appcontext`` reads ``args[0]`` of every
    ``RuntimeError`` passing through it, and an ``Abort()`` has none, so
    declining ended in an ``IndexError`` traceback instead of "Aborted!"."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except click.Abort as exc:
            if exc.args:
                raise
            raise click.Abort("aborted") from None

    return run


# -- shared plumbing ------------------------------------------------------------------


def _current_app() -> App:
    app = frameworks.current_app()
    if app is None:  # pragma: no cover - both frameworks run the commands in an app context
        raise click.ClickException("no app context: run the command as `flask cql ...` or `quart cql ...`")
    return app


def _state() -> AppState:
    app = _current_app()
    state: AppState | None = app.extensions.get("cqlalchemy")
    if state is None:
        raise click.ClickException(f"app {app.name!r} has no CQLAlchemy: call db.init_app(app) in the app factory")
    return state


def _command(rest: str) -> str:
    """``flask cql <rest>``, or ``quart cql <rest>`` for a Quart app."""
    return f"{frameworks.framework_name(_current_app())} cql {rest}"


def _describe_hosts(settings: Settings) -> str:
    port = settings.cluster_options().get("port", 9042)
    return ", ".join(f"{host}:{port}" for host in settings.hosts)


def _unreachable_message(hosts: str, details: str) -> str:
    return (
        f"cannot reach Cassandra at {hosts} ({details}). Is the node running? Check CASSANDRA_HOSTS and CASSANDRA_PORT."
    )


def _cli_errors(command: F) -> F:
    """Turn the errors a user can cause into ``click.ClickException`` (exit 1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NoHostAvailable as exc:
            errors = getattr(exc, "errors", None) or {}
            if errors:
                hosts = ", ".join(str(endpoint) for endpoint in errors)
                details = "; ".join(str(reason) for reason in errors.values())
            else:
                state = _current_app().extensions.get("cqlalchemy")
                hosts = _describe_hosts(state.settings) if state is not None else "the configured hosts"
                details = str(exc.args[0]) if exc.args else "no host available"
            raise click.ClickException(_unreachable_message(hosts, details)) from exc
        except OperationTimedOut as exc:
            raise click.ClickException(f"Cassandra did not answer in time: {exc}") from exc
        except (CQLAlchemyError, CQLEngineException) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


class Clusters:
    """The clusters of the current app (its default connection and its
    binds), each connected if lazy and with its schema metadata read anew,
    once per command: schema changes made by other clients reach the driver
    only after a delay."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._ready: dict[str, Cluster] = {}

    def get(self, connection_name: str | None = None) -> Cluster:
        """The cluster of ``connection_name`` (the app's default connection if None)."""
        name = connection_name or self.state.connection_name
        if name not in self._ready:
            cluster = cqlengine_connection.get_connection(name).cluster  # connects if lazy
            if cluster is None or cluster.is_shutdown:
                # A lazy connection whose first attempt failed is left shut down.
                hosts = _describe_hosts(self.settings(name))
                raise click.ClickException(_unreachable_message(hosts, "an earlier connection attempt failed"))
            cluster.refresh_schema_metadata()
            self._ready[name] = cluster
        return self._ready[name]

    def of(self, model: Any) -> Cluster:
        """The cluster that holds ``model``'s table."""
        return self.get(model._get_connection())

    def settings(self, connection_name: str) -> Settings:
        for bind in self.state.binds.values():
            if bind.connection_name == connection_name:
                return bind.settings
        return self.state.settings

    def bind_name(self, connection_name: str) -> str | None:
        for name, bind in self.state.binds.items():
            if bind.connection_name == connection_name:
                return name
        return None


def _missing_keyspace(name: str, bind: str | None = None) -> click.ClickException:
    where = f" on bind {bind!r}" if bind else ""
    return click.ClickException(
        f"keyspace {name!r} does not exist{where}; create it with `{_command('create-keyspace ' + name)}`"
        + (" against that cluster" if bind else "")
    )


# -- comparing models with the live schema -------------------------------------------


def _canonical_type(cql_type: str) -> str:
    """Spell a CQL type as Cassandra reports it: tuples are always frozen, and
    cqlengine writes ``tuple<...>`` where the schema says ``frozen<tuple<...>>``."""

    def parse(text: str, at: int) -> tuple[str, int]:
        start = at
        while at < len(text) and text[at] not in "<>,":
            at += 1
        name = text[start:at]
        if at < len(text) and text[at] == "<":
            args = []
            at += 1
            while True:
                arg, at = parse(text, at)
                args.append(arg)
                if text[at] == ",":
                    at += 1
                    continue
                at += 1  # the closing ">"
                break
            if name.lower() == "tuple":
                return f"frozen<tuple<{', '.join(args)}>>", at
            if name.lower() == "frozen" and len(args) == 1 and args[0].startswith("frozen<"):
                return args[0], at
            return f"{name}<{', '.join(args)}>", at
        return name, at

    try:
        return parse(cql_type.replace(" ", ""), 0)[0]
    except IndexError:  # not a type expression understood here: compare as written
        return cql_type


@dataclass
class TableCheck:
    """How one model's table compares with the model."""

    model: Any
    keyspace: str
    table: str
    exists: bool = False
    missing: list[str] = field(default_factory=list)
    differing: list[tuple[str, str, str]] = field(default_factory=list)  # (column, table type, model type)
    primary_key_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exists and not self.missing and not self.differing and self.primary_key_error is None

    def summary(self) -> str:
        if not self.exists:
            return "table missing"
        if self.primary_key_error:
            return "PRIMARY KEY differs from the model"
        problems = []
        if self.missing:
            problems.append("missing columns: " + ", ".join(self.missing))
        for column, table_type, model_type in self.differing:
            problems.append(f"column {column} is {table_type} in the table, {model_type} in the model")
        return "; ".join(problems) if problems else "ok"


def _table_metadata(cluster: Cluster, keyspace: str, table: str) -> TableMetadata | None:
    keyspace_meta = cluster.metadata.keyspaces.get(keyspace)
    return keyspace_meta.tables.get(table) if keyspace_meta is not None else None


def check_table(cluster: Cluster, model: Any) -> TableCheck:
    """Compare ``model`` with its table in ``cluster``'s schema metadata."""
    check = TableCheck(model, model._get_keyspace(), model._raw_column_family_name())
    table = _table_metadata(cluster, check.keyspace, check.table)
    if table is None:
        return check
    check.exists = True
    try:
        management._validate_pk(model, table)
    except CQLEngineException as exc:
        check.primary_key_error = str(exc)
    for column in model._columns.values():
        meta = table.columns.get(column.db_field_name)
        if meta is None:
            check.missing.append(column.db_field_name)
        elif _canonical_type(meta.cql_type) != _canonical_type(column.db_type):
            check.differing.append((column.db_field_name, meta.cql_type, column.db_type))
    return check


# -- planning a sync without running it ---------------------------------------------


class SyncPlan:
    """The CQL that ``sync_db`` would run against the current schema, worked
    out from the driver's schema metadata without sending any DDL.

    Mirrors cqlengine's ``sync_type``/``sync_table``: types (nested ones
    first) are created or gain their missing fields; tables are created, or
    gain their missing columns, indexes and changed table options.
    """

    def __init__(self, clusters: Clusters) -> None:
        self.clusters = clusters
        self.statements: list[str] = []
        # Keyed by (connection, keyspace, name): what exists or is planned so far.
        self._types: dict[tuple[str, str, str], set[str]] = {}
        self._tables: dict[tuple[str, str, str], set[str]] = {}
        self._indexed: dict[tuple[str, str, str], set[str]] = {}

    def build(self) -> list[str]:
        state = self.clusters.state
        ext = state.ext
        models = ext.models
        wanted = {(state.connection_name, state.keyspace)} | {(m._get_connection(), m._get_keyspace()) for m in models}
        for connection, keyspace in sorted(wanted):
            if keyspace not in self.clusters.get(connection).metadata.keyspaces:
                raise _missing_keyspace(keyspace, self.clusters.bind_name(connection))
        for user_type in ext.user_types:
            self._plan_type(state.connection_name, state.keyspace, user_type)
        for model in models:
            self._plan_table(model)
        return self.statements

    def _plan_type(self, connection: str, keyspace: str, user_type: Any) -> None:
        for field_column in user_type._fields.values():
            for nested in _udts_of(field_column):
                self._plan_type(connection, keyspace, nested)
        key = (connection, keyspace, user_type.type_name())
        if key not in self._types:
            keyspace_meta = self.clusters.get(connection).metadata.keyspaces[keyspace]
            existing = keyspace_meta.user_types.get(user_type.type_name())
            if existing is None:
                self.statements.append(management.get_create_type(user_type, keyspace))
                self._types[key] = {f.db_field_name for f in user_type._fields.values()}
                return
            self._types[key] = set(existing.field_names)
        known = self._types[key]
        for field_column in user_type._fields.values():
            if field_column.db_field_name not in known:
                definition = field_column.get_column_def().strip()
                self.statements.append(f"ALTER TYPE {keyspace}.{user_type.type_name()} ADD {definition}")
                known.add(field_column.db_field_name)

    def _plan_table(self, model: Any) -> None:
        connection, keyspace, name = model._get_connection(), model._get_keyspace(), model._raw_column_family_name()
        for column in model._columns.values():
            for nested in _udts_of(column):
                self._plan_type(connection, keyspace, nested)
        key = (connection, keyspace, name)
        if key not in self._tables:
            table = _table_metadata(self.clusters.get(connection), keyspace, name)
            if table is None:
                self.statements.append(management._get_create_table(model))
                self._tables[key] = {c.db_field_name for c in model._columns.values()}
                self._indexed[key] = set()
                self._plan_indexes(model, key)
                return
            management._validate_pk(model, table)  # sync_table would refuse: say so now
            self._tables[key] = set(table.columns)
            self._indexed[key] = {
                c.db_field_name
                for c in model._columns.values()
                if management._get_index_name_by_column(table, c.db_field_name)
            }
            self._plan_options(model, table)
        known = self._tables[key]
        for column_name, column in model._columns.items():
            if column.db_field_name in known:
                continue
            if column.primary_key:
                raise click.ClickException(
                    f"cannot add primary key column {column_name!r} to the existing table "
                    f"{model.column_family_name()}; drop the table or change the model"
                )
            self.statements.append(f"ALTER TABLE {model.column_family_name()} ADD {column.get_column_def().strip()}")
            known.add(column.db_field_name)
        self._plan_indexes(model, key)

    def _plan_indexes(self, model: Any, key: tuple[str, str, str]) -> None:
        indexed = self._indexed[key]
        for column in model._columns.values():
            if column.index and column.db_field_name not in indexed:
                self.statements.append(f'CREATE INDEX ON {model.column_family_name()} ("{column.db_field_name}")')
                indexed.add(column.db_field_name)

    def _plan_options(self, model: Any, table: TableMetadata) -> None:
        # The comparison of cqlengine's _update_options, without its ALTER.
        existing = management._options_map_from_strings(set(table._make_option_strings(table.options)))
        wanted = management._options_map_from_strings(TableMetadataV3._make_option_strings(model.__options__ or {}))
        changed = {}
        for name, value in wanted.items():
            if name not in existing:
                raise click.ClickException(f"{model.__name__}: unknown table option {name!r}")
            current = existing[name]
            if isinstance(current, str):
                if value != current:
                    changed[name] = value
            elif any(current.get(k) != v for k, v in value.items()):
                changed[name] = value
        if changed:
            options = " AND ".join(TableMetadataV3._make_option_strings(changed))
            self.statements.append(f"ALTER TABLE {model.column_family_name()} WITH {options}")


def _udts_of(column: Any) -> list[Any]:
    found: list[Any] = []
    columns.resolve_udts(column, found)
    return found


# -- commands ---------------------------------------------------------------------------


@cql.command("sync", short_help="Create or alter every table and user type.")
@click.option("--dry-run", is_flag=True, help="Print the CQL that would run; change nothing.")
@_cli_errors
def sync_command(dry_run: bool) -> None:
    """Create or alter every model's table and user-defined type.

    Keyspaces are never created: make them first with `flask cql create-keyspace`.
    Columns are only ever added, never dropped or retyped.
    """
    state = _state()
    statements = SyncPlan(Clusters(state)).build()
    if dry_run:
        if not statements:
            click.echo("-- the schema is up to date: nothing to run")
        for statement in statements:
            click.echo(f"{statement};")
        return
    state.ext.sync_db()
    for statement in statements:
        click.echo(f"{statement};")
    tables = {(m._get_keyspace(), m._raw_column_family_name()) for m in state.ext.models}
    click.echo(
        f"synced {len(tables)} table(s) and {len(state.ext.user_types)} user type(s)"
        + ("" if statements else ": nothing to change")
    )


def _parse_dc(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    replication: dict[str, int] = {}
    for value in values:
        dc, sep, count = value.partition("=")
        if not sep or not dc.strip() or not count.strip().isdigit() or int(count) < 1:
            raise click.BadParameter(f"expected DC=N with N a whole number of at least 1, got {value!r}", ctx, param)
        replication[dc.strip()] = int(count)
    return replication


@cql.command("create-keyspace")
@click.argument("name")
@click.option(
    "--replication-factor",
    "-r",
    type=click.IntRange(min=1),
    default=None,
    help="Copies of each row (SimpleStrategy; default 1).",
)
@click.option(
    "--strategy",
    type=click.Choice(["SimpleStrategy", "NetworkTopologyStrategy"]),
    default="SimpleStrategy",
    show_default=True,
    help="Replication strategy.",
)
@click.option(
    "--dc",
    "datacenters",
    multiple=True,
    callback=_parse_dc,
    metavar="DC=N",
    help="Copies in one datacenter (NetworkTopologyStrategy; repeat per datacenter).",
)
@click.option("--durable-writes/--no-durable-writes", default=True, show_default=True)
@_cli_errors
def create_keyspace_command(
    name: str, replication_factor: int | None, strategy: str, datacenters: dict[str, int], durable_writes: bool
) -> None:
    """Create keyspace NAME (nothing happens if it exists)."""
    if strategy == "SimpleStrategy":
        if datacenters:
            raise click.UsageError("--dc needs --strategy NetworkTopologyStrategy")
    else:
        if replication_factor is not None:
            raise click.UsageError("--replication-factor is for SimpleStrategy; give --dc DC=N per datacenter instead")
        if not datacenters:
            raise click.UsageError("NetworkTopologyStrategy needs at least one --dc DC=N")
    state = _state()
    ext = state.ext
    cluster = Clusters(state).get()
    existing = cluster.metadata.keyspaces.get(name)
    if existing is not None:
        replication = existing.replication_strategy.export_for_schema()
        click.echo(f"keyspace {name} already exists ({replication}); left unchanged")
        return
    if strategy == "SimpleStrategy":
        ext.create_keyspace_simple(name, replication_factor or 1, durable_writes)
        click.echo(f"created keyspace {name} (SimpleStrategy, replication_factor {replication_factor or 1})")
    else:
        known = {host.datacenter for host in cluster.metadata.all_hosts()}
        unknown = sorted(set(datacenters) - known)
        if unknown:
            click.echo(
                f"warning: no host of this cluster is in datacenter(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(d for d in known if d)) or 'none'})",
                err=True,
            )
        ext.create_keyspace_network_topology(name, datacenters, durable_writes)
        spec = ", ".join(f"{dc}={n}" for dc, n in datacenters.items())
        click.echo(f"created keyspace {name} (NetworkTopologyStrategy, {spec})")


@cql.command("drop-keyspace")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_cli_errors
def drop_keyspace_command(name: str, yes: bool) -> None:
    """Drop keyspace NAME with all its tables and data."""
    if name in SYSTEM_KEYSPACES:
        raise click.ClickException(f"{name} is one of Cassandra's own keyspaces; refusing to drop it")
    state = _state()
    cluster = Clusters(state).get()
    if name not in cluster.metadata.keyspaces:
        raise click.ClickException(f"keyspace {name!r} does not exist; nothing dropped")
    tables = sorted(cluster.metadata.keyspaces[name].tables)
    if not yes:
        what = f"{len(tables)} table(s)" if tables else "no tables"
        click.confirm(f"Drop keyspace {name} ({what}) and all its data?", abort=True)
    state.ext.drop_keyspace(name)
    click.echo(f"dropped keyspace {name}")


def _echo_cluster(label: str, cluster: Cluster) -> None:
    metadata = cluster.metadata
    hosts = sorted(metadata.all_hosts(), key=lambda h: str(h.endpoint))
    releases = sorted({h.release_version for h in hosts if h.release_version})
    click.echo(f"{label}cluster:   {metadata.cluster_name}")
    click.echo(f"{label}release:   Cassandra {', '.join(releases) or 'unknown'}")
    click.echo(f"{label}protocol:  v{cluster.protocol_version}")
    click.echo(f"{label}hosts:")
    for host in hosts:
        where = "/".join(p for p in (host.datacenter, host.rack) if p)
        up = "up" if host.is_up else "DOWN"
        click.echo(f"{label}  {host.endpoint}  {up}  {where}  {host.release_version or ''}".rstrip())


@cql.command("status", short_help="Show the cluster and whether the tables match the models.")
@click.option("--check", is_flag=True, help="Exit with status 1 unless every table matches its model.")
@_cli_errors
def status_command(check: bool) -> None:
    """Show the cluster, its hosts and whether every model's table matches the model."""
    state = _state()
    ext = state.ext
    clusters = Clusters(state)
    cluster = clusters.get()
    _echo_cluster("", cluster)
    keyspace = cluster.metadata.keyspaces.get(state.keyspace)
    if keyspace is None:
        click.echo(f"keyspace:  {state.keyspace} (missing)")
        raise _missing_keyspace(state.keyspace)
    click.echo(f"keyspace:  {state.keyspace} ({keyspace.replication_strategy.export_for_schema()})")
    for bind_name, bind in state.binds.items():
        bind_cluster = clusters.get(bind.connection_name)
        bind_keyspace = "exists" if bind.keyspace in bind_cluster.metadata.keyspaces else "missing"
        click.echo(f"bind {bind_name}: {_describe_hosts(bind.settings)}, keyspace {bind.keyspace} ({bind_keyspace})")

    checks = []
    for model in ext.models:
        checks.append(check_table(clusters.of(model), model))
    click.echo("models:" if checks else "models:    none declared")
    width = max((len(c.model.__name__) for c in checks), default=0)
    table_width = max((len(f"{c.keyspace}.{c.table}") for c in checks), default=0)
    for item in checks:
        model_bind = clusters.bind_name(item.model._get_connection())
        where = f"{item.keyspace}.{item.table}"
        suffix = f"  [bind {model_bind}]" if model_bind else ""
        click.echo(f"  {item.model.__name__:<{width}}  {where:<{table_width}}  {item.summary()}{suffix}")

    out_of_sync = [f"{c.keyspace}.{c.table}" for c in checks if not c.ok]
    types = ext.user_types
    if types:
        click.echo("user types:")
        for user_type in types:
            meta = keyspace.user_types.get(user_type.type_name())
            if meta is None:
                verdict = "type missing"
            else:
                fields = [f.db_field_name for f in user_type._fields.values()]
                missing = [f for f in fields if f not in meta.field_names]
                verdict = "missing fields: " + ", ".join(missing) if missing else "ok"
            if verdict != "ok":
                out_of_sync.append(f"{state.keyspace}.{user_type.type_name()}")
            click.echo(f"  {user_type.__name__}  {state.keyspace}.{user_type.type_name()}  {verdict}")

    if out_of_sync:
        click.echo(f"schema:    out of sync ({', '.join(dict.fromkeys(out_of_sync))}): run `{_command('sync')}`")
        if check:
            raise click.exceptions.Exit(1)
    else:
        click.echo("schema:    in sync" if checks or types else "schema:    nothing to check")
