"""What the notes service asks of Cassandra, whatever the web framework.

The views of this Flask app (:mod:`.views`) and those of
``examples/quart_app`` check the request (:mod:`.validation`), await these
coroutines with the checked values, and answer what they return as JSON.
Notes and pages of notes are answered as they are: flask-cqlalchemy's JSON
provider writes them (``Note.to_dict``), so ``jsonify(note)`` needs no
hand-written dict. Failures reach the framework as exceptions, each an HTTP answer through
flask-cqlalchemy: ``RowNotFound`` (404) from ``aget_or_404``, the
pagination errors (400), and the driver's own errors when the cluster
cannot answer (503, the extension's error handlers).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from cassandra import WriteFailure
from cassandra.util import uuid_from_time

from flask_cqlalchemy import Page

from .embedding import embed
from .extensions import adb
from .models import Note, UserStats

DEFAULT_PER_PAGE = 20
DASHBOARD_LATEST = 5
#: Tries of a note's insert refused by the node's vector index (see _insert_note).
INSERT_ATTEMPTS = 8


async def cassandra_version() -> str:
    """The release of the node that answers this query (a round trip to it)."""
    rows = await adb.execute("SELECT release_version FROM system.local", timeout=5)
    return rows[0]["release_version"]


async def create_note(user_id: str, fields: Mapping[str, Any]) -> Note:
    """Store a new note of ``user_id`` with ``fields`` (from ``parse_new_note``), then count it."""
    now = _now()
    # The id carries the creation time (so the clustering order is "newest
    # first") with a random node and clock sequence: unique without LWT and
    # without leaking the server's MAC address as uuid.uuid1() would.
    note_id = uuid_from_time(now)
    # Cassandra keeps milliseconds; store exactly what will be read back.
    created = now.replace(microsecond=now.microsecond // 1000 * 1000, tzinfo=None)
    embedding = embed([fields["title"], fields.get("body") or "", *(fields.get("tags") or ())])
    note = await _insert_note(user_id=user_id, note_id=note_id, created=created, embedding=embedding, **fields)
    await UserStats.objects(user_id=user_id).aupdate(notes_written=1)
    return note


async def find_note(user_id: str, note_id: uuid.UUID) -> Note:
    """The note; ``RowNotFound`` (a 404) when the user has no such note."""
    return await Note.aget_or_404(
        user_id=user_id, note_id=note_id, description=f"note {note_id} of user {user_id} not found"
    )


async def delete_note(user_id: str, note_id: uuid.UUID) -> None:
    """Delete the note, or 404 as :func:`find_note`."""
    note = await find_note(user_id, note_id)
    # Deleting is idempotent: two concurrent deletes of one note may both
    # answer 204, and nothing is counted twice (only writes are counted).
    await note.adelete()


async def similar_notes(user_id: str, note_id: uuid.UUID, k: int) -> dict[str, Any]:
    """The ``k`` notes of the user nearest to the note (cosine similarity of
    their embeddings, an approximate-nearest-neighbour query on the SAI
    vector index), most similar first, each with its ``score`` (from 0 to 1);
    404 as :func:`find_note`."""
    note = await find_note(user_id, note_id)
    vector = note.embedding or embed([note.title, note.body or "", *(note.tags or ())])
    # One more than asked: the note itself is its own nearest neighbour.
    found = await Note.objects(user_id=user_id).ann("embedding", vector, limit=k + 1, score=True).aall()
    others = [other for other in found if other.note_id != note.note_id][:k]
    return {
        "note_id": note.note_id,
        "similar": [{**other.to_dict(), "score": round(other.score, 6)} for other in others],
    }


async def list_notes(user_id: str, tag: str | None, per_page: Any, cursor: str | None) -> Page[Note]:
    """One page of the user's notes, newest first; ``tag`` keeps the notes
    that carry it. ``next_cursor`` is bound to this exact query (user, tag):
    replayed against another one it is refused with 400, as are a bad
    ``per_page`` and an altered cursor."""
    query = Note.objects(user_id=user_id)
    if tag is not None:
        query = _tagged(query, tag)
    return await query.apaginate(per_page=per_page, cursor=cursor)


async def dashboard(user_id: str, tag: str | None) -> dict[str, Any]:
    """Figures about one user, from independent queries sent concurrently."""
    notes = Note.objects(user_id=user_id)

    async def tagged_count() -> int | None:
        return None if tag is None else await _tagged(notes, tag).acount()

    async def stats() -> int:
        row = await UserStats.objects(user_id=user_id).afirst()
        return row.notes_written if row is not None else 0

    async def tag_histogram() -> Counter[str]:
        # Streams the user's partition page by page; its cost grows with the
        # user's number of notes, like the count's.
        histogram: Counter[str] = Counter()
        async for note in notes.limit(None).only(["tags"]).fetch_size(500):
            histogram.update(note.tags or ())
        return histogram

    count, latest, written, histogram, with_tag = await asyncio.gather(
        notes.acount(),
        notes.limit(DASHBOARD_LATEST).aall(),
        stats(),
        tag_histogram(),
        tagged_count(),
    )
    body: dict[str, Any] = {
        "user_id": user_id,
        "notes": count,
        "notes_written": written,
        "latest": latest,
        "top_tags": [
            {"tag": name, "notes": n} for name, n in sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        ],
    }
    if tag is not None:
        body["tag"] = {"tag": tag, "notes": with_tag}
    return body


async def _insert_note(**values: Any) -> Note:
    # Cassandra 5.0.9 refuses a write to a vector index (WriteFailure) when
    # more such writes run at once on the node than it has processors plus
    # one (CASSANDRA-21644, fixed in later releases). The insert is
    # idempotent (same key, same values): it is tried again after a short
    # random pause, which also spreads the concurrent writers out.
    for attempt in range(INSERT_ATTEMPTS):
        try:
            return await Note.acreate(**values)
        except WriteFailure:
            if attempt == INSERT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.004 * 2**attempt))
    raise AssertionError("unreachable")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _tagged(query: Any, tag: str) -> Any:
    # The tags' SAI index answers CONTAINS within the user's partition: no
    # ALLOW FILTERING, no reading of the user's other notes.
    return query.filter(tags__contains=tag)
