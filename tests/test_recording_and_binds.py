"""Query recording (CASSANDRA_RECORD_QUERIES) and several clusters per app (CASSANDRA_BINDS)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from cassandra import InvalidRequest
from cassandra.cluster import Cluster
from flask import jsonify

from flask_cqlalchemy import ConfigError, CQLAlchemy, get_recorded_queries
from flask_cqlalchemy.execution import route_of

from .conftest import HOSTS, KEYSPACE, make_app

ANALYTICS = "flask_cqlalchemy_analytics"

app = make_app(
    __name__,
    CASSANDRA_RECORD_QUERIES=True,
    CASSANDRA_BINDS={"analytics": {"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": ANALYTICS}},
)
db = CQLAlchemy(app)


class Visit(db.Model):
    page = db.columns.Text(partition_key=True)
    visitor = db.columns.Integer(primary_key=True)


class PageStat(db.Model):
    __bind__ = "analytics"
    page = db.columns.Text(primary_key=True)
    views = db.columns.Integer()


@app.get("/visit/<page>/<int:visitor>")
async def visit(page: str, visitor: int):
    await Visit.acreate(page=page, visitor=visitor)
    count = await Visit.objects(page=page).acount()
    return jsonify(count=count, queries=[(q.mode, q.cql.split()[0], q.location) for q in get_recorded_queries()])


@pytest.fixture(scope="module", autouse=True)
def analytics_keyspace():
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect()
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {ANALYTICS} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    yield
    session.execute(f"DROP KEYSPACE IF EXISTS {ANALYTICS}")
    cluster.shutdown()


def test_sync_queries_are_recorded_with_where_they_came_from(clean_db):
    with app.app_context():
        Visit.create(page="home", visitor=1)
        assert Visit.objects(page="home").count() == 1
        records = get_recorded_queries()
    inserts = [r for r in records if r.cql.startswith("INSERT")]
    selects = [r for r in records if r.cql.startswith("SELECT")]
    assert inserts and selects
    assert inserts[0].mode == "sync" and inserts[0].duration > 0
    assert "home" in inserts[0].params.values()
    assert __file__ in inserts[0].location and "test_sync_queries_are_recorded" in inserts[0].location
    assert all(r.error is None for r in records)


def test_async_queries_are_recorded_per_request(clean_db):
    client = app.test_client()
    first = client.get("/visit/about/1").json
    second = client.get("/visit/about/2").json
    assert first["count"] == 1 and second["count"] == 2
    assert [(mode, verb) for mode, verb, _ in second["queries"]] == [("async", "INSERT"), ("async", "SELECT")]
    assert all(__file__ in location for _, _, location in second["queries"])


def test_failed_queries_are_recorded_with_their_error(clean_db):
    with app.app_context():
        with pytest.raises(InvalidRequest):
            db.execute(f"SELECT * FROM {KEYSPACE}.no_such_table")
        assert "no_such_table" in (get_recorded_queries()[-1].error or "")


def test_recording_is_off_by_default():
    plain_app = make_app("no_recording")
    plain = CQLAlchemy(plain_app)
    try:
        with plain_app.app_context():
            plain.execute("SELECT release_version FROM system.local")
            assert get_recorded_queries() == []
        assert route_of(plain.session).record is False
    finally:
        plain.shutdown()


def test_bound_model_goes_to_its_own_cluster_and_keyspace(clean_db):
    db.sync_db()
    assert PageStat._get_keyspace() == ANALYTICS
    assert PageStat._get_connection() != Visit._get_connection()
    assert PageStat._get_connection() == db.state().binds["analytics"].connection_name
    PageStat.create(page="home", views=3)
    assert asyncio.run(PageStat.aget(page="home")).views == 3
    rows = list(db.execute(f"SELECT views FROM {ANALYTICS}.page_stat WHERE page = 'home'"))
    assert rows == [{"views": 3}]
    assert "page_stat" not in db.cluster.metadata.keyspaces[KEYSPACE].tables


def test_unknown_bind_and_bad_bind_config_name_the_problem():
    class Orphan(db.Model):
        __bind__ = "nowhere"
        key = db.columns.Text(primary_key=True)

    try:
        with pytest.raises(ConfigError, match="'nowhere'"):
            Orphan.objects.count()
    finally:
        Orphan.__abstract__ = True  # keep it out of this module's sync_db
    with pytest.raises(ConfigError, match=r"CASSANDRA_BINDS\['analytics'\].CASSANDRA_KEYSPACE"):
        CQLAlchemy(make_app("bad_bind", CASSANDRA_BINDS={"analytics": {"CASSANDRA_HOSTS": HOSTS}}))
    with pytest.raises(ConfigError, match="CASSANDRA_BINDS"):
        CQLAlchemy(make_app("bad_binds", CASSANDRA_BINDS=["analytics"]))


def test_debug_log_tells_connect_keyspace_and_sync(caplog):
    with caplog.at_level(logging.DEBUG, logger="flask_cqlalchemy"):
        other = CQLAlchemy(make_app("logged"))
        other.set_keyspace(KEYSPACE)
        other.shutdown()
    text = caplog.text
    assert "connecting" in text and "connected" in text and "keyspace" in text
