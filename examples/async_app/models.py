"""Tables of the notes service.

``Note`` holds one row per note in the partition of its user, newest
first: listing a user's notes is a single-partition read in clustering
order, and cursor pagination walks it page by page.

Each note carries an ``embedding`` of its words (:mod:`.embedding`), with
a storage-attached (SAI) vector index for "similar notes", and its
``tags`` have an SAI index too, so filtering a user's notes by tag needs no
``ALLOW FILTERING``.

A note answers JSON as its ``to_dict()``: ``jsonify(note)`` and
``jsonify(page)`` write every column but the embedding.

``UserStats`` is a counter table. Counters cannot share a table with
regular columns, and a counter increment is not idempotent, so it only
counts what is cheap to count exactly: notes ever written by the user
(incremented once, after the note's own insert succeeded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from .embedding import EMBEDDING_DIM
from .extensions import adb

columns = adb.columns
# The extension's own abstract base, made when ``adb`` was (typed Any for mypy).
Model: Any = adb.Model

TITLE_MAX = 200
BODY_MAX = 10_000
TAG_MAX = 50
TAGS_PER_NOTE_MAX = 20


class Note(Model):
    __table_name__ = "notes"

    user_id = columns.Text(partition_key=True)
    note_id = columns.TimeUUID(primary_key=True, clustering_order="DESC")
    title = columns.Text(required=True, max_length=TITLE_MAX)
    body = columns.Text(max_length=BODY_MAX)
    tags = columns.Set(columns.Text(max_length=TAG_MAX), index="sai")
    created = columns.DateTime(required=True)
    embedding = columns.Vector(
        columns.Float, EMBEDDING_DIM, index="sai", index_options={"similarity_function": "cosine"}
    )

    def to_dict(
        self,
        *,
        only: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        mode: Literal["python", "json"] = "python",
    ) -> dict[str, Any]:
        # What clients see of a note, in jsonify(note) and in pages of notes:
        # every column but the embedding (256 numbers of no use to them).
        # A string is passed on as it is, for to_dict's own TypeError.
        if not isinstance(exclude, str):
            exclude = [*(exclude or ()), "embedding"]
        return super().to_dict(only=only, exclude=exclude, mode=mode)


class UserStats(Model):
    __table_name__ = "user_stats"

    user_id = columns.Text(partition_key=True)
    notes_written = columns.Counter()
