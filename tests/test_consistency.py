"""Consistency levels by name, per query: what reaches the node.

cqlengine passes whatever ``.consistency(...)`` was given on to the
driver's statement, and the driver fails encoding a string. The extension
takes names (``"LOCAL_QUORUM"``) everywhere a level is given: on a
queryset, on a model class, on an instance, on a batch, sync and async.
Each test reads the level from the driver's outgoing request
(``ResponseFuture.message.consistency_level``), as the node received it.
"""

from __future__ import annotations

import asyncio

import pytest
from cassandra import ConsistencyLevel
from cassandra.cqlengine.query import BatchQuery

from flask_cqlalchemy import ConfigError, CQLAlchemy

from .conftest import make_app

app = make_app(__name__, CASSANDRA_CONSISTENCY="ONE")
db = CQLAlchemy(app)


class Gauge(db.Model):
    name = db.columns.Text(primary_key=True)
    level = db.columns.Integer()


class Sent:
    """The consistency level of every request the session sends."""

    def __init__(self) -> None:
        self.levels: list[str] = []

    def __call__(self, future) -> None:
        self.levels.append(ConsistencyLevel.value_to_name[future.message.consistency_level])

    def __enter__(self) -> Sent:
        db.session.add_request_init_listener(self)
        return self

    def __exit__(self, *exc: object) -> None:
        db.session.remove_request_init_listener(self)


@pytest.fixture(scope="module", autouse=True)
def table():
    with app.app_context():
        db.sync_table(Gauge)
        yield
        db.drop_table(Gauge)


def test_names_reach_the_node_sync():
    with app.app_context(), Sent() as sent:
        Gauge.objects.consistency("local_quorum").create(name="a", level=1)
        assert Gauge.objects.consistency("LOCAL_ONE").get(name="a").level == 1
        Gauge.consistency("QUORUM").get(name="a")
        Gauge.objects(name="a").consistency("ALL").update(level=2)
        gauge = Gauge.get(name="a")
        gauge.level = 3
        gauge.consistency("LOCAL_QUORUM").save()
        with BatchQuery(consistency="QUORUM") as batch:
            Gauge.batch(batch).create(name="b", level=4)
        assert Gauge.get(name="b").level == 4
    assert sent.levels == [
        "LOCAL_QUORUM",
        "LOCAL_ONE",
        "QUORUM",
        "ALL",
        "ONE",  # the app's default
        "LOCAL_QUORUM",
        "QUORUM",
        "ONE",
    ]


def test_names_reach_the_node_async():
    async def run() -> int:
        await Gauge.objects.consistency("LOCAL_QUORUM").acreate(name="c", level=5)
        found = await Gauge.objects.consistency("LOCAL_ONE").filter(name="c").afirst()
        rows = await Gauge.consistency("QUORUM").filter(name="c").aall()
        return found.level + rows[0].level

    with app.app_context(), Sent() as sent:
        assert asyncio.run(run()) == 10
    assert sent.levels == ["LOCAL_QUORUM", "LOCAL_ONE", "QUORUM"]


def test_an_unknown_name_is_refused_before_anything_is_sent():
    with app.app_context(), Sent() as sent:
        with pytest.raises(ConfigError, match="consistency: unknown consistency level 'LOCAL_QUORM'"):
            Gauge.objects.consistency("LOCAL_QUORM")
        with pytest.raises(ConfigError, match="unknown consistency level 'MOSTLY'"):
            Gauge.consistency("MOSTLY").get(name="a")
        with pytest.raises(ConfigError, match="unknown consistency level 'MOSTLY'"):
            asyncio.run(Gauge.consistency("MOSTLY").filter(name="a").afirst())
    assert sent.levels == []
