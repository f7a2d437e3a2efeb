"""Compiled plans (``Model.get``/``aget`` and ``Model.create``/``acreate``)
give exactly what cqlengine's own path gives.

Each test first teaches a plan (the first call of a shape goes cqlengine's
way), waits until the node has prepared its statement, then compares a call
that provably went through the plan (one BoundStatement sent, cqlengine's
statement building not run) with cqlengine's queryset path on the same data.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from cassandra import InvalidRequest
from cassandra.cluster import Session
from cassandra.cqlengine import CQLEngineException, ValidationError, models
from cassandra.cqlengine.query import AbstractQuerySet, DMLQuery, QueryException
from cassandra.query import BoundStatement
from werkzeug.exceptions import NotFound

from flask_cqlalchemy import CQLAlchemy, compiled, execution, get_recorded_queries

from .conftest import KEYSPACE, make_app

OTHER_KEYSPACE = "flask_cqlalchemy_compiled_other"

app = make_app(__name__)
db = CQLAlchemy(app)


class CpUser(db.Model):
    id = db.columns.UUID(primary_key=True, default=uuid.uuid4)
    name = db.columns.Text()
    email = db.columns.Text(db_field="e_mail")
    score = db.columns.Integer(default=0)
    tags = db.columns.Set(db.columns.Text)
    prefs = db.columns.Map(db.columns.Text, db.columns.Text)


class CpEvent(db.Model):
    """Composite partition key, a clustering column stored under another name, a static column."""

    stream = db.columns.Text(partition_key=True)
    day = db.columns.Integer(partition_key=True)
    seq = db.columns.Integer(primary_key=True, db_field="event_seq")
    kind = db.columns.Text(db_field="event_kind")
    payload = db.columns.Text()
    note = db.columns.Text(static=True)


class CpRequired(db.Model):
    key = db.columns.Text(primary_key=True)
    needed = db.columns.Text(required=True)
    extra = db.columns.Text()


class CpExpiring(db.Model):
    __options__ = {"default_time_to_live": 300}
    key = db.columns.Text(primary_key=True)
    value = db.columns.Text()


class CpFollow(db.Model):
    """Every column is a key column: a create and a get name the same columns."""

    follower = db.columns.Text(partition_key=True)
    followee = db.columns.Text(primary_key=True)


class CpMember(db.Model):
    group = db.columns.Text(partition_key=True)
    member = db.columns.Text(primary_key=True)


class CpTiny(db.Model):
    key = db.columns.Text(primary_key=True)
    value = db.columns.Text()


class CpPet(db.Model):
    owner = db.columns.Text(partition_key=True)
    pet_id = db.columns.Integer(primary_key=True)
    kind = db.columns.Text(discriminator_column=True)
    name = db.columns.Text()


class CpCat(CpPet):
    __discriminator_value__ = "cat"
    lives = db.columns.Integer()


class CpAudited(db.Model):
    key = db.columns.Text(primary_key=True)
    value = db.columns.Text()
    saved: list[str] = []

    def save(self):
        type(self).saved.append(self.key)
        return super().save()


class CpInit(db.Model):
    key = db.columns.Text(primary_key=True)
    label = db.columns.Text()
    built: list[dict[str, Any]] = []

    def __init__(self, **values: Any) -> None:
        type(self).built.append(dict(values))
        values.setdefault("label", "set by __init__")
        super().__init__(**values)


# An app that never prepares, one that records queries, and one extension
# serving two apps with two keyspaces.
plain_app = make_app("compiled_unprepared", CASSANDRA_PREPARE_STATEMENTS=False)
plain_db = CQLAlchemy(plain_app)


class CpPlainUser(plain_db.Model):
    id = plain_db.columns.UUID(primary_key=True, default=uuid.uuid4)
    name = plain_db.columns.Text()


recording_app = make_app("compiled_recording", CASSANDRA_RECORD_QUERIES=True)
recording_db = CQLAlchemy(recording_app)


class CpRecorded(recording_db.Model):
    id = recording_db.columns.UUID(primary_key=True, default=uuid.uuid4)
    name = recording_db.columns.Text()


shared_db = CQLAlchemy()


class CpShared(shared_db.Model):
    key = shared_db.columns.Text(primary_key=True)
    value = shared_db.columns.Text()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# -- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def other_keyspace(module_db):
    module_db.create_keyspace_simple(OTHER_KEYSPACE, 1)
    yield OTHER_KEYSPACE
    module_db.drop_keyspace(OTHER_KEYSPACE)


@pytest.fixture(scope="module")
def extra_dbs(module_db):
    """The unprepared and the recording extensions, synced; shut down after the module."""
    for ext in (plain_db, recording_db):
        ext.sync_db()
    yield
    plain_db.shutdown()
    recording_db.shutdown()


@pytest.fixture(scope="module")
def two_apps(other_keyspace):
    """``shared_db`` serving two apps, one per keyspace, each with CpShared synced and empty."""
    first = make_app("compiled_first")
    second = make_app("compiled_second", CASSANDRA_KEYSPACE=other_keyspace)
    shared_db.init_app(first)
    shared_db.init_app(second)
    for each in (first, second):
        with each.app_context():
            shared_db.sync_db()
            shared_db.truncate()
    yield first, second
    shared_db.shutdown()


class Spy:
    """What the driver was handed, and whether cqlengine built statements, since ``reset``."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.selects = 0
        self.saves = 0

    def reset(self) -> None:
        self.sent.clear()
        self.selects = 0
        self.saves = 0

    def assert_plan_read(self) -> None:
        """The call since ``reset`` was one bound statement, built without cqlengine."""
        assert self.selects == 0, "cqlengine built the select: no plan was used"
        assert len(self.sent) == 1 and isinstance(self.sent[0], BoundStatement), self.sent

    def assert_plan_insert(self) -> None:
        assert self.saves == 0, "cqlengine's DMLQuery.save ran: no plan was used"
        assert len(self.sent) == 1 and isinstance(self.sent[0], BoundStatement), self.sent


@pytest.fixture()
def spy(monkeypatch) -> Spy:
    seen = Spy()
    execute_async = Session.execute_async
    select_query = AbstractQuerySet._select_query
    save = DMLQuery.save

    def spy_execute_async(self, query, *args, **kwargs):
        seen.sent.append(query)
        return execute_async(self, query, *args, **kwargs)

    def spy_select_query(self, *args, **kwargs):
        seen.selects += 1
        return select_query(self, *args, **kwargs)

    def spy_save(self, *args, **kwargs):
        seen.saves += 1
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Session, "execute_async", spy_execute_async)
    monkeypatch.setattr(AbstractQuerySet, "_select_query", spy_select_query)
    monkeypatch.setattr(DMLQuery, "save", spy_save)
    return seen


# -- helpers -----------------------------------------------------------------


def route_of(model: Any) -> execution.Route:
    return execution.route_of(model.__cqlalchemy__.session)


def wait_for_plan(kind: str, model: Any, names: tuple[str, ...], keyspace: str | None = None) -> compiled.Plan:
    """The plan of a shape once it is usable: learnt, and its statement prepared by the node."""
    route = route_of(model)
    key = compiled.plan_key(kind, model, keyspace or model._get_keyspace(), tuple(names))
    deadline = time.monotonic() + 10
    while True:
        plan = route.plans.get(key)
        if isinstance(plan, compiled.Plan) and route.prepared.lookup(plan.template.query_string) is not None:
            return plan
        if time.monotonic() > deadline:
            pytest.fail(f"no usable plan for {key} after 10 s (found {plan!r})")
        time.sleep(0.02)


def wait_for_prepared(model: Any, text: str) -> None:
    """Until the node has prepared the statement ``text`` (the prepared fast path is open)."""
    route = route_of(model)
    deadline = time.monotonic() + 10
    while route.prepared.lookup(text) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} not prepared after 10 s")
        time.sleep(0.02)


def teach_read(model: Any, **filters: Any) -> compiled.Plan:
    """Run ``model.get(**filters)`` once (whatever it finds) and wait for its plan."""
    try:
        model.get(**filters)
    except (model.DoesNotExist, model.MultipleObjectsReturned):
        pass
    return wait_for_plan(compiled.READ, model, tuple(filters))


def teach_create(model: Any, **values: Any) -> compiled.Plan:
    """Run ``model.create(**values)`` once and wait for the plan of the columns it inserted."""
    instance = model.create(**values)
    names = tuple(name for name, column in model._columns.items() if not column._val_is_null(getattr(instance, name)))
    return wait_for_plan(compiled.INSERT, model, names)


def state_of(instance: Any, ignore_values: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything cqlengine keeps on an instance: values (with their types), each
    value manager's previous value and flags, persistence and save options."""
    managers = {}
    for name, manager in instance._values.items():
        value, previous = manager.value, manager.previous_value
        if name in ignore_values:
            value = previous = "ignored" if value == previous else ("differ", value, previous)
        managers[name] = {
            "value": (type(value), value),
            "previous_value": (type(previous), previous),
            "explicit": manager.explicit,
            "changed": manager.changed,
            "deleted": manager.deleted,
        }
    return {
        "type": type(instance),
        "persisted": instance._is_persisted,
        "managers": managers,
        "changed_columns": sorted(instance.get_changed_columns()),
        "options": [
            getattr(instance, attribute)
            for attribute in ("_ttl", "_timestamp", "_conditional", "_batch", "_timeout", "_connection")
        ],
    }


def cqlengine_instance(model: Any, row: dict[str, Any]) -> Any:
    """An instance of a row built by cqlengine's own code: ``Model(**row)`` then its ``_set_persisted``."""
    instance = model(**{model._db_map.get(k, k): v for k, v in row.items()})
    models.BaseModel._set_persisted(instance, force=True)
    return instance


def raw_rows(table: str, keyspace: str = KEYSPACE, ext: CQLAlchemy = db) -> list[dict[str, Any]]:
    return [dict(row) for row in ext.execute(f"SELECT * FROM {keyspace}.{table}")]


def raw_row(table: str, where: str, params: list[Any]) -> dict[str, Any] | None:
    return db.execute(f"SELECT * FROM {KEYSPACE}.{table} WHERE {where}", params).one()


def error_of(call: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


async def aerror_of(awaitable: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        await awaitable
    return info.value


def same_error(ours: BaseException, reference: BaseException) -> None:
    assert type(ours) is type(reference), (ours, reference)
    if str(reference):  # cqlengine's DoesNotExist has no message: ours may name the filters
        assert str(ours) == str(reference)


# -- 1. point reads ------------------------------------------------------------


def make_user(**values: Any) -> Any:
    defaults = {"name": "ann", "email": "ann@example.com", "score": 3, "tags": {"a", "b"}, "prefs": {"k": "v"}}
    return CpUser.objects.create(**{**defaults, **values})


def test_point_read_through_a_plan_equals_cqlengines(clean_db, spy):
    user = make_user()
    teach_read(CpUser, id=user.id)
    spy.reset()
    got = CpUser.get(id=user.id)
    spy.assert_plan_read()

    spy.reset()
    reference = CpUser.objects.filter(id=user.id).get()
    assert spy.selects == 1  # the reference really is cqlengine's path
    row = raw_row("cp_user", "id = %s", [user.id])
    assert state_of(got) == state_of(reference) == state_of(cqlengine_instance(CpUser, row))
    assert (got.name, got.email, got.score, got.tags, got.prefs) == (
        "ann",
        "ann@example.com",
        3,
        {"a", "b"},
        {"k": "v"},
    )
    assert got.get_changed_columns() == []

    # Someone else changes the name; saving our one change must not write our stale name back.
    db.execute(f"UPDATE {KEYSPACE}.cp_user SET name = 'bob' WHERE id = %s", [user.id])
    got.score = 4
    assert got.get_changed_columns() == ["score"]
    got.save()
    after = raw_row("cp_user", "id = %s", [user.id])
    assert (after["name"], after["score"], after["e_mail"], after["tags"], after["prefs"]) == (
        "bob",
        4,
        "ann@example.com",
        {"a", "b"},
        {"k": "v"},
    )


def test_async_point_read_through_a_plan_equals_cqlengines(clean_db, spy):
    user = make_user(name="cid", tags=None, prefs=None)
    teach_read(CpUser, id=user.id)

    async def scenario():
        spy.reset()
        got = await CpUser.aget(id=user.id)
        spy.assert_plan_read()
        spy.reset()
        reference = await CpUser.objects.filter(id=user.id).aget()
        assert spy.selects == 1
        return got, reference

    got, reference = run(scenario())
    row = raw_row("cp_user", "id = %s", [user.id])
    assert state_of(got) == state_of(reference) == state_of(cqlengine_instance(CpUser, row))
    assert (got.name, got.tags, got.prefs) == ("cid", set(), {})
    assert got.get_changed_columns() == []

    db.execute(f"UPDATE {KEYSPACE}.cp_user SET e_mail = 'new@example.com' WHERE id = %s", [user.id])
    got.tags = {"z"}
    run(got.asave())
    after = raw_row("cp_user", "id = %s", [user.id])
    assert (after["name"], after["e_mail"], after["tags"], after["score"]) == ("cid", "new@example.com", {"z"}, 3)


# -- 2. keys, stored names, filter forms -----------------------------------------


def test_composite_key_stored_names_and_filter_order(clean_db, spy):
    for seq in (1, 2):
        CpEvent.create(stream="s", day=7, seq=seq, kind=f"k{seq}", payload=f"p{seq}", note="shared")
    # Filters in another order than the key columns, including a column stored as event_seq.
    teach_read(CpEvent, seq=2, day=7, stream="s")
    spy.reset()
    got = CpEvent.get(seq=2, day=7, stream="s")
    spy.assert_plan_read()
    reference = CpEvent.objects.get(seq=2, day=7, stream="s")
    row = raw_row("cp_event", "stream = %s AND day = %s AND event_seq = %s", ["s", 7, 2])
    assert state_of(got) == state_of(reference) == state_of(cqlengine_instance(CpEvent, row))
    assert (got.stream, got.day, got.seq, got.kind, got.payload, got.note) == ("s", 7, 2, "k2", "p2", "shared")

    async def scenario():
        spy.reset()
        found = await CpEvent.aget(seq=1, day=7, stream="s")
        spy.assert_plan_read()
        return found, await CpEvent.objects.aget(seq=1, day=7, stream="s")

    got, reference = run(scenario())
    assert state_of(got) == state_of(reference)
    assert (got.seq, got.kind) == (1, "k1")


def test_uuid_given_as_a_string(clean_db, spy):
    user = make_user()
    teach_read(CpUser, id=user.id)
    spy.reset()
    got = CpUser.get(id=str(user.id))
    spy.assert_plan_read()
    reference = CpUser.objects.get(id=str(user.id))
    assert type(got.id) is type(reference.id)
    assert got.id == reference.id
    assert state_of(got) == state_of(reference)

    async def scenario():
        spy.reset()
        found = await CpUser.aget(id=str(user.id))
        spy.assert_plan_read()
        return found, await CpUser.objects.filter(id=str(user.id)).aget()

    got, reference = run(scenario())
    assert state_of(got) == state_of(reference)


def test_pk_filter_behaves_as_cqlengine(clean_db):
    user = make_user()
    teach_read(CpUser, id=user.id)
    reference = error_of(lambda: CpUser.objects.get(pk=user.id))
    for _ in range(2):  # the learning call, then one that could have used a plan
        same_error(error_of(lambda: CpUser.get(pk=user.id)), reference)
        same_error(run(aerror_of(CpUser.aget(pk=user.id))), reference)


# -- 3. errors -------------------------------------------------------------------


def test_missing_row_is_does_not_exist_and_404(clean_db, spy):
    teach_read(CpUser, id=uuid.uuid4())
    missing = uuid.uuid4()
    reference = error_of(lambda: CpUser.objects.filter(id=missing).get())
    spy.reset()
    same_error(error_of(lambda: CpUser.get(id=missing)), reference)
    spy.assert_plan_read()
    spy.reset()
    same_error(run(aerror_of(CpUser.aget(id=missing))), reference)
    spy.assert_plan_read()
    assert isinstance(reference, CpUser.DoesNotExist)
    with app.test_request_context():
        with pytest.raises(NotFound):
            CpUser.get_or_404(id=missing)
        with pytest.raises(NotFound):
            run(CpUser.aget_or_404(id=missing))


def test_value_the_column_refuses(clean_db):
    teach_read(CpUser, id=uuid.uuid4())
    reference = error_of(lambda: CpUser.objects.filter(id="not-a-uuid").get())
    assert isinstance(reference, ValidationError)
    same_error(error_of(lambda: CpUser.get(id="not-a-uuid")), reference)
    same_error(run(aerror_of(CpUser.aget(id="not-a-uuid"))), reference)


def test_value_the_node_refuses(clean_db):
    """cqlengine's Integer accepts 2**40; the node's int (here a clustering column) does not."""
    teach_read(CpEvent, stream="s", day=1, seq=1)
    reference = error_of(lambda: CpEvent.objects.filter(stream="s", day=1, seq=2**40).get())
    assert isinstance(reference, InvalidRequest)
    same_error(error_of(lambda: CpEvent.get(stream="s", day=1, seq=2**40)), reference)
    assert type(run(aerror_of(CpEvent.aget(stream="s", day=1, seq=2**40)))) is InvalidRequest


def test_none_filter_value(clean_db):
    """cqlengine refuses None in a filter before sending anything."""
    teach_read(CpUser, id=uuid.uuid4())
    reference = error_of(lambda: CpUser.objects.filter(id=None).get())
    assert type(reference) is CQLEngineException
    same_error(error_of(lambda: CpUser.get(id=None)), reference)


def test_async_none_filter_value(clean_db):
    teach_read(CpUser, id=uuid.uuid4())
    reference = run(aerror_of(CpUser.objects.aget(id=None)))
    assert type(reference) is CQLEngineException
    same_error(run(aerror_of(CpUser.aget(id=None))), reference)


def test_filter_on_a_non_key_column(clean_db):
    user = make_user()
    # Alone: cqlengine refuses it without allow_filtering.
    reference = error_of(lambda: CpUser.objects.filter(name="ann").get())
    assert isinstance(reference, QueryException)
    for _ in range(2):
        same_error(error_of(lambda: CpUser.get(name="ann")), reference)
        same_error(run(aerror_of(CpUser.aget(name="ann"))), reference)
    # With the partition key: the node asks for ALLOW FILTERING.
    reference = error_of(lambda: CpUser.objects.filter(id=user.id, name="ann").get())
    assert isinstance(reference, InvalidRequest)
    for _ in range(3):
        same_error(error_of(lambda: CpUser.get(id=user.id, name="ann")), reference)
        assert type(run(aerror_of(CpUser.aget(id=user.id, name="ann")))) is InvalidRequest
        assert route_of(CpUser).prepared.settle(10)  # the (failing) background prepare has finished
    assert raw_rows("cp_user") == [raw_row("cp_user", "id = %s", [user.id])]  # nothing written


def test_in_filter_still_works(clean_db, spy):
    first, second = make_user(name="first"), make_user(name="second")
    teach_read(CpUser, id=first.id)
    spy.reset()
    got = CpUser.get(id__in=[first.id])
    assert spy.selects == 1  # an operator: cqlengine's way
    reference = CpUser.objects.get(id__in=[first.id])
    assert state_of(got) == state_of(reference)
    assert got.name == "first"
    assert run(CpUser.aget(id__in=[second.id])).name == "second"
    reference = error_of(lambda: CpUser.objects.get(id__in=[first.id, second.id]))
    assert isinstance(reference, CpUser.MultipleObjectsReturned)
    same_error(error_of(lambda: CpUser.get(id__in=[first.id, second.id])), reference)
    same_error(run(aerror_of(CpUser.aget(id__in=[first.id, second.id]))), reference)


def test_several_rows_for_a_partition_key_filter(clean_db, spy):
    for seq in (1, 2, 3):
        CpEvent.create(stream="many", day=1, seq=seq, kind="k")
    teach_read(CpEvent, stream="many", day=1)
    reference = error_of(lambda: CpEvent.objects.filter(stream="many", day=1).get())
    assert isinstance(reference, CpEvent.MultipleObjectsReturned)
    spy.reset()
    same_error(error_of(lambda: CpEvent.get(stream="many", day=1)), reference)
    spy.assert_plan_read()
    spy.reset()
    same_error(run(aerror_of(CpEvent.aget(stream="many", day=1))), reference)
    spy.assert_plan_read()
    # One row in the partition: found through the same plan.
    CpEvent.create(stream="one", day=1, seq=5, kind="only")
    assert CpEvent.get(stream="one", day=1).kind == "only"
    assert state_of(CpEvent.get(stream="one", day=1)) == state_of(CpEvent.objects.get(stream="one", day=1))


# -- 4. inserts -------------------------------------------------------------------

USER_COLUMNS = ("id", "name", "email", "score", "tags", "prefs")


def user_values() -> dict[str, Any]:
    return {"name": "eve", "email": "eve@example.com", "tags": {"x"}, "prefs": {"a": "b"}}


def test_create_through_a_plan_equals_cqlengines(clean_db, spy):
    teach_create(CpUser, **user_values())  # id and score from their defaults
    spy.reset()
    ours = CpUser.create(**user_values())
    spy.assert_plan_insert()
    spy.reset()
    reference = CpUser.objects.create(**user_values())
    assert spy.saves == 1
    assert ours.id != reference.id and isinstance(ours.id, uuid.UUID)
    assert state_of(ours, ignore_values=("id",)) == state_of(reference, ignore_values=("id",))
    assert ours.score == 0 and ours.get_changed_columns() == []

    # An id given instead of its default.
    given = uuid.uuid4()
    spy.reset()
    with_id = CpUser.create(id=given, score=9, **user_values())
    spy.assert_plan_insert()
    reference = CpUser.objects.create(id=uuid.uuid4(), score=9, **user_values())
    assert with_id.id == given
    assert state_of(with_id, ignore_values=("id",)) == state_of(reference, ignore_values=("id",))

    rows = {row["id"]: row for row in raw_rows("cp_user")}
    assert rows[given] == {**rows[reference.id], "id": given}
    assert rows[ours.id] == {
        "id": ours.id,
        "name": "eve",
        "e_mail": "eve@example.com",
        "score": 0,
        "tags": {"x"},
        "prefs": {"a": "b"},
    }
    # What a plan created reads back like what cqlengine created.
    assert state_of(CpUser.get(id=given), ("id",)) == state_of(CpUser.objects.get(id=reference.id), ("id",))


def test_async_create_through_a_plan_equals_cqlengines(clean_db, spy):
    teach_create(CpUser, **user_values())

    async def scenario():
        spy.reset()
        ours = await CpUser.acreate(**user_values())
        spy.assert_plan_insert()
        spy.reset()
        reference = await CpUser.objects.acreate(**user_values())
        assert spy.saves == 1
        return ours, reference

    ours, reference = run(scenario())
    assert state_of(ours, ignore_values=("id",)) == state_of(reference, ignore_values=("id",))
    rows = {row["id"]: row for row in raw_rows("cp_user")}
    assert rows[ours.id] == {**rows[reference.id], "id": ours.id}


def test_create_with_a_value_explicitly_none(clean_db, spy):
    teach_create(CpUser, **user_values())
    user = CpUser.create(**user_values())
    reference_user = CpUser.objects.create(**user_values())
    values = {**user_values(), "name": None, "tags": set()}
    spy.reset()
    ours = CpUser.create(id=user.id, **values)
    assert spy.saves == 1  # cqlengine's way: an insert, then a DELETE of those columns
    assert any("DELETE" in getattr(q, "query_string", "") for q in spy.sent), spy.sent
    reference = CpUser.objects.create(id=reference_user.id, **values)
    assert state_of(ours, ("id",)) == state_of(reference, ("id",))
    row = raw_row("cp_user", "id = %s", [user.id])
    assert (row["name"], row["tags"], row["e_mail"]) == (None, None, "eve@example.com")
    assert row == {**raw_row("cp_user", "id = %s", [reference_user.id]), "id": user.id}

    async def scenario():
        spy.reset()
        await CpUser.acreate(id=user.id, name="back", email=None)
        assert spy.saves == 1

    run(scenario())
    row = raw_row("cp_user", "id = %s", [user.id])
    assert (row["name"], row["e_mail"]) == ("back", None)


def test_missing_required_column_writes_nothing(clean_db, spy):
    teach_create(CpRequired, key="k0", needed="yes")
    db.truncate(CpRequired)
    reference = error_of(lambda: CpRequired.objects.create(key="k1"))
    assert isinstance(reference, ValidationError)
    spy.reset()
    same_error(error_of(lambda: CpRequired.create(key="k1")), reference)
    same_error(error_of(lambda: CpRequired.create(key="k1", extra="e")), reference)
    same_error(run(aerror_of(CpRequired.acreate(key="k1"))), reference)
    assert spy.sent == []
    assert raw_rows("cp_required") == []


def test_unknown_column_is_refused_by_create_and_acreate(clean_db, spy):
    teach_create(CpTiny, key="k0", value="v")
    reference = error_of(lambda: models.Model.create.__func__(CpTiny, key="k1", bogus=1))
    assert isinstance(reference, ValidationError) and "bogus" in str(reference)
    spy.reset()
    same_error(error_of(lambda: CpTiny.create(key="k1", bogus=1)), reference)
    same_error(run(aerror_of(CpTiny.acreate(key="k1", bogus=1))), reference)
    assert spy.sent == []
    assert [row["key"] for row in raw_rows("cp_tiny")] == ["k0"]


def test_table_default_ttl_applies_to_plan_inserts(clean_db, spy):
    teach_create(CpExpiring, key="k0", value="v")
    spy.reset()
    CpExpiring.create(key="plan", value="v")
    spy.assert_plan_insert()
    spy.reset()
    run(CpExpiring.acreate(key="async plan", value="v"))
    spy.assert_plan_insert()
    CpExpiring.objects.create(key="reference", value="v")
    for key in ("plan", "async plan", "reference"):
        ttl = db.execute(f"SELECT TTL(value) FROM {KEYSPACE}.cp_expiring WHERE key = %s", [key]).one()
        assert ttl is not None and 0 < ttl["ttl(value)"] <= 300, (key, ttl)


def test_static_only_create_goes_cqlengines_way(clean_db, spy):
    teach_create(CpEvent, stream="st", day=1, seq=1, kind="k", payload="p", note="n")
    spy.reset()
    CpEvent.create(stream="st", day=1, note="static only")
    assert spy.saves == 1
    got = CpEvent.get(stream="st", day=1, seq=1)
    assert (got.note, got.kind) == ("static only", "k")


# -- read and insert plans of one model naming the same columns ---------------------


def test_get_after_create_of_the_same_columns_reads(clean_db):
    teach_create(CpFollow, follower="a", followee="b")
    reference = error_of(lambda: CpFollow.objects.get(follower="x", followee="y"))
    same_error(error_of(lambda: CpFollow.get(follower="x", followee="y")), reference)
    assert sorted((r["follower"], r["followee"]) for r in raw_rows("cp_follow")) == [("a", "b")]


def test_async_get_after_create_of_the_same_columns_reads(clean_db):
    teach_create(CpFollow, follower="a", followee="b")
    reference = error_of(lambda: CpFollow.objects.get(follower="x", followee="y"))
    same_error(run(aerror_of(CpFollow.aget(follower="x", followee="y"))), reference)
    assert sorted((r["follower"], r["followee"]) for r in raw_rows("cp_follow")) == [("a", "b")]


def test_create_after_get_of_the_same_columns_writes(clean_db):
    teach_read(CpMember, group="p", member="q")
    created = CpMember.create(group="p", member="q")
    assert created._is_persisted
    assert sorted((r["group"], r["member"]) for r in raw_rows("cp_member")) == [("p", "q")]


def test_async_create_after_get_of_the_same_columns_writes(clean_db):
    teach_read(CpMember, group="p", member="q")
    created = run(CpMember.acreate(group="p", member="r"))
    assert created._is_persisted
    assert sorted((r["group"], r["member"]) for r in raw_rows("cp_member")) == [("p", "r")]


# -- 5. keyspaces -------------------------------------------------------------------


def test_one_model_under_two_apps_with_two_keyspaces(two_apps, other_keyspace, spy):
    first, second = two_apps
    for each, value in ((first, "first"), (second, "second")):
        with each.app_context():
            CpShared.create(key="k", value=value)
            wait_for_plan(compiled.INSERT, CpShared, ("key", "value"))
            teach_read(CpShared, key="k")
    for each, value in ((first, "first"), (second, "second"), (first, "first")):
        with each.app_context():
            spy.reset()
            assert CpShared.get(key="k").value == value
            spy.assert_plan_read()
            spy.reset()
            CpShared.create(key=f"new-{value}", value=value)
            spy.assert_plan_insert()
            spy.reset()
            assert run(CpShared.aget(key=f"new-{value}")).value == value
            spy.assert_plan_read()
            run(CpShared.acreate(key=f"async-{value}", value=value))
    with first.app_context():
        assert sorted((r["key"], r["value"]) for r in raw_rows("cp_shared", KEYSPACE, shared_db)) == [
            ("async-first", "first"),
            ("k", "first"),
            ("new-first", "first"),
        ]
    with second.app_context():
        assert sorted((r["key"], r["value"]) for r in raw_rows("cp_shared", other_keyspace, shared_db)) == [
            ("async-second", "second"),
            ("k", "second"),
            ("new-second", "second"),
        ]


def test_set_keyspace_reads_and_writes_the_current_keyspace(clean_db, other_keyspace, spy):
    teach_create(CpTiny, key="home", value="home")
    teach_read(CpTiny, key="home")
    try:
        db.set_keyspace(other_keyspace)
        db.sync_table(CpTiny)
        db.truncate(CpTiny)
        teach_create(CpTiny, key="away", value="away")
        teach_read(CpTiny, key="away")
        spy.reset()
        CpTiny.create(key="away2", value="away")
        spy.assert_plan_insert()
        with pytest.raises(CpTiny.DoesNotExist):
            CpTiny.get(key="home")
        db.set_keyspace()
        # sync_table above changed the schema: every plan is learnt anew.
        teach_read(CpTiny, key="home")
        spy.reset()
        assert CpTiny.get(key="home").value == "home"
        spy.assert_plan_read()
        with pytest.raises(CpTiny.DoesNotExist):
            run(CpTiny.aget(key="away2"))
        run(CpTiny.acreate(key="home2", value="home"))
    finally:
        db.set_keyspace()
    assert sorted(r["key"] for r in raw_rows("cp_tiny")) == ["home", "home2"]
    assert sorted(r["key"] for r in raw_rows("cp_tiny", other_keyspace)) == ["away", "away2"]


# -- 6. no prepared statements, no plans ---------------------------------------------


def test_unprepared_app_never_uses_a_plan(extra_dbs, spy):
    plain_db.truncate()
    ids = []
    for i in range(4):
        spy.reset()
        ids.append(CpPlainUser.create(name=f"n{i}").id)
        assert spy.saves == 1
        spy.reset()
        assert CpPlainUser.get(id=ids[-1]).name == f"n{i}"
        assert spy.selects == 1
        spy.reset()
        assert run(CpPlainUser.aget(id=ids[0])).name == "n0"
        assert spy.selects == 1
        assert run(CpPlainUser.acreate(name="async")).name == "async"
        time.sleep(0.1)  # a background prepare, if one were wrongly started, has time to land
    assert spy.sent and not any(isinstance(q, BoundStatement) for q in spy.sent)
    assert not any(isinstance(plan, compiled.Plan) for plan in route_of(CpPlainUser).plans.values())
    assert sorted(r["name"] for r in raw_rows("cp_plain_user", ext=plain_db)) == ["async"] * 4 + [
        f"n{i}" for i in range(4)
    ]


# -- 7. recording ----------------------------------------------------------------------


def test_reads_through_a_plan_are_recorded_like_cqlengines(extra_dbs, spy):
    with recording_app.app_context():
        recording_db.truncate()
        user = CpRecorded.create(name="rec")
        teach_read(CpRecorded, id=user.id)
        spy.reset()
        CpRecorded.get(id=user.id)
        spy.assert_plan_read()
        run(CpRecorded.aget(id=user.id))
        CpRecorded.objects.filter(id=user.id).get()
        planned, planned_async, reference = get_recorded_queries()[-3:]
    assert "%(0)s" in reference.cql and reference.cql.startswith("SELECT")
    assert (planned.cql, planned.params, planned.mode) == (reference.cql, reference.params, "sync")
    assert (planned_async.cql, planned_async.params, planned_async.mode) == (reference.cql, reference.params, "async")
    assert planned.params == {"0": user.id}
    assert planned.error is None and planned_async.error is None


# -- 8. models a plan must leave alone ---------------------------------------------------


def test_polymorphic_models(clean_db, spy):
    CpCat.create(owner="ann", pet_id=1, name="Tom", lives=9)
    route = route_of(CpCat)
    assert not any(isinstance(p, compiled.Plan) for k, p in route.plans.items() if k[0] is CpCat)
    for pet_id in (2, 3):
        spy.reset()
        cat = CpCat.create(owner="ann", pet_id=pet_id, name="Kit", lives=pet_id)
        assert spy.saves == 1
        assert cat.kind == "cat" and cat._is_persisted
    teach_read(CpPet, owner="ann", pet_id=1)
    spy.reset()
    pet = CpPet.get(owner="ann", pet_id=1)
    spy.assert_plan_read()
    reference = CpPet.objects.get(owner="ann", pet_id=1)
    assert type(pet) is CpCat
    assert state_of(pet) == state_of(reference)
    teach_read(CpCat, owner="ann", pet_id=2)
    assert state_of(CpCat.get(owner="ann", pet_id=2)) == state_of(CpCat.objects.get(owner="ann", pet_id=2))
    assert run(CpCat.aget(owner="ann", pet_id=3)).lives == 3
    assert CpPet.objects.count() == 3


def test_overridden_save_runs_on_every_create(clean_db, spy):
    CpAudited.saved.clear()
    CpAudited.create(key="a", value="1")
    with execution.capture() as captured:
        DMLQuery(CpAudited, CpAudited(key="a", value="1")).save()
    wait_for_prepared(CpAudited, captured[0].query.query_string)
    assert not any(isinstance(p, compiled.Plan) for k, p in route_of(CpAudited).plans.items() if k[0] is CpAudited)
    spy.reset()
    CpAudited.create(key="b", value="2")
    run(CpAudited.acreate(key="c", value="3"))
    assert spy.saves == 2
    assert CpAudited.saved == ["a", "b", "c"]
    assert sorted((r["key"], r["value"]) for r in raw_rows("cp_audited")) == [("a", "1"), ("b", "2"), ("c", "3")]


def test_overridden_init_runs_on_create_and_read(clean_db, spy):
    teach_create(CpInit, key="k0")
    teach_read(CpInit, key="k0")
    CpInit.built.clear()
    ours = CpInit.create(key="k1")
    reference = CpInit.objects.create(key="k2")
    assert CpInit.built == [{"key": "k1"}, {"key": "k2"}]
    assert ours.label == "set by __init__"
    assert state_of(ours, ("key",)) == state_of(reference, ("key",))
    CpInit.built.clear()
    spy.reset()
    got = CpInit.get(key="k1")
    spy.assert_plan_read()
    assert CpInit.built == [{"key": "k1", "label": "set by __init__"}]  # built by cqlengine's Model(**row)
    assert state_of(got, ("key",)) == state_of(CpInit.objects.get(key="k2"), ("key",))
    assert state_of(run(CpInit.aget(key="k1"))) == state_of(got)


def test_overridden_init_runs_once_per_create(clean_db):
    """cqlengine's create builds the instance once: an ``__init__`` with side effects runs once."""
    teach_create(CpInit, key="k0")
    for values in ({"key": "a"}, {"key": "b", "label": None}, {"key": "c", "label": "given"}):
        for create in (CpInit.objects.create, CpInit.create, lambda **v: run(CpInit.acreate(**v))):
            CpInit.built.clear()
            create(**values)
            assert CpInit.built == [values], (create, values)


def test_instances_survive_pickle_and_copy_and_are_freed_at_once(clean_db):
    """Read and new instances pickle and deep-copy with their values and change
    tracking; an instance nobody holds is freed without a garbage collection."""
    import copy
    import gc
    import pickle
    import weakref

    user = CpUser.create(id=uuid.uuid4(), name="kept", score=3)
    read = CpUser.get(id=user.id)
    read.name = "changed"
    for original in (user, read):
        for clone in (pickle.loads(pickle.dumps(original)), copy.deepcopy(original)):
            assert (clone.id, clone.name, clone.score) == (original.id, original.name, original.score)
            assert clone.get_changed_columns() == original.get_changed_columns()
    assert read._values["name"].instance.name == "changed"
    gc.disable()
    try:
        probe = weakref.ref(CpUser.get(id=user.id))
        assert probe() is None
    finally:
        gc.enable()
