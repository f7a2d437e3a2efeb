"""The pytest plugin ``flask_cqlalchemy.testing``, run on a small user test suite
(through pytester, in a subprocess) against the real node."""

from __future__ import annotations

import textwrap

import pytest
from cassandra.cluster import Cluster

from .conftest import HOSTS

pytest_plugins = ["pytester"]

USER_CONFTEST = textwrap.dedent(
    f"""
    import uuid

    import pytest
    from flask import Flask

    from flask_cqlalchemy import CQLAlchemy

    pytest_plugins = ["flask_cqlalchemy.testing"]

    # The app's real keyspace does not exist: the tests never touch it.
    app = Flask("user_app")
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


    @pytest.fixture(scope="session")
    def cql_app():
        yield app
        db.shutdown()
    """
)

USER_TESTS = textwrap.dedent(
    """
    from pathlib import Path

    from conftest import Address, Note, Place


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


def test_plugin_makes_syncs_empties_and_drops_a_keyspace(pytester: pytest.Pytester, cluster):
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3)
    keyspace = (pytester.path / "keyspace.txt").read_text()
    assert keyspace.startswith("test_") and len(keyspace) == len("test_") + 8
    present = keyspaces(cluster[0])
    assert keyspace not in present  # dropped at the end of the session
    assert "flask_cqlalchemy_plugin_real" not in present  # the app's own keyspace was never needed


def test_keep_keyspace_option_and_prefix(pytester: pytest.Pytester, cluster):
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.makeini("[pytest]\ncql_keyspace_prefix = flask_cqlalchemy_plugin_\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--cql-keep-keyspace")
    keyspace = (pytester.path / "keyspace.txt").read_text()
    try:
        result.assert_outcomes(passed=3)
        assert keyspace.startswith("flask_cqlalchemy_plugin_")
        result.stdout.fnmatch_lines([f"flask-cqlalchemy kept keyspace(s) {keyspace} (drop with*"])
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
        USER_CONFTEST
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
