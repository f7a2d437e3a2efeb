"""The sync extension against the real node: models, schema helpers, apps."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
import warnings

import pytest
from cassandra.cluster import NoHostAvailable
from cassandra.cqlengine import ValidationError
from cassandra.cqlengine import columns as plain_columns
from cassandra.cqlengine.models import Model as PlainModel
from flask import Flask
from werkzeug.exceptions import NotFound

from flask_cqlalchemy import CQLAlchemy, NotInitializedError, SchemaError
from flask_cqlalchemy.config import validate_keyspace_name
from flask_cqlalchemy.errors import ConfigError

from .conftest import KEYSPACE, make_app

app = make_app(__name__)
db = CQLAlchemy(app)


class ExtUser(db.Model):
    uid = db.columns.UUID(primary_key=True, default=uuid.uuid4)
    username = db.columns.Text(required=False)
    email = db.columns.Text(max_length=50)


class Timestamped(db.Model):
    __abstract__ = True
    created = db.columns.DateTime()


class ExtNote(Timestamped):
    note_id = db.columns.UUID(primary_key=True, default=uuid.uuid4)
    body = db.columns.Text()


class ExtPet(db.Model):
    owner = db.columns.Text(partition_key=True)
    pet_id = db.columns.Integer(primary_key=True)
    kind = db.columns.Text(discriminator_column=True)
    name = db.columns.Text()


class ExtCat(ExtPet):
    __discriminator_value__ = "cat"
    lives = db.columns.Integer()


class ExtDog(ExtPet):
    __discriminator_value__ = "dog"
    good = db.columns.Boolean()


class ExtAddress(db.UserType):
    street = db.columns.Text()
    zipcode = db.columns.Integer()


class ExtResident(db.Model):
    name = db.columns.Text(primary_key=True)
    addr = db.columns.UserDefinedType(ExtAddress)


class NotOurs(PlainModel):
    """A cqlengine model outside the extension: sync_db must leave it alone."""

    __keyspace__ = KEYSPACE
    key = plain_columns.Text(primary_key=True)


def tables() -> set[str]:
    db.cluster.refresh_schema_metadata()
    return set(db.cluster.metadata.keyspaces[KEYSPACE].tables)


def test_sync_db_creates_exactly_this_extensions_concrete_models(module_db):
    found = tables()
    assert {"ext_user", "ext_note", "ext_pet", "ext_resident"} <= found
    assert "timestamped" not in found
    assert "not_ours" not in found
    assert set(db.models) >= {ExtUser, ExtNote, ExtPet, ExtCat, ExtDog, ExtResident}
    assert Timestamped not in db.models and NotOurs not in db.models


def test_sync_db_adds_polymorphic_children_columns(module_db):
    columns = db.cluster.metadata.keyspaces[KEYSPACE].tables["ext_pet"].columns
    assert {"lives", "good", "kind"} <= set(columns)


def test_sync_db_is_repeatable_and_silent_about_schema_management(module_db, caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        db.sync_db()
    assert "CQLENG_ALLOW_SCHEMA_MANAGEMENT" not in caplog.text


def test_create_get_update_delete(clean_db):
    user = ExtUser.create(username="John Doe", email="john@example.com")
    fetched = ExtUser.get(uid=user.uid)
    assert fetched.username == "John Doe"
    fetched.update(username="Jane")
    assert ExtUser.get(uid=user.uid).username == "Jane"
    fetched.delete()
    with pytest.raises(ExtUser.DoesNotExist):
        ExtUser.get(uid=user.uid)


def test_validation_error_writes_nothing(clean_db):
    with pytest.raises(ValidationError, match="email"):
        ExtUser.create(username="x", email="y" * 51)
    assert ExtUser.objects.count() == 0


def test_abstract_base_columns_are_inherited(clean_db):
    note = ExtNote.create(body="hello")
    assert ExtNote.get(note_id=note.note_id).body == "hello"


def test_polymorphic_models_round_trip(clean_db):
    ExtCat.create(owner="ann", pet_id=1, name="Tom", lives=9)
    ExtDog.create(owner="ann", pet_id=2, name="Rex", good=True)
    pets = sorted(ExtPet.objects(owner="ann"), key=lambda p: p.pet_id)
    assert [type(p) for p in pets] == [ExtCat, ExtDog]
    # As in cqlengine, a query on the base selects the base's columns only.
    assert [p.name for p in pets] == ["Tom", "Rex"]
    assert ExtCat.get(owner="ann", pet_id=1).lives == 9
    assert ExtDog.get(owner="ann", pet_id=2).good is True


def test_user_defined_type_round_trip(clean_db):
    ExtResident.create(name="Joe", addr=ExtAddress(street="Easy St.", zipcode=99999))
    joe = ExtResident.get(name="Joe")
    assert isinstance(joe.addr, ExtAddress)
    assert (joe.addr.street, joe.addr.zipcode) == ("Easy St.", 99999)
    assert "ext_address" in db.cluster.metadata.keyspaces[KEYSPACE].user_types


def test_get_or_404(clean_db):
    user = ExtUser.create(username="x")
    with app.test_request_context():
        assert ExtUser.get_or_404(uid=user.uid).uid == user.uid
        with pytest.raises(NotFound):
            ExtUser.get_or_404(uid=uuid.uuid4())
        with pytest.raises(NotFound):
            ExtUser.objects.filter(uid=uuid.uuid4()).first_or_404()
        assert ExtUser.objects.filter(uid=user.uid).first_or_404().uid == user.uid


def test_execute_binds_params(clean_db):
    user = ExtUser.create(username="param")
    rows = list(db.execute(f"SELECT username FROM {KEYSPACE}.ext_user WHERE uid = %s", [user.uid]))
    assert rows == [{"username": "param"}]


def test_values_carrying_cql_are_stored_as_data(clean_db):
    evil = "x'); DROP TABLE ext_user; --"
    user = ExtUser.create(username=evil)
    assert ExtUser.get(uid=user.uid).username == evil
    assert "ext_user" in tables()


def test_truncate_empties_tables(clean_db):
    ExtUser.create(username="a")
    db.truncate(ExtUser)
    assert ExtUser.objects.count() == 0


def test_keyspace_helpers_and_set_keyspace(module_db):
    other = "flask_cqlalchemy_other"
    db.drop_keyspace(other)
    db.create_keyspace_simple(other, replication_factor=1)
    try:
        db.set_keyspace(other)
        assert ExtUser._get_keyspace() == other
        db.sync_table(ExtUser)
        ExtUser.create(username="in other")
        assert ExtUser.objects.count() == 1
        db.set_keyspace()
        assert ExtUser._get_keyspace() == KEYSPACE
        assert ExtUser.objects.filter(username="in other").allow_filtering().count() == 0
    finally:
        db.set_keyspace()
        db.drop_keyspace(other)
    db.cluster.refresh_schema_metadata()
    assert other not in db.cluster.metadata.keyspaces


@pytest.mark.parametrize("name", ["bad'name", "x; DROP KEYSPACE system", "", "a" * 49, "1abc"])
def test_keyspace_names_with_cql_are_refused(module_db, name):
    with pytest.raises(ConfigError, match="keyspace name"):
        db.create_keyspace_simple(name, 1)
    with pytest.raises(ConfigError, match="keyspace name"):
        db.set_keyspace(name)
    with pytest.raises(ConfigError, match="keyspace name"):
        validate_keyspace_name(name)


def test_sync_db_names_a_missing_keyspace():
    other_app = make_app("missing_ks", CASSANDRA_KEYSPACE="flask_cqlalchemy_absent")
    other = CQLAlchemy(other_app)

    class Lonely(other.Model):
        key = other.columns.Text(primary_key=True)

    try:
        with pytest.raises(SchemaError, match="'flask_cqlalchemy_absent' does not exist"):
            other.sync_db()
    finally:
        other.shutdown()


def test_second_init_app_on_same_app_is_refused():
    with pytest.raises(RuntimeError, match="already registered"):
        CQLAlchemy().init_app(app)


def test_use_before_init_app_is_a_clear_error():
    lonely = CQLAlchemy()

    class Orphan(lonely.Model):
        key = lonely.columns.Text(primary_key=True)

    with pytest.raises(NotInitializedError, match="init_app"):
        Orphan.objects.count()


def test_app_factory_and_two_apps_with_two_extensions(module_db):
    """Two apps, each with its own extension and keyspace, in one process."""
    second_db = CQLAlchemy()

    class FactoryItem(second_db.Model):
        key = second_db.columns.Text(primary_key=True)

    def create_app() -> Flask:
        new_app = make_app("factory")
        second_db.init_app(new_app)
        return new_app

    factory_app = create_app()
    try:
        with factory_app.app_context():
            second_db.sync_db()
            second_db.truncate()
            FactoryItem.create(key="a")
            assert FactoryItem.objects.count() == 1
            assert FactoryItem._get_connection() != ExtUser._get_connection()
        assert FactoryItem not in db.models and ExtUser not in second_db.models
        ExtUser.create(username="first app")
        assert ExtUser.objects.filter(username="first app").allow_filtering().count() >= 1
    finally:
        second_db.shutdown()


def test_lazy_connect_defers_the_connection():
    lazy_app = make_app("lazy", CASSANDRA_LAZY_CONNECT=True)
    lazy = CQLAlchemy(lazy_app)
    try:
        connection = lazy.state().connection_name
        from cassandra.cqlengine import connection as registry

        assert registry._connections[connection].session is None
        assert lazy.execute("SELECT release_version FROM system.local").one()["release_version"].startswith("5.0")
        assert registry._connections[connection].session is not None
    finally:
        lazy.shutdown()


def test_unreachable_host_fails_at_init_unless_lazy_or_retry(caplog):
    config = {"CASSANDRA_HOSTS": ["127.0.0.1"], "CASSANDRA_PORT": 1, "CASSANDRA_SETUP_KWARGS": {"connect_timeout": 1}}
    with pytest.raises(NoHostAvailable):
        CQLAlchemy(make_app("down", **config))
    lazy = CQLAlchemy(make_app("down_lazy", CASSANDRA_LAZY_CONNECT=True, **config))
    with pytest.raises(NoHostAvailable):
        lazy.execute("SELECT now() FROM system.local")
    lazy.shutdown()
    with caplog.at_level(logging.WARNING, logger="flask_cqlalchemy"):
        retry = CQLAlchemy(make_app("down_retry", CASSANDRA_RETRY_CONNECT=True, **config))
    assert "retry on first use" in caplog.text
    with pytest.raises(NoHostAvailable):
        retry.execute("SELECT now() FROM system.local")
    retry.shutdown()


def test_shutdown_closes_the_cluster():
    closing = CQLAlchemy(make_app("closing"))
    cluster = closing.cluster
    closing.shutdown()
    assert cluster.is_shutdown
    with pytest.raises(NotInitializedError):
        closing.state()


def test_shell_context_has_db_and_models():
    context = app.make_shell_context()
    assert context["db"] is db and context["ExtUser"] is ExtUser


def test_consistency_config_reaches_the_session():
    strict = CQLAlchemy(make_app("strict", CASSANDRA_CONSISTENCY="LOCAL_ONE"))
    try:
        from cassandra import ConsistencyLevel

        profile = strict.cluster.profile_manager.default
        assert profile.consistency_level == ConsistencyLevel.LOCAL_ONE
    finally:
        strict.shutdown()


def test_app_factory_with_user_defined_type_declared_before_init_app():
    factory_db = CQLAlchemy()

    class FactoryAddress(factory_db.UserType):
        street = factory_db.columns.Text()

    class FactoryHome(factory_db.Model):  # a UDT column: cqlengine asks for the keyspace right here
        name = factory_db.columns.Text(primary_key=True)
        addr = factory_db.columns.UserDefinedType(FactoryAddress)

    with pytest.raises(NotInitializedError):
        FactoryHome.objects.count()
    factory_app = make_app("udt_factory")
    factory_db.init_app(factory_app)
    try:
        factory_db.sync_db()
        FactoryHome.create(name="home", addr=FactoryAddress(street="Main St."))
        assert FactoryHome.get(name="home").addr.street == "Main St."
    finally:
        factory_db.drop_table(FactoryHome)
        factory_db.shutdown()


def test_failed_lazy_connect_tries_again_at_next_use():
    config = {"CASSANDRA_LAZY_CONNECT": True, "CASSANDRA_SETUP_KWARGS": {"connect_timeout": 1}}
    lazy_app = make_app("lazy_retry", CASSANDRA_PORT=1, **config)
    lazy = CQLAlchemy(lazy_app)
    try:
        for _ in range(2):  # each use tries again, with the same clear error
            with pytest.raises(NoHostAvailable):
                lazy.execute("SELECT release_version FROM system.local")
        # The cluster comes back (here: the right port) and the same extension works.
        from cassandra.cqlengine import connection as registry

        registry._connections[lazy.state().connection_name].cluster_options["port"] = 9042
        assert lazy.execute("SELECT release_version FROM system.local").one()["release_version"].startswith("5.0")
    finally:
        lazy.shutdown()


def test_concurrent_first_queries_of_a_lazy_app_all_succeed():
    import threading

    from flask_cqlalchemy.aio import AsyncCQLAlchemy

    lazy_app = make_app("lazy_burst", CASSANDRA_LAZY_CONNECT=True)
    lazy = AsyncCQLAlchemy(lazy_app)
    barrier = threading.Barrier(8)
    outcomes: list[object] = []

    def first_query(use_async: bool) -> None:
        barrier.wait()
        try:
            if use_async:
                rows = asyncio.run(lazy.execute("SELECT release_version FROM system.local"))
            else:
                rows = list(lazy.sync.execute("SELECT release_version FROM system.local"))
            outcomes.append(rows[0]["release_version"][:3])
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes.append(exc)

    threads = [threading.Thread(target=first_query, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert outcomes == ["5.0"] * 8
    finally:
        lazy.sync.shutdown()


def test_shutdown_of_one_app_leaves_the_others():
    shared = CQLAlchemy()
    first, second = make_app("first_of_two"), make_app("second_of_two")
    shared.init_app(first)
    shared.init_app(second)
    shared.shutdown(first)
    assert "cqlalchemy" not in first.extensions
    with second.app_context():
        assert shared.execute("SELECT release_version FROM system.local").one()
    shared.shutdown()


def test_views_answer_400_for_bad_filters_404_for_missing_rows(clean_db):
    ExtUser.create(username="known")
    views = make_app("error_views")
    views_db = CQLAlchemy(views)

    class ViewUser(views_db.Model):
        __table_name__ = "ext_user"
        uid = views_db.columns.UUID(primary_key=True, default=uuid.uuid4)
        username = views_db.columns.Text(required=False)
        email = views_db.columns.Text(max_length=50)

    @views.get("/by/<field>/<value>")
    def by_field(field: str, value: str):
        return {"n": len(list(ViewUser.objects.filter(**{field: value}).allow_filtering()))}

    @views.get("/get/<value>")
    def get_one(value: str):
        return {"name": ViewUser.get(uid=uuid.UUID(value)).username}

    @views.get("/all")
    def get_any():
        return {"name": ViewUser.objects.allow_filtering().get().username}

    try:
        client = views.test_client()
        assert client.get("/by/username/known").json == {"n": 1}
        unknown = client.get("/by/no_such_column/x")
        assert unknown.status_code == 400 and "no_such_column" in unknown.json["message"]
        wrong_type = client.get("/by/uid/not-a-uuid")
        assert wrong_type.status_code == 400
        missing = client.get(f"/get/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json["error"] == "not found"
        ExtUser.create(username="second")
        assert client.get("/all").status_code == 500  # the code's mistake: not passed off as a 4xx
        assert ExtUser.objects.count() == 2  # nothing written by the rejected requests
    finally:
        views_db.shutdown()


def test_connections_to_the_node_send_without_delay():
    """Every pooled connection has TCP_NODELAY: concurrent queries are not held back by Nagle."""
    ext = CQLAlchemy(make_app("nodelay"))
    try:
        ext.session.execute("SELECT release_version FROM system.local")
        pools = list(ext.session.get_pools())
        assert pools
        for pool in pools:
            for connection in pool.get_connections():
                assert connection._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        ext.shutdown()
