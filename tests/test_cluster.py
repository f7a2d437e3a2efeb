"""A three-node cluster loses a node in the middle of QUORUM writes.

``scripts/cassandra start --cluster`` runs three nodes on 127.0.0.1, .2 and
.3 (CQL port 9043, storage port 7001, beside the suite's node). With a
keyspace at replication factor 3 and writes at QUORUM, one node is killed
(SIGKILL) after half of 10,000 writes were acknowledged, while writes keep
going: every write must be acknowledged (two replicas always remain, so
QUORUM can serve all of them) and every acknowledged write must read back
at QUORUM afterwards, with the node still dead.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, Unavailable
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.policies import ConstantReconnectionPolicy, WhiteListRoundRobinPolicy
from flask import Flask

from flask_cqlalchemy import CQLAlchemy

from .support.launcher import local_cluster

pytestmark = pytest.mark.slow

KEYSPACE = "cluster_quorum"
WRITES = 10_000
KILL_AFTER = WRITES // 2  # acknowledged writes before the kill starts
HOLD_AT = 6_000  # writes from here on wait until the node is dead
IN_FLIGHT = 64
READ_ATTEMPTS = 3

db = CQLAlchemy()


class AckedWrite(db.Model):
    seq = db.columns.Integer(primary_key=True)
    payload = db.columns.Text(required=True)


def payload(seq: int) -> str:
    return f"write {seq} " + "x" * (seq % 97)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster("cluster", nodes=3) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def app(cluster):
    app = Flask(__name__)
    app.config.update(
        CASSANDRA_HOSTS=cluster.hosts,
        CASSANDRA_PORT=cluster.port,
        CASSANDRA_KEYSPACE=KEYSPACE,
        CASSANDRA_CONSISTENCY="QUORUM",
        # Three nodes and the suite's node share two cores: give schema
        # queries on the control connection more than the default 2 s.
        CASSANDRA_SETUP_KWARGS={
            "connect_timeout": 10,
            "control_connection_timeout": 10,
            "max_schema_agreement_wait": 30,
            # A node the driver saw down (e.g. the last one, while joining) is retried every second.
            "reconnection_policy": ConstantReconnectionPolicy(1.0, max_attempts=None),
        },
    )
    db.init_app(app)
    schemas = NodeSchemas(cluster)
    try:
        with app.app_context():
            db.create_keyspace_simple(KEYSPACE, replication_factor=3)
            SCHEMA_LAG["keyspace"] = schemas.wait_for()
            db.sync_db()
            SCHEMA_LAG["table"] = schemas.wait_for(AckedWrite.column_family_name(include_keyspace=False))
            schemas.close()
            yield app
    finally:
        schemas.close()
        db.shutdown()


#: "keyspace"/"table" -> nodes that lacked it right after the schema helper returned.
SCHEMA_LAG: dict[str, list[str]] = {}


class NodeSchemas:
    """One session per node, each asking only its own node about its schema.

    The driver's schema agreement (which the schema helpers wait for) only
    counts the peers the asked node knows. On a cluster whose gossip had not
    settled, a node did not know all its peers yet, the agreement passed with
    a peer still lacking a keyspace or table just created, and the next
    statement failed with "Keyspace ... doesn't exist" / "table ... does not
    exist". `scripts/cassandra start --cluster` now waits for every node to
    know its peers; this checks that it did, and that the helpers return
    only once every node has the schema.
    """

    def __init__(self, cluster) -> None:
        self.sessions, self._clusters = {}, []
        for host in cluster.hosts:
            only_this_node = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]))
            probe = Cluster(
                [host], port=cluster.port, protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: only_this_node}
            )
            self._clusters.append(probe)
            self.sessions[host] = probe.connect()

    @staticmethod
    def _query(keyspace: str, table: str | None) -> tuple[str, tuple[str, ...]]:
        if table is None:
            return "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
        return (
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
            (keyspace, table),
        )

    def lacking(self, table: str | None = None, keyspace: str = KEYSPACE) -> list[str]:
        """The nodes whose schema does not list the keyspace (and ``table``) now."""
        query, params = self._query(keyspace, table)
        return [host for host, session in self.sessions.items() if not session.execute(query, params).one()]

    def wait_for(self, table: str | None = None, timeout: float = 30) -> list[str]:
        """Wait until every node lists the keyspace (and ``table``); return the nodes that did not at once."""
        query, params = self._query(KEYSPACE, table)
        lacking = self.lacking(table)
        deadline = time.monotonic() + timeout
        for host in lacking:
            while not self.sessions[host].execute(query, params).one():
                assert time.monotonic() < deadline, f"node {host} still lacks {table or KEYSPACE}"
                time.sleep(0.1)
        return lacking

    def close(self) -> None:
        for probe in self._clusters:
            probe.shutdown()


def test_schema_helpers_return_once_every_node_has_the_schema(cluster, app):
    """After ``create_keyspace_simple`` or ``sync_db`` returns, every node must
    know the keyspace and tables: the app's next statement may go to any of
    them. (Runs before the node-loss test, with all three nodes up.)"""
    schemas = NodeSchemas(cluster)  # connected beforehand: it looks right after each call
    table = AckedWrite.column_family_name(include_keyspace=False)
    found = []
    try:
        for attempt in range(3):
            keyspace = f"cluster_schema_{attempt}"
            db.create_keyspace_simple(keyspace, replication_factor=3)
            after_keyspace = schemas.lacking(keyspace=keyspace)
            db.set_keyspace(keyspace)
            try:
                db.sync_db()
                after_table = schemas.lacking(table, keyspace=keyspace)
            finally:
                db.set_keyspace()
            found.append((keyspace, after_keyspace, after_table))
    finally:
        schemas.close()
    lagging = [f for f in found if f[1] or f[2]]
    assert not lagging, (
        "nodes without the schema right after the helper returned (keyspace, nodes lacking it after "
        f"create_keyspace_simple, nodes lacking the table after sync_db): {lagging}"
    )


def test_quorum_writes_survive_a_node_killed_midway(cluster, app, record_figure):
    assert db.cluster.profile_manager.default.consistency_level == ConsistencyLevel.QUORUM
    deadline = time.monotonic() + 30
    while (up := sorted(h.address for h in db.cluster.metadata.all_hosts() if h.is_up)) != cluster.hosts:
        assert time.monotonic() < deadline, f"the driver does not see all three nodes up: {up}"
        time.sleep(0.2)
    # Kill the node the driver's control connection uses: the harder case,
    # as the driver must also find another node to learn the topology from.
    victim = db.cluster.control_connection._connection.endpoint.address
    victim_index = cluster.node_index(victim)

    acked: set[int] = set()
    failed: dict[int, str] = {}
    sent_after_kill_started = 0
    timeline: dict[str, float] = {}

    async def write_all() -> None:
        nonlocal sent_after_kill_started
        slots = asyncio.Semaphore(IN_FLIGHT)
        kill_started = asyncio.Event()
        node_dead = asyncio.Event()

        async def kill() -> None:
            kill_started.set()
            timeline["kill_started"] = time.monotonic()
            await asyncio.to_thread(cluster.stop, victim_index, True)
            timeline["node_dead"] = time.monotonic()
            node_dead.set()

        kill_task: asyncio.Task[None] | None = None

        async def write(seq: int) -> None:
            nonlocal kill_task, sent_after_kill_started
            if seq >= HOLD_AT:
                await node_dead.wait()
            async with slots:
                if kill_started.is_set():
                    sent_after_kill_started += 1
                try:
                    await AckedWrite.acreate(seq=seq, payload=payload(seq))
                except Exception as exc:  # noqa: BLE001 - every failure is a finding
                    failed[seq] = f"{type(exc).__name__}: {exc}"
                    return
                acked.add(seq)
                if len(acked) + len(failed) >= KILL_AFTER and kill_task is None:
                    kill_task = asyncio.create_task(kill())

        timeline["start"] = time.monotonic()
        await asyncio.gather(*(write(seq) for seq in range(WRITES)))
        timeline["end"] = time.monotonic()
        assert kill_task is not None
        await kill_task

    asyncio.run(write_all())

    # Read every write back, one partition at a time, at QUORUM with the
    # node still dead. A read that times out proves nothing either way (the
    # coordinators may not have convicted the dead node yet): it is retried.
    found: dict[int, str] = {}
    read_retries: Counter[str] = Counter()
    unreadable: dict[int, str] = {}

    async def read_all() -> None:
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def read(seq: int) -> None:
            async with slots:
                for attempt in range(READ_ATTEMPTS):
                    try:
                        row = await AckedWrite.objects.consistency(ConsistencyLevel.QUORUM).aget(seq=seq)
                    except AckedWrite.DoesNotExist:
                        return
                    except (OperationTimedOut, ReadTimeout, Unavailable, NoHostAvailable) as exc:
                        read_retries[type(exc).__name__] += 1
                        if attempt == READ_ATTEMPTS - 1:
                            unreadable[seq] = f"{type(exc).__name__}: {exc}"
                        continue
                    found[seq] = row.payload
                    return

        await asyncio.gather(*(read(seq) for seq in range(WRITES)))

    started = time.monotonic()
    asyncio.run(read_all())
    read_seconds = time.monotonic() - started
    lost = sorted(seq for seq in acked if seq not in unreadable and found.get(seq) != payload(seq))

    failure_kinds = Counter(message.split(":")[0] for message in failed.values())
    record_figure(
        f"cluster (3 nodes, RF 3, QUORUM): {WRITES} writes, node {victim} (control connection) SIGKILLed after "
        f"{KILL_AFTER} acks; {sent_after_kill_started} writes sent after the kill began; "
        f"acknowledged {len(acked)}, failed {len(failed)} {dict(failure_kinds)}, lost {len(lost)} "
        f"(read back one by one at QUORUM in {read_seconds:.1f} s with the node still down, "
        f"retries {dict(read_retries)}); writes took {timeline['end'] - timeline['start']:.1f} s, "
        f"kill took {timeline['node_dead'] - timeline['kill_started']:.1f} s; nodes still lacking the keyspace / "
        f"table after create_keyspace_simple / sync_db returned: {SCHEMA_LAG['keyspace']} / {SCHEMA_LAG['table']}"
    )
    assert sent_after_kill_started >= WRITES - HOLD_AT
    assert not lost, f"{len(lost)} acknowledged writes were lost, e.g. {lost[:10]}"
    assert not unreadable, f"{len(unreadable)} writes could not be read back: {list(unreadable.items())[:5]}"
    assert not failed, f"{len(failed)} writes failed although QUORUM could serve them: {list(failed.items())[:5]}"
    assert len(acked) == WRITES
