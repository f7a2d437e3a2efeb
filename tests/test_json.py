"""JSON for models: ``to_dict`` and the app's JSON provider, against the node.

Every row here is written through its model, read back, and answered by a
view with ``jsonify``; the tests check the JSON a client receives.
"""

from __future__ import annotations

import datetime
import json
import math
import pickle
import uuid
from decimal import Decimal
from typing import Any

import pytest
from cassandra.util import Date, Duration, OrderedMapSerializedKey, SortedSet, Time
from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider, JSONProvider

from flask_cqlalchemy import ConfigError, CQLAlchemy
from flask_cqlalchemy.json_provider import CassandraJSONProvider, install

from .conftest import KEYSPACE, make_app
from .support.frameworks import get, make_framework_app

# cqlengine's sync of an existing table with a tuple column: it compares its
# tuple<...> with the node's frozen<tuple<...>> and warns (nothing differs).
pytestmark = pytest.mark.filterwarnings("ignore:.*differing from the model type:UserWarning")

app = make_app(__name__)
db = CQLAlchemy(app)
columns = db.columns

THE_ID = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
AT = uuid.UUID("e2371cd6-e9c0-11f1-a20f-11e7a51ccb9d")
LOW = uuid.UUID("00000000-0000-4000-8000-000000000001")
HIGH = uuid.UUID("ffffffff-0000-4000-8000-000000000000")


class Address(db.UserType):
    street = columns.Text()
    zipcode = columns.Integer()
    phones = columns.Set(columns.Text)


class Everything(db.Model):
    """A column of each of cqlengine's types (and the extension's vector)."""

    __table_name__ = "json_everything"
    id = columns.UUID(partition_key=True)
    at = columns.TimeUUID(primary_key=True, clustering_order="DESC")
    ascii = columns.Ascii()
    text = columns.Text()
    flag = columns.Boolean()
    tiny = columns.TinyInt()
    small = columns.SmallInt()
    integer = columns.Integer()
    big = columns.BigInt()
    var = columns.VarInt()
    single = columns.Float()
    double = columns.Double()
    dec = columns.Decimal()
    blob = columns.Blob()
    inet = columns.Inet()
    moment = columns.DateTime()
    day = columns.Date()
    clock = columns.Time()
    span = columns.Duration()
    vec = columns.Vector(columns.Float, 3)
    tags = columns.Set(columns.Text)
    ids = columns.Set(columns.UUID)
    pairs = columns.Set(columns.Tuple(columns.Integer, columns.Text))
    scores = columns.List(columns.Double)
    grid = columns.List(columns.List(columns.Integer))  # list<frozen<list<int>>>
    by_id = columns.Map(columns.UUID, columns.Text)
    by_pair = columns.Map(columns.Tuple(columns.Integer, columns.Text), columns.Integer)
    groups = columns.Map(columns.Text, columns.Set(columns.Integer))
    triple = columns.Tuple(columns.Integer, columns.Text, columns.Date)
    home = columns.UserDefinedType(Address)
    addresses = columns.List(columns.UserDefinedType(Address))
    book = columns.Map(columns.Text, columns.UserDefinedType(Address))


class Hits(db.Model):
    __table_name__ = "json_hits"
    page = columns.Text(partition_key=True)
    hits = columns.Counter()


class Entry(db.Model):
    __table_name__ = "json_entries"
    owner = columns.Text(partition_key=True)
    position = columns.Integer(primary_key=True)
    label = columns.Text()
    secret = columns.Text()


class Profile(db.Model):
    """A model that keeps a column out of its JSON by overriding to_dict."""

    __table_name__ = "json_profiles"
    name = columns.Text(partition_key=True)
    password_hash = columns.Text()

    def to_dict(self, *, only=None, exclude=None, mode="python"):
        if not isinstance(exclude, str):  # a string: to_dict's own TypeError
            exclude = [*(exclude or ()), "password_hash"]
        return super().to_dict(only=only, exclude=exclude, mode=mode)


class Thing(db.Model):
    """Defaults, a static column, a set and a db_field: what a partial read must not invent."""

    __table_name__ = "json_things"
    pk = columns.Text(partition_key=True)
    ck = columns.Integer(primary_key=True)
    owner = columns.Text(static=True)
    label = columns.Text(db_field="label_text")
    token = columns.UUID(default=uuid.uuid4)
    created = columns.DateTime(default=datetime.datetime.utcnow)
    tags = columns.Set(columns.Text)


class Pet(db.Model):
    """A polymorphic base; its children's columns are not the base's."""

    __table_name__ = "json_pets"
    owner = columns.Text(partition_key=True)
    pet_id = columns.Integer(primary_key=True)
    kind = columns.Text(discriminator_column=True)
    name = columns.Text()


class Dog(Pet):
    __discriminator_value__ = "dog"
    tricks = columns.List(columns.Text)
    born = columns.DateTime(default=datetime.datetime.utcnow)


@app.get("/everything/<row_id>")
def show_everything(row_id: str):
    return jsonify(Everything.get(id=uuid.UUID(row_id), at=AT))


@app.get("/everything")
def list_everything():
    return jsonify(list(Everything.objects.all()))


@app.get("/hits/<page>")
def show_hits(page: str):
    return jsonify(Hits.get(page=page))


@app.get("/entries/<owner>")
async def list_entries(owner: str):
    page = await Entry.objects(owner=owner).apaginate(per_page=2, cursor=request.args.get("cursor"))
    return jsonify(page)


@app.get("/raw")
def raw_row():
    # The driver's own row: SortedSet for sets, OrderedMapSerializedKey for maps.
    return jsonify(db.execute(f"SELECT id, ids, by_id, by_pair FROM {KEYSPACE}.json_everything").one())


FULL: dict[str, Any] = {
    "id": THE_ID,
    "at": AT,
    "ascii": "plain",
    "text": "Caf\u00e9 \u2615",
    "flag": True,
    "tiny": -128,
    "small": 32767,
    "integer": -2147483648,
    "big": 9223372036854775807,
    "var": 2**70,
    "single": 1.5,
    "double": 0.1,
    # cqlengine writes decimals through a float (the driver's literal): a
    # double's digits at most
    "dec": Decimal("-12345.6789"),
    "blob": b"\x00\x01\xfe\xff",
    "inet": "2001:db8::1",
    "moment": datetime.datetime(2024, 2, 29, 23, 59, 59, 123000),
    "day": datetime.date(1969, 7, 20),
    "clock": datetime.time(13, 45, 30, 250000),
    "span": Duration(14, 3, 3_723_500_000_000),
    "vec": [0.5, -1.25, 3.0],
    "tags": {"zeta", "alpha", "Mid"},
    "ids": {HIGH, LOW},
    "pairs": {(2, None), (1, "b"), (1, "a")},
    "scores": [3.5, 1.0, 2.25],
    "grid": [[3, 2], [], [1]],
    "by_id": {HIGH: "high", LOW: "low"},
    "by_pair": {(1, "a"): 10, (2, "b"): 20},
    "groups": {"odd": {3, 1}, "even": {4, 2}},
    "triple": (7, "seven", datetime.date(2000, 1, 1)),
    "home": Address(street="Easy St.", zipcode=99999, phones={"555-2", "555-1"}),
    "addresses": [Address(street="First", zipcode=1), Address(street="Second", zipcode=2, phones={"b", "a"})],
    "book": {"work": Address(street="Office Rd.", zipcode=42, phones={"555-9"})},
}

#: FULL, as a client reads it.
FULL_JSON: dict[str, Any] = {
    "id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "at": "e2371cd6-e9c0-11f1-a20f-11e7a51ccb9d",
    "ascii": "plain",
    "text": "Caf\u00e9 \u2615",
    "flag": True,
    "tiny": -128,
    "small": 32767,
    "integer": -2147483648,
    "big": 9223372036854775807,
    "var": 1180591620717411303424,
    "single": 1.5,
    "double": 0.1,
    "dec": "-12345.6789",
    "blob": "AAH+/w==",
    "inet": "2001:db8::1",
    "moment": "2024-02-29T23:59:59.123Z",
    "day": "1969-07-20",
    "clock": "13:45:30.250",
    "span": "P1Y2M3DT1H2M3.5S",
    "vec": [0.5, -1.25, 3.0],
    "tags": ["Mid", "alpha", "zeta"],
    "ids": ["00000000-0000-4000-8000-000000000001", "ffffffff-0000-4000-8000-000000000000"],
    "pairs": [[1, "a"], [1, "b"], [2, None]],
    "scores": [3.5, 1.0, 2.25],
    "grid": [[3, 2], [], [1]],
    "by_id": {"00000000-0000-4000-8000-000000000001": "low", "ffffffff-0000-4000-8000-000000000000": "high"},
    "by_pair": {'[1,"a"]': 10, '[2,"b"]': 20},
    "groups": {"even": [2, 4], "odd": [1, 3]},
    "triple": [7, "seven", "2000-01-01"],
    "home": {"street": "Easy St.", "zipcode": 99999, "phones": ["555-1", "555-2"]},
    "addresses": [
        {"street": "First", "zipcode": 1, "phones": []},
        {"street": "Second", "zipcode": 2, "phones": ["a", "b"]},
    ],
    "book": {"work": {"street": "Office Rd.", "zipcode": 42, "phones": ["555-9"]}},
}


@pytest.fixture()
def stored(clean_db) -> None:
    Everything.create(**FULL)


def fetch(path: str, target: Flask = app) -> Any:
    status, body, headers = get(target, path)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


# -- every column type, through a request -------------------------------------------------------


def test_every_column_type_round_trips_to_the_json_a_client_reads(stored):
    assert fetch(f"/everything/{THE_ID}") == FULL_JSON


def test_the_answer_is_flasks_compact_sorted_json(stored):
    _, body, _ = get(app, f"/everything/{THE_ID}")
    assert body == (json.dumps(FULL_JSON, sort_keys=True, separators=(",", ":")) + "\n").encode()


def test_a_list_of_models(clean_db):
    Everything.create(id=THE_ID, at=AT, text="one")
    Everything.create(id=LOW, at=AT, text="two", ids={HIGH, LOW})
    answered = sorted(fetch("/everything"), key=lambda row: row["text"])
    assert [(row["id"], row["text"], row["ids"], row["tags"], row["home"]) for row in answered] == [
        (str(THE_ID), "one", [], [], None),
        (str(LOW), "two", [str(LOW), str(HIGH)], [], None),
    ]


def test_nulls_are_null_and_empty_collections_empty(clean_db):
    Everything.create(id=THE_ID, at=AT)
    answered = fetch(f"/everything/{THE_ID}")
    collections = {"tags": [], "ids": [], "pairs": [], "scores": [], "grid": []}
    collections |= {"by_id": {}, "by_pair": {}, "groups": {}, "addresses": [], "book": {}}
    assert {k: v for k, v in answered.items() if k in collections} == collections
    # a tuple, a vector or a user-defined type is a value: null when there is none
    assert all(answered[k] is None for k in FULL_JSON if k not in collections and k not in ("id", "at"))


def test_timestamps_are_utc_to_the_millisecond(clean_db):
    # An aware datetime is stored as its UTC instant; cqlengine reads it back naive.
    paris = datetime.timezone(datetime.timedelta(hours=1))
    Everything.create(id=THE_ID, at=AT, moment=datetime.datetime(2024, 1, 1, 0, 30, tzinfo=paris))
    assert fetch(f"/everything/{THE_ID}")["moment"] == "2023-12-31T23:30:00.000Z"


def test_dates_times_and_durations_at_their_limits(clean_db):
    Everything.create(
        id=THE_ID,
        at=AT,
        day=Date(-(2**31)),  # Cassandra's first date
        clock=Time(1),  # one nanosecond past midnight
        span=Duration(-1, -2, -3),
        triple=(0, "", Date(2**31 - 1)),  # and its last
    )
    answered = fetch(f"/everything/{THE_ID}")
    assert answered["day"] == "-5877641-06-23"
    assert answered["clock"] == "00:00:00.000000001"
    assert answered["span"] == "-P1M2DT0.000000003S"
    assert answered["triple"] == [0, "", "+5881580-07-11"]


def test_a_counter_is_a_number(clean_db):
    Hits.objects(page="home").update(hits=3)
    assert fetch("/hits/home") == {"page": "home", "hits": 3}


def test_the_drivers_own_sets_and_maps(stored):
    with app.app_context():
        row = db.execute(f"SELECT ids, by_id FROM {KEYSPACE}.json_everything").one()
    assert isinstance(row["ids"], SortedSet) and isinstance(row["by_id"], OrderedMapSerializedKey)
    assert fetch("/raw") == {
        "id": FULL_JSON["id"],
        "ids": FULL_JSON["ids"],
        "by_id": FULL_JSON["by_id"],
        "by_pair": FULL_JSON["by_pair"],
    }


def test_sets_come_out_in_the_same_order_whatever_order_they_were_written_in(clean_db):
    uuids = [uuid.uuid4() for _ in range(20)]
    pairs = [(n % 3, None if n % 2 else str(n)) for n in range(12)]  # a null: tuples that do not compare
    Everything.create(id=THE_ID, at=AT, ids=set(uuids), pairs=set(pairs))
    Everything.create(id=LOW, at=AT, ids=set(reversed(uuids)), pairs=set(reversed(pairs)))
    first, second = fetch(f"/everything/{THE_ID}"), fetch(f"/everything/{LOW}")
    assert first["ids"] == second["ids"] == sorted(str(u) for u in uuids)
    # tuples holding a null do not compare: in order of their JSON text, not
    # in the node's (both rows are read back in the node's order)
    assert first["pairs"] == second["pairs"] == [list(p) for p in sorted(set(pairs), key=lambda p: json.dumps(list(p)))]


# -- to_dict --------------------------------------------------------------------------------------


def test_to_dict_keeps_python_values_in_column_order(stored):
    with app.app_context():
        row = Everything.get(id=THE_ID, at=AT)
    plain = row.to_dict()
    assert list(plain) == list(Everything._columns)
    assert plain["id"] == THE_ID and plain["at"] == AT
    assert plain["dec"] == FULL["dec"] and plain["blob"] == FULL["blob"]
    assert plain["moment"] == FULL["moment"]
    assert plain["day"] == Date(FULL["day"]) and plain["clock"] == Time(FULL["clock"])
    assert plain["ids"] == [LOW, HIGH]  # a set: a sorted list
    assert plain["triple"] == [7, "seven", Date(datetime.date(2000, 1, 1))]  # a tuple: a list
    assert plain["by_id"] == {HIGH: "high", LOW: "low"}
    assert plain["by_pair"] == {(1, "a"): 10, (2, "b"): 20}  # keys stay as they are
    assert plain["home"] == {"street": "Easy St.", "zipcode": 99999, "phones": ["555-1", "555-2"]}
    assert plain["book"]["work"]["phones"] == ["555-9"]
    plain["vec"].append(9.0)  # a copy: the row is unchanged
    assert row.vec == [0.5, -1.25, 3.0]


def test_to_dict_json_mode_is_what_the_provider_writes(stored):
    with app.app_context():
        row = Everything.get(id=THE_ID, at=AT)
    assert row.to_dict(mode="json") == FULL_JSON
    assert json.loads(json.dumps(row.to_dict(mode="json"))) == FULL_JSON  # plain data: any JSON library


def test_only_and_exclude(stored):
    with app.app_context():
        row = Everything.get(id=THE_ID, at=AT)
    assert row.to_dict(only=["text", "id"]) == {"id": THE_ID, "text": FULL["text"]}
    assert list(row.to_dict(exclude=["blob", "vec"])) == [c for c in Everything._columns if c not in ("blob", "vec")]
    assert row.to_dict(only=("text", "flag", "tiny"), exclude={"tiny"}) == {"text": FULL["text"], "flag": True}
    assert row.home.to_dict(only=["zipcode"]) == {"zipcode": 99999}
    assert row.home.to_dict(exclude=["phones"], mode="json") == {"street": "Easy St.", "zipcode": 99999}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"only": ["text", "colour"]},
            ValueError,
            "Everything has no column 'colour' (in to_dict's only); its columns are id, at,",
        ),
        ({"exclude": ["Text"]}, ValueError, "Everything has no column 'Text' (in to_dict's exclude)"),
        ({"only": "text"}, TypeError, "to_dict(only=...) takes a list of column names, not the string 'text'"),
        ({"mode": "xml"}, ValueError, "mode must be 'python' or 'json', not 'xml'"),
    ],
)
def test_to_dict_refuses_what_it_cannot_honour(options, error, message):
    row = Everything(id=THE_ID, at=AT)
    with pytest.raises(error) as raised:
        row.to_dict(**options)
    assert str(raised.value).startswith(message)


def test_a_user_types_unknown_field_is_named():
    with pytest.raises(
        ValueError, match="Address has no field 'city' \\(in to_dict's only\\); its fields are street, zipcode, phones"
    ):
        Address(street="x").to_dict(only=["city"])


# -- pages ---------------------------------------------------------------------------------------


@pytest.fixture()
def entries(clean_db) -> None:
    for position in range(5):
        Entry.create(owner="ann", position=position, label=f"entry {position}", secret="s")


def test_a_page_is_its_items_and_the_cursor_to_the_next(entries):
    first = fetch("/entries/ann")
    assert set(first) == {"items", "next_cursor", "has_next", "per_page"}
    assert first["items"] == [
        {"owner": "ann", "position": 0, "label": "entry 0", "secret": "s"},
        {"owner": "ann", "position": 1, "label": "entry 1", "secret": "s"},
    ]
    assert (first["has_next"], first["per_page"]) == (True, 2)
    positions = [item["position"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = fetch(f"/entries/ann?cursor={cursor}")
        positions += [item["position"] for item in page["items"]]
        cursor = page["next_cursor"]
        assert page["has_next"] == (cursor is not None)
    assert positions == [0, 1, 2, 3, 4]


def test_page_to_dict_passes_only_and_exclude_to_its_items(entries):
    with app.app_context():
        page = Entry.objects(owner="ann").paginate(per_page=2)
        values = Entry.objects(owner="ann").values_list("position", "label").paginate(per_page=2)
    assert page.to_dict(exclude=["secret", "owner"]) == {
        "items": [{"position": 0, "label": "entry 0"}, {"position": 1, "label": "entry 1"}],
        "next_cursor": page.next_cursor,
        "has_next": True,
        "per_page": 2,
    }
    assert values.to_dict(mode="json")["items"] == [[0, "entry 0"], [1, "entry 1"]]
    with pytest.raises(TypeError, match="only and exclude select columns of models; this page holds lists"):
        values.to_dict(only=["label"])


def test_a_model_that_overrides_to_dict_is_written_its_way(clean_db):
    for name in ("ann", "bob"):
        Profile.create(name=name, password_hash="$2b$12$...")
    with app.test_request_context():
        page = Profile.objects.paginate(per_page=1)
        written = json.loads(jsonify([page, Profile.get(name="bob")]).get_data())
    assert written[0]["items"] in ([{"name": "ann"}], [{"name": "bob"}])
    assert written[1] == {"name": "bob"}
    assert "password_hash" not in json.dumps(written)
    assert Profile(name="x", password_hash="h").to_dict(exclude=["name"]) == {}


# -- the provider, kept or combined with the app's own -------------------------------------------


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents


class MoneyProvider(DefaultJSONProvider):
    """An app's own provider: money as a string, non-ASCII kept as it is."""

    ensure_ascii = False

    def default(self, o: Any) -> Any:
        if isinstance(o, Money):
            return f"{o.cents // 100}.{o.cents % 100:02d} EUR"
        return super().default(o)


class OwnJSON(JSONProvider):
    """A provider of another kind (as one on orjson would be): no ``default`` hook."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return json.dumps(obj, separators=(", ", ": "), default=lambda o: f"<{type(o).__name__}>")

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json.loads(s)


@pytest.fixture(scope="module")
def extra_apps(module_db):
    """Apps on the same extension, created as each test needs them, closed at the end."""
    made: list[Any] = []

    def make(name: str, framework: str = "flask", provider: Any = None, **config: Any) -> Any:
        target = make_framework_app(framework, name, **config)
        if provider is not None:
            target.json = provider(target)
        made.append(target)  # before init_app, which may raise having registered the app
        db.init_app(target)
        return target

    yield make
    for target in made:
        db.shutdown(target)


def test_opting_out_leaves_flasks_own_provider(extra_apps, stored):
    target = extra_apps("json_opt_out", CASSANDRA_JSON_PROVIDER=False)
    assert type(target.json) is DefaultJSONProvider
    with target.test_request_context():
        row = Everything.get(id=THE_ID, at=AT)
        assert jsonify(THE_ID).get_data() == b'"6ba7b810-9dad-11d1-80b4-00c04fd430c8"\n'
        assert jsonify(FULL["moment"]).get_data() == b'"Thu, 29 Feb 2024 23:59:59 GMT"\n'
        assert jsonify(FULL["dec"]).get_data() == b'"-12345.6789"\n'
        with pytest.raises(TypeError, match="Object of type Everything is not JSON serializable"):
            jsonify(row)
        with pytest.raises(TypeError, match="Object of type bytes is not JSON serializable"):
            jsonify(FULL["blob"])
        # to_dict(mode="json") still gives plain data to jsonify.
        assert json.loads(jsonify(row.to_dict(mode="json")).get_data()) == FULL_JSON


def test_the_provider_keeps_flasks_behaviour_for_the_rest(extra_apps):
    class Markup:
        def __html__(self) -> str:
            return "<b>markup</b>"

    with app.test_request_context():
        assert jsonify(Markup()).get_data() == b'"<b>markup</b>"\n'
        with pytest.raises(TypeError, match="Object of type Money is not JSON serializable"):
            jsonify(Money(5))
        assert jsonify({"b": 1, "a": [1, 2]}).get_data() == b'{"a":[1,2],"b":1}\n'
    assert type(app.json) is CassandraJSONProvider


def test_an_apps_own_provider_class_is_kept_and_combined(extra_apps, stored):
    class MoneyApp(Flask):
        json_provider_class = MoneyProvider

    target = MoneyApp("json_money")
    target.config.update(app.config)
    db.init_app(target)
    try:
        assert isinstance(target.json, MoneyProvider) and isinstance(target.json, CassandraJSONProvider)
        with target.test_request_context():
            row = Everything.get(id=THE_ID, at=AT)
            written = json.loads(jsonify({"price": Money(1250), "row": row}).get_data())
            assert written == {"price": "12.50 EUR", "row": FULL_JSON}
            assert "Caf\u00e9".encode() in jsonify(row).get_data()  # ensure_ascii = False kept
            with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
                jsonify(object())
    finally:
        db.shutdown(target)


def test_a_provider_instance_set_before_init_app_keeps_its_settings(extra_apps, stored):
    def compact_off(target: Flask) -> MoneyProvider:
        provider = MoneyProvider(target)
        provider.compact = False
        return provider

    target = extra_apps("json_instance", provider=compact_off)
    with target.test_request_context():
        body = jsonify({"at": AT, "price": Money(7)}).get_data(as_text=True)
    assert body == '{\n  "at": "e2371cd6-e9c0-11f1-a20f-11e7a51ccb9d",\n  "price": "0.07 EUR"\n}\n'


def test_a_provider_of_another_kind_gets_the_data_converted_first(extra_apps, stored):
    target = extra_apps("json_own_kind", provider=OwnJSON)
    with target.test_request_context():
        row = Everything.get(id=THE_ID, at=AT)
        body = jsonify({"row": row, "when": FULL["moment"], "other": Money(1)}).get_data(as_text=True)
    # its own dumps (its separators, its fallback), our values
    assert body.startswith('{"row": {"id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "at": ')
    assert json.loads(body) == {"row": FULL_JSON, "when": "2024-02-29T23:59:59.123Z", "other": "<Money>"}


def test_a_subclass_of_ours_is_left_as_it_is_and_runs_first(extra_apps, stored):
    class EpochTimestamps(CassandraJSONProvider):
        def default(self, o: Any) -> Any:
            if isinstance(o, datetime.datetime):
                return int(o.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
            return super().default(o)

    target = extra_apps("json_subclass", provider=EpochTimestamps)
    assert type(target.json) is EpochTimestamps
    with target.test_request_context():
        written = json.loads(jsonify({"when": FULL["moment"], "id": THE_ID}).get_data())
    assert written == {"when": 1709251199123, "id": str(THE_ID)}


def test_an_app_json_that_is_no_provider_is_a_config_error_naming_the_key(extra_apps):
    class DuckTyped:
        def __init__(self, target: Any) -> None:
            self.target = target

        def dumps(self, obj: Any, **kwargs: Any) -> str:
            return json.dumps(obj)

    with pytest.raises(ConfigError, match="CASSANDRA_JSON_PROVIDER.*app.json is a DuckTyped, not a flask.json"):
        extra_apps("json_duck", provider=DuckTyped, CASSANDRA_LAZY_CONNECT=True)


# -- Quart -------------------------------------------------------------------------------------


def test_a_quart_app_writes_the_same_json(extra_apps, stored, entries):
    from quart import jsonify as quart_jsonify

    target = extra_apps("json_quart", framework="quart")

    @target.get("/everything/<row_id>")
    async def quart_everything(row_id: str):
        return quart_jsonify(await Everything.aget(id=uuid.UUID(row_id), at=AT))

    @target.get("/entries/<owner>")
    async def quart_entries(owner: str):
        return quart_jsonify(await Entry.objects(owner=owner).apaginate(per_page=2))

    assert get(target, f"/everything/{THE_ID}")[1] == get(app, f"/everything/{THE_ID}")[1]
    assert fetch(f"/everything/{THE_ID}", target) == FULL_JSON
    assert fetch("/entries/ann", target)["items"][1] == {
        "owner": "ann",
        "position": 1,
        "label": "entry 1",
        "secret": "s",
    }


def test_a_quart_app_can_opt_out(extra_apps):
    target = extra_apps(
        "json_quart_opt_out", framework="quart", CASSANDRA_JSON_PROVIDER=False, CASSANDRA_LAZY_CONNECT=True
    )
    assert type(target.json) is DefaultJSONProvider
    assert target.json.dumps(FULL["moment"]) == '"Thu, 29 Feb 2024 23:59:59 GMT"'


# -- review fixes -----------------------------------------------------------------------------------

THING_TOKEN = uuid.UUID("12345678-1234-4234-8234-123456789abc")
THING_CREATED = datetime.datetime(2024, 5, 1, 12, 0, 0, 250000)


@pytest.fixture()
def thing(clean_db) -> None:
    Thing.create(pk="a", ck=1, owner="ann", label="one", token=THING_TOKEN, created=THING_CREATED, tags={"x"})


def test_columns_a_query_did_not_read_are_left_out_not_invented(thing):
    with app.test_request_context():
        partial = list(Thing.objects(pk="a").only(["pk", "ck", "label"]))[0]
        deferred = list(Thing.objects(pk="a").defer(["token", "created", "owner"]))[0]
        written = json.loads(jsonify(partial).get_data())
    assert written == {"pk": "a", "ck": 1, "label": "one"}
    assert partial.to_dict() == {"pk": "a", "ck": 1, "label": "one"}
    assert deferred.to_dict() == {"pk": "a", "ck": 1, "label": "one", "tags": ["x"]}
    assert deferred.to_dict(exclude=["token", "tags"]) == {"pk": "a", "ck": 1, "label": "one"}
    with pytest.raises(ValueError, match="'created' was not read") as raised:
        partial.to_dict(only=["label", "created"])
    assert "only()" in str(raised.value) and "pk, ck, label" in str(raised.value)
    # Instances the user makes keep every column, defaults included.
    made = Thing(pk="b", ck=2)
    assert list(made.to_dict()) == list(Thing._columns) and isinstance(made.to_dict()["token"], uuid.UUID)
    with app.app_context():
        assert list(Thing.create(pk="b", ck=3).to_dict()) == list(Thing._columns)
        assert list(Thing.get(pk="a", ck=1).to_dict()) == list(Thing._columns)


def test_a_partial_row_is_still_cqlengines_row(thing):
    with app.app_context():
        partial = list(Thing.objects(pk="a").only(["pk", "ck", "label"]))[0]
        again = list(Thing.objects(pk="a").only(["pk", "ck", "label"]))[0]
        # cqlengine's own view of it is unchanged: every column, defaults filled in
        assert set(partial._as_dict()) == {"pk", "ck", "owner", "label", "token", "created", "tags"}
        assert partial != again  # cqlengine compares the invented tokens too
        copy = pickle.loads(pickle.dumps(partial))
        assert copy == partial and copy._as_dict() == partial._as_dict()
        assert copy.to_dict() == partial.to_dict() == {"pk": "a", "ck": 1, "label": "one"}
        # saving a partial row writes only what changed
        partial.label = "two"
        partial.save()
        assert Thing.get(pk="a", ck=1).to_dict() == {
            "pk": "a",
            "ck": 1,
            "owner": "ann",
            "label": "two",
            "token": THING_TOKEN,
            "created": THING_CREATED,
            "tags": ["x"],
        }
        # a column the user sets afterwards is known again
        again.update(owner="bob", tags={"y"})
        assert again.to_dict() == {"pk": "a", "ck": 1, "owner": "bob", "label": "one", "tags": ["y"]}
        assert Thing.get(pk="a", ck=1).token == THING_TOKEN


def test_a_polymorphic_row_read_through_its_base_leaves_out_the_childs_columns(clean_db):
    with app.test_request_context():
        Dog.create(owner="ann", pet_id=1, name="Rex", tricks=["sit"], born=THING_CREATED)
        through_base = Pet.objects(owner="ann").first()
        through_child = Dog.objects(owner="ann").first()
        base_json = json.loads(jsonify(through_base).get_data())
        child_json = json.loads(jsonify(through_child).get_data())
    assert type(through_base) is Dog
    assert base_json == {"owner": "ann", "pet_id": 1, "kind": "dog", "name": "Rex"}
    assert child_json == {**base_json, "tricks": ["sit"], "born": "2024-05-01T12:00:00.250Z"}
    with pytest.raises(ValueError, match="Dog's column 'born' was not read"):
        through_base.to_dict(only=["name", "born"])


NON_FINITE = [float("nan"), float("inf"), float("-inf")]


def test_non_finite_floats_are_written_as_null(clean_db):
    Everything.create(
        id=THE_ID,
        at=AT,
        single=float("inf"),
        double=float("nan"),
        vec=[float("-inf"), 1.0, float("nan")],
        scores=[1.5, float("nan")],
        groups={"a": {1}},
        triple=(1, "x", None),
    )
    with app.test_request_context():
        row = Everything.get(id=THE_ID, at=AT)
        body = jsonify(row).get_data(as_text=True)
        plain = jsonify({"x": NON_FINITE, "m": {"k": (float("nan"), 2.0)}, "s": {float("inf")}}).get_data(as_text=True)
    for text in (body, plain):
        assert "NaN" not in text and "Infinity" not in text
    answered = json.loads(body)
    assert (answered["single"], answered["double"]) == (None, None)
    assert answered["vec"] == [None, 1.0, None] and answered["scores"] == [1.5, None]
    assert json.loads(plain) == {"x": [None, None, None], "m": {"k": [None, 2.0]}, "s": [None]}
    assert row.to_dict(mode="json")["vec"] == [None, 1.0, None]
    assert math.isnan(row.to_dict()["double"])  # python mode keeps the float
    unsaved = Everything(id=THE_ID, at=AT, by_id={LOW: "x"}, home=Address(street="s", zipcode=1))
    assert unsaved.to_dict(mode="json")["home"]["zipcode"] == 1
    with app.test_request_context():
        assert jsonify(float("nan")).get_data() == b"null\n"
        assert jsonify({"a": 1.5}).get_data() == b'{"a":1.5}\n'


@pytest.mark.parametrize(
    ("stored_moment", "written"),
    [
        (datetime.datetime(9999, 12, 31, 23, 59, 59, 999000), "9999-12-31T23:59:59.999Z"),
        (datetime.datetime(1500, 6, 1, 10, 20, 30, 123000), "1500-06-01T10:20:30.123Z"),
        (datetime.datetime(1, 1, 1, 0, 0, 0, 1000), "0001-01-01T00:00:00.001Z"),
    ],
)
def test_timestamps_far_from_1970_are_written_to_the_stored_millisecond(clean_db, stored_moment, written):
    Everything.create(id=THE_ID, at=AT, moment=stored_moment)
    assert fetch(f"/everything/{THE_ID}")["moment"] == written


@pytest.mark.parametrize(
    ("moment", "written"),
    [
        (datetime.datetime(2024, 1, 1, 0, 0, 0, 122999), "2024-01-01T00:00:00.123Z"),
        (datetime.datetime(2024, 1, 1, 0, 0, 0, 123499), "2024-01-01T00:00:00.123Z"),
        (datetime.datetime(1999, 12, 31, 23, 59, 59, 999500), "2000-01-01T00:00:00.000Z"),
        (datetime.datetime(2024, 2, 28, 23, 59, 59, 999999), "2024-02-29T00:00:00.000Z"),
        (datetime.datetime.max, "9999-12-31T23:59:59.999Z"),
        (datetime.datetime.max.replace(tzinfo=datetime.timezone.utc), "9999-12-31T23:59:59.999Z"),
        (datetime.datetime.min, "0001-01-01T00:00:00.000Z"),
    ],
)
def test_timestamps_are_rounded_to_the_nearest_millisecond(moment, written):
    assert Everything(id=THE_ID, at=AT, moment=moment).to_dict(mode="json")["moment"] == written
    with app.test_request_context():
        assert jsonify(moment).get_data() == f'"{written}"\n'.encode()


def test_a_default_function_set_on_the_provider_instance_runs_after_ours(extra_apps, stored):
    def with_own_default(target: Flask) -> DefaultJSONProvider:
        provider = DefaultJSONProvider(target)

        def default(o: Any) -> Any:
            if isinstance(o, Money):
                return f"{o.cents} cents"
            return DefaultJSONProvider.default(o)

        provider.default = default  # type: ignore[method-assign]
        return provider

    target = extra_apps("json_instance_default", provider=with_own_default)
    with target.test_request_context():
        row = Everything.get(id=THE_ID, at=AT)
        written = json.loads(jsonify({"price": Money(5), "row": row, "when": FULL["moment"]}).get_data())
        with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
            jsonify(object())
    assert written == {"price": "5 cents", "row": FULL_JSON, "when": FULL_JSON["moment"]}
    # installing again does not wrap it twice
    wrapped = target.json.default
    install(target)
    assert target.json.default is wrapped


@pytest.mark.parametrize(
    ("exclude", "expected"),
    [(None, {"name": "ann"}), ((), {"name": "ann"}), (["name"], {}), ((n for n in ["name"]), {}), ({"name"}, {})],
)
def test_the_override_pattern_takes_any_exclude(clean_db, exclude, expected):
    Profile.create(name="ann", password_hash="h")
    with app.app_context():
        row = Profile.get(name="ann")
    assert row.to_dict(exclude=exclude) == expected


def test_the_override_pattern_refuses_a_string_as_to_dict_does(clean_db):
    with pytest.raises(TypeError, match="to_dict\\(exclude=...\\) takes a list of column names, not the string 'name'"):
        Profile(name="x").to_dict(exclude="name")


def test_a_page_applies_an_iterator_of_names_to_every_item(entries):
    with app.app_context():
        page = Entry.objects(owner="ann").paginate(per_page=3)
    assert page.to_dict(exclude=(name for name in ["secret", "owner"]))["items"] == [
        {"position": 0, "label": "entry 0"},
        {"position": 1, "label": "entry 1"},
        {"position": 2, "label": "entry 2"},
    ]
    with pytest.raises(TypeError, match="takes a list of column names, not the string 'label'"):
        page.to_dict(only="label")


def test_sets_are_sorted_not_left_in_the_nodes_order(clean_db):
    # The node orders a set<tuple<int, text>> by its components, a null first;
    # JSON text order puts '[0, "0"]' before '[0, null]'.
    pairs = {(0, None), (0, "0"), (1, None), (1, "1")}
    expected = sorted(pairs, key=lambda pair: json.dumps(list(pair)))
    Everything.create(id=THE_ID, at=AT, pairs=pairs, tags={"b", "a", "C"})
    with app.app_context():
        raw = db.execute(f"SELECT pairs FROM {KEYSPACE}.json_everything").one()["pairs"]
    assert [list(p) for p in raw] != [list(p) for p in expected]  # the node's own order differs
    answered = fetch(f"/everything/{THE_ID}")
    assert answered["pairs"] == [list(p) for p in expected]
    assert answered["tags"] == ["C", "a", "b"]
    made = Everything(id=THE_ID, at=AT, pairs=pairs)
    assert made.to_dict()["pairs"] == [list(p) for p in expected]
