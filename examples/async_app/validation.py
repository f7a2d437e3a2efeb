"""Checking what clients send, before anything reaches Cassandra.

Every rejection is a :class:`FieldError` (an HTTP 400) that names the
offending field, so a client can point at it without parsing the message.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flask import Request
from werkzeug.exceptions import BadRequest

from .models import BODY_MAX, TAG_MAX, TAGS_PER_NOTE_MAX, TITLE_MAX

if TYPE_CHECKING:
    import quart

USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
NOTE_FIELDS = ("title", "body", "tags")
#: Most similar notes one request may ask for.
SIMILAR_MAX = 50


class FieldError(BadRequest):
    """400 about one field (``field`` is None when the body as a whole is wrong)."""

    def __init__(self, field: str | None, message: str, error: str = "invalid value") -> None:
        super().__init__(description=message)
        self.field = field
        self.error = error


def check_user_id(value: str) -> str:
    # fullmatch, not match with "$": "$" also matches before a final newline.
    if not USER_ID.fullmatch(value):
        raise FieldError("user_id", "user_id must be 1 to 64 characters among A-Z, a-z, 0-9, '_' and '-'")
    return value


def check_note_id(value: str) -> uuid.UUID:
    try:
        note_id = uuid.UUID(value)
    except ValueError:
        raise FieldError("note_id", "note_id must be a UUID") from None
    if note_id.version != 1:
        # The column is a timeuuid: Cassandra refuses any other UUID in a
        # query on it, which would otherwise surface as a server error.
        raise FieldError(
            "note_id", "note_id must be a time-based (version 1) UUID, as returned when the note was created"
        )
    return note_id


def check_k(value: Any) -> int:
    """``k`` of ``/similar``: a whole number from 1 to :data:`SIMILAR_MAX`."""
    text = str(value).strip()
    if not text.isdecimal() or not 1 <= int(text) <= SIMILAR_MAX:
        raise FieldError("k", f"k must be a whole number from 1 to {SIMILAR_MAX}")
    return int(text)


def check_tag(value: Any, field: str) -> str:
    text = _text(value, field, TAG_MAX)
    if not text.strip():
        raise FieldError(field, f"{field} must not be empty or blank")
    return text


def parse_new_note(request: Request) -> dict[str, Any]:
    """The validated ``title``, ``body`` and ``tags`` of a note to create."""
    _require_json(request)
    with _decoding_json():
        data = request.get_json()
    return _new_note(data)


async def aparse_new_note(request: quart.Request) -> dict[str, Any]:
    """:func:`parse_new_note` for Quart, whose request body is awaited."""
    _require_json(request)
    with _decoding_json():
        data = await request.get_json()
    return _new_note(data)


def _new_note(data: Any) -> dict[str, Any]:
    """The validated fields of a note to create from its decoded JSON body."""
    if not isinstance(data, dict):
        raise FieldError(None, f"the request body must be a JSON object, got {_json_type(data)}", "invalid body")
    unknown = sorted(set(data) - set(NOTE_FIELDS))
    if unknown:
        raise FieldError(unknown[0], f"unknown field {unknown[0]!r}; a note has {', '.join(NOTE_FIELDS)}")

    if data.get("title") is None:
        raise FieldError("title", "title is required")
    title = _text(data["title"], "title", TITLE_MAX)
    if not title.strip():
        raise FieldError("title", "title must not be empty or blank")

    body = data.get("body")
    if body is not None:
        body = _text(body, "body", BODY_MAX)

    tags = data.get("tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list):
        raise FieldError("tags", f"tags must be a list of strings, got {_json_type(tags)}")
    tags = {check_tag(tag, "tags") for tag in tags}
    if len(tags) > TAGS_PER_NOTE_MAX:
        raise FieldError("tags", f"a note has at most {TAGS_PER_NOTE_MAX} tags, got {len(tags)}")

    return {"title": title, "body": body, "tags": tags}


def _require_json(request: Request | quart.Request) -> None:
    if not request.is_json:
        raise FieldError(
            None, "the request body must be a JSON object sent with Content-Type: application/json", "invalid body"
        )


@contextlib.contextmanager
def _decoding_json() -> Iterator[None]:
    # Quart decodes the body as UTF-8 before its JSON error handling starts:
    # bytes that are not UTF-8 escape get_json as UnicodeDecodeError (Flask
    # turns them into its BadRequest).
    try:
        yield
    except (BadRequest, UnicodeDecodeError):
        raise FieldError(None, "the request body is not valid JSON", "invalid body") from None


def _text(value: Any, field: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise FieldError(field, f"{field} must be a string, got {_json_type(value)}")
    if len(value) > max_length:
        raise FieldError(field, f"{field} must be at most {max_length} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can carry lone surrogates ("\ud800"); Cassandra text cannot.
        raise FieldError(field, f"{field} is not valid Unicode text (lone surrogate)") from None
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
