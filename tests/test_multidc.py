"""Two datacenters: the coordinator is always local, and LOCAL_QUORUM
survives the loss of the remote datacenter.

``scripts/cassandra start --dcs`` runs three nodes with
GossipingPropertyFileSnitch: dc1 is 127.0.0.1 and .2, dc2 is 127.0.0.3 (CQL
port 9045). The keyspace is made with ``flask cql create-keyspace --dc
dc1=2 --dc dc2=1``, so LOCAL_QUORUM in dc1 needs both dc1 nodes and nothing
of dc2.

* With ``CASSANDRA_LOCAL_DC`` every request's coordinator (the driver's
  ``ResponseFuture.coordinator_host``) is a node of that datacenter: dc1's
  two nodes for dc1, only 127.0.0.3 for dc2.
* Without it, a warning at start names both datacenters; an unknown one is
  a ``ConfigError`` naming them.
* With dc2 stopped, thousands of LOCAL_QUORUM writes and reads through the
  async facade (and views) all succeed and every write reads back.
* With a dc1 node stopped as well, LOCAL_QUORUM is impossible: the facade
  raises ``Unavailable``, a view answers 503 JSON, and both work again once
  the node is back.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from cassandra import ConsistencyLevel, Unavailable
from cassandra.cluster import EXEC_PROFILE_DEFAULT, ExecutionProfile, NoHostAvailable
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy
from flask import Flask

from flask_cqlalchemy import ConfigError, CQLAlchemy, topology

from .support.launcher import local_cluster, run

pytestmark = pytest.mark.slow

KEYSPACE = "multidc"
DC1 = {"127.0.0.1", "127.0.0.2"}
DC2 = {"127.0.0.3"}
WRITES = 2_000
IN_FLIGHT = 32
RECOVERY_LIMIT = 120.0  # seconds for LOCAL_QUORUM to work again after the node is back

db = CQLAlchemy()


class Reading(db.Model):
    sensor = db.columns.Integer(primary_key=True)
    value = db.columns.Text(required=True)


def value_of(sensor: int) -> str:
    return f"reading {sensor} " + "v" * (sensor % 41)


@pytest.fixture(scope="module")
def dcs():
    with local_cluster("dcs", nodes=3) as nodes:
        yield nodes


def make_app(dcs, name: str, **config) -> Flask:
    app = Flask(name)
    app.config.update(
        CASSANDRA_HOSTS=sorted(dcs.hosts),
        CASSANDRA_PORT=dcs.port,
        CASSANDRA_KEYSPACE=KEYSPACE,
        CASSANDRA_SETUP_KWARGS={
            "connect_timeout": 10,
            "control_connection_timeout": 10,
            "max_schema_agreement_wait": 30,
            # A node that comes back is reconnected to within a second.
            "reconnection_policy": ConstantReconnectionPolicy(1.0, max_attempts=None),
        },
        **config,
    )
    return app


def add_views(app: Flask) -> None:
    @app.put("/readings/<int:sensor>")
    async def put_reading(sensor: int):
        await Reading.acreate(sensor=sensor, value=value_of(sensor))
        return {"sensor": sensor}

    @app.get("/readings/<int:sensor>")
    async def get_reading(sensor: int):
        reading = await Reading.aget_or_404(sensor=sensor)
        return {"sensor": reading.sensor, "value": reading.value}

    @app.get("/sync/readings/<int:sensor>")
    def get_reading_sync(sensor: int):
        reading = Reading.get(sensor=sensor)
        return {"sensor": reading.sensor, "value": reading.value}


class Coordinators:
    """Every request the app's session starts, for its coordinator once answered."""

    def __init__(self, session) -> None:
        self.futures: list = []
        self.session = session
        session.add_request_init_listener(self.futures.append)

    def close(self) -> None:
        self.session.remove_request_init_listener(self.futures.append)

    def hosts(self) -> set[str]:
        answered = [f for f in self.futures if f.coordinator_host is not None]
        assert len(answered) == len(self.futures), "every request was answered"
        return {f.coordinator_host.address for f in answered}


@pytest.fixture(scope="module")
def app(dcs):
    """dc1's app: LOCAL_DC dc1 at LOCAL_QUORUM, its keyspace made by the CLI."""
    app = make_app(dcs, "multidc_dc1", CASSANDRA_LOCAL_DC="dc1", CASSANDRA_CONSISTENCY="LOCAL_QUORUM")
    db.init_app(app)
    add_views(app)
    try:
        yield app
    finally:
        db.shutdown(app)


def test_create_keyspace_across_two_datacenters(app):
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["cql", "create-keyspace", KEYSPACE, "--dc", "dc1=2", "--dc", "dc3=1"])
    assert refused.exit_code == 2, refused.output
    assert "datacenter(s) dc3 (its datacenters: dc1, dc2)" in refused.output

    result = runner.invoke(args=["cql", "create-keyspace", KEYSPACE, "--dc", "dc1=2", "--dc", "dc2=1"])
    assert result.exit_code == 0, result.output
    assert f"created keyspace {KEYSPACE} (NetworkTopologyStrategy, dc1=2, dc2=1)" in result.output
    with app.app_context():
        db.cluster.refresh_keyspace_metadata(KEYSPACE)
        strategy = db.cluster.metadata.keyspaces[KEYSPACE].replication_strategy
        assert dict(strategy.dc_replication_factors) == {"dc1": 2, "dc2": 1}
        db.sync_db()
        # Replica placement as the driver computes it: two copies in dc1, one in dc2.
        replicas = db.cluster.metadata.get_replicas(KEYSPACE, b"\x00\x00\x00\x07")
        assert sorted(h.datacenter for h in replicas) == ["dc1", "dc1", "dc2"]

    # More copies than nodes: said, and whether LOCAL_QUORUM can still work.
    wide = runner.invoke(args=["cql", "create-keyspace", "multidc_wide", "--dc", "dc1=3", "--dc", "dc2=2"])
    try:
        assert wide.exit_code == 0, wide.output
        assert "warning: dc1=3 but dc1 has 2 node(s), so it keeps 2 copies\n" in wide.stderr
        assert (
            "warning: dc2=2 but dc2 has 1 node(s), so it keeps 1 copies; "
            "LOCAL_QUORUM in dc2 needs 2 and fails until it has 2 nodes"
        ) in wide.stderr
    finally:
        with app.app_context():
            db.drop_keyspace("multidc_wide")


def test_a_multi_dc_cluster_without_local_dc_warns_naming_them(dcs, caplog):
    app = make_app(dcs, "multidc_unset")
    other = CQLAlchemy()
    with caplog.at_level(logging.WARNING, logger="flask_cqlalchemy"):
        other.init_app(app)
    try:
        warnings = [r.getMessage() for r in caplog.records if "CASSANDRA_LOCAL_DC is not set" in r.getMessage()]
        assert len(warnings) == 1, caplog.text
        assert "datacenters dc1, dc2" in warnings[0]
        # The driver shuffles the contact points: with all three given, either
        # datacenter can become "local" (runs here saw dc2 chosen).
        chosen = topology.driver_local_dc(other.cluster)
        assert chosen in ("dc1", "dc2") and f"the driver chose {chosen!r}" in warnings[0]
    finally:
        other.shutdown()

    # One datacenter named: no warning.
    caplog.clear()
    named = CQLAlchemy()
    with caplog.at_level(logging.WARNING, logger="flask_cqlalchemy"):
        named.init_app(make_app(dcs, "multidc_named", CASSANDRA_LOCAL_DC="dc2"))
    named.shutdown()
    assert "CASSANDRA_LOCAL_DC" not in caplog.text

    # The app's own policy, with its own local_dc: no warning either.
    caplog.clear()
    own = CQLAlchemy()
    policy = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc="dc1"))
    own_app = make_app(dcs, "multidc_own_policy")
    own_app.config["CASSANDRA_SETUP_KWARGS"] = {
        **own_app.config["CASSANDRA_SETUP_KWARGS"],
        "execution_profiles": {EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=policy)},
    }
    with caplog.at_level(logging.WARNING, logger="flask_cqlalchemy"):
        own.init_app(own_app)
    own.shutdown()
    assert "CASSANDRA_LOCAL_DC" not in caplog.text


@pytest.mark.parametrize("remote", [0, 1], ids=["local-only", "with-remote-hosts"])
def test_an_unknown_local_dc_is_a_config_error_naming_the_cluster_dcs(dcs, remote):
    config = {"CASSANDRA_LOCAL_DC": "dc9"}
    if remote:
        # The driver then connects through the "remote" nodes and never says
        # the local datacenter does not exist.
        config["CASSANDRA_USED_HOSTS_PER_REMOTE_DC"] = remote
    app = make_app(dcs, f"multidc_unknown_{remote}", **config)
    with pytest.raises(ConfigError) as info:
        CQLAlchemy(app)
    assert info.value.key == "CASSANDRA_LOCAL_DC"
    assert "'dc9' is not a datacenter of this cluster; its nodes are in dc1, dc2" in str(info.value)


def test_a_binds_unknown_local_dc_names_the_binds_key(dcs):
    from cassandra.cqlengine import connection as cqlengine_connection

    registered = set(cqlengine_connection._connections)
    app = make_app(dcs, "multidc_bind", CASSANDRA_LOCAL_DC="dc1")
    app.config["CASSANDRA_BINDS"] = {
        "west": {"CASSANDRA_HOSTS": dcs.hosts, "CASSANDRA_KEYSPACE": KEYSPACE, "CASSANDRA_LOCAL_DC": "dc9"}
    }
    with pytest.raises(ConfigError) as info:
        CQLAlchemy(app)
    assert info.value.key == "CASSANDRA_BINDS['west'].CASSANDRA_LOCAL_DC"
    assert set(cqlengine_connection._connections) == registered  # the app's own connection is gone too


async def write_and_read(sensors: range) -> tuple[int, list[str]]:
    """LOCAL_QUORUM writes then reads of ``sensors`` through the facade,
    ``IN_FLIGHT`` at a time; returns (operations, errors)."""
    errors: list[str] = []
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(sensor: int) -> None:
        async with gate:
            try:
                await Reading.acreate(sensor=sensor, value=value_of(sensor))
            except Exception as exc:  # counted, not raised: the figure is the count
                errors.append(f"write {sensor}: {exc!r}")
                return
            try:
                read = await Reading.objects.filter(sensor=sensor).afirst()
                if read is None or read.value != value_of(sensor):
                    errors.append(f"read {sensor}: {read!r}")
            except Exception as exc:
                errors.append(f"read {sensor}: {exc!r}")

    await asyncio.gather(*(one(s) for s in sensors))
    return 2 * len(sensors), errors


def test_every_coordinator_is_in_the_local_dc(app, dcs):
    client = app.test_client()
    with app.app_context():
        watch = Coordinators(db.session)
    try:
        for sensor in range(60):
            assert client.put(f"/readings/{sensor}").status_code == 200
            assert client.get(f"/readings/{sensor}").json["value"] == value_of(sensor)
            assert client.get(f"/sync/readings/{sensor}").json["value"] == value_of(sensor)
        with app.app_context():
            operations, errors = asyncio.run(write_and_read(range(1000, 1200)))
        assert errors == []
    finally:
        watch.close()
    assert len(watch.futures) >= 3 * 60 + operations
    hosts = watch.hosts()
    assert hosts == DC1, f"coordinators {hosts}"  # token-aware across both dc1 nodes, never dc2

    # The same from dc2's side: only its one node coordinates.
    dc2_app = make_app(dcs, "multidc_dc2", CASSANDRA_LOCAL_DC="dc2", CASSANDRA_CONSISTENCY="LOCAL_ONE")
    dc2_db = CQLAlchemy(dc2_app)
    try:
        with dc2_app.app_context():
            watch = Coordinators(dc2_db.session)
            for sensor in range(50):
                dc2_db.execute(f"SELECT value FROM {KEYSPACE}.reading WHERE sensor = %s", (sensor,))
            asyncio.run(dc2_db.aio.execute(f"SELECT value FROM {KEYSPACE}.reading WHERE sensor = %s", (1,)))
            watch.close()
        assert len(watch.futures) == 51 and watch.hosts() == DC2
    finally:
        dc2_db.shutdown()


def test_local_quorum_keeps_working_with_the_remote_dc_down(app, dcs, record_figure):
    dcs.stop(node=3)
    with app.app_context():
        watch = Coordinators(db.session)
        started = time.monotonic()
        operations, errors = asyncio.run(write_and_read(range(10_000, 10_000 + WRITES)))
        elapsed = time.monotonic() - started
        watch.close()
        # Nothing lost: every write reads back, in a full scan at LOCAL_QUORUM (paged).
        stored = {r.sensor: r.value for r in Reading.objects.all()}
    lost = [s for s in range(10_000, 10_000 + WRITES) if stored.get(s) != value_of(s)]
    assert errors == [], errors[:5]
    assert lost == [], lost[:10]
    assert watch.hosts() <= DC1
    # A view too.
    client = app.test_client()
    assert client.put("/readings/7").status_code == 200
    assert client.get("/readings/7").json["value"] == value_of(7)
    record_figure(
        f"multi-DC: dc2 stopped: {operations} LOCAL_QUORUM operations ({WRITES} writes + {WRITES} reads) "
        f"through the facade in {elapsed:.1f} s: {len(errors)} errors, {len(lost)} lost"
    )


def test_a_dc1_node_down_is_unavailable_then_recovers(app, dcs, record_figure):
    dcs.stop(node=2)
    client = app.test_client()
    try:
        with app.app_context():
            # Once the driver knows node 2 is gone (else a request may go to
            # it first and fail with a connection error of its own).
            node2 = next(h for h in db.cluster.metadata.all_hosts() if h.address == "127.0.0.2")
            deadline = time.monotonic() + 30
            while node2.is_up and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not node2.is_up
            # The coordinator answers Unavailable; the driver's default retry
            # policy tries the next host once, finds none left in dc1, and
            # raises NoHostAvailable holding each host's Unavailable.
            with pytest.raises(NoHostAvailable) as info:
                asyncio.run(Reading.acreate(sensor=1, value=value_of(1)))
            (cause,) = info.value.errors.values()
            assert isinstance(cause, Unavailable), info.value
            assert cause.consistency == ConsistencyLevel.LOCAL_QUORUM
            assert (cause.required_replicas, cause.alive_replicas) == (2, 1)
            with pytest.raises(NoHostAvailable) as info:
                Reading.objects.filter(sensor=7).first()
            assert all(isinstance(e, Unavailable) for e in info.value.errors.values())
        response = client.put("/readings/1")
        assert response.status_code == 503
        assert response.json == {"error": "database unavailable", "message": "Unavailable"}
        assert client.get("/readings/1").status_code == 503  # reads need the same two replicas
    finally:
        run("start", "dcs", "--nodes", "2", env=dcs.env)  # node 1 is reused; dc2 stays down
    back = time.monotonic()
    statuses = []
    while time.monotonic() - back < RECOVERY_LIMIT:
        response = client.put("/readings/1")
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        time.sleep(0.5)
    assert statuses[-1] == 200, f"still {statuses[-5:]} {RECOVERY_LIMIT} s after node 2 answered CQL again"
    assert client.get("/readings/1").json["value"] == value_of(1)
    record_figure(
        f"multi-DC: dc1 node down: LOCAL_QUORUM answered 503 (Unavailable, 1 of 2 replicas); "
        f"200 again {time.monotonic() - back:.1f} s after the node answered CQL"
    )
