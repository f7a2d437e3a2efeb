"""The JSON endpoints. Every view is ``async def``: it checks the request
(:mod:`.validation`), awaits the service's queries (:mod:`.notes`), which
``examples/quart_app`` shares, and answers JSON.

Flask runs each async view in its own event loop on the request's thread;
several queries of one request (the dashboard's) run concurrently with
``asyncio.gather``.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request, url_for

from . import notes
from .validation import check_k, check_note_id, check_tag, check_user_id, parse_new_note

bp = Blueprint("notes", __name__)
DEFAULT_SIMILAR = 5


@bp.get("/health")
async def health():
    return jsonify(status="ok", cassandra=await notes.cassandra_version())


@bp.post("/users/<user_id>/notes")
async def create_note(user_id: str):
    user_id = check_user_id(user_id)
    note = await notes.create_note(user_id, parse_new_note(request))
    response = jsonify(note)
    response.status_code = 201
    response.headers["Location"] = url_for(".get_note", user_id=user_id, note_id=str(note.note_id))
    return response


@bp.get("/users/<user_id>/notes/<note_id>")
async def get_note(user_id: str, note_id: str):
    note = await notes.find_note(check_user_id(user_id), check_note_id(note_id))
    return jsonify(note)


@bp.delete("/users/<user_id>/notes/<note_id>")
async def delete_note(user_id: str, note_id: str):
    await notes.delete_note(check_user_id(user_id), check_note_id(note_id))
    return "", 204


@bp.get("/users/<user_id>/notes/<note_id>/similar")
async def similar_notes(user_id: str, note_id: str):
    """The ``k`` (default 5) notes of the user most similar to this one."""
    found = await notes.similar_notes(
        check_user_id(user_id), check_note_id(note_id), check_k(request.args.get("k", DEFAULT_SIMILAR))
    )
    return jsonify(found)


@bp.get("/users/<user_id>/notes")
async def list_notes(user_id: str):
    """One page of the user's notes, newest first (``per_page``, ``cursor``, ``tag``)."""
    user_id = check_user_id(user_id)
    page = await notes.list_notes(
        user_id,
        _tag_filter(),
        per_page=request.args.get("per_page", notes.DEFAULT_PER_PAGE),
        cursor=request.args.get("cursor"),
    )
    return jsonify(page)


@bp.get("/users/<user_id>/dashboard")
async def dashboard(user_id: str):
    """Figures about one user; ``tag`` adds the number of notes with that tag."""
    user_id = check_user_id(user_id)
    return jsonify(await notes.dashboard(user_id, _tag_filter()))


def _tag_filter() -> str | None:
    tag = request.args.get("tag")
    return None if tag is None else check_tag(tag, "tag")
