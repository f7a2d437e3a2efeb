"""The JSON endpoints. Every view is ``async def`` and awaits the facade.

Flask runs each async view in its own event loop on the request's thread;
several queries of one request run concurrently with ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from cassandra.util import uuid_from_time
from flask import Blueprint, jsonify, request, url_for

from .extensions import adb
from .models import Note, UserStats
from .validation import check_note_id, check_tag, check_user_id, parse_new_note

bp = Blueprint("notes", __name__)

DEFAULT_PER_PAGE = 20
DASHBOARD_LATEST = 5


def note_json(note: Note) -> dict[str, Any]:
    return {
        "user_id": note.user_id,
        "note_id": str(note.note_id),
        "title": note.title,
        "body": note.body,
        "tags": sorted(note.tags or ()),
        "created": _iso(note.created),
    }


def _iso(moment: datetime) -> str:
    # cqlengine reads timestamps back as naive UTC datetimes.
    return moment.isoformat(timespec="milliseconds") + "Z"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@bp.get("/health")
async def health():
    rows = await adb.execute("SELECT release_version FROM system.local", timeout=5)
    return jsonify(status="ok", cassandra=rows[0]["release_version"])


@bp.post("/users/<user_id>/notes")
async def create_note(user_id: str):
    user_id = check_user_id(user_id)
    fields = parse_new_note(request)
    now = _now()
    # The id carries the creation time (so the clustering order is "newest
    # first") with a random node and clock sequence: unique without LWT and
    # without leaking the server's MAC address as uuid.uuid1() would.
    note_id = uuid_from_time(now)
    # Cassandra keeps milliseconds; store exactly what will be read back.
    created = now.replace(microsecond=now.microsecond // 1000 * 1000, tzinfo=None)
    note = await Note.acreate(user_id=user_id, note_id=note_id, created=created, **fields)
    await UserStats.objects(user_id=user_id).aupdate(notes_written=1)
    response = jsonify(note_json(note))
    response.status_code = 201
    response.headers["Location"] = url_for(".get_note", user_id=user_id, note_id=str(note_id))
    return response


@bp.get("/users/<user_id>/notes/<note_id>")
async def get_note(user_id: str, note_id: str):
    note = await _find_note(user_id, note_id)
    return jsonify(note_json(note))


@bp.delete("/users/<user_id>/notes/<note_id>")
async def delete_note(user_id: str, note_id: str):
    note = await _find_note(user_id, note_id)
    # Deleting is idempotent: two concurrent deletes of one note may both
    # answer 204, and nothing is counted twice (only writes are counted).
    await note.adelete()
    return "", 204


@bp.get("/users/<user_id>/notes")
async def list_notes(user_id: str):
    """One page of the user's notes, newest first; ``tag`` keeps the notes
    that carry it. ``next_cursor`` is bound to this exact query (user, tag):
    replayed against another one it is refused with 400."""
    user_id = check_user_id(user_id)
    query = Note.objects(user_id=user_id)
    tag = request.args.get("tag")
    if tag is not None:
        query = _tagged(query, check_tag(tag, "tag"))
    page = await query.apaginate(
        per_page=request.args.get("per_page", DEFAULT_PER_PAGE),
        cursor=request.args.get("cursor"),
    )
    return jsonify(
        items=[note_json(note) for note in page.items],
        next_cursor=page.next_cursor,
        has_next=page.has_next,
        per_page=page.per_page,
    )


@bp.get("/users/<user_id>/dashboard")
async def dashboard(user_id: str):
    """Figures about one user, from independent queries sent concurrently."""
    user_id = check_user_id(user_id)
    tag = request.args.get("tag")
    if tag is not None:
        tag = check_tag(tag, "tag")
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
        "latest": [note_json(note) for note in latest],
        "top_tags": [
            {"tag": name, "notes": n} for name, n in sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        ],
    }
    if tag is not None:
        body["tag"] = {"tag": tag, "notes": with_tag}
    return jsonify(body)


async def _find_note(user_id: str, note_id: str) -> Note:
    """The note, or 400 for a malformed id, or 404."""
    user_id, note_uuid = check_user_id(user_id), check_note_id(note_id)
    return await Note.aget_or_404(
        user_id=user_id, note_id=note_uuid, description=f"note {note_uuid} of user {user_id} not found"
    )


def _tagged(query: Any, tag: str) -> Any:
    # The user_id restriction keeps ALLOW FILTERING inside one partition: the
    # cost is that of reading the user's notes, not the table.
    return query.filter(tags__contains=tag).allow_filtering()
