"""Cursor pagination on Cassandra's paging state, sync and async."""

from __future__ import annotations

import asyncio

import pytest
from flask import jsonify, request

from flask_cqlalchemy import CQLAlchemy, InvalidCursor, InvalidPageSize

from .conftest import make_app

app = make_app(__name__, CASSANDRA_MAX_PER_PAGE=50)
db = CQLAlchemy(app)


class PagedItem(db.Model):
    owner = db.columns.Text(partition_key=True)
    position = db.columns.Integer(primary_key=True)
    label = db.columns.Text()


@app.get("/items/<owner>")
async def list_items(owner: str):
    page = await PagedItem.objects(owner=owner).apaginate(
        per_page=request.args.get("per_page", 3), cursor=request.args.get("cursor")
    )
    return jsonify(items=[i.position for i in page.items], next_cursor=page.next_cursor, has_next=page.has_next)


@pytest.fixture()
def items(clean_db):
    for position in range(10):
        PagedItem.create(owner="ann", position=position, label=f"l{position}")
    for position in range(4):
        PagedItem.create(owner="bob", position=position, label=f"b{position}")


def walk(per_page: int, owner: str = "ann") -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = PagedItem.objects(owner=owner).paginate(per_page=per_page, cursor=cursor)
        pages.append([i.position for i in page.items])
        if not page.has_next:
            return pages
        cursor = page.next_cursor


def test_sync_pages_cover_every_row_once(items):
    assert walk(3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


@pytest.mark.parametrize("per_page", [5, 10])
def test_page_ending_on_the_last_row_has_no_next(items, per_page):
    pages = walk(per_page)
    assert [p for page in pages for p in page] == list(range(10))
    assert all(len(page) == per_page for page in pages)


def test_async_pages_match_sync(items):
    async def walk_async() -> list[list[int]]:
        pages, cursor = [], None
        while True:
            page = await PagedItem.objects(owner="ann").apaginate(per_page=4, cursor=cursor)
            pages.append([i.position for i in page.items])
            if page.next_cursor is None:
                return pages
            cursor = page.next_cursor

    assert asyncio.run(walk_async()) == walk(4)


def test_cursor_is_url_safe_and_last_page_has_none(items):
    page = PagedItem.objects(owner="ann").paginate(per_page=7)
    assert page.has_next and all(c.isalnum() or c in "-_" for c in page.next_cursor)
    last = PagedItem.objects(owner="ann").paginate(per_page=7, cursor=page.next_cursor)
    assert [i.position for i in last.items] == [7, 8, 9] and last.next_cursor is None and not last.has_next


def test_tampered_truncated_and_garbage_cursors_are_400(items):
    cursor = PagedItem.objects(owner="ann").paginate(per_page=3).next_cursor
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    for bad in (flipped, cursor[:12], cursor[:-3], "!!!not-base64!!!", "", "AA", 42):
        with pytest.raises(InvalidCursor) as info:
            PagedItem.objects(owner="ann").paginate(per_page=3, cursor=bad)
        assert info.value.code == 400 and "cursor" in str(info.value)


def test_cursor_of_another_query_is_refused(items):
    ann_cursor = PagedItem.objects(owner="ann").paginate(per_page=2).next_cursor
    with pytest.raises(InvalidCursor, match="different query"):
        PagedItem.objects(owner="bob").paginate(per_page=2, cursor=ann_cursor)


@pytest.mark.parametrize("per_page", [0, -1, 51, 10**9, "abc", "3.5", None, True, 2.0])
def test_per_page_out_of_bounds_is_400(items, per_page):
    with pytest.raises(InvalidPageSize) as info:
        PagedItem.objects(owner="ann").paginate(per_page=per_page)
    assert info.value.code == 400 and "per_page" in str(info.value)


def test_views_answer_400_never_500(items):
    client = app.test_client()
    first = client.get("/items/ann?per_page=4").json
    assert first["items"] == [0, 1, 2, 3] and first["has_next"]
    second = client.get(f"/items/ann?per_page=4&cursor={first['next_cursor']}").json
    assert second["items"] == [4, 5, 6, 7]
    for query in (
        "per_page=0",
        "per_page=abc",
        "per_page=1000",
        "cursor=garbage",
        f"cursor={first['next_cursor'][:-2]}",
    ):
        response = client.get(f"/items/ann?{query}")
        assert response.status_code == 400, (query, response.status_code)
    assert client.get(f"/items/bob?cursor={first['next_cursor']}").status_code == 400


def test_cursor_signed_with_another_secret_is_refused(items):
    other_app = make_app("other_secret", SECRET_KEY="a different secret")
    other = CQLAlchemy(other_app)

    class PagedItem(other.Model):  # same table, another app's extension
        owner = other.columns.Text(partition_key=True)
        position = other.columns.Integer(primary_key=True)
        label = other.columns.Text()

    try:
        cursor = PagedItem.objects(owner="ann").paginate(per_page=2).next_cursor
        with pytest.raises(InvalidCursor):
            globals()["PagedItem"].objects(owner="ann").paginate(per_page=2, cursor=cursor)
    finally:
        other.shutdown()


def test_pages_walk_past_cqlengines_default_limit_of_10000(clean_db):
    async def load():
        for start in range(0, 10_005, 500):
            await asyncio.gather(
                *(PagedItem.acreate(owner="big", position=p, label="x") for p in range(start, min(start + 500, 10_005)))
            )

    asyncio.run(load())
    pages = walk(50, owner="big")  # 50 is this app's CASSANDRA_MAX_PER_PAGE
    assert len(pages) == 201 and len(pages[-1]) == 5
    assert [p for page in pages for p in page] == list(range(10_005))
    # A limit the user sets still applies.
    page = PagedItem.objects(owner="big").limit(3).paginate(per_page=2)
    rest = PagedItem.objects(owner="big").limit(3).paginate(per_page=2, cursor=page.next_cursor)
    assert [i.position for i in page.items + rest.items] == [0, 1, 2] and rest.next_cursor is None
