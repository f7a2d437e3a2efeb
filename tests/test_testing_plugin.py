"""The pytest plugin ``flask_cqlalchemy.testing``, run on a small user test suite
(through pytester, in a subprocess) against the real node."""

from __future__ import annotations

import textwrap

import pytest
from cassandra.cluster import Cluster

from .conftest import HOSTS

pytest_plugins = ["pytester"]


def user_conftest(framework: str = "flask") -> str:
    """The user's conftest.py: a Flask or Quart app, its models, and ``count_notes()``
    asking the app's ``/count`` view (through the framework's test client)."""
    app_class = "Quart" if framework == "quart" else "Flask"
    if framework == "quart":
        ask = "asyncio.run(app.test_client().get('/count'))"
        body = "asyncio.run(response.get_data(as_text=True))"
    else:
        ask = "app.test_client().get('/count')"
        body = "response.get_data(as_text=True)"
    return (
        USER_CONFTEST.replace("FRAMEWORK", framework)
        .replace("APP_CLASS", app_class)
        .replace("ASK", ask)
        .replace("BODY", body)
    )


USER_CONFTEST = textwrap.dedent(
    f"""
    import asyncio
    import uuid

    import pytest
    from FRAMEWORK import APP_CLASS

    from flask_cqlalchemy import CQLAlchemy

    pytest_plugins = ["flask_cqlalchemy.testing"]

    # The app's real keyspace does not exist: the tests never touch it.
    app = APP_CLASS("user_app")
    app.config.update(
        CASSANDRA_HOSTS={HOSTS!r},
        CASSANDRA_KEYSPACE="flask_cqlalchemy_plugin_real",
        CASSANDRA_LAZY_CONNECT=True,
    )
    db = CQLAlchemy(app)


    class Address(db.UserType):
        street = db.columns.Text()


    class Note(db.Model):
        note_id = db.columns.UUID(primary_key=True, default=uuid.uuid4)
        title = db.columns.Text()


    class Place(db.Model):
        name = db.columns.Text(primary_key=True)
        address = db.columns.UserDefinedType(Address)


    @app.get("/count")
    async def count():
        return str(await Note.objects.acount())


    def count_notes():
        response = ASK
        assert response.status_code == 200
        return int(BODY)


    @pytest.fixture(scope="session")
    def cql_app():
        yield app
        db.shutdown()
    """
)

USER_TESTS = textwrap.dedent(
    """
    from pathlib import Path

    from conftest import Address, Note, Place, count_notes


    def test_keyspace_is_made_and_synced(cql_clean_db, cql_keyspace):
        Path("keyspace.txt").write_text(cql_keyspace)
        cluster = cql_clean_db.cluster
        cluster.refresh_schema_metadata()
        assert set(cluster.metadata.keyspaces[cql_keyspace].tables) == {"note", "place"}
        assert set(cluster.metadata.keyspaces[cql_keyspace].user_types) == {"address"}
        assert Note._get_keyspace() == cql_keyspace
        Note.create(title="first")
        Place.create(name="home", address=Address(street="Main St"))
        assert Note.objects.count() == 1


    def test_tables_are_emptied_between_tests(cql_clean_db):
        assert Note.objects.count() == 0
        assert Place.objects.count() == 0
        Note.create(title="second")
        Note.create(title="third")
        assert count_notes() == 2  # the app's view reads the test keyspace


    def test_and_again(cql_clean_db):
        assert Note.objects.count() == 0
        place = Place.create(name="work", address=Address(street="Side St"))
        assert Place.objects.get(name="work").address.street == "Side St"
    """
)


@pytest.fixture()
def cluster():
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect()
    yield cluster, session
    cluster.shutdown()


def keyspaces(cluster) -> set[str]:
    cluster.refresh_schema_metadata()
    return set(cluster.metadata.keyspaces)


@pytest.mark.parametrize("framework", ["flask", "quart"])
def test_plugin_makes_syncs_empties_and_drops_a_keyspace(pytester: pytest.Pytester, cluster, framework):
    pytester.makeconftest(user_conftest(framework))
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3)
    keyspace = (pytester.path / "keyspace.txt").read_text()
    assert keyspace.startswith("test_") and len(keyspace) == len("test_") + 8
    present = keyspaces(cluster[0])
    assert keyspace not in present  # dropped at the end of the session
    assert "flask_cqlalchemy_plugin_real" not in present  # the app's own keyspace was never needed


@pytest.mark.parametrize("framework", ["flask", "quart"])
def test_keep_keyspace_option_and_prefix(pytester: pytest.Pytester, cluster, framework):
    pytester.makeconftest(user_conftest(framework))
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.makeini("[pytest]\ncql_keyspace_prefix = flask_cqlalchemy_plugin_\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--cql-keep-keyspace")
    keyspace = (pytester.path / "keyspace.txt").read_text()
    try:
        result.assert_outcomes(passed=3)
        assert keyspace.startswith("flask_cqlalchemy_plugin_")
        result.stdout.fnmatch_lines(
            [f"flask-cqlalchemy kept keyspace(s) {keyspace} (drop with `{framework} cql drop-keyspace NAME`)"]
        )
        cluster[0].refresh_schema_metadata()
        kept = cluster[0].metadata.keyspaces[keyspace]
        assert set(kept.tables) == {"note", "place"}
        # The last test's row is still there: nothing is emptied after a test.
        assert cluster[1].execute(f"SELECT name FROM {keyspace}.place").one().name == "work"
    finally:
        cluster[1].execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def test_missing_cql_app_fixture_is_explained(pytester: pytest.Pytester):
    pytester.makeconftest('pytest_plugins = ["flask_cqlalchemy.testing"]\n')
    pytester.makepyfile(test_user="def test_one(cql_clean_db):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*flask_cqlalchemy.testing needs your app: define a session-scoped fixture in conftest.py,*"]
    )


def test_app_without_extension_is_explained(pytester: pytest.Pytester):
    pytester.makeconftest(
        textwrap.dedent(
            """
            import pytest
            from flask import Flask

            pytest_plugins = ["flask_cqlalchemy.testing"]

            @pytest.fixture(scope="session")
            def cql_app():
                return Flask("plain")
            """
        )
    )
    pytester.makepyfile(test_user="def test_one(cql_clean_db):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*app 'plain' has no CQLAlchemy: call db.init_app(app)*"])


def test_models_with_their_own_keyspace_are_left_alone(pytester: pytest.Pytester, cluster):
    pytester.makeconftest(
        user_conftest()
        + textwrap.dedent(
            """

            class Elsewhere(db.Model):
                __keyspace__ = "flask_cqlalchemy_plugin_other"
                key = db.columns.Text(primary_key=True)
            """
        )
    )
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["*KeyspaceWarning: not synced into the test keyspace test_*: Elsewhere (flask_cqlalchemy_plugin_other)*"]
    )
    assert "flask_cqlalchemy_plugin_other" not in keyspaces(cluster[0])
