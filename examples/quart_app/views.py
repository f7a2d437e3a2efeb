"""The JSON endpoints, on Quart: the request body is awaited, every query
is awaited on the server's one event loop, and the queries are those of
``examples/async_app`` (:mod:`examples.async_app.notes`).
"""

from __future__ import annotations

from quart import Blueprint, ResponseReturnValue, jsonify, request, url_for

from examples.async_app import notes
from examples.async_app.validation import aparse_new_note, check_k, check_note_id, check_tag, check_user_id

bp = Blueprint("notes", __name__)
DEFAULT_SIMILAR = 5


@bp.get("/health")
async def health() -> ResponseReturnValue:
    return jsonify(status="ok", cassandra=await notes.cassandra_version())


@bp.post("/users/<user_id>/notes")
async def create_note(user_id: str) -> ResponseReturnValue:
    user_id = check_user_id(user_id)
    note = await notes.create_note(user_id, await aparse_new_note(request))
    location = url_for(".get_note", user_id=user_id, note_id=str(note.note_id))
    return jsonify(note), 201, {"Location": location}


@bp.get("/users/<user_id>/notes/<note_id>")
async def get_note(user_id: str, note_id: str) -> ResponseReturnValue:
    note = await notes.find_note(check_user_id(user_id), check_note_id(note_id))
    return jsonify(note)


@bp.delete("/users/<user_id>/notes/<note_id>")
async def delete_note(user_id: str, note_id: str) -> ResponseReturnValue:
    await notes.delete_note(check_user_id(user_id), check_note_id(note_id))
    return "", 204


@bp.get("/users/<user_id>/notes/<note_id>/similar")
async def similar_notes(user_id: str, note_id: str) -> ResponseReturnValue:
    """The ``k`` (default 5) notes of the user most similar to this one."""
    found = await notes.similar_notes(
        check_user_id(user_id), check_note_id(note_id), check_k(request.args.get("k", DEFAULT_SIMILAR))
    )
    return jsonify(found)


@bp.get("/users/<user_id>/notes")
async def list_notes(user_id: str) -> ResponseReturnValue:
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
async def dashboard(user_id: str) -> ResponseReturnValue:
    """Figures about one user; ``tag`` adds the number of notes with that tag."""
    user_id = check_user_id(user_id)
    return jsonify(await notes.dashboard(user_id, _tag_filter()))


def _tag_filter() -> str | None:
    tag = request.args.get("tag")
    return None if tag is None else check_tag(tag, "tag")
