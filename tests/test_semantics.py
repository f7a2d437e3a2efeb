"""Exactly cqlengine: each difference found in issue 10, as a regression test.

Every test stores or reads through this extension (prepared statements and
compiled plans on) and checks the outcome against what plain, unprepared
cqlengine stores or returns, read back with a plain driver session.
"""

from __future__ import annotations

import asyncio
import struct
import time
from unittest import mock

import pytest
from cassandra.cluster import Cluster, Session
from cassandra.cqlengine import CQLEngineException, columns, management, models
from cassandra.cqlengine import connection as cqlengine_connection
from cassandra.cqlengine.query import BatchQuery
from cassandra.cqlengine.usertype import UserType
from cassandra.query import dict_factory

from flask_cqlalchemy import CQLAlchemy, compiled, execution

from .conftest import HOSTS, make_app

OURS = "semantics_ours"
PLAIN = "semantics_plain"
PLAIN_CONNECTION = "semantics_plain_cqlengine"

app = make_app(__name__, CASSANDRA_KEYSPACE=OURS)
db = CQLAlchemy(app)


@pytest.fixture(scope="module")
def raw() -> Session:
    """A plain driver session, outside the extension: reads back what is stored, runs outside DDL."""
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect()
    session.row_factory = dict_factory
    for keyspace in (OURS, PLAIN):
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        session.execute(
            f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        )
    # Plain cqlengine, unprepared, on its own cluster connection: the reference.
    cqlengine_connection.register_connection(PLAIN_CONNECTION, session=cluster.connect())
    yield session
    for keyspace in (OURS, PLAIN):
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    cqlengine_connection.unregister_connection(PLAIN_CONNECTION)  # shuts the cluster down


@pytest.fixture(scope="module", autouse=True)
def shut_down(raw: Session):
    yield
    db.shutdown()


def settle() -> None:
    """Let the background prepares finish: from here on statements go prepared."""
    assert execution.route_of(db.session).prepared.settle(10)


def plain_model(name: str, fields: dict, table: str) -> type:
    """A plain cqlengine model (no extension) with the same columns, in the plain keyspace."""
    return type(
        name,
        (models.Model,),
        {"__keyspace__": PLAIN, "__connection__": PLAIN_CONNECTION, "__table_name__": table, **fields},
    )


def our_model(name: str, fields: dict, table: str) -> type:
    return type(name, (db.Model,), {"__table_name__": table, "__module__": __name__, **fields})


def rows(raw: Session, keyspace: str, table: str) -> list[dict]:
    return sorted(raw.execute(f"SELECT * FROM {keyspace}.{table}").all(), key=lambda r: repr(r["pk"]))


def sync_plain(*models_and_types: type) -> None:
    with mock.patch.dict("os.environ", {"CQLENG_ALLOW_SCHEMA_MANAGEMENT": "1"}):
        for item in models_and_types:
            if issubclass(item, UserType):
                management.sync_type(PLAIN, item, connection=PLAIN_CONNECTION)
            else:
                management.sync_table(item)


# -- 1. prepared statements and plans live for one version of the schema ---------


def test_table_recreated_with_another_type_stores_the_new_type(raw):
    with app.app_context():
        Old = our_model("Old", {"pk": columns.Integer(primary_key=True), "v": columns.Integer()}, "recreated")
        db.sync_table(Old)
        for i in range(3):
            Old.create(pk=i, v=i)
            settle()
        assert Old.get(pk=1).v == 1
        db.drop_table(Old)
        New = our_model("New", {"pk": columns.Integer(primary_key=True), "v": columns.Boolean()}, "recreated")
        db.sync_table(New)
        New.create(pk=10, v=True)
        asyncio.run(New.acreate(pk=11, v=False))
        assert New.get(pk=10).v is True
        assert asyncio.run(New.aget(pk=11)).v is False
    assert rows(raw, OURS, "recreated") == [{"pk": 10, "v": True}, {"pk": 11, "v": False}]


class AddressBefore(UserType):
    __type_name__ = "address"
    street = columns.Text()


class AddressAfter(UserType):
    __type_name__ = "address"
    street = columns.Text()
    zip = columns.Text()


def test_field_added_to_a_user_type_is_stored(raw):
    """The issue's silent loss: ``zip`` stored as null after ``sync_type``."""
    with app.app_context():
        Before = our_model(
            "Before", {"pk": columns.Integer(primary_key=True), "a": columns.UserDefinedType(AddressBefore)}, "people"
        )
        db.sync_type(AddressBefore)
        db.sync_table(Before)
        for i in range(3):
            Before.create(pk=i, a=AddressBefore(street=f"s{i}"))
            settle()
        After = our_model(
            "After", {"pk": columns.Integer(primary_key=True), "a": columns.UserDefinedType(AddressAfter)}, "people"
        )
        db.sync_type(AddressAfter)
        db.sync_table(After)
        After.create(pk=10, a=AddressAfter(street="x", zip="12345"))
        asyncio.run(After.acreate(pk=11, a=AddressAfter(street="y", zip="67890")))
        assert After.get(pk=10).a.zip == "12345"
    stored = {r["pk"]: r["a"] for r in rows(raw, OURS, "people")}
    assert (stored[10].street, stored[10].zip) == ("x", "12345")
    assert (stored[11].street, stored[11].zip) == ("y", "67890")


@pytest.mark.parametrize("face", ["sync", "async"])
def test_schema_changed_by_another_client_right_before_a_write(raw, face):
    """DDL from another client, and a write bound before it and sent after
    it, before any schema event could arrive. ``int`` -> ``float``: the old
    statement's four bytes of an int are a valid float, so re-sending them
    would silently store 1.4e-45 where cqlengine's literal ``1`` stores 1.0."""
    table = f"elsewhere_{face}"
    with app.app_context():
        Old = our_model("Old", {"pk": columns.Integer(primary_key=True), "v": columns.Integer()}, table)
        db.sync_table(Old)
        for i in range(3):
            Old.create(pk=i, v=i)
            settle()
        # The insert of a known shape, bound into its prepared statement now,
        # as a request in flight during the other client's DDL would be.
        statement = compiled.insert_statement(Old, Old._class_get_connection(), Old(pk=20, v=1))
        assert statement is not None and statement.wire is not None, "the insert plan was not ready"
        raw.execute(f"DROP TABLE {OURS}.{table}")
        raw.execute(f"CREATE TABLE {OURS}.{table} (pk int PRIMARY KEY, v float)")
        if face == "sync":
            execution.send_sync(statement)
        else:

            async def send() -> None:
                await execution.send(statement)

            asyncio.run(send())
    assert rows(raw, OURS, table) == [{"pk": 20, "v": 1.0}]


def test_schema_changed_by_another_client_is_seen_by_later_writes(raw):
    with app.app_context():
        Old = our_model("Old", {"pk": columns.Integer(primary_key=True), "v": columns.Integer()}, "elsewhere_later")
        db.sync_table(Old)
        for i in range(3):
            Old.create(pk=i, v=i)
            settle()
        raw.execute(f"DROP TABLE {OURS}.elsewhere_later")
        raw.execute(f"CREATE TABLE {OURS}.elsewhere_later (pk int PRIMARY KEY, v boolean)")
        New = our_model("New", {"pk": columns.Integer(primary_key=True), "v": columns.Boolean()}, "elsewhere_later")
        New.create(pk=1, v=True)
        asyncio.run(New.acreate(pk=2, v=False))
        settle()
        New.create(pk=3, v=True)
    assert rows(raw, OURS, "elsewhere_later") == [{"pk": 1, "v": True}, {"pk": 2, "v": False}, {"pk": 3, "v": True}]


# -- 2. values inside frozen values stored as cqlengine's literal stores them -----


class Bag(UserType):
    __type_name__ = "bag"
    s = columns.Set(columns.Integer)
    m = columns.Map(columns.Text, columns.Integer)


class PlainBag(UserType):
    __type_name__ = "bag"
    s = columns.Set(columns.Integer)
    m = columns.Map(columns.Text, columns.Integer)


def bag_fields(udt: type) -> dict:
    return {
        "pk": columns.Integer(primary_key=True),
        "b": columns.UserDefinedType(udt),
        "t": columns.Tuple(columns.Integer, columns.Set(columns.Integer)),
        "nested": columns.List(columns.Tuple(columns.Map(columns.Text, columns.Integer))),
    }


def test_sets_and_maps_inside_frozen_values_match_plain_cqlengine(raw):
    value = {8, 1, 300, -5}  # iterated by Python in another order than sorted
    mapping = {"zz": 1, "aa": 2, "mm": 3}
    assert list(value) != sorted(value)
    Plain = plain_model("PlainBags", bag_fields(PlainBag), "bags")
    sync_plain(PlainBag, Plain)
    with app.app_context():
        Ours = our_model("Bags", bag_fields(Bag), "bags")
        db.sync_type(Bag)
        db.sync_table(Ours)
        for i in range(6):
            fields = {"pk": i, "b": Bag(s=value, m=mapping), "t": (1, value), "nested": [(mapping,)]}
            Ours.create(**fields)
            Plain.create(**{**fields, "b": PlainBag(s=value, m=mapping)})
            settle()
        ours_found = sorted(o.pk for o in Ours.objects.filter(b=Bag(s=value, m=mapping)).allow_filtering())
        ours_tuple = sorted(o.pk for o in Ours.objects.filter(t=(1, value)).allow_filtering())
    plain_found = sorted(o.pk for o in Plain.objects.filter(b=PlainBag(s=value, m=mapping)).allow_filtering())
    assert ours_found == plain_found == list(range(6))
    assert ours_tuple == list(range(6))
    literal = "{s: {-5, 1, 8, 300}, m: {'aa': 2, 'mm': 3, 'zz': 1}}"
    for keyspace in (OURS, PLAIN):
        matching = raw.execute(f"SELECT pk FROM {keyspace}.bags WHERE b = {literal} ALLOW FILTERING").all()
        assert sorted(r["pk"] for r in matching) == list(range(6)), keyspace
    assert _stored(raw, OURS, "bags") == _stored(raw, PLAIN, "bags")


def _stored(raw: Session, keyspace: str, table: str) -> list:
    """Rows as stored: the driver sorts the sets it reads, the node's JSON
    keeps the order the bytes are stored in."""
    query = f"SELECT pk, toJson(b) AS b, toJson(t) AS t, toJson(nested) AS nested FROM {keyspace}.{table}"
    return sorted(raw.execute(query).all(), key=lambda r: r["pk"])


def float_fields() -> dict:
    return {
        "pk": columns.Integer(primary_key=True),
        "f": columns.Float(),
        "fl": columns.List(columns.Float()),
        "d": columns.Double(),
    }


def test_single_precision_floats_round_like_cqlengine_literals(raw):
    """A double exactly half-way between two floats: the driver rounds it to
    even, the node rounds cqlengine's decimal text ``repr(x)``, which lies a
    little to one side of the tie."""
    halfway = 1 + 2**-24  # repr: 1.0000000596046448, above the tie
    values = [halfway, -halfway, 3.4028235677973366e38 * 0.5 + 2**103, 0.1, float("nan")]
    Plain = plain_model("PlainFloats", float_fields(), "floats")
    sync_plain(Plain)
    with app.app_context():
        Ours = our_model("Floats", float_fields(), "floats")
        db.sync_table(Ours)
        for round_ in range(2):  # the second round goes prepared and through plans
            for i, value in enumerate(values):
                pk = round_ * 100 + i
                Ours.create(pk=pk, f=value, fl=[value, value], d=value)
                Plain.create(pk=pk, f=value, fl=[value, value], d=value)
            settle()
    ours = raw.execute(f"SELECT pk, floatAsBlob(f) AS f, d FROM {OURS}.floats").all()
    plain = raw.execute(f"SELECT pk, floatAsBlob(f) AS f, d FROM {PLAIN}.floats").all()
    key = lambda r: r["pk"]  # noqa: E731
    assert [(r["pk"], r["f"]) for r in sorted(ours, key=key)] == [(r["pk"], r["f"]) for r in sorted(plain, key=key)]
    stored = {r["pk"]: r["f"] for r in ours}
    assert stored[100] == struct.pack(">f", 1.0000001192092896)  # not 1.0, where the driver alone rounds it
    lists = lambda ks: sorted(  # noqa: E731
        (r["pk"], [struct.pack(">f", x) for x in r["fl"]]) for r in raw.execute(f"SELECT pk, fl FROM {ks}.floats")
    )
    assert lists(OURS) == lists(PLAIN)


# -- 3. an instance's own __connection__ --------------------------------------------


def test_instance_connection_is_used_like_cqlengine(raw):
    class Ticket(db.Model):
        pk = columns.Integer(primary_key=True)

    with app.app_context():
        db.sync_table(Ticket)
        ours, theirs = Ticket(pk=1), Ticket(pk=2)
        theirs.__connection__ = PLAIN_CONNECTION
        assert ours._get_connection() != PLAIN_CONNECTION
        assert theirs._get_connection() == PLAIN_CONNECTION
        with pytest.raises(CQLEngineException, match="same connection"):
            with BatchQuery() as batch:
                ours.batch(batch).save()
                theirs.batch(batch).save()


# -- 4. driver methods looked up when called -----------------------------------------


def test_class_level_patch_of_session_execute_sees_sync_statements(raw):
    class Patched(db.Model):
        pk = columns.Integer(primary_key=True)
        v = columns.Text()

    with app.app_context():
        db.sync_table(Patched)
        Patched.create(pk=1, v="a")
        settle()
        with mock.patch.object(Session, "execute", autospec=True, side_effect=Session.execute) as spy:
            Patched.create(pk=2, v="b")
            assert Patched.get(pk=2).v == "b"
            list(Patched.objects.all())
        sent = [call.args[1] for call in spy.call_args_list]
    assert len(sent) == 3, sent


# -- 5. cqlengine's process-wide defaults follow the last app, as in the original --


def test_plain_cqlengine_uses_the_last_app_initialised(raw):
    class Note(models.Model):  # plain cqlengine: no __keyspace__, no __connection__
        __table_name__ = "plain_note"
        pk = columns.Integer(primary_key=True)
        body = columns.Text()

    first = make_app("defaults_first", CASSANDRA_KEYSPACE=OURS)
    second = make_app("defaults_second", CASSANDRA_KEYSPACE=PLAIN)
    first_db, second_db = CQLAlchemy(first), CQLAlchemy(second)
    try:
        assert models.DEFAULT_KEYSPACE == PLAIN
        with mock.patch.dict("os.environ", {"CQLENG_ALLOW_SCHEMA_MANAGEMENT": "1"}):
            management.sync_table(Note)
        Note.create(pk=1, body="to the second app's keyspace")
        assert raw.execute(f"SELECT body FROM {PLAIN}.plain_note WHERE pk = 1").one() is not None
        second_db.shutdown()
        # The app before it takes over again, keyspace included.
        assert models.DEFAULT_KEYSPACE == OURS
        assert cqlengine_connection.get_connection().cluster is first_db.state().connection.cluster
        with mock.patch.dict("os.environ", {"CQLENG_ALLOW_SCHEMA_MANAGEMENT": "1"}):
            management.sync_table(Note)
        Note.create(pk=2, body="to the first app's keyspace")
        assert raw.execute(f"SELECT body FROM {OURS}.plain_note WHERE pk = 2").one() is not None
        first_db.set_keyspace(PLAIN)
        assert models.DEFAULT_KEYSPACE == PLAIN
    finally:
        first_db.shutdown()
        second_db.shutdown()


def test_an_unreachable_app_stops_being_the_default_when_shut_down(raw):
    good = make_app("defaults_good", CASSANDRA_KEYSPACE=OURS)
    good_db = CQLAlchemy(good)
    bad = make_app(
        "defaults_bad",
        CASSANDRA_HOSTS=["127.0.0.250"],
        CASSANDRA_KEYSPACE=PLAIN,
        CASSANDRA_LAZY_CONNECT=True,
    )
    bad_db = CQLAlchemy(bad)
    try:
        # (looked up without cqlengine's get_connection, which would connect it)
        assert default_connection().hosts == ["127.0.0.250"]
        bad_db.shutdown()
        default = cqlengine_connection.get_connection()
        assert default.hosts != ["127.0.0.250"]
        assert models.DEFAULT_KEYSPACE == OURS
        assert default.session.execute("SELECT release_version FROM system.local").one()
    finally:
        bad_db.shutdown()
        good_db.shutdown()


def test_no_default_left_once_every_app_is_shut_down(raw):
    only = make_app("defaults_only", CASSANDRA_KEYSPACE=OURS)
    only_db = CQLAlchemy(only)
    remaining = [s for s in _other_live_states() if s.ext is not only_db]
    only_db.shutdown()
    if remaining:
        assert models.DEFAULT_KEYSPACE == remaining[-1].keyspace
    else:
        assert models.DEFAULT_KEYSPACE is None
        with pytest.raises(CQLEngineException):
            cqlengine_connection.get_connection()


def default_connection() -> cqlengine_connection.Connection:
    return cqlengine_connection._connections[cqlengine_connection.DEFAULT_CONNECTION]


def _other_live_states() -> list:
    from flask_cqlalchemy import cqlengine_defaults

    return list(cqlengine_defaults._defaults)


class Reading(UserType):
    __type_name__ = "reading"
    value = columns.Float()
    label = columns.Text()


class PlainReading(UserType):
    __type_name__ = "reading"
    value = columns.Float()
    label = columns.Text()


def test_single_precision_floats_inside_tuples_and_user_types(raw):
    halfway = 1 + 2**-24

    def fields(udt: type) -> dict:
        return {
            "pk": columns.Integer(primary_key=True),
            "r": columns.UserDefinedType(udt),
            "t": columns.Tuple(columns.Float(), columns.Text()),
            "m": columns.Map(columns.Float(), columns.Float()),
        }

    Plain = plain_model("PlainReadings", fields(PlainReading), "readings")
    sync_plain(PlainReading, Plain)
    with app.app_context():
        Ours = our_model("Readings", fields(Reading), "readings")
        db.sync_type(Reading)
        db.sync_table(Ours)
        for pk in range(4):  # the later ones go prepared and through plans
            value = halfway if pk % 2 else -halfway
            Ours.create(pk=pk, r=Reading(value=value, label="x"), t=(value, "y"), m={value: value})
            Plain.create(pk=pk, r=PlainReading(value=value, label="x"), t=(value, "y"), m={value: value})
            settle()

    def stored(keyspace: str) -> list:
        query = f"SELECT pk, toJson(r) AS r, toJson(t) AS t, toJson(m) AS m FROM {keyspace}.readings"
        return sorted(raw.execute(query).all(), key=lambda r: r["pk"])

    ours = stored(OURS)
    assert ours == stored(PLAIN)
    assert "1.0000001" in ours[1]["r"]  # the node's rounding of the literal, not 1.0


def test_session_execute_is_called_as_cqlengine_calls_it(raw):
    """cqlengine passes the timeout by keyword; a patch of ``Session.execute``
    (the driver's own tests do this) sees the same call through the extension."""

    class Timed(db.Model):
        pk = columns.Integer(primary_key=True)

    with app.app_context():
        db.sync_table(Timed)
        Timed.create(pk=1)
        settle()
        with mock.patch.object(Session, "execute", autospec=True, side_effect=Session.execute) as spy:
            Timed.objects.timeout(2.5).get(pk=1)
            list(Timed.objects.all())
    assert [call.kwargs["timeout"] for call in spy.call_args_list] == [2.5, cqlengine_connection.NOT_SET]


def test_a_schema_change_elsewhere_keeps_the_plans_of_this_keyspace(raw):
    """Schema events are scoped: DDL on another keyspace (or another table)
    leaves this keyspace's prepared statements and plans in place, so the
    fast path does not stall on every migration somewhere in the cluster."""

    class Kept(db.Model):
        pk = columns.Integer(primary_key=True)
        v = columns.Text()

    with app.app_context():
        db.sync_table(Kept)
        Kept.create(pk=1, v="a")
        Kept.get(pk=1)
        settle()
        Kept.create(pk=2, v="b")
        Kept.get(pk=2)
        route = execution.route_of(db.session)
        before = set(route.plans)
        prepared_before = len(route.prepared)
        raw.execute(f"CREATE TYPE IF NOT EXISTS {PLAIN}.elsewhere (x int)")  # a keyspace-wide event, other keyspace
        raw.execute(f"CREATE TABLE IF NOT EXISTS {OURS}.other_table (pk int PRIMARY KEY)")  # another table here
        time.sleep(0.5)  # the events' allowance
        assert before <= set(route.plans)
        assert len(route.prepared) >= prepared_before
        raw.execute(f"ALTER TABLE {OURS}.kept ADD extra text")  # this table: forgotten
        time.sleep(0.5)
        assert not any(key[1] is Kept for key in route.plans)
