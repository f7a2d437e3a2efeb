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
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from cassandra import OperationTimedOut
from cassandra.cluster import NoHostAvailable
from cassandra.cqlengine import CQLEngineException
from cassandra.cqlengine import connection as cqlengine_connection
from flask.cli import AppGroup

from . import frameworks, migrations
from .errors import CQLAlchemyError
from .migrations.autogenerate import autogenerate
from .migrations.files import write_new
from .schema_plan import SyncPlan, check_table

if TYPE_CHECKING:
    from cassandra.cluster import Cluster
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
    return _quart_copy(cql)


def _quart_copy(flask_group: click.Group) -> click.Group:
    from quart.cli import AppGroup as QuartAppGroup
    from quart.cli import with_appcontext

    def for_quart(text: str | None) -> str | None:  # texts that name other commands
        return text.replace("`flask cql ", "`quart cql ") if text is not None else None

    group = QuartAppGroup(
        flask_group.name, help=for_quart(flask_group.help), short_help=for_quart(flask_group.short_help)
    )
    for command in flask_group.commands.values():
        if isinstance(command, click.Group):
            group.add_command(_quart_copy(command))
            continue
        quart_command = copy.copy(command)
        quart_command.help = for_quart(command.help)
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


def _sync_plan(clusters: Clusters, connection: str | None = None) -> SyncPlan:
    """What ``sync_db`` would run (for the models of ``connection`` only, when given)."""
    return SyncPlan(
        clusters.state,
        clusters.get,
        connection=connection,
        missing_keyspace=lambda name, conn: _missing_keyspace(name, clusters.bind_name(conn)),
    )


def _missing_keyspace(name: str, bind: str | None = None) -> click.ClickException:
    where = f" on bind {bind!r}" if bind else ""
    return click.ClickException(
        f"keyspace {name!r} does not exist{where}; create it with `{_command('create-keyspace ' + name)}`"
        + (" against that cluster" if bind else "")
    )


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
    statements = _sync_plan(Clusters(state)).build()
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
        if dc.strip() in replication:
            raise click.BadParameter(f"datacenter {dc.strip()!r} is given twice", ctx, param)
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
    default=None,
    help="Replication strategy (default: NetworkTopologyStrategy with --dc, else SimpleStrategy).",
)
@click.option(
    "--dc",
    "datacenters",
    multiple=True,
    callback=_parse_dc,
    metavar="DC=N",
    help="Copies in one datacenter (NetworkTopologyStrategy; repeat per datacenter: --dc dc1=3 --dc dc2=3).",
)
@click.option("--durable-writes/--no-durable-writes", default=True, show_default=True)
@_cli_errors
def create_keyspace_command(
    name: str, replication_factor: int | None, strategy: str | None, datacenters: dict[str, int], durable_writes: bool
) -> None:
    """Create keyspace NAME (nothing happens if it exists)."""
    if strategy is None:
        strategy = "NetworkTopologyStrategy" if datacenters else "SimpleStrategy"
    if strategy == "SimpleStrategy":
        if datacenters:
            raise click.UsageError("--dc is for NetworkTopologyStrategy; SimpleStrategy takes --replication-factor")
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
        hosts = cluster.metadata.all_hosts()
        known = {host.datacenter for host in hosts}
        unknown = sorted(set(datacenters) - known)
        if unknown:
            # Cassandra refuses them itself; said here with the names it has.
            raise click.UsageError(
                f"no host of this cluster is in datacenter(s) {', '.join(unknown)} "
                f"(its datacenters: {', '.join(sorted(d for d in known if d)) or 'none'})"
            )
        for dc, copies in datacenters.items():
            nodes = sum(1 for host in hosts if host.datacenter == dc)
            if copies > nodes:
                # Cassandra keeps one copy per node, so only `nodes` copies
                # exist, but LOCAL_QUORUM still asks for a majority of `copies`.
                majority = copies // 2 + 1
                fails = (
                    f"; LOCAL_QUORUM in {dc} needs {majority} and fails until it has {majority} nodes"
                    if majority > nodes
                    else ""
                )
                click.echo(
                    f"warning: {dc}={copies} but {dc} has {nodes} node(s), so it keeps {nodes} copies{fails}", err=True
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


# -- migrations ------------------------------------------------------------------------


@cql.group("migrate", short_help="Versioned schema migrations (see `flask cql migrate --help`).")
def migrate_group() -> None:
    """Versioned schema migrations, recorded in the cluster.

    Migration files live in the app's `migrations/` directory
    (CASSANDRA_MIGRATIONS_DIR), one directory per bind; what ran is recorded
    in a table of each keyspace (CASSANDRA_MIGRATIONS_TABLE). Only one runner
    migrates a keyspace at a time.

    Exit codes: 0 done or nothing to do, 1 error, 3 migrations pending
    (status), 4 a migration failed, is in progress or changed (nothing ran),
    5 another runner holds the lock.
    """


def _migration_errors(command: F) -> F:
    """Print a migration error and exit with its own exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except migrations.MigrationError as exc:
            click.echo(f"Error: {_hint_commands(str(exc))}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from exc

    return wrapper  # type: ignore[return-value]


def _hint_commands(message: str) -> str:
    """Messages name commands as `upgrade --resume`: say them in full."""
    for command in ("upgrade", "stamp ", "create-keyspace "):
        full = _command(("" if command == "create-keyspace " else "migrate ") + command)
        message = message.replace(f"`{command}", f"`{full}")
    return message


_bind_option = click.option("--bind", default=None, metavar="NAME", help="Only this bind (CASSANDRA_BINDS).")


def _targets(bind: str | None, every: bool = True) -> list[migrations.Target]:
    state = _state()
    return migrations.targets(_current_app(), state, bind, every=every)


@migrate_group.command("new")
@click.argument("name")
@click.option("--auto", is_flag=True, help="Write the CQL that makes the live schema match the models.")
@click.option("--py", "python", is_flag=True, help="A Python data migration (def upgrade(session)).")
@_bind_option
@_cli_errors
@_migration_errors
def migrate_new_command(name: str, auto: bool, python: bool, bind: str | None) -> None:
    """Create migration file NAME: empty, or with --auto drafted from the models.

    Statements that --auto cannot make safe (drops, type and primary-key
    changes) are written commented out under a REVIEW line: read the file
    before running it.
    """
    if auto and python:
        raise click.UsageError("--auto writes CQL; it cannot be combined with --py")
    (target,) = _targets(bind, every=False)
    if python:
        path = write_new(target.directory, name, "py", _PY_TEMPLATE)
        click.echo(f"created {path}")
        return
    if not auto:
        path = write_new(target.directory, name, "cql", _CQL_TEMPLATE)
        click.echo(f"created {path}")
        return
    state = _state()
    clusters = Clusters(state)
    migrator = migrations.Migrator(target)
    unapplied = [e for e in migrator.status() if e.status not in ("applied", "file missing")]
    if unapplied:
        how = "`upgrade`" if all(e.status == "pending" for e in unapplied) else "`status`, then `upgrade --resume`"
        raise migrations.MigrationRefused(
            f"{len(unapplied)} migration(s) of {target.label} are not applied yet "
            f"({', '.join(f'{e.filename}: {e.status}' for e in unapplied)}): apply them first ({how}"
            + (f" with --bind {bind}" if bind else "")
            + "); the draft compares the models with the live schema"
        )
    draft = autogenerate(
        state,
        target,
        clusters.get,
        missing_keyspace=lambda keyspace, conn: _missing_keyspace(keyspace, clusters.bind_name(conn)),
        state_tables=frozenset(
            (t.keyspace, name)
            for t in _targets(None)
            for name in (t.settings.migrations_table, f"{t.settings.migrations_table}_lock")
        ),
    )
    if draft.empty:
        click.echo(f"no difference between the models and {target.label}: no file written")
        return
    command = _command(f"migrate new {name} --auto" + (f" --bind {bind}" if bind else ""))
    path = write_new(target.directory, name, "cql", "")
    path.write_text(draft.text(path.name, command, target.label), encoding="utf-8")
    click.echo(f"created {path}: {len(draft.statements)} statement(s)")
    for review in draft.reviews:
        click.echo(f"warning: review {path.name}: {review.warning}", err=True)


@migrate_group.command("upgrade")
@click.option("--to", "to", default=None, metavar="VERSION", help="Stop after this version.")
@click.option("--dry-run", is_flag=True, help="Print the statements that would run; change nothing.")
@click.option("--resume", is_flag=True, help="Continue a FAILED or IN_PROGRESS migration after its last statement.")
@_bind_option
@_cli_errors
@_migration_errors
def migrate_upgrade_command(to: str | None, dry_run: bool, resume: bool, bind: str | None) -> None:
    """Run the pending migrations, in version order, under the migration lock."""
    chosen = _targets(bind, every=to is None)
    for target in chosen:
        _echo_target(target)
        migrator = migrations.Migrator(target, echo=click.echo)
        ran = migrator.upgrade(to, dry_run=dry_run, resume=resume)
        if dry_run:
            click.echo(f"  {len(ran)} migration(s) would run" if ran else "  nothing to run")
        else:
            click.echo(f"  applied {len(ran)} migration(s)" if ran else "  up to date: nothing to run")


@migrate_group.command("status")
@_bind_option
@_cli_errors
@_migration_errors
def migrate_status_command(bind: str | None) -> None:
    """Show every migration: applied, pending, failed, in progress, changed.

    Exits 3 when some are pending, 4 when one failed, is in progress or
    changed after it ran.
    """
    worst = 0
    for target in _targets(bind):
        _echo_target(target)
        entries = migrations.Migrator(target).status()
        if not entries:
            click.echo("  no migrations")
        width = max((len(e.filename) for e in entries), default=0)
        for entry in entries:
            click.echo(f"  {entry.filename:<{width}}  {entry.status:<12}  {_describe(entry)}".rstrip())
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.status] = counts.get(entry.status, 0) + 1
        if entries:
            click.echo("  " + ", ".join(f"{n} {status}" for status, n in counts.items()))
        if any(e.needs_attention for e in entries):
            worst = max(worst, migrations.EXIT_NEEDS_ATTENTION)
        elif any(e.status == "pending" for e in entries):
            worst = max(worst, migrations.EXIT_PENDING)
    if worst:
        raise click.exceptions.Exit(worst)


def _describe(entry: migrations.Entry) -> str:
    record = entry.record
    if record is None:
        return ""
    when = record.finished_at or record.started_at
    stamp = f"{when:%Y-%m-%d %H:%M:%S} UTC" if when else ""
    total = f"/{record.statements_total}" if record.statements_total is not None else ""
    parts = [stamp, f"by {record.run_by}" if record.run_by else "", f"{record.statements_done}{total} statement(s)"]
    if record.how and record.how != "ran":
        parts.append(f"({record.how})")
    if entry.status == "changed":
        parts.append("file changed after it ran")
    if record.error and record.state != "SUCCEEDED":
        parts.append(f"error: {record.error}")
    return "  ".join(p for p in parts if p)


@migrate_group.command("stamp")
@click.argument("version")
@_bind_option
@_cli_errors
@_migration_errors
def migrate_stamp_command(version: str, bind: str | None) -> None:
    """Record every migration up to VERSION as applied, without running it.

    For a migration you completed by hand after it failed, or an applied
    file you changed on purpose (its new checksum is recorded).
    """
    (target,) = _targets(bind, every=False)
    stamped = migrations.Migrator(target, echo=click.echo).stamp(version)
    click.echo(f"{target.label}: recorded {len(stamped)} migration(s) as applied" if stamped else "nothing to record")


@migrate_group.command("baseline")
@_bind_option
@_cli_errors
@_migration_errors
def migrate_baseline_command(bind: str | None) -> None:
    """Adopt an existing keyspace: record every migration file present as
    applied, without running any. Refused once migrations are recorded."""
    (target,) = _targets(bind, every=False)
    entries = migrations.Migrator(target, echo=click.echo).baseline()
    click.echo(
        f"{target.label}: baseline of {len(entries)} migration(s); later files run with `{_command('migrate upgrade')}`"
    )


def _echo_target(target: migrations.Target) -> None:
    table = f"{target.keyspace}.{target.settings.migrations_table}"
    click.echo(f"{target.label}: files in {_relative(target.directory)}, state in {table}")


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_CQL_TEMPLATE = """\
-- CQL statements, each ending with ";". They run in order, one at a time,
-- each DDL statement followed by a wait for schema agreement. A statement
-- that fails leaves this migration FAILED: Cassandra cannot roll DDL back.
"""

_PY_TEMPLATE = '''\
"""A data migration: upgrade(session) runs once, under the migration lock.

session.execute() is the driver's, counted and followed by a wait for schema
agreement after DDL; session.keyspace is the keyspace being migrated. Under
`upgrade --resume` this function runs again from its start: make a second run
harmless.
"""

from cassandra.query import SimpleStatement


def upgrade(session):
    rows = session.execute(SimpleStatement(f"SELECT * FROM {session.keyspace}.my_table", fetch_size=500))
    for row in rows:  # later pages are fetched as the loop reaches them
        pass
'''
