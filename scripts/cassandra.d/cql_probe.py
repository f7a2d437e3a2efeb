"""Readiness probe used by scripts/cassandra.

Usage: cql_probe.py HOST PORT [--ssl] [--peers N] [USER PASSWORD]

Runs the query testcontainers waits on, against HOST only, and prints the
node's release_version. --ssl speaks TLS without checking the node's
certificate: the probe only asks whether the node is up, not who it is.
--peers N also requires the node to know N peers and their schema version
(gossip has settled: a node that does not know a peer yet leaves it out of
the schema agreement clients wait for after DDL).
Exit status 0 when the node answers CQL, 1 otherwise (the reason goes to
stderr so the launcher can show it on timeout).
"""
import logging
import ssl
import sys

# The driver logs connection failures as warnings; while a node boots those
# are expected and would drown the launcher's output.
logging.disable(logging.CRITICAL)

from cassandra.auth import PlainTextAuthProvider  # noqa: E402
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile  # noqa: E402
from cassandra.policies import WhiteListRoundRobinPolicy  # noqa: E402


def main(argv):
    args = argv[1:]
    use_ssl = "--ssl" in args
    if use_ssl:
        args.remove("--ssl")
    peers_wanted = 0
    if "--peers" in args:
        at = args.index("--peers")
        peers_wanted = int(args[at + 1])
        del args[at : at + 2]
    host, port = args[0], int(args[1])
    auth = PlainTextAuthProvider(args[2], args[3]) if len(args) > 3 else None
    ssl_context = None
    if use_ssl:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ssl_context.check_hostname = False
        ssl_context.verify_mode = ssl.CERT_NONE
    # Whitelisting the host makes the probe answer for this node, not for
    # whichever peer of a multi-node cluster happens to be up.
    profile = ExecutionProfile(
        load_balancing_policy=WhiteListRoundRobinPolicy([host]),
        request_timeout=10,
    )
    cluster = Cluster(
        contact_points=[host],
        port=port,
        protocol_version=5,  # Cassandra 5.0 speaks v3-v5; skip the v6 downgrade dance.
        auth_provider=auth,
        ssl_context=ssl_context,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=5,
        control_connection_timeout=5,
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
        if peers_wanted:
            known = [p for p, version in session.execute("SELECT peer, schema_version FROM system.peers") if version]
            if len(known) < peers_wanted:
                print(f"knows {len(known)} of its {peers_wanted} peers yet: {sorted(map(str, known))}", file=sys.stderr)
                return 1
        print(row[0])
        return 0
    except Exception as exc:  # any failure just means "not ready yet"
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
