"""Vector columns, storage-attached indexes and ANN queries, on the real node."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import pickle
import random
import struct
import time
from decimal import Decimal
from typing import Any

import pytest
from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cqlengine import ValidationError
from cassandra.cqlengine.models import ModelDefinitionException
from cassandra.cqlengine.query import BatchQuery

from flask_cqlalchemy import CQLAlchemy, InvalidQuery, execution, get_recorded_queries
from flask_cqlalchemy.errors import SchemaError
from flask_cqlalchemy.sai import is_sai, sai_index_statements

from .conftest import KEYSPACE, make_app
from .support.frameworks import FRAMEWORKS, get, make_framework_app

app = make_app(__name__, CASSANDRA_RECORD_QUERIES=True)
db = CQLAlchemy(app)

DIM = 32


class Numbers(db.Model):
    """A vector of every numeric element type the node accepts."""

    __table_name__ = "vector_numbers"
    id = db.columns.Integer(partition_key=True)
    f3 = db.columns.Vector(db.columns.Float, 3)
    f300 = db.columns.Vector(db.columns.Float, 300)
    d = db.columns.Vector(db.columns.Double, 4)
    i = db.columns.Vector(db.columns.Integer, 3)
    big = db.columns.Vector(db.columns.BigInt, 2)
    small = db.columns.Vector(db.columns.SmallInt, 2)
    tiny = db.columns.Vector(db.columns.TinyInt, 2)
    var = db.columns.Vector(db.columns.VarInt, 2)
    dec = db.columns.Vector(db.columns.Decimal, 2)


class Doc(db.Model):
    __table_name__ = "vector_docs"
    id = db.columns.Integer(partition_key=True)
    tag = db.columns.Text(index="sai", index_options={"case_sensitive": False})
    rank = db.columns.Integer(index="sai")
    labels = db.columns.Set(db.columns.Text, index="sai")
    embedding = db.columns.Vector(db.columns.Float, DIM, index="sai", index_options={"similarity_function": "cosine"})
    unindexed = db.columns.Vector(db.columns.Float, DIM)


class Neighbour(db.Model):
    """The 2,000 vectors of the ANN tests, written once per module."""

    __table_name__ = "vector_neighbours"
    id = db.columns.Integer(partition_key=True)
    tag = db.columns.Text(index="sai")
    rank = db.columns.Integer(index="sai")
    embedding = db.columns.Vector(db.columns.Float, DIM, index="sai")


class Passage(db.Model):
    """Passages of a document: ANN within a partition, and a clustering key to order by."""

    __table_name__ = "vector_passages"
    doc = db.columns.Integer(partition_key=True)
    position = db.columns.Integer(primary_key=True)
    embedding = db.columns.Vector(db.columns.Float, 3, index="sai", index_options={"similarity_function": "euclidean"})
    rating = db.columns.Float(db_field="score")


class PlainDoc(db.Model):
    """Doc's columns without any index: what the node says without SAI."""

    __table_name__ = "vector_plain_docs"
    id = db.columns.Integer(partition_key=True)
    tag = db.columns.Text()
    rank = db.columns.Integer()
    labels = db.columns.Set(db.columns.Text)


@pytest.fixture()
def fresh(module_db):
    """The tables of the storage and filter tests emptied (not the ANN corpus)."""
    module_db.truncate(Numbers, Doc, Passage, PlainDoc)
    return module_db


def unit(rng: random.Random, dim: int = DIM) -> list[float]:
    return [rng.gauss(0.0, 1.0) for _ in range(dim)]


def f32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]


# -- declaration ------------------------------------------------------------------


def test_sai_declaration_is_a_custom_index_not_a_legacy_one():
    column = Doc._columns["tag"]
    assert is_sai(column) and not column.index and column.custom_index
    assert not is_sai(PlainDoc._columns["tag"])
    statements = {c: (name, cql) for c, name, cql in sai_index_statements(Doc)}
    assert sorted(statements) == ["embedding", "labels", "rank", "tag"]
    name, cql = statements["embedding"]
    assert name == "vector_docs_embedding_sai_idx"
    assert cql == (
        f"CREATE CUSTOM INDEX IF NOT EXISTS vector_docs_embedding_sai_idx ON {KEYSPACE}.vector_docs "
        "(\"embedding\") USING 'StorageAttachedIndex' WITH OPTIONS = {'similarity_function': 'cosine'}"
    )
    assert statements["rank"][1].endswith("USING 'StorageAttachedIndex'")
    assert "{'case_sensitive': 'false'}" in statements["tag"][1]


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: db.columns.Integer(index="sai", index_options={"case_sensitive": False}), "unknown SAI index option"),
        (lambda: db.columns.Text(index="sai", index_options={"similarity_function": "cosine"}), "unknown SAI"),
        (lambda: db.columns.Text(index="sai", index_options={"normalize": "maybe"}), "must be true or false"),
        (
            lambda: db.columns.Vector(db.columns.Float, 3, index="sai", index_options={"similarity_function": "l2"}),
            "must be one of cosine, dot_product, euclidean",
        ),
        (lambda: db.columns.Vector(db.columns.Double, 3, index="sai"), "needs float elements"),
    ],
)
def test_refused_index_options_fail_at_declaration_naming_the_column(declare, message):
    with pytest.raises(ModelDefinitionException, match=message) as raised:
        type("Bad", (db.Model,), {"id": db.columns.Integer(primary_key=True), "col": declare()})
    assert "Bad.col" in str(raised.value)


def test_a_discriminator_column_with_an_sai_index_is_refused():
    declaration = {
        "id": db.columns.Integer(primary_key=True),
        "kind": db.columns.Text(discriminator_column=True, index="sai"),
    }
    with pytest.raises(ModelDefinitionException, match="Pet.kind: .*index=True"):
        type("Pet", (db.Model,), declaration)


def test_the_node_takes_text_options_on_collection_indexes(module_db):
    """What docs/vector.md says: Cassandra 5.0 takes them (the extension does not declare them yet)."""
    index = "vector_plain_docs_labels_opts"
    db.execute(
        f"CREATE CUSTOM INDEX {index} ON {KEYSPACE}.vector_plain_docs (labels) USING 'StorageAttachedIndex' "
        "WITH OPTIONS = {'case_sensitive': 'false', 'normalize': 'true', 'ascii': 'true'}"
    )
    db.execute(f"DROP INDEX {KEYSPACE}.{index}")


def test_index_options_without_sai_are_refused():
    with pytest.raises(ModelDefinitionException, match='needs index="sai"'):
        db.columns.Text(index_options={"case_sensitive": False})


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("f3", [1.0, 2.0], "must have 3 elements, not 2"),
        ("f3", "abc", "sequence of numbers, not str"),
        ("f3", [1.0, "2", 3.0], "'2' is not a number"),
        ("f3", [1.0, True, 3.0], "True is not a number"),
        ("i", [1, 2.5, 3], "2.5 is not a whole number"),
        ("tiny", [1, 128], "does not fit in a tinyint"),
        ("small", [1, 40000], "does not fit in a smallint"),
    ],
)
def test_validation_errors_name_the_field(column, value, message):
    with pytest.raises(ValidationError, match=message) as raised:
        Numbers(id=1, **{column: value}).validate()
    assert str(raised.value).startswith(column)


def test_an_indexed_vector_refuses_what_the_node_cannot_index(fresh):
    with pytest.raises(ValidationError, match="NaN or infinity"):
        Doc.create(id=1, embedding=[math.nan] + [1.0] * (DIM - 1))
    with pytest.raises(ValidationError, match="zero vector"):
        Doc.create(id=1, embedding=[0.0] * DIM)
    # what counts is the single-precision value the node stores, not the double
    with pytest.raises(ValidationError, match="NaN or infinity"):
        Doc(id=1, embedding=[1e39] + [0.0] * (DIM - 1)).validate()
    with pytest.raises(ValidationError, match="zero vector"):
        Doc(id=1, embedding=[1e-50] + [0.0] * (DIM - 1)).validate()
    with pytest.raises(ValidationError, match="too large"):
        Doc(id=1, embedding=[10**400] + [1.0] * (DIM - 1)).validate()
    # the same values in a vector without an index are stored as they are
    row = Doc.create(id=2, unindexed=[math.inf, math.nan] + [0.0] * (DIM - 2))
    stored = Doc.get(id=row.id).unindexed
    assert stored[0] == math.inf and math.isnan(stored[1])


# -- storage ----------------------------------------------------------------------


def sample_numbers(rng: random.Random, id: int) -> dict[str, Any]:
    return {
        "id": id,
        "f3": [rng.uniform(-1e6, 1e6) for _ in range(3)],
        "f300": [rng.gauss(0, 1) for _ in range(300)],
        "d": [rng.uniform(-1e300, 1e300) for _ in range(4)],
        "i": [rng.randint(-(2**31), 2**31 - 1) for _ in range(3)],
        "big": [rng.randint(-(2**63), 2**63 - 1) for _ in range(2)],
        "small": [-(2**15), 2**15 - 1],
        "tiny": [-128, 127],
        "var": [-(10**40), 10**40],
        "dec": [Decimal("1.25"), Decimal("-3.5")],
    }


def expected(values: dict[str, Any]) -> dict[str, Any]:
    """What the node gives back: single-precision floats as floats."""
    out = dict(values)
    out["f3"] = [f32(x) for x in values["f3"]]
    out["f300"] = [f32(x) for x in values["f300"]]
    return out


def stored(id: int) -> dict[str, Any]:
    row = Numbers.get(id=id)
    return {name: getattr(row, name) for name in Numbers._columns}


def test_round_trip_of_every_subtype_through_create_save_update_and_batch(fresh):
    rng = random.Random(1)
    created = sample_numbers(rng, 1)
    Numbers.create(**created)
    assert stored(1) == expected(created)

    # tuples and any sequence are accepted and become lists
    saved = sample_numbers(rng, 2)
    instance = Numbers(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    assert instance.f3 == saved["f3"]
    instance.save()
    assert stored(2) == expected(saved)

    changed = sample_numbers(rng, 2)
    instance.update(f3=changed["f3"], i=changed["i"])
    assert stored(2)["f3"] == [f32(x) for x in changed["f3"]] and stored(2)["i"] == changed["i"]

    Numbers.objects(id=2).update(d=changed["d"])
    assert stored(2)["d"] == changed["d"]

    batched = sample_numbers(rng, 3)
    with BatchQuery() as batch:
        Numbers.batch(batch).create(**batched)
    assert stored(3) == expected(batched)


def test_async_round_trip_matches_sync(fresh):
    values = sample_numbers(random.Random(2), 4)

    async def scenario() -> dict[str, Any]:
        await Numbers.acreate(**values)
        row = await Numbers.aget(id=4)
        return {name: getattr(row, name) for name in Numbers._columns}

    assert asyncio.run(scenario()) == stored(4) == expected(values)


class FakeArray:
    """What the column uses of a numpy array: ``tolist()`` (numpy is not a dependency)."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def tolist(self) -> list[float]:
        return list(self.values)

    def __eq__(self, other: object) -> Any:  # element-wise, like numpy: no single truth value
        raise AssertionError("compared as a whole")


def test_an_instance_with_vectors_pickles(fresh):
    values = sample_numbers(random.Random(5), 1)
    numbers = pickle.loads(pickle.dumps(Numbers(**values)))
    assert {name: getattr(numbers, name) for name in values} == values
    doc = pickle.loads(pickle.dumps(Doc(id=1, embedding=[0.5] * DIM)))
    assert doc.embedding == [0.5] * DIM
    doc.validate()
    doc.embedding = [0.0] * DIM
    with pytest.raises(ValidationError, match="zero vector"):
        doc.validate()
    numbers.tiny = [1, 128]
    with pytest.raises(ValidationError, match="does not fit in a tinyint"):
        numbers.validate()


def test_array_like_values_are_taken_through_tolist(fresh):
    Numbers.create(id=5, f3=FakeArray([1.5, 2.5, 3.5]))
    assert Numbers.get(id=5).f3 == [1.5, 2.5, 3.5]


#: A double exactly half-way between two single-precision floats whose
#: shortest decimal text lies above it: the node rounds that text up, the
#: driver would round the double to even (down).
HALF_WAY = 1.0 + 2.0**-24


def test_prepared_and_literal_vectors_store_the_same_bits(fresh):
    assert f32(HALF_WAY) == 1.0  # what binding the raw double would store
    route = execution.route_of(db.session)
    for id in (10, 11, 12):  # the first goes unprepared, the others prepared
        Numbers.create(id=id, f3=[HALF_WAY, -HALF_WAY, 0.1])
        route.prepared.settle()
    assert len(route.prepared) > 0
    db.execute(
        f"INSERT INTO {KEYSPACE}.vector_numbers (id, f3) VALUES (%s, %s)", [13, [HALF_WAY, -HALF_WAY, 0.1]]
    )  # cqlengine's literal form
    values = {id: Numbers.get(id=id).f3 for id in (10, 11, 12, 13)}
    assert values[13][0] == 1.0 + 2.0**-23
    assert values[10] == values[11] == values[12] == values[13]


# -- indexes and filters ------------------------------------------------------------


def indexes() -> dict[str, dict[str, str]]:
    rows = db.execute(
        "SELECT index_name, kind, options FROM system_schema.indexes WHERE keyspace_name = %s AND table_name = %s",
        [KEYSPACE, "vector_docs"],
    )
    return {row["index_name"]: {**dict(row["options"]), "kind": row["kind"]} for row in rows}


def test_sync_db_creates_the_sai_indexes_once(module_db):
    for name in indexes():
        db.execute(f"DROP INDEX {KEYSPACE}.{name}")
    assert indexes() == {}
    db.sync_db()
    created = indexes()
    assert sorted(created) == [
        "vector_docs_embedding_sai_idx",
        "vector_docs_labels_sai_idx",
        "vector_docs_rank_sai_idx",
        "vector_docs_tag_sai_idx",
    ]
    assert created["vector_docs_embedding_sai_idx"] == {
        "class_name": "StorageAttachedIndex",
        "kind": "CUSTOM",
        "similarity_function": "cosine",
        "target": "embedding",
    }
    assert created["vector_docs_labels_sai_idx"]["target"] == "values(labels)"
    assert created["vector_docs_tag_sai_idx"]["case_sensitive"] == "false"
    # queryable as soon as sync_db returns
    assert list(Doc.objects.filter(rank=1)) == []
    db.sync_db()
    db.sync_table(Doc)
    assert indexes() == created


def test_sync_db_leaves_an_index_it_did_not_make_and_says_so(module_db, caplog):
    table = f"{KEYSPACE}.vector_docs"
    # the tag index with other options (case-sensitive), a legacy index on rank
    db.execute(f"DROP INDEX {KEYSPACE}.vector_docs_tag_sai_idx")
    db.execute(f"CREATE CUSTOM INDEX vector_docs_tag_sai_idx ON {table} (tag) USING 'StorageAttachedIndex'")
    db.execute(f"DROP INDEX {KEYSPACE}.vector_docs_rank_sai_idx")
    db.execute(f"CREATE INDEX vector_docs_rank_legacy ON {table} (rank)")
    try:
        with caplog.at_level(logging.WARNING, logger="flask_cqlalchemy"):
            db.sync_table(Doc)
        warnings = [r.getMessage() for r in caplog.records]
        assert any(
            "vector_docs_tag_sai_idx exists with options {}" in w and "'case_sensitive': 'false'" in w for w in warnings
        )
        assert any("already has index vector_docs_rank_legacy" in w for w in warnings)
        found = indexes()
        assert "vector_docs_rank_sai_idx" not in found and found["vector_docs_rank_legacy"]["kind"] == "COMPOSITES"
        assert "case_sensitive" not in found["vector_docs_tag_sai_idx"]
    finally:
        db.execute(f"DROP INDEX IF EXISTS {KEYSPACE}.vector_docs_rank_legacy")
        db.execute(f"DROP INDEX IF EXISTS {KEYSPACE}.vector_docs_tag_sai_idx")
        db.sync_table(Doc)
    assert sorted(indexes()) == [
        "vector_docs_embedding_sai_idx",
        "vector_docs_labels_sai_idx",
        "vector_docs_rank_sai_idx",
        "vector_docs_tag_sai_idx",
    ]


def test_sync_db_refuses_an_index_name_taken_by_another_table(module_db):
    first = type(
        "Clash",
        (db.Model,),
        {
            "__table_name__": "vector_clash",
            "id": db.columns.Integer(partition_key=True),
            "x_tag": db.columns.Text(index="sai"),
        },
    )
    second = type(
        "ClashX",
        (db.Model,),
        {
            "__table_name__": "vector_clash_x",
            "id": db.columns.Integer(partition_key=True),
            "tag": db.columns.Text(index="sai"),
        },
    )
    try:
        db.sync_table(first)
        started = time.monotonic()
        with pytest.raises(SchemaError, match="vector_clash_x_tag_sai_idx") as raised:
            db.sync_table(second)
        assert time.monotonic() - started < 10
        assert "vector_clash_x.tag" in str(raised.value) and "table vector_clash " in str(raised.value)
    finally:
        db.execute(f"DROP TABLE IF EXISTS {KEYSPACE}.vector_clash")
        db.execute(f"DROP TABLE IF EXISTS {KEYSPACE}.vector_clash_x")
        del first, second
        gc.collect()
    assert not {"Clash", "ClashX"} & {m.__name__ for m in db.models}


@pytest.fixture()
def docs(fresh):
    for id in range(12):
        Doc.create(id=id, tag=("Red", "green", "BLUE")[id % 3], rank=id, labels={f"l{id % 4}", "all"})
        PlainDoc.create(id=id, tag=("Red", "green", "BLUE")[id % 3], rank=id, labels={f"l{id % 4}", "all"})


@pytest.mark.parametrize(
    ("filters", "where", "found"),
    [
        ({"tag": "red"}, "tag = 'red'", {0, 3, 6, 9}),
        ({"rank__gte": 4, "rank__lt": 7}, "rank >= 4 AND rank < 7", {4, 5, 6}),
        ({"labels__contains": "l1"}, "labels CONTAINS 'l1'", {1, 5, 9}),
        ({"tag": "green", "rank__gt": 5}, "tag = 'green' AND rank > 5", {7, 10}),
    ],
)
def test_sai_filters_need_no_allow_filtering(docs, filters, where, found):
    assert {d.id for d in Doc.objects.filter(**filters)} == found
    assert {d.id for d in asyncio.run(Doc.objects.filter(**filters).aall())} == found
    sent = get_recorded_queries_in_app(lambda: list(Doc.objects.filter(**filters)))
    assert "ALLOW FILTERING" not in sent[-1].cql
    # without the index the node refuses the same query
    with pytest.raises(InvalidRequest, match="ALLOW FILTERING"):
        db.execute(f"SELECT id FROM {KEYSPACE}.vector_plain_docs WHERE {where.replace('red', 'Red')}")


def get_recorded_queries_in_app(run: Any) -> list[Any]:
    with app.app_context():
        run()
        return get_recorded_queries()


# -- ANN ---------------------------------------------------------------------------

N_VECTORS = 2000


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def corpus(module_db) -> dict[int, list[float]]:
    """2,000 random vectors, written once for the ANN tests."""
    module_db.truncate(Neighbour)
    rng = random.Random(13)
    vectors = {id: unit(rng) for id in range(N_VECTORS)}

    async def write() -> None:
        # Two at a time: Cassandra 5.0.9 fails a write to a vector index when
        # more than (its processors + 1) run at once (jvector's pool limit),
        # and the CI machines have two.
        for start in range(0, N_VECTORS, 2):
            await asyncio.gather(
                *(
                    Neighbour.acreate(id=id, embedding=vectors[id], rank=id % 10, tag=("a", "b")[id % 2])
                    for id in range(start, start + 2)
                )
            )

    asyncio.run(write())
    return {id: [f32(x) for x in v] for id, v in vectors.items()}


def brute_force(corpus: dict[int, list[float]], query: list[float], k: int, keep: Any = None) -> list[int]:
    ranked = sorted((id for id in corpus if keep is None or keep(id)), key=lambda id: -cosine(corpus[id], query))
    return ranked[:k]


def recall_at_10(corpus: dict[int, list[float]], candidates: int | None) -> float:
    """Recall@10 of ``ann(..., limit=10, candidates=candidates)`` over 20 random queries."""
    rng = random.Random(99)
    hits = 0
    for _ in range(20):
        query = unit(rng)
        found = list(Neighbour.objects.ann("embedding", query, limit=10, candidates=candidates))
        assert len(found) == 10
        hits += len({d.id for d in found} & set(brute_force(corpus, query, 10)))
    return hits / 200


def test_ann_finds_the_nearest_neighbours_approximately(corpus, record_figure):
    # Cassandra's vector index is approximate (a jvector HNSW graph). On
    # 5.0.9, over these 2,000 random (worst-case) vectors, LIMIT 10 finds 80-91%
    # of the true 10 nearest; candidates=50 (LIMIT 50, the best 10 by score kept), 99%.
    direct, widened = recall_at_10(corpus, None), recall_at_10(corpus, 50)
    record_figure(
        f"ANN recall@10 over {N_VECTORS} random vectors of dimension {DIM}: "
        f"limit=10 {direct:.3f}, limit=10 candidates=50 {widened:.3f}"
    )
    assert direct >= 0.75
    assert widened > 0.9


def test_ann_scores_are_the_cosine_similarity_in_order(corpus):
    query = unit(random.Random(5))
    found = list(Neighbour.objects.ann("embedding", query, limit=10, score=True))
    assert len(found) == 10
    for doc in found:
        # the node's similarity_cosine is (1 + cos) / 2, computed in single precision
        assert doc.score == pytest.approx((1 + cosine(corpus[doc.id], query)) / 2, abs=1e-5)
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)
    assert found[0].id == brute_force(corpus, query, 1)[0]


def test_ann_combines_with_sai_filters(corpus):
    query = unit(random.Random(6))
    found = [d.id for d in Neighbour.objects.filter(rank=3, tag="b").ann("embedding", query, limit=5)]
    assert len(found) == 5 and all(id % 10 == 3 and id % 2 == 1 for id in found)
    assert found[0] == brute_force(corpus, query, 1, keep=lambda id: id % 10 == 3 and id % 2 == 1)[0]
    ranged = [d.id for d in Neighbour.objects.filter(rank__gte=8).ann("embedding", query, limit=5)]
    assert len(ranged) == 5 and all(id % 10 >= 8 for id in ranged)


def test_ann_async_gives_the_sync_answer(corpus):
    query = unit(random.Random(7))
    queryset = Neighbour.objects.filter(rank__lt=5).ann("embedding", query, limit=7, score="euclidean")

    async def both() -> tuple[list[Any], list[Any]]:
        listed = await queryset.aall()
        streamed = [d async for d in queryset]
        return listed, streamed

    listed, streamed = asyncio.run(both())
    sync = list(queryset)
    assert [(d.id, d.score) for d in listed] == [(d.id, d.score) for d in streamed] == [(d.id, d.score) for d in sync]
    assert asyncio.run(queryset.afirst()).id == sync[0].id


def test_candidates_keep_the_best_scored_rows_sync_and_async(corpus):
    query = unit(random.Random(11))
    widened = Neighbour.objects.filter(rank__lt=5).ann("embedding", query, limit=7, candidates=40)
    sent = get_recorded_queries_in_app(lambda: list(widened))
    assert "LIMIT 40" in sent[-1].cql and 'similarity_cosine("embedding", %(' in sent[-1].cql

    async def every_way() -> tuple[list[Any], list[Any], Any]:
        return await widened.aall(), [d async for d in widened], await widened.afirst()

    listed, streamed, first = asyncio.run(every_way())
    sync = list(widened)
    assert len(sync) == 7 and [d.id for d in listed] == [d.id for d in streamed] == [d.id for d in sync]
    assert first.id == widened.first().id == sync[0].id
    assert not any(hasattr(d, "score") for d in [*sync, *listed, *streamed, first])  # not asked for
    # the 7 best by the node's score among the 40 it returns, nearest first
    candidates = list(Neighbour.objects.filter(rank__lt=5).ann("embedding", query, limit=40, score=True))
    best = sorted(candidates, key=lambda d: d.score, reverse=True)[:7]
    assert [d.id for d in sync] == [d.id for d in best]
    scored = asyncio.run(widened.ann("embedding", query, limit=7, candidates=40, score=True).aall())
    assert [(d.id, d.score) for d in scored] == [(d.id, d.score) for d in best]


def test_candidates_without_them_the_query_is_unchanged(corpus):
    query = unit(random.Random(12))
    sent = get_recorded_queries_in_app(lambda: list(Neighbour.objects.ann("embedding", query, limit=4)))
    assert "LIMIT 4" in sent[-1].cql and "similarity" not in sent[-1].cql
    values = Neighbour.objects.ann("embedding", query, limit=4, candidates=20).values_list("id", flat=True)
    assert list(values) == [d.id for d in Neighbour.objects.ann("embedding", query, limit=4, candidates=20)]


def test_ann_binds_the_vector_and_goes_prepared(corpus):
    query = unit(random.Random(8))
    sent = get_recorded_queries_in_app(lambda: list(Neighbour.objects.ann("embedding", query, limit=3, score=True)))
    cql = sent[-1].cql
    assert 'ORDER BY "embedding" ANN OF %(' in cql and "LIMIT 3" in cql
    assert 'similarity_cosine("embedding", %(' in cql
    route = execution.route_of(db.session)
    route.prepared.settle()
    assert route.prepared.lookup(cql) is not None  # the node prepared it: later calls bind
    again = [d.id for d in Neighbour.objects.ann("embedding", query, limit=3)]
    assert again == [d.id for d in Neighbour.objects.ann("embedding", query, limit=3)]


# -- refusals --------------------------------------------------------------------------


REFUSALS = [
    (lambda q: Doc.objects.ann("embedding", q), "needs a LIMIT"),
    (lambda q: Doc.objects.ann("embedding", q, limit=1001), "from 1 to 1000"),
    (lambda q: list(Doc.objects.ann("embedding", q, limit=10).limit(None)), "needs a LIMIT"),
    (lambda q: asyncio.run(Doc.objects.ann("embedding", q, limit=10).limit(5000).aall()), "from 1 to 1000"),
    (lambda q: Doc.objects.ann("unindexed", q, limit=10), "needs an SAI index"),
    (lambda q: Doc.objects.ann("rank", q, limit=10), "needs a Vector column"),
    (lambda q: Doc.objects.ann("embedding", q[:-1], limit=10), f"must have {DIM} elements"),
    (lambda q: Doc.objects.ann("embedding", [math.nan] + q[1:], limit=10), "NaN or infinity"),
    (lambda q: Doc.objects.ann("embedding", [0.0] * DIM, limit=10), "zero vector"),
    (lambda q: Doc.objects.ann("embedding", [1e39] + q[1:], limit=10), "NaN or infinity"),
    (lambda q: Doc.objects.ann("embedding", [1e-50] + [0.0] * (DIM - 1), limit=10), "zero vector"),
    (lambda q: Doc.objects.ann("embedding", [10**400] + q[1:], limit=10), "too large"),
    (lambda q: Doc.objects.ann("embedding", q, limit=10, candidates=9), r"candidates .* from its limit \(10\) to 1000"),
    (lambda q: Doc.objects.ann("embedding", q, limit=10, candidates=1001), "not 1001"),
    (lambda q: Doc.objects.ann("embedding", q, limit=10, candidates=50.0), "not 50.0"),
    (lambda q: Doc.objects.ann("embedding", q, limit=10, candidates=True), "not True"),
    (lambda q: Doc.objects.ann("embedding", q, candidates=50), "needs a LIMIT"),
    (lambda q: list(Doc.objects.ann("embedding", q, limit=10, candidates=50).limit(5)), r"limit \(10\)"),
    (lambda q: Doc.objects.ann("embedding", q, limit=10, candidates=50, score="euclidean"), "ranked by the index"),
    (lambda q: Doc.objects.ann("embedding", q, limit=10).paginate(per_page=5), "cannot be paged"),
    (lambda q: asyncio.run(Doc.objects.ann("embedding", q, limit=10).apaginate(per_page=5)), "cannot be paged"),
    (lambda q: Doc.objects.ann("embedding", q, limit=10).count(), "cannot be counted"),
    (lambda q: list(Passage.objects(doc=1).order_by("-position").ann("embedding", q[:3], limit=2)), "ordered"),
    (
        lambda q: list(Doc.objects.ann("embedding", q, limit=10).consistency(ConsistencyLevel.SERIAL)),
        "serial consistency",
    ),
]


@pytest.mark.parametrize(("run", "rule"), REFUSALS)
def test_refusals_are_raised_before_anything_is_sent(module_db, run, rule):
    query = unit(random.Random(3))
    with app.app_context():
        with pytest.raises(InvalidQuery, match=rule) as raised:
            run(query)
        assert get_recorded_queries() == []
    assert raised.value.code == 400
    assert raised.value.column in ("embedding", "unindexed", "rank")
    assert str(raised.value.description).startswith(f"{raised.value.column}: ")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_refusal_is_a_400_json_in_a_view(module_db, framework):
    view_app = make_framework_app(framework, f"{__name__}.{framework}")
    ext = CQLAlchemy(view_app)
    model = type(
        "ViewDoc",
        (ext.Model,),
        {
            "__table_name__": "vector_docs",
            "id": ext.columns.Integer(partition_key=True),
            "embedding": ext.columns.Vector(ext.columns.Float, DIM, index="sai"),
        },
    )

    @view_app.get("/similar")
    async def similar() -> Any:
        found = await model.objects.ann("embedding", [1.0] * DIM, limit=5000).aall()
        return {"ids": [d.id for d in found]}

    @view_app.get("/similar-widened")
    def similar_widened() -> Any:
        found = model.objects.ann("embedding", [1.0] * DIM, limit=10, candidates=2000)
        return {"ids": [d.id for d in found]}

    try:
        answers = [get(view_app, path) for path in ("/similar", "/similar-widened")]
    finally:
        ext.shutdown()
    for (status, _, headers), rule in zip(answers, ("LIMIT", "candidates"), strict=True):
        assert status == 400 and headers["Content-Type"] == "application/json", rule
    assert [json.loads(body) for _, body, _ in answers] == [
        {
            "error": "invalid query",
            "message": f"embedding: an ANN query's {rule} must be a whole number from {low} to 1000, not {value}",
            "column": "embedding",
        }
        for rule, low, value in (("LIMIT", 1, 5000), ("candidates", "its limit (10)", 2000))
    ]


def test_ann_within_a_partition(fresh):
    for position, vector in enumerate([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.1, 0.0], [5.0, 5.0, 5.0]]):
        Passage.create(doc=1, position=position, embedding=vector)
        Passage.create(doc=2, position=position, embedding=vector)
    found = list(Passage.objects(doc=1).ann("embedding", [1.0, 0.0, 0.0], limit=3, score=True))
    assert [(p.doc, p.position) for p in found] == [(1, 0), (1, 2), (1, 1)]
    # similarity_euclidean is 1 / (1 + squared distance), in single precision
    assert [p.score for p in found] == pytest.approx([1.0, 1 / 1.02, 1 / 3.0], rel=1e-6)


def test_the_score_does_not_overwrite_a_column_stored_as_score(fresh):
    Passage.create(doc=1, position=0, embedding=[1.0, 0.0, 0.0], rating=0.25)
    (found,) = Passage.objects(doc=1).ann("embedding", [0.0, 1.0, 0.0], limit=1, score=True)
    assert found.rating == 0.25 and found.score == pytest.approx(1 / 3.0, rel=1e-6)
    scored = type(
        "Scored",
        (db.Model,),
        {
            "id": db.columns.Integer(partition_key=True),
            "score": db.columns.Float(db_field="points"),
            "v": db.columns.Vector(db.columns.Float, 3, index="sai"),
        },
    )
    with pytest.raises(InvalidQuery, match="would hide the column Scored.score"):
        scored.objects.ann("v", [1.0, 0.0, 0.0], limit=1, score=True)


def test_the_node_agrees_with_the_limits(corpus, module_db):
    """The refusals above are the node's own rules (Cassandra 5.0.9)."""
    vector = "[" + ", ".join(["0.5"] * DIM) + "]"
    table = f"{KEYSPACE}.vector_neighbours"
    with pytest.raises(InvalidRequest, match="not greater than 1000"):
        db.execute(f"SELECT id FROM {table} ORDER BY embedding ANN OF {vector} LIMIT 1001")
    with pytest.raises(InvalidRequest, match="must have a limit"):
        db.execute(f"SELECT id FROM {table} ORDER BY embedding ANN OF {vector}")
    with pytest.raises(InvalidRequest, match="requires the column to be indexed"):
        db.execute(f"SELECT id FROM {KEYSPACE}.vector_docs ORDER BY unindexed ANN OF {vector} LIMIT 3")
    start = time.perf_counter()
    assert len(list(db.execute(f"SELECT id FROM {table} ORDER BY embedding ANN OF {vector} LIMIT 1000"))) == 1000
    assert time.perf_counter() - start < 10
