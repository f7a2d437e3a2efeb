"""A process that connects, then forks: run by tests/test_fork.py in its own
interpreter (forking inside pytest would fork pytest too).

    python -m tests.support.fork_check HOSTS PORT KEYSPACE CHILDREN

The parent initialises a CQLAlchemy app (connecting at once), uses it, then
forks CHILDREN children. Each child uses the extension (a blocking read and
write, an awaited read), reports what it got and the sockets it holds, and
exits normally, so atexit handlers (the driver's cluster shutdown) run in the
child. The parent then uses its own connection again. One JSON object on
stdout describes it all.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import sys
import time
import traceback
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from flask import Flask

from flask_cqlalchemy import CQLAlchemy

from .procnet import sockets_to_port

HOSTS, PORT, KEYSPACE, CHILDREN = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
REQUEST_TIMEOUT = 3.0  # a child stuck on an unusable connection fails in 3 s, not 10
CHILD_LIMIT = 30  # seconds a child may take to report, and then to exit

app = Flask("fork_check")
app.config.update(
    CASSANDRA_HOSTS=HOSTS,
    CASSANDRA_PORT=PORT,
    CASSANDRA_KEYSPACE=KEYSPACE,
    CASSANDRA_SETUP_KWARGS={
        "execution_profiles": {
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()), request_timeout=REQUEST_TIMEOUT
            )
        }
    },
)
db = CQLAlchemy(app)


class ForkRow(db.Model):
    key = db.columns.Text(primary_key=True)
    pid = db.columns.Integer()


def driver_ports() -> list[int]:
    """Local ports of the sockets the driver objects of this process use."""
    connections = [db.cluster.control_connection._connection]
    connections += [getattr(pool, "_connection", None) for pool in list(db.session._pools.values())]
    ports = []
    for connection in connections:
        sock = getattr(connection, "_socket", None)
        if sock is not None and not connection.is_closed:
            try:
                ports.append(sock.getsockname()[1])
            except OSError:
                pass
    return sorted(ports)


def held_sockets() -> dict[str, int]:
    """inode -> local port of every connection to Cassandra in this process's fd table."""
    return {str(inode): s.local_port for inode, s in sockets_to_port(os.getpid(), PORT).items()}


def use_extension(key: str) -> dict[str, Any]:
    """A blocking read and write and an awaited read; what they returned."""
    report: dict[str, Any] = {}
    started = time.monotonic()
    try:
        with app.app_context():
            report["read_parent_row"] = ForkRow.get(key="parent").pid
            ForkRow.create(key=key, pid=os.getpid())
            report["awaited_read_own_row"] = asyncio.run(ForkRow.aget(key=key)).pid
            report["driver_ports"] = driver_ports()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-2000:]
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def child(write_fd: int) -> None:
    # A child stuck on what it inherited (a lock held by a thread that does
    # not exist in the child, a connection nobody reads) ends with its stack
    # on stderr instead of hanging the test.
    faulthandler.dump_traceback_later(CHILD_LIMIT, exit=True)
    report = {"pid": os.getpid(), **use_extension(f"child-{os.getpid()}"), "sockets": held_sockets()}
    os.write(write_fd, (json.dumps(report) + "\n").encode())
    os.close(write_fd)


def main() -> None:
    with app.app_context():
        db.sync_db()
        ForkRow.create(key="parent", pid=os.getpid())
    before = {"pid": os.getpid(), **use_extension("parent-before"), "sockets": held_sockets()}

    read_fd, write_fd = os.pipe()
    pids = []
    for _ in range(CHILDREN):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                child(write_fd)
            finally:
                # A normal exit: atexit handlers run, as in a worker that ends.
                faulthandler.dump_traceback_later(CHILD_LIMIT, exit=True)
                sys.exit(0)
        pids.append(pid)
    os.close(write_fd)
    with os.fdopen(read_fd) as reports:
        children = [json.loads(line) for line in reports]
    exit_codes = {pid: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids}

    # The children have exited (and shut down whatever they held): the
    # parent's own connection must still work.
    after = {"pid": os.getpid(), **use_extension("parent-after"), "sockets": held_sockets()}
    print(json.dumps({"parent_before": before, "children": children, "exit_codes": exit_codes, "parent_after": after}))
    db.shutdown()


if __name__ == "__main__":
    main()
