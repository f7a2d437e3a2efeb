"""Reading and validating the ``CASSANDRA_*`` config keys.

Config is read once, in ``init_app``, into an immutable :class:`Settings`;
nothing else in the package looks at ``app.config``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import ssl
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cassandra import ConsistencyLevel

from .errors import ConfigError

#: Cassandra's own rule for keyspace and table names (unquoted identifiers).
IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

DEFAULT_PROTOCOL_VERSION = 5
#: With ``CASSANDRA_CLOUD`` (DataStax Astra) unless set otherwise.
CLOUD_PROTOCOL_VERSION = 4

#: Cluster() arguments that select the driver's legacy configuration mode (or
#: bring their own profiles): with any of them we add no execution profile.
_LEGACY_OR_PROFILES = {
    "execution_profiles",
    "load_balancing_policy",
    "default_retry_policy",
    "conviction_policy_factory",
}
#: Cluster() arguments that bring their own load-balancing policy (and so
#: their own local datacenter).
OWN_POLICY = frozenset({"execution_profiles", "load_balancing_policy"})
DEFAULT_MAX_PER_PAGE = 500

#: ``flask cql migrate``: the state table's default name (in each keyspace
#: migrated), how long the runner's lock row lives unless renewed, how long
#: a second runner waits for it, and how long a runner waits for the
#: cluster's nodes to agree on the schema after each DDL statement.
DEFAULT_MIGRATIONS_TABLE = "schema_migrations"
DEFAULT_MIGRATIONS_LOCK_TTL = 60
DEFAULT_MIGRATIONS_LOCK_WAIT = 120
DEFAULT_SCHEMA_AGREEMENT_WAIT = 30
#: The lock lives in ``<table>_lock``: the table name leaves room for that.
_MIGRATIONS_TABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,42}$")

#: Boolean keys and their defaults.
_FLAGS = {
    "LAZY_CONNECT": False,
    "RETRY_CONNECT": False,
    "PREPARE_STATEMENTS": True,
    "RECORD_QUERIES": False,
    "TRACING": False,
    "JSON_PROVIDER": True,
}

#: A datacenter name as Cassandra's snitches accept it (cassandra-rackdc.properties).
_DC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
#: ``CASSANDRA_CLOUD``: what the driver's ``Cluster(cloud=...)`` accepts.
_CLOUD_ENTRIES = {"secure_connect_bundle", "use_default_tempdir", "connect_timeout", "ssl_context"}
#: What the driver reads from a secure connect bundle: where the metadata
#: service is (config.json) and the client certificate for it and the nodes.
_BUNDLE_FILES = ("config.json", "ca.crt", "cert", "key")


@dataclass(frozen=True)
class Settings:
    """The validated connection settings of one app (or one bind)."""

    hosts: tuple[str, ...]
    keyspace: str
    consistency: int | None = None
    lazy_connect: bool = False
    retry_connect: bool = False
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol_version: int = DEFAULT_PROTOCOL_VERSION
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    setup_kwargs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    max_per_page: int = DEFAULT_MAX_PER_PAGE
    cursor_secret: bytes | None = field(default=None, repr=False)
    prepare_statements: bool = True
    record_queries: bool = False
    #: ``CASSANDRA_MIGRATIONS_DIR`` as configured (None: the default, see
    #: :func:`flask_cqlalchemy.migrations.targets`).
    migrations_dir: str | None = None
    migrations_table: str = DEFAULT_MIGRATIONS_TABLE
    migrations_lock_ttl: int = DEFAULT_MIGRATIONS_LOCK_TTL
    migrations_lock_wait: int = DEFAULT_MIGRATIONS_LOCK_WAIT
    schema_agreement_wait: int = DEFAULT_SCHEMA_AGREEMENT_WAIT
    #: ``CASSANDRA_TRACING``: an OpenTelemetry CLIENT span per statement.
    tracing: bool = False
    #: ``CASSANDRA_JSON_PROVIDER``: models, pages and Cassandra's types in ``jsonify``.
    json_provider: bool = True
    #: ``CASSANDRA_LOCAL_DC``: coordinators are chosen in this datacenter.
    local_dc: str | None = None
    #: ``CASSANDRA_USED_HOSTS_PER_REMOTE_DC``: remote nodes tried when the local DC has none up.
    used_hosts_per_remote_dc: int = 0
    #: ``CASSANDRA_CLOUD``: the driver's cloud config (DataStax Astra's secure connect bundle).
    cloud: Mapping[str, Any] | None = field(default=None, repr=False)

    def cluster_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`cassandra.cluster.Cluster`."""
        options: dict[str, Any] = {"protocol_version": self.protocol_version}
        if self.cloud is not None:
            options["cloud"] = dict(self.cloud)
        if self.port is not None:
            options["port"] = self.port
        if self.username is not None:
            from cassandra.auth import PlainTextAuthProvider

            options["auth_provider"] = PlainTextAuthProvider(self.username, self.password)
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        if not _LEGACY_OR_PROFILES & set(self.setup_kwargs):
            # The driver's default policy, made explicit in a default execution
            # profile: the driver warns at every start without one, and
            # cqlengine then sets row factory and consistency on the profile
            # rather than on the deprecated session attributes.
            from cassandra.cluster import EXEC_PROFILE_DEFAULT, ExecutionProfile
            from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

            policy = DCAwareRoundRobinPolicy(
                local_dc=self.local_dc or "", used_hosts_per_remote_dc=self.used_hosts_per_remote_dc
            )
            profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(policy))
            options["execution_profiles"] = {EXEC_PROFILE_DEFAULT: profile}
        # Requests go out without waiting for the previous one's ACK (Nagle's
        # algorithm holds small writes back while one is unacknowledged): an
        # asyncio.gather of N queries on one connection is then one network
        # round trip, not two. The driver leaves this to the user; its Java
        # counterpart turns it on by default.
        options["sockopts"] = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        options.update(self.setup_kwargs)
        return options


def validate_keyspace_name(name: Any, key: str = "keyspace") -> str:
    """Return ``name`` if it is a legal unquoted keyspace name, else raise.

    Raises :class:`ConfigError` naming ``key``: names are interpolated into
    DDL by cqlengine, so anything but a plain identifier is refused.
    """
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ConfigError(
            key,
            f"expected a keyspace name of 1-48 letters, digits or underscores starting with a letter, got {name!r}",
        )
    return name


def parse_consistency(value: Any, key: str = "CASSANDRA_CONSISTENCY") -> int | None:
    """Accept a ``ConsistencyLevel`` value or its name (``"LOCAL_QUORUM"``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a ConsistencyLevel or its name, got {value!r}")
    if isinstance(value, int):
        if value not in ConsistencyLevel.value_to_name:
            raise ConfigError(key, f"{value!r} is not a ConsistencyLevel value")
        return value
    if isinstance(value, str):
        level = ConsistencyLevel.name_to_value.get(value.strip().upper())
        if level is None:
            names = ", ".join(sorted(ConsistencyLevel.name_to_value))
            raise ConfigError(key, f"unknown consistency level {value!r}; expected one of {names}")
        return level
    raise ConfigError(key, f"expected a ConsistencyLevel or its name, got {type(value).__name__}")


def _hosts(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(key, f"expected a non-empty list of host names, got {value!r}")
    hosts = []
    for host in value:
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(key, f"every host must be a non-empty string, got {host!r}")
        hosts.append(host.strip())
    return tuple(hosts)


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


def _ssl_context(value: Any, key: str) -> ssl.SSLContext | None:
    """``CASSANDRA_SSL`` is an ``SSLContext`` or a dict of certificate paths."""
    if value is None or isinstance(value, ssl.SSLContext):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected an ssl.SSLContext or a dict of paths, got {type(value).__name__}")
    unknown = set(value) - {"ca_file", "cert_file", "key_file", "check_hostname"}
    if unknown:
        raise ConfigError(
            key, f"unknown entries {sorted(unknown)}; expected ca_file, cert_file, key_file, check_hostname"
        )
    if "ca_file" not in value:
        raise ConfigError(key, "ca_file is required to verify the node's certificate")
    try:
        context = ssl.create_default_context(cafile=value["ca_file"])
        context.check_hostname = bool(value.get("check_hostname", False))
        if "cert_file" in value:
            context.load_cert_chain(value["cert_file"], value.get("key_file"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(key, f"cannot load certificates: {exc}") from exc
    return context


def _missing(module: str) -> bool:
    """Whether ``module`` cannot be imported (a parent namespace package,
    such as ``opentelemetry`` from opentelemetry-proto alone, is not enough)."""
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def _cloud(value: Any, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """``CASSANDRA_CLOUD``: checked here, before any connection, so that a
    wrong bundle is a ``ConfigError`` naming the key rather than a driver
    traceback at connect. Returns the driver's cloud config and the bundle's
    default keyspace."""
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise ConfigError(
            key, f"expected a dict such as {{'secure_connect_bundle': '/path/bundle.zip'}}, got {value!r}"
        )
    unknown = set(value) - _CLOUD_ENTRIES
    if unknown:
        raise ConfigError(key, f"unknown entries {sorted(unknown)}; expected {sorted(_CLOUD_ENTRIES)}")
    bundle = value.get("secure_connect_bundle")
    if isinstance(bundle, os.PathLike):
        bundle = os.fspath(bundle)
    if not isinstance(bundle, str) or not bundle.strip():
        raise ConfigError(key, "secure_connect_bundle is required: the path of the database's bundle .zip")
    context = value.get("ssl_context")
    if context is not None and not isinstance(context, ssl.SSLContext):
        raise ConfigError(key, f"ssl_context must be an ssl.SSLContext, got {type(context).__name__}")
    timeout = value.get("connect_timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(key, f"connect_timeout must be a positive number of seconds, got {timeout!r}")
    default_tempdir = value.get("use_default_tempdir", False)
    if not isinstance(default_tempdir, bool):
        raise ConfigError(key, f"use_default_tempdir must be True or False, got {default_tempdir!r}")
    described = _read_bundle(bundle, key, check_certificates=context is None)
    # The driver unpacks the bundle next to it unless told otherwise: a
    # read-only folder (a mounted secret) fails at connect with an OSError.
    folder = os.path.dirname(os.path.abspath(bundle))
    if not default_tempdir and not os.access(folder, os.W_OK):
        raise ConfigError(
            key,
            f"the driver unpacks the bundle in its folder {folder!r}, which is not writable: "
            "add 'use_default_tempdir': True to unpack it in the system's temporary folder",
        )
    keyspace = described.get("keyspace")
    return {**value, "secure_connect_bundle": bundle}, keyspace if isinstance(keyspace, str) else None


def _read_bundle(bundle: str, key: str, *, check_certificates: bool) -> Mapping[str, Any]:
    """The bundle's config.json, once the bundle is known to be a zip with
    what the driver reads from it, and its certificates load."""
    try:
        with zipfile.ZipFile(bundle) as archive:
            names = set(archive.namelist())
            needed = _BUNDLE_FILES if check_certificates else _BUNDLE_FILES[:1]
            missing = [f for f in needed if f not in names]
            if missing:
                raise ConfigError(
                    key, f"secure_connect_bundle {bundle!r} has no {', '.join(missing)}: not a secure connect bundle"
                )
            try:
                described = json.loads(archive.read("config.json"))
            except ValueError as exc:
                raise ConfigError(key, f"secure_connect_bundle {bundle!r}: config.json is not JSON ({exc})") from None
            if check_certificates:
                files = {name: archive.read(name) for name in _BUNDLE_FILES[1:]}
    except FileNotFoundError:
        raise ConfigError(key, f"secure_connect_bundle {bundle!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(key, f"secure_connect_bundle {bundle!r} is a directory, not the bundle .zip") from None
    except PermissionError:
        raise ConfigError(key, f"secure_connect_bundle {bundle!r} cannot be read (permission denied)") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(key, f"secure_connect_bundle {bundle!r} is not a readable zip file: {exc}") from None
    if not isinstance(described, Mapping) or not described.get("host") or not described.get("port"):
        raise ConfigError(
            key, f"secure_connect_bundle {bundle!r}: config.json does not name the metadata service's host and port"
        )
    if check_certificates:
        # Loaded as the driver will load them: a corrupt certificate or key
        # is said now, not as an SSLError at connect.
        with tempfile.TemporaryDirectory() as folder:
            for name, data in files.items():
                with open(os.path.join(folder, name), "wb") as out:
                    out.write(data)
            try:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.load_verify_locations(os.path.join(folder, "ca.crt"))
                context.load_cert_chain(os.path.join(folder, "cert"), os.path.join(folder, "key"))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    key, f"secure_connect_bundle {bundle!r}: its certificates (ca.crt, cert, key) do not load: {exc}"
                ) from None
    return described


def read_settings(config: Mapping[str, Any], prefix: str = "CASSANDRA_") -> Settings:
    """Validate ``config`` and return :class:`Settings`.

    ``prefix`` is ``"CASSANDRA_"`` for the app's own keys; for a bind the
    mapping is the bind's dict and keys are given without prefix.

    Raises :class:`ConfigError` naming the first missing or malformed key.
    """

    def name(key: str) -> str:
        return prefix + key

    cloud, bundle_keyspace = _cloud(config.get(name("CLOUD")), name("CLOUD"))
    if cloud is not None:
        # The bundle names the contact points, port and TLS; the driver
        # refuses contact points given beside it.
        for key in ("HOSTS", "PORT", "SSL"):
            if config.get(name(key)) not in (None, "", [], ()):
                raise ConfigError(name(key), f"cannot be set with {name('CLOUD')}: the secure connect bundle names it")
        hosts: tuple[str, ...] = ()
    else:
        if config.get(name("HOSTS")) in (None, "", [], ()):
            raise ConfigError(name("HOSTS"), "is required: a list of contact points, e.g. ['127.0.0.1']")
        hosts = _hosts(config[name("HOSTS")], name("HOSTS"))
    if config.get(name("KEYSPACE")) in (None, ""):
        if bundle_keyspace is None:
            raise ConfigError(name("KEYSPACE"), "is required: the default keyspace of this app's models")
        keyspace = validate_keyspace_name(bundle_keyspace, name("CLOUD"))
    else:
        keyspace = validate_keyspace_name(config[name("KEYSPACE")], name("KEYSPACE"))

    flags = {}
    for flag, default in _FLAGS.items():
        value = config.get(name(flag), default)
        if not isinstance(value, bool):
            raise ConfigError(name(flag), f"expected True or False, got {value!r}")
        flags[flag] = value

    setup_kwargs = config.get(name("SETUP_KWARGS")) or {}
    if not isinstance(setup_kwargs, Mapping):
        raise ConfigError(
            name("SETUP_KWARGS"), f"expected a dict of Cluster() keyword arguments, got {type(setup_kwargs).__name__}"
        )
    for forbidden in ("username", "password"):
        if forbidden in setup_kwargs:
            raise ConfigError(
                name("SETUP_KWARGS"),
                f"'{forbidden}' is not a Cluster() argument; use {name('USERNAME')} and {name('PASSWORD')}",
            )

    port = config.get(name("PORT"))
    if port is not None:
        port = _int(port, name("PORT"), 1, 65535)

    username, password = config.get(name("USERNAME")), config.get(name("PASSWORD"))
    if (username is None) != (password is None):
        missing = name("PASSWORD") if password is None else name("USERNAME")
        raise ConfigError(missing, "is required when the other credential is set")
    for key, value in ((name("USERNAME"), username), (name("PASSWORD"), password)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(key, "expected a non-empty string")

    if cloud is not None:
        # What the bundle decides; the driver refuses these beside it.
        clash = sorted(
            {"cloud", "contact_points", "endpoint_factory", "ssl_context", "ssl_options"} & set(setup_kwargs)
        )
        if clash:
            raise ConfigError(
                name("SETUP_KWARGS"),
                f"{clash} cannot be given with {name('CLOUD')}: the secure connect bundle sets them",
            )
    elif "cloud" in setup_kwargs:
        raise ConfigError(name("SETUP_KWARGS"), f"'cloud' is configured with {name('CLOUD')}, which checks the bundle")
    if cloud is not None and username is None and "auth_provider" not in setup_kwargs:
        raise ConfigError(
            name("USERNAME"),
            f"is required with {name('CLOUD')}: the application token's client id (or 'token'), "
            f"with its secret (or the AstraCS:... token) in {name('PASSWORD')}",
        )

    protocol = config.get(name("PROTOCOL_VERSION"))
    if protocol is None:
        # Astra speaks protocol v4; the driver would not fall back from an
        # explicit v5.
        protocol = setup_kwargs.get(
            "protocol_version", CLOUD_PROTOCOL_VERSION if cloud is not None else DEFAULT_PROTOCOL_VERSION
        )
    protocol = _int(protocol, name("PROTOCOL_VERSION"), 3, 6)
    if "protocol_version" in setup_kwargs and setup_kwargs["protocol_version"] != protocol:
        raise ConfigError(
            name("PROTOCOL_VERSION"),
            f"{protocol} disagrees with {name('SETUP_KWARGS')}['protocol_version']="
            f"{setup_kwargs['protocol_version']!r}",
        )

    max_per_page = _int(config.get(name("MAX_PER_PAGE"), DEFAULT_MAX_PER_PAGE), name("MAX_PER_PAGE"), 1, 100_000)

    secret = config.get(name("CURSOR_SECRET"))
    if secret is not None and not isinstance(secret, (str, bytes)):
        raise ConfigError(name("CURSOR_SECRET"), "expected a string or bytes")

    migrations_dir = config.get(name("MIGRATIONS_DIR"))
    if migrations_dir is not None:
        if isinstance(migrations_dir, os.PathLike):
            migrations_dir = os.fspath(migrations_dir)
        if not isinstance(migrations_dir, str) or not migrations_dir.strip():
            raise ConfigError(name("MIGRATIONS_DIR"), f"expected a directory path, got {migrations_dir!r}")
    migrations_table = config.get(name("MIGRATIONS_TABLE"), DEFAULT_MIGRATIONS_TABLE)
    if not isinstance(migrations_table, str) or not _MIGRATIONS_TABLE.match(migrations_table):
        raise ConfigError(
            name("MIGRATIONS_TABLE"),
            f"expected a table name of 1-43 letters, digits or underscores starting with a letter, "
            f"got {migrations_table!r}",
        )
    lock_ttl = _int(
        config.get(name("MIGRATIONS_LOCK_TTL"), DEFAULT_MIGRATIONS_LOCK_TTL), name("MIGRATIONS_LOCK_TTL"), 5, 86_400
    )
    lock_wait = _int(
        config.get(name("MIGRATIONS_LOCK_WAIT"), DEFAULT_MIGRATIONS_LOCK_WAIT), name("MIGRATIONS_LOCK_WAIT"), 0, 86_400
    )
    agreement_wait = _int(
        config.get(name("SCHEMA_AGREEMENT_WAIT"), DEFAULT_SCHEMA_AGREEMENT_WAIT), name("SCHEMA_AGREEMENT_WAIT"), 1, 3600
    )

    if flags["TRACING"] and _missing("opentelemetry.trace"):
        raise ConfigError(
            name("TRACING"), "needs the OpenTelemetry API: pip install 'flask-cqlalchemy[otel]' (opentelemetry-api)"
        )

    local_dc = config.get(name("LOCAL_DC"))
    if local_dc is not None and (not isinstance(local_dc, str) or not _DC_NAME.match(local_dc)):
        raise ConfigError(name("LOCAL_DC"), f"expected a datacenter name such as 'dc1', got {local_dc!r}")
    remote = _int(config.get(name("USED_HOSTS_PER_REMOTE_DC"), 0), name("USED_HOSTS_PER_REMOTE_DC"), 0, 1000)
    if remote and local_dc is None:
        raise ConfigError(name("USED_HOSTS_PER_REMOTE_DC"), f"needs {name('LOCAL_DC')}: remote to which datacenter?")
    if (local_dc is not None or remote) and OWN_POLICY & set(setup_kwargs):
        key = name("LOCAL_DC") if local_dc is not None else name("USED_HOSTS_PER_REMOTE_DC")
        given = sorted(OWN_POLICY & set(setup_kwargs))
        raise ConfigError(
            key,
            f"cannot be combined with {name('SETUP_KWARGS')}{given}: those bring their own load-balancing "
            "policy; set local_dc in that policy instead",
        )

    return Settings(
        hosts=hosts,
        keyspace=keyspace,
        consistency=parse_consistency(config.get(name("CONSISTENCY")), name("CONSISTENCY")),
        lazy_connect=flags["LAZY_CONNECT"],
        retry_connect=flags["RETRY_CONNECT"],
        port=port,
        username=username,
        password=password,
        protocol_version=protocol,
        ssl_context=_ssl_context(config.get(name("SSL")), name("SSL")),
        setup_kwargs=dict(setup_kwargs),
        max_per_page=max_per_page,
        cursor_secret=secret.encode() if isinstance(secret, str) else secret,
        prepare_statements=flags["PREPARE_STATEMENTS"],
        record_queries=flags["RECORD_QUERIES"],
        migrations_dir=migrations_dir,
        migrations_table=migrations_table,
        migrations_lock_ttl=lock_ttl,
        migrations_lock_wait=lock_wait,
        schema_agreement_wait=agreement_wait,
        tracing=flags["TRACING"],
        json_provider=flags["JSON_PROVIDER"],
        local_dc=local_dc,
        used_hosts_per_remote_dc=remote,
        cloud=cloud,
    )


#: Keys a bind never takes from the app: where its cluster is and what it is
#: called (another cluster has other contact points and datacenter names),
#: and its migrations directory (see migrations.targets).
_NOT_INHERITED = frozenset(
    f"CASSANDRA_{key}"
    for key in ("HOSTS", "KEYSPACE", "BINDS", "MIGRATIONS_DIR", "CLOUD", "LOCAL_DC", "USED_HOSTS_PER_REMOTE_DC")
)
#: ... nor, when either of them is an Astra database (``CASSANDRA_CLOUD``),
#: how to reach and log in to it: a bundle brings its own port, TLS and
#: protocol, and Astra's token is no password for another cluster.
_NOT_INHERITED_ACROSS_CLOUD = frozenset(
    f"CASSANDRA_{key}" for key in ("PORT", "SSL", "USERNAME", "PASSWORD", "PROTOCOL_VERSION")
)


def read_binds(config: Mapping[str, Any]) -> dict[str, Settings]:
    """``CASSANDRA_BINDS``: bind name -> settings of another cluster.

    Each bind is a dict of the same ``CASSANDRA_*`` keys; keys it leaves out
    (other than hosts and keyspace) are taken from the app's own config.
    """
    binds = config.get("CASSANDRA_BINDS") or {}
    if not isinstance(binds, Mapping):
        raise ConfigError("CASSANDRA_BINDS", f"expected a dict of bind name -> config dict, got {type(binds).__name__}")
    inherited = {k: v for k, v in config.items() if k.startswith("CASSANDRA_") and k not in _NOT_INHERITED}
    result = {}
    for bind, bind_config in binds.items():
        label = f"CASSANDRA_BINDS[{bind!r}]"
        if not isinstance(bind, str) or not IDENTIFIER.match(bind):
            raise ConfigError(label, "a bind name must be a plain identifier")
        if not isinstance(bind_config, Mapping):
            raise ConfigError(label, f"expected a dict of CASSANDRA_* keys, got {type(bind_config).__name__}")
        own = inherited
        if config.get("CASSANDRA_CLOUD") is not None or bind_config.get("CASSANDRA_CLOUD") is not None:
            own = {k: v for k, v in inherited.items() if k not in _NOT_INHERITED_ACROSS_CLOUD}
        try:
            result[bind] = read_settings({**own, **bind_config})
        except ConfigError as exc:
            raise ConfigError(f"{label}.{exc.key}", str(exc).split(": ", 1)[1]) from None
    return result
