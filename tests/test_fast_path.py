"""The prepared-statement fast path gives exactly what unprepared statements give."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import Session
from cassandra.cqlengine.query import BatchQuery, LWTException
from cassandra.query import BoundStatement, SimpleStatement

from flask_cqlalchemy import CQLAlchemy, execution

from .conftest import KEYSPACE, make_app

app = make_app(__name__)
db = CQLAlchemy(app)
plain_app = make_app("unprepared", CASSANDRA_PREPARE_STATEMENTS=False)
plain_db = CQLAlchemy(plain_app)


def declare(ext: CQLAlchemy, table: str) -> type:
    class Account(ext.Model):
        __table_name__ = table
        owner = ext.columns.Text(partition_key=True)
        account_id = ext.columns.Integer(primary_key=True)
        balance = ext.columns.Integer()
        tags = ext.columns.Set(ext.columns.Text)
        note = ext.columns.Text()

    return Account


Prepared = declare(db, "fast_account")
Unprepared = declare(plain_db, "slow_account")


@pytest.fixture()
def both(clean_db):
    plain_db.sync_db()
    plain_db.truncate()
    return Prepared, Unprepared


def warm_up(model: type) -> None:
    """Run the statements once so their background prepare finishes."""
    scenario(model, "warm-up")
    deadline = time.time() + 10
    cache = execution.route_of(model.__cqlalchemy__.session).prepared
    while cache is not None and len(cache) < 6 and time.time() < deadline:
        time.sleep(0.05)


def scenario(model: type, owner: str) -> list:
    """A mix of point reads, inserts, updates, deletes, LWT, TTL, timestamps, batches and pages."""
    seen = []
    for i in range(6):
        model.create(owner=owner, account_id=i, balance=i * 10, tags={f"t{i}"}, note=None if i % 2 else "n")
    seen.append(sorted((a.account_id, a.balance, a.tags, a.note) for a in model.objects(owner=owner)))
    account = model.get(owner=owner, account_id=1)
    account.update(balance=15, tags={"x", "y"})
    model.objects(owner=owner, account_id=2).update(tags__add={"z"})
    model.objects(owner=owner, account_id=3).ttl(300).update(note="ttl")
    model.timestamp(timedelta(seconds=-5)).create(owner=owner, account_id=7, balance=7)
    with pytest.raises(LWTException) as info:
        model.if_not_exists().create(owner=owner, account_id=0, balance=999)
    seen.append(info.value.existing["balance"])
    with pytest.raises(LWTException):
        model.objects(owner=owner, account_id=1).iff(balance=0).update(balance=1)
    model.objects(owner=owner, account_id=1).iff(balance=15).update(balance=16)
    with BatchQuery() as batch:
        model.batch(batch).create(owner=owner, account_id=8, balance=8)
        model.objects(owner=owner, account_id=4).batch(batch).delete()
    model.get(owner=owner, account_id=5).delete()
    seen.append(sorted((a.account_id, a.balance, a.tags, a.note) for a in model.objects(owner=owner)))
    seen.append([a.account_id for a in model.objects(owner=owner).filter(account_id__in=[0, 3, 8])])
    seen.append(model.objects(owner=owner).count())
    seen.append([[a.account_id for a in page] for page in _pages(model, owner)])
    seen.append(model.objects(owner=owner).consistency(ConsistencyLevel.ONE).limit(2).count())
    return seen


def _pages(model: type, owner: str) -> list:
    pages, cursor = [], None
    while True:
        page = model.objects(owner=owner).paginate(per_page=2, cursor=cursor)
        pages.append(page.items)
        if not page.has_next:
            return pages
        cursor = page.next_cursor


def test_same_results_prepared_and_unprepared(both):
    warm_up(Prepared)
    assert scenario(Prepared, "ann") == scenario(Unprepared, "ann")


def test_async_same_results_prepared_and_unprepared(both):
    warm_up(Prepared)

    async def run(model: type) -> list:
        await asyncio.gather(*(model.acreate(owner="bob", account_id=i, balance=i) for i in range(20)))
        got = [a.balance for a in await asyncio.gather(*(model.aget(owner="bob", account_id=i) for i in range(20)))]
        await model.objects(owner="bob", account_id=3).aupdate(balance=33)
        await (await model.aget(owner="bob", account_id=4)).adelete()
        rows = [(a.account_id, a.balance) async for a in model.objects(owner="bob").fetch_size(3)]
        return [got, rows, await model.objects(owner="bob").acount()]

    assert asyncio.run(run(Prepared)) == asyncio.run(run(Unprepared))


@pytest.fixture()
def sent_statements(monkeypatch):
    """Every statement handed to ``Session.execute_async`` during the test."""
    sent = []
    original = Session.execute_async

    def spy(self, query, *args, **kwargs):
        sent.append(query)
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(Session, "execute_async", spy)
    return sent


def test_hot_statements_really_go_prepared_with_the_same_routing(both, sent_statements):
    warm_up(Prepared)
    sent = sent_statements
    Prepared.create(owner="carl", account_id=1, balance=1)
    fetched = Prepared.get(owner="carl", account_id=1)
    assert fetched.balance == 1
    bound = [q for q in sent if isinstance(q, BoundStatement)]
    assert len(bound) >= 2, sent
    with execution.capture() as captured:
        Prepared.objects(owner="carl", account_id=1)._execute(
            Prepared.objects(owner="carl", account_id=1)._select_query()
        )
    simple = captured[0].query
    assert isinstance(simple, SimpleStatement)
    assert bound[-1].routing_key == simple.routing_key
    assert bound[-1].consistency_level == simple.consistency_level


def test_unprepared_app_sends_simple_statements_only(both, sent_statements):
    sent = sent_statements
    for _ in range(3):
        Unprepared.create(owner="dan", account_id=1, balance=1)
        Unprepared.get(owner="dan", account_id=1)
    assert sent and not any(isinstance(q, BoundStatement) for q in sent)


def test_wrong_value_type_still_fails_like_unprepared(both):
    warm_up(Prepared)
    for model in (Prepared, Unprepared):
        with pytest.raises(Exception) as info:
            model.objects(owner="eve", account_id="not a number").count()
        assert type(info.value).__name__ in {"ValidationError", "InvalidRequest", "TypeError"}


def test_prepared_statements_use_the_current_keyspace(both):
    other = "flask_cqlalchemy_fast_other"
    db.create_keyspace_simple(other, 1)
    try:
        db.set_keyspace(other)
        db.sync_table(Prepared)
        warm_up(Prepared)
        Prepared.create(owner="kim", account_id=1, balance=5)
        db.set_keyspace()
        assert Prepared.objects(owner="kim").count() == 0
        rows = list(db.execute(f"SELECT balance FROM {other}.fast_account WHERE owner='kim'"))
        assert rows == [{"balance": 5}]
        assert KEYSPACE != other
    finally:
        db.set_keyspace()
        db.drop_keyspace(other)


def test_queryset_clone_matches_cqlengines_deepcopy(both):
    import copy

    from cassandra.cqlengine.query import ModelQuerySet

    qs = (
        Prepared.objects.filter(owner="ann")
        .filter(account_id__in=[1, 2])
        .order_by("-account_id")
        .only(["balance"])
        .limit(5)
        .fetch_size(3)
        .consistency(ConsistencyLevel.ONE)
        .timeout(2)
        .allow_filtering()
    )
    ours = copy.deepcopy(qs)
    theirs = ModelQuerySet.__deepcopy__(qs, {})
    assert set(ours.__dict__) == set(theirs.__dict__)
    for key in theirs.__dict__:
        assert ours.__dict__[key] == theirs.__dict__[key], key
    assert ours._where is not qs._where and ours._where[0] is not qs._where[0]
    assert str(ours._select_query()) == str(theirs._select_query())
    assert [a.account_id for a in ours] == [a.account_id for a in theirs]


def test_rows_read_are_persisted_like_cqlengine_marks_them(both):
    """Our _set_persisted shortcut: a row read back is unchanged and saves nothing."""
    Prepared.create(owner="zed", account_id=1, balance=5, tags={"a"}, note="n")
    account = Prepared.get(owner="zed", account_id=1)
    assert account.get_changed_columns() == []
    assert account._is_persisted
    account.tags.add("b")  # a mutable value: its previous copy must be independent
    account.balance = 6
    assert sorted(account.get_changed_columns()) == ["balance", "tags"]
    account.save()
    again = Prepared.get(owner="zed", account_id=1)
    assert (again.balance, again.tags) == (6, {"a", "b"})
