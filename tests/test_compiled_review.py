"""The compiled plans (``Model.get``/``aget``, ``Model.create``/``acreate``)
against cqlengine's own behaviour: the cases tests/test_compiled.py leaves out.

The first group holds divergences a review found (and that were fixed): each
test says what cqlengine does, which the plans must do too. The others cover
cases that behave as cqlengine does.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import threading
import time
import uuid
from typing import Any

import pytest
from cassandra.cqlengine import CQLEngineException
from cassandra.cqlengine.query import BatchQuery, ContextQuery, LWTException
from cassandra.util import Duration

from flask_cqlalchemy import CQLAlchemy, compiled, execution
from flask_cqlalchemy.query import QuerySet

from . import test_compiled
from .conftest import KEYSPACE, make_app
from .test_compiled import (
    OTHER_KEYSPACE,
    route_of,
    run,
    state_of,
    teach_create,
    teach_read,
    wait_for_plan,
)

# cqlengine compares a tuple column's type with the table's as text, and
# Cassandra reports tuples as frozen<...>: every sync after the first warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*differing from the model type:UserWarning")

#: The fixture of tests/test_compiled.py: what the driver was sent, whether cqlengine built it.
spy = test_compiled.spy

app = make_app(__name__)
db = CQLAlchemy(app)


class CrTiny(db.Model):
    key = db.columns.Text(primary_key=True)
    value = db.columns.Text()


class CrValidated(db.Model):
    """A model-level ``validate`` with a side effect (counting, hashing, stamping...)."""

    key = db.columns.Text(primary_key=True)
    value = db.columns.Text()
    calls: list[str] = []

    def validate(self):
        type(self).calls.append(self.key)
        super().validate()


class CountingQuerySet(QuerySet):
    """A custom ``__queryset__``, as users write for model-wide rules."""

    gets: list[dict[str, Any]] = []
    creates: list[dict[str, Any]] = []

    def get(self, *args, **kwargs):
        type(self).gets.append(dict(kwargs))
        return super().get(*args, **kwargs)

    def create(self, **kwargs):
        type(self).creates.append(dict(kwargs))
        return super().create(**kwargs)


class CrCustomQs(db.Model):
    __queryset__ = CountingQuerySet
    key = db.columns.Text(primary_key=True)
    value = db.columns.Text()


class CrAbstract(db.Model):
    __abstract__ = True
    key = db.columns.Text(primary_key=True)
    value = db.columns.Text()


class CrAuditLog(db.Model):
    key = db.columns.Text(partition_key=True)
    seq = db.columns.TimeUUID(primary_key=True, default=uuid.uuid1)
    note = db.columns.Text()


class CrAudited(db.Model):
    """A ``save`` that also writes an audit row with ``Model.create``."""

    key = db.columns.Text(primary_key=True)
    value = db.columns.Text()

    def save(self):
        CrAuditLog.create(key=self.key, note="saved")
        return super().save()


class CrAddress(db.UserType):
    street = db.columns.Text()
    zipcode = db.columns.Integer()


class CrTyped(db.Model):
    """One column of (nearly) every type cqlengine maps."""

    key = db.columns.Text(partition_key=True)
    day = db.columns.Date(primary_key=True)
    flag = db.columns.Boolean(primary_key=True)
    at = db.columns.Time()
    span = db.columns.Duration()
    amount = db.columns.Decimal()
    ratio = db.columns.Double()
    big = db.columns.BigInt()
    small = db.columns.SmallInt()
    tiny = db.columns.TinyInt()
    huge = db.columns.VarInt()
    ip = db.columns.Inet()
    raw = db.columns.Blob()
    moment = db.columns.DateTime()
    tid = db.columns.TimeUUID()
    numbers = db.columns.List(db.columns.Integer)
    scores = db.columns.Map(db.columns.Text, db.columns.Integer)
    pair = db.columns.Tuple(db.columns.Text, db.columns.Integer)
    address = db.columns.UserDefinedType(CrAddress)


class CrCounter(db.Model):
    key = db.columns.Text(primary_key=True)
    hits = db.columns.Counter()


def typed_values(key: str = "t") -> dict[str, Any]:
    return {
        "key": key,
        "day": datetime.date(2024, 2, 29),
        "flag": True,
        "at": datetime.time(13, 14, 15, 16),
        "span": Duration(1, 2, 3),
        "amount": decimal.Decimal("12.345"),
        "ratio": 0.25,
        "big": 2**40,
        "small": 300,
        "tiny": 7,
        "huge": 10**30,
        "ip": "10.0.0.1",
        "raw": b"\x00\x01",
        "moment": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000),
        "tid": uuid.uuid1(),
        "numbers": [3, 1, 2],
        "scores": {"a": 1},
        "pair": ("x", 1),
        "address": CrAddress(street="Main", zipcode=12345),
    }


class BlockingSends:
    """Every statement sent with the driver's blocking call (``execution._send_blocking``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        original = execution._send_blocking

        def record(route, query, *args, **kwargs):
            self.texts.append(getattr(query, "query_string", str(query)))
            return original(route, query, *args, **kwargs)

        monkeypatch.setattr(execution, "_send_blocking", record)


# -- divergences found in review, fixed -----------------------------------------


def test_create_runs_validate_once(clean_db):
    """cqlengine's ``Model.create`` validates the new instance once (in ``save``),
    and so must a create that does not take a plan (the first create of a
    shape, a column set to None): a ``validate`` override with a side effect
    (a hash, a counter, a stamp) runs once."""
    route_of(CrValidated).plans.clear()  # whatever ran before: no plan of this shape yet
    CrValidated.calls.clear()
    CrValidated.objects.create(key="ref", value="v")
    assert CrValidated.calls == ["ref"]  # cqlengine: once
    CrValidated.calls.clear()
    CrValidated.create(key="first", value="v")  # first create of its shape: no plan yet
    CrValidated.create(key="none", value=None)  # a column set to None: never a plan
    assert CrValidated.calls == ["first", "none"]


def test_async_create_runs_validate_once(clean_db):
    CrValidated.calls.clear()
    run(CrValidated.acreate(key="none", value=None))  # a column set to None: never a plan
    assert CrValidated.calls == ["none"]


def test_model_create_goes_through_the_queryset_create(clean_db):
    """cqlengine's ``Model.create`` is ``cls.objects.create(**values)``: a custom
    ``__queryset__`` overriding ``create`` sees every create, ``acreate``'s too."""
    CountingQuerySet.creates.clear()
    CrCustomQs.create(key="a", value="1")
    run(CrCustomQs.acreate(key="b", value="2"))
    assert CountingQuerySet.creates == [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]


def test_model_get_goes_through_the_queryset_get(clean_db):
    """cqlengine's ``Model.get`` is ``cls.objects.get(...)``: a custom queryset's
    ``get`` runs on every call, so a model with its own queryset never takes a plan."""
    CrCustomQs.objects.create(key="a", value="1")
    CountingQuerySet.gets.clear()
    for _ in range(3):
        assert CrCustomQs.get(key="a").value == "1"
        assert run(CrCustomQs.aget(key="a")).value == "1"
    assert route_of(CrCustomQs).prepared.settle(10)  # any background prepare has finished
    assert CrCustomQs.get(key="a").value == "1"
    assert CountingQuerySet.gets.count({"key": "a"}) == 4  # every sync call (aget has its own twin)
    assert not [key for key in route_of(CrCustomQs).plans if CrCustomQs in key]


def test_create_of_an_abstract_model_is_refused(clean_db):
    """cqlengine refuses any query on an abstract model (its ``objects``
    descriptor raises CQLEngineException before anything is sent): no INSERT
    into a table named after the abstract class."""
    for create in (CrAbstract.create, lambda **v: run(CrAbstract.acreate(**v))):
        with pytest.raises(CQLEngineException, match="abstract"):
            create(key="a", value="1")


def test_create_inside_a_captured_save_is_awaited(clean_db, monkeypatch):
    """``asave``/``acreate`` build cqlengine's statements under ``capture`` and
    await them; a ``Model.create`` made by a ``save`` override (an audit row)
    is captured and awaited with them, never sent with the blocking call on
    the event loop."""
    teach_create(CrAuditLog, key="warm", note="x")
    blocking = BlockingSends(monkeypatch)
    run(CrAudited(key="a", value="1").asave())
    run(CrAudited.acreate(key="b", value="2"))
    assert blocking.texts == []
    assert {row.key for row in CrAuditLog.objects.all()} == {"warm", "a", "b"}


def test_does_not_exist_is_the_same_on_every_call(clean_db):
    """The same ``Model.get`` gives the same error whether or not a plan is used:
    cqlengine's ``DoesNotExist`` class, with a message naming the model and filters."""
    route_of(CrTiny).plans.clear()
    CrTiny.objects.create(key="here", value="v")
    errors = []
    for _ in range(2):  # the call that teaches the plan, then one through it
        with pytest.raises(CrTiny.DoesNotExist) as info:
            CrTiny.get(key="nope")
        errors.append(info.value.args)
        teach_read(CrTiny, key="here")
    assert errors[0] == errors[1] == ("CrTiny not found (key='nope')",)


# -- coverage: behaves as cqlengine ----------------------------------------------


def test_class_level_options_never_take_a_plan_and_keep_their_options(clean_db, spy):
    teach_create(CrTiny, key="warm", value="x")
    spy.reset()
    CrTiny.ttl(600).create(key="ttl", value="v")
    CrTiny.timestamp(datetime.timedelta(seconds=-3600)).create(key="ts", value="v")
    CrTiny.consistency(1).create(key="cl", value="v")
    assert spy.saves == 3
    ttl = db.execute(f"SELECT TTL(value) AS t FROM {KEYSPACE}.cr_tiny WHERE key='ttl'").one()["t"]
    assert 0 < ttl <= 600
    written = db.execute(f"SELECT WRITETIME(value) AS w FROM {KEYSPACE}.cr_tiny WHERE key='ts'").one()["w"]
    assert written < (time.time() - 3000) * 1_000_000
    # LWT: refused on an existing row, by create and acreate of the queryset
    with pytest.raises(LWTException):
        CrTiny.if_not_exists().create(key="warm", value="other")
    with pytest.raises(LWTException):
        run(CrTiny.if_not_exists().acreate(key="warm", value="other"))
    assert CrTiny.get(key="warm").value == "x"
    # a batch holds the insert until it runs
    batch = BatchQuery()
    CrTiny.batch(batch).create(key="batched", value="v")
    with pytest.raises(CrTiny.DoesNotExist):
        CrTiny.objects.get(key="batched")
    batch.execute()
    assert CrTiny.get(key="batched").value == "v"


def test_instance_options_after_plan_create_and_plan_read(clean_db, spy):
    teach_create(CrTiny, key="warm", value="x")
    teach_read(CrTiny, key="warm")
    spy.reset()
    created = CrTiny.create(key="a", value="1")
    spy.assert_plan_insert()
    spy.reset()
    read = CrTiny.get(key="a")
    spy.assert_plan_read()
    assert read == created and repr(read) == repr(created) and read._is_persisted and created._is_persisted
    assert read.get_changed_columns() == created.get_changed_columns() == []
    read.ttl(600).update(value="2")
    assert db.execute(f"SELECT TTL(value) AS t FROM {KEYSPACE}.cr_tiny WHERE key='a'").one()["t"] > 0
    created.value = "3"
    assert created.get_changed_columns() == ["value"]
    created.save()
    assert CrTiny.objects.get(key="a").value == "3"
    with pytest.raises(LWTException):
        created.iff(value="not this").update(value="4")
    read.delete()
    with pytest.raises(CrTiny.DoesNotExist):
        CrTiny.get(key="a")


def test_every_column_type_through_plans_equals_cqlengine(clean_db, spy):
    teach_create(CrTyped, **typed_values("warm"))
    teach_read(CrTyped, key="warm", day=datetime.date(2024, 2, 29), flag=True)
    values = typed_values("t")
    spy.reset()
    created = CrTyped.create(**values)
    spy.assert_plan_insert()
    reference = CrTyped(**values)
    reference.save()  # cqlengine's save of the same values: the same instance state
    assert state_of(created) == state_of(reference)
    spy.reset()
    got = CrTyped.get(key="t", day=datetime.date(2024, 2, 29), flag=True)
    spy.assert_plan_read()
    expected = CrTyped.objects.filter(key="t", day=datetime.date(2024, 2, 29), flag=True).get()
    assert state_of(got) == state_of(expected)
    assert got == expected
    assert state_of(run(CrTyped.aget(key="t", day=datetime.date(2024, 2, 29), flag=True))) == state_of(expected)


def test_counter_model_reads_through_a_plan_and_never_creates_through_one(clean_db, spy):
    CrCounter.objects(key="c").update(hits=2)
    teach_read(CrCounter, key="c")
    spy.reset()
    got = CrCounter.get(key="c")
    spy.assert_plan_read()
    assert got.hits == 2
    got.hits += 3
    got.update()
    assert CrCounter.get(key="c").hits == 5
    assert not compiled._insertable(CrCounter)


def test_context_query_keyspace_clone_reads_and_writes_its_keyspace(clean_db, spy):
    db.create_keyspace_simple(OTHER_KEYSPACE, 1)
    try:
        db.execute(f"CREATE TABLE IF NOT EXISTS {OTHER_KEYSPACE}.cr_tiny (key text PRIMARY KEY, value text)")
        teach_create(CrTiny, key="k", value="main")
        teach_read(CrTiny, key="k")
        for _ in range(2):
            with ContextQuery(CrTiny, keyspace=OTHER_KEYSPACE) as other_tiny:
                other_tiny.create(key="k", value="other")
                assert other_tiny.get(key="k").value == "other"
                assert run(other_tiny.aget(key="k")).value == "other"
        assert CrTiny.get(key="k").value == "main"
        rows = list(db.execute(f"SELECT key, value FROM {OTHER_KEYSPACE}.cr_tiny"))
        assert [(r["key"], r["value"]) for r in rows] == [("k", "other")]
    finally:
        db.drop_keyspace(OTHER_KEYSPACE)


def test_plans_from_many_threads_at_once(clean_db):
    teach_create(CrTiny, key="warm", value="x")
    teach_read(CrTiny, key="warm")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(40):
                key = f"{worker}-{i}"
                CrTiny.create(key=key, value=key)
                assert CrTiny.get(key=key).value == key
                if i % 10 == 0:  # shapes learnt concurrently, too
                    CrTiny.create(key=key + "-n", value=None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert CrTiny.objects.count() == 1 + 8 * 40 + 8 * 4


def test_deepcopy_of_a_plan_read_instance_is_independent(clean_db):
    CrTiny.objects.create(key="a", value="1")
    teach_read(CrTiny, key="a")
    read = CrTiny.get(key="a")
    clone = copy.deepcopy(read)
    clone.value = "2"
    assert read.value == "1" and read.get_changed_columns() == []
    assert clone.get_changed_columns() == ["value"]
    # (saving a deep copy fails as in cqlengine: the NOT_SET timeout sentinel is copied too)


def test_copies_keep_their_value_managers_on_the_copy(clean_db):
    """In cqlengine each value manager's ``instance`` is its instance, and so is
    it in a deep copy or an unpickled copy. Ours is a weak proxy of it, which
    must reach the copy itself (not a second, half-built instance): a custom
    value manager may read ``self.instance`` to look at another column."""
    import pickle

    CrTiny.objects.create(key="a", value="1")
    teach_read(CrTiny, key="a")
    for original in (CrTiny(key="new", value="v"), CrTiny.get(key="a")):
        for clone in (copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
            owner = clone._values["value"].instance
            assert owner._values is clone._values
            assert (owner.key, owner.value) == (original.key, original.value)


def test_plans_are_dropped_with_the_session_on_shutdown(clean_db):
    CrTiny.objects.create(key="a", value="before")
    teach_read(CrTiny, key="a")
    assert route_of(CrTiny).plans
    db.shutdown(app)
    db.init_app(app)
    CrTiny.objects(key="a").update(value="again")
    assert route_of(CrTiny).plans == {}
    assert CrTiny.get(key="a").value == "again"
    wait_for_plan(compiled.READ, CrTiny, ("key",))
    assert CrTiny.get(key="a").value == "again"
