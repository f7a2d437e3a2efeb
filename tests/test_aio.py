"""The async facade against the real node: same results as the sync API.

Every scenario runs inside an async view, once of a Flask app and once of a
Quart app served by the same extension (``run`` is parametrised).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cassandra import InvalidRequest
from cassandra.cqlengine import ValidationError
from cassandra.cqlengine.query import LWTException
from werkzeug.exceptions import NotFound

from flask_cqlalchemy import CQLAlchemy
from flask_cqlalchemy.aio import AsyncCQLAlchemy

from .conftest import KEYSPACE, make_app
from .support.frameworks import FRAMEWORKS, InView, make_framework_app

app = make_app(__name__)
quart_app = make_framework_app("quart", __name__ + "_quart")
adb = AsyncCQLAlchemy(quart_app)
adb.init_app(app)  # last: outside any app context, the extension uses this one
db = adb.sync
in_views = {"flask": InView(app), "quart": InView(quart_app)}


class AioUser(adb.Model):
    uid = adb.columns.UUID(primary_key=True, default=uuid.uuid4)
    username = adb.columns.Text(required=False)
    email = adb.columns.Text(max_length=50)
    tags = adb.columns.Set(adb.columns.Text)


class AioEvent(adb.Model):
    stream = adb.columns.Text(partition_key=True)
    seq = adb.columns.Integer(primary_key=True)
    payload = adb.columns.Text()


@pytest.fixture(params=FRAMEWORKS)
def run(request):
    """Await a scenario in an async view of the Flask app, then of the Quart app."""
    return in_views[request.param]


def test_facade_shapes():
    assert isinstance(adb.sync, CQLAlchemy)
    assert adb.Model is db.Model and adb.UserType is db.UserType and adb.columns is db.columns
    assert db.aio.sync is db
    other = CQLAlchemy()
    assert other.aio.sync is other and other.aio is other.aio


def test_await_sync_db_and_keyspace_helpers(module_db, run):
    async def scenario():
        await adb.create_keyspace_simple("flask_cqlalchemy_aio_ks", 1)
        names = [row["keyspace_name"] for row in await adb.execute("SELECT keyspace_name FROM system_schema.keyspaces")]
        assert "flask_cqlalchemy_aio_ks" in names
        await adb.drop_keyspace("flask_cqlalchemy_aio_ks")
        names = [row["keyspace_name"] for row in await adb.execute("SELECT keyspace_name FROM system_schema.keyspaces")]
        assert "flask_cqlalchemy_aio_ks" not in names
        await adb.sync_db()

    run(scenario())


def test_create_get_update_delete_match_sync(clean_db, run):
    async def scenario():
        created = await AioUser.acreate(username="ann", email="ann@example.com", tags={"a"})
        fetched = await AioUser.aget(uid=created.uid)
        assert (fetched.username, fetched.email, fetched.tags) == ("ann", "ann@example.com", {"a"})
        assert AioUser.get(uid=created.uid) == fetched
        await fetched.aupdate(username="anna", tags={"a", "b"})
        assert AioUser.get(uid=created.uid).tags == {"a", "b"}
        fetched.email = None
        await fetched.asave()
        assert AioUser.get(uid=created.uid).email is None
        await fetched.adelete()
        with pytest.raises(AioUser.DoesNotExist):
            await AioUser.aget(uid=created.uid)

    run(scenario())


def test_validation_errors_raise_before_anything_is_sent(clean_db, run):
    async def scenario():
        with pytest.raises(ValidationError, match="email"):
            await AioUser.acreate(username="x", email="e" * 51)
        with pytest.raises(ValidationError):
            await AioUser.acreate(uid="not-a-uuid")
        assert await AioUser.objects.acount() == 0

    run(scenario())


def test_queryset_methods(clean_db, run):
    async def scenario():
        for seq in range(5):
            await AioEvent.acreate(stream="s", seq=seq, payload=f"p{seq}")
        events = AioEvent.objects(stream="s")
        assert [e.seq for e in await events.aall()] == [0, 1, 2, 3, 4]
        assert (await events.afirst()).seq == 0
        assert await AioEvent.objects(stream="none").afirst() is None
        assert await events.acount() == 5
        assert (await events.limit(2).aall())[-1].seq == 1
        assert (await events.aget(seq=3)).payload == "p3"
        with pytest.raises(AioEvent.MultipleObjectsReturned):
            await events.aget()
        await events.filter(seq=2).aupdate(payload="changed")
        assert AioEvent.get(stream="s", seq=2).payload == "changed"
        await events.filter(seq=4).adelete()
        assert AioEvent.objects(stream="s").count() == 4
        assert [e.seq async for e in events.fetch_size(2)] == [0, 1, 2, 3]
        assert [e.seq for e in await events.order_by("-seq").aall()] == [3, 2, 1, 0]

    run(scenario())


def test_query_options_pass_through(clean_db, run):
    async def scenario():
        from cassandra import ConsistencyLevel

        qs = AioEvent.objects(stream="opt")
        await qs.consistency(ConsistencyLevel.ONE).timeout(5).allow_filtering().aall()
        await AioEvent.objects(stream="opt", seq=3).ttl(100).aupdate(payload="with ttl")
        rows = await adb.execute(f"SELECT TTL(payload) AS t FROM {KEYSPACE}.aio_event WHERE stream='opt' AND seq=3")
        assert 0 < rows[0]["t"] <= 100
        rows = await qs.using(keyspace=KEYSPACE).aall()
        assert any(e.seq == 3 for e in rows)

    run(scenario())


def test_lwt_if_not_exists_and_iff(clean_db, run):
    async def scenario():
        user = await AioUser.acreate(username="first")
        with pytest.raises(LWTException) as info:
            await AioUser.if_not_exists().acreate(uid=user.uid, username="second")
        assert info.value.existing["username"] == "first"
        assert (await AioUser.aget(uid=user.uid)).username == "first"
        with pytest.raises(LWTException):
            await AioUser.objects(uid=user.uid).iff(username="nobody").aupdate(username="third")
        await AioUser.objects(uid=user.uid).iff(username="first").aupdate(username="third")
        assert (await AioUser.aget(uid=user.uid)).username == "third"
        with pytest.raises(LWTException):
            await AioUser.objects(uid=uuid.uuid4()).if_exists().aupdate(username="ghost")

    run(scenario())


def test_failed_lwt_save_leaves_instance_unsaved(clean_db, run):
    async def scenario():
        user = await AioUser.acreate(username="orig")
        stale = AioUser.get(uid=user.uid)
        stale.username = "edit"
        with pytest.raises(LWTException):
            await stale.iff(username="other").asave()
        assert stale.get_changed_columns() == ["username"]
        assert (await AioUser.aget(uid=user.uid)).username == "orig"

    run(scenario())


def test_batch_sends_on_exit_and_nothing_when_it_raises(clean_db, run):
    async def scenario():
        async with adb.batch() as b:
            for seq in range(3):
                AioEvent.batch(b).create(stream="batch", seq=seq, payload="b")
            assert AioEvent.objects(stream="batch").count() == 0
        assert await AioEvent.objects(stream="batch").acount() == 3
        with pytest.raises(RuntimeError):
            async with adb.batch() as b:
                AioEvent.batch(b).create(stream="batch-failed", seq=1, payload="b")
                raise RuntimeError("boom")
        assert await AioEvent.objects(stream="batch-failed").acount() == 0
        called = []
        async with adb.batch() as b:
            b.add_callback(called.append, "done")
            AioEvent.batch(b).create(stream="cb", seq=1, payload="b")
        assert called == ["done"]

    run(scenario())


def test_get_or_404_variants(clean_db, run):
    async def with_requests():
        user = await AioUser.acreate(username="x")
        assert (await AioUser.aget_or_404(uid=user.uid)).uid == user.uid
        with pytest.raises(NotFound):
            await AioUser.aget_or_404(uid=uuid.uuid4())
        with pytest.raises(NotFound):
            await AioUser.objects(uid=uuid.uuid4()).aget_or_404()
        with pytest.raises(NotFound):
            await AioUser.objects(uid=uuid.uuid4()).afirst_or_404()
        assert (await AioUser.objects(uid=user.uid).afirst_or_404()).uid == user.uid

    run(with_requests())


def test_driver_errors_keep_their_type_and_name_the_query(module_db, run):
    async def scenario():
        with pytest.raises(InvalidRequest) as info:
            await adb.execute("SELECT * FROM flask_cqlalchemy_tests.no_such_table")
        assert "no_such_table" in str(info.value) and "[query:" in str(info.value)

    run(scenario())


def test_thousand_concurrent_agets_return_the_right_rows(clean_db, run):
    users = [AioUser.create(username=f"user{i}") for i in range(1000)]

    async def scenario():
        found = await asyncio.gather(*(AioUser.aget(uid=u.uid) for u in users))
        assert [f.username for f in found] == [u.username for u in users]

    run(scenario())


def test_create_options_ttl_and_timestamp(clean_db, run):
    async def scenario():
        await AioEvent.ttl(60).acreate(stream="ttl", seq=1, payload="short-lived")
        rows = await adb.execute(
            f"SELECT TTL(payload) AS t, WRITETIME(payload) AS w FROM {KEYSPACE}.aio_event WHERE stream='ttl' AND seq=1"
        )
        assert 0 < rows[0]["t"] <= 60
        from datetime import datetime, timedelta

        await AioEvent.timestamp(timedelta(seconds=-3600)).acreate(stream="ts", seq=1, payload="old")
        rows = await adb.execute(
            f"SELECT WRITETIME(payload) AS w FROM {KEYSPACE}.aio_event WHERE stream='ts' AND seq=1"
        )
        assert rows[0]["w"] < (datetime.now() - timedelta(minutes=50)).timestamp() * 1e6

    run(scenario())


def test_timeouts_and_unavailable_keep_driver_types(module_db, run):
    from cassandra import OperationTimedOut, Unavailable
    from cassandra.cluster import NoHostAvailable

    async def scenario():
        await adb.execute(
            "CREATE KEYSPACE IF NOT EXISTS flask_cqlalchemy_rf3 "
            "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
        )
        await adb.execute("CREATE TABLE IF NOT EXISTS flask_cqlalchemy_rf3.t (k int PRIMARY KEY, v int)")
        try:
            # One node cannot give QUORUM of three replicas: the node answers
            # Unavailable, which the driver's default retry policy turns into
            # NoHostAvailable after trying the next host - sync and async alike.
            insert = "INSERT INTO flask_cqlalchemy_rf3.t (k, v) VALUES (1, 1)"
            with pytest.raises(NoHostAvailable) as sync_error:
                db.execute(insert, consistency="QUORUM")
            with pytest.raises(NoHostAvailable) as unavailable:
                await adb.execute(insert, consistency="QUORUM")
            assert "flask_cqlalchemy_rf3.t" in str(unavailable.value)
            assert [type(e) for e in unavailable.value.errors.values()] == [Unavailable]
            assert [type(e) for e in sync_error.value.errors.values()] == [Unavailable]
            assert await adb.execute("SELECT * FROM flask_cqlalchemy_rf3.t") == []
        finally:
            await adb.drop_keyspace("flask_cqlalchemy_rf3")
        with pytest.raises(OperationTimedOut) as timed_out:
            await adb.execute(f"SELECT * FROM {KEYSPACE}.aio_event", timeout=0.000001)
        assert "aio_event" in str(timed_out.value)

    run(scenario())
