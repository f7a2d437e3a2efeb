"""Cursor pagination on Cassandra's paging state.

A cursor is the paging state the node returned for a page, bound to the
query that produced it by a MAC, then base64url-encoded. So a cursor cannot
be edited, nor replayed against another query (Cassandra would at best
answer an error, at worst rows of a different query).

The MAC key is ``CASSANDRA_CURSOR_SECRET``, else the app's ``SECRET_KEY``.
Without either, cursors are still checked for corruption and for belonging
to the query, but a determined client could forge one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from .errors import InvalidCursor, InvalidPageSize

T = TypeVar("T")

_VERSION = b"\x01"
_MAC_SIZE = 16
_UNKEYED = b"flask-cqlalchemy cursor"


@dataclass
class Page(Generic[T]):
    """One page of results and the cursor to the next."""

    items: list[T]
    next_cursor: str | None
    per_page: int
    cursor: str | None = field(default=None)

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def to_dict(
        self,
        *,
        only: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        mode: Literal["python", "json"] = "python",
    ) -> dict[str, Any]:
        """``{"items", "next_cursor", "has_next", "per_page"}``, what
        ``jsonify(page)`` writes (with ``mode="json"``): each item its
        ``to_dict(only=only, exclude=exclude, mode=mode)`` (see
        :meth:`Model.to_dict <flask_cqlalchemy.model.ModelMixin.to_dict>`).
        ``cursor``, the client's own, is not repeated.

        Items that are not models (rows of ``values_list``) become lists;
        ``only`` or ``exclude`` then raise ``TypeError``.

        .. versionadded:: 0.1
        """
        # Imported here: the JSON module knows pages, so imports this one.
        from .json_provider import page_dict

        return page_dict(self, only=only, exclude=exclude, mode=mode)


def check_per_page(per_page: Any, maximum: int) -> int:
    """Return ``per_page`` as an int in ``1..maximum``, else raise InvalidPageSize (400)."""
    if isinstance(per_page, str) and per_page.strip().isdigit():
        per_page = int(per_page)
    if isinstance(per_page, bool) or not isinstance(per_page, int):
        raise InvalidPageSize(f"per_page must be a whole number from 1 to {maximum}, got {per_page!r}")
    if not 1 <= per_page <= maximum:
        raise InvalidPageSize(f"per_page must be from 1 to {maximum}, got {per_page}")
    return per_page


class CursorCodec:
    """Encodes paging states as cursors bound to one query."""

    def __init__(self, secret: bytes | None) -> None:
        self._key = secret or _UNKEYED

    @staticmethod
    def fingerprint(query_string: str, params: Any) -> bytes:
        """What identifies a query for its cursors: CQL text and bound values."""
        if isinstance(params, dict):
            bound: Sequence[Any] = sorted(params.items())
        else:
            bound = list(params or ())
        return hashlib.sha256(f"{query_string}\x00{bound!r}".encode()).digest()

    def _mac(self, fingerprint: bytes, paging_state: bytes) -> bytes:
        return hmac.new(self._key, fingerprint + paging_state, hashlib.sha256).digest()[:_MAC_SIZE]

    def encode(self, fingerprint: bytes, paging_state: bytes) -> str:
        raw = _VERSION + self._mac(fingerprint, paging_state) + paging_state
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def decode(self, fingerprint: bytes, cursor: Any) -> bytes:
        """Return the paging state inside ``cursor``; raise InvalidCursor (400) if it is not ours."""
        if not isinstance(cursor, str) or not cursor:
            raise InvalidCursor(f"cursor must be a non-empty string, got {cursor!r}")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise InvalidCursor("cursor is malformed: not URL-safe base64") from None
        if len(raw) <= 1 + _MAC_SIZE or raw[:1] != _VERSION:
            raise InvalidCursor("cursor is malformed: truncated or of an unknown version")
        mac, paging_state = raw[1 : 1 + _MAC_SIZE], raw[1 + _MAC_SIZE :]
        if not hmac.compare_digest(mac, self._mac(fingerprint, paging_state)):
            raise InvalidCursor("cursor was altered or belongs to a different query")
        return paging_state
