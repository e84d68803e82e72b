"""Reading stored events as pages for people: the feed, an author's items, catalogs.

Pages are newest first by ``min(created, received)``: an author cannot push
an event to the top of everyone's feed by dating it in the future, because
it never counts as newer than when this node first stored it.  Ties break by
arrival.  Cursors are opaque to clients (``"<time>.<arrival>"`` in URL-safe
base64) and seek through the ``events_kind_time`` index, so a page costs the
same at the millionth event as at the first.

Who appears in the feed: this node's own authors (the collective and every
member) and the authors it follows, minus blocked ones.  Relays store other
feeds they carry for neighbours; those never show here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from node.store import Store
from protocol.errors import ProtocolError
from protocol.event import Event, decode_event

MAX_LIMIT = 100
DEFAULT_LIMIT = 30
TIME = "min(created, received)"

VISIBLE_AUTHORS = (
    "(SELECT author FROM users UNION SELECT author FROM follows UNION SELECT ?)"
    " AND author NOT IN (SELECT target FROM blocks)"
)


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class Cursor:
    time: int
    arrival: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.time}.{self.arrival}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        if not text:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            time_text, arrival_text = raw.split(".")
            return cls(int(time_text), int(arrival_text))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise BadCursor("invalid cursor: pass back the 'next' value of a page") from None


def parse_limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


@dataclass(frozen=True)
class Page:
    events: list[Event]
    next: Cursor | None


class Timeline:
    """Read-only queries over a :class:`Store` for the web UI; blocking, call from a thread."""

    def __init__(self, store: Store, collective: str) -> None:
        self.store = store
        self.collective = collective

    def _page(self, where: str, params: list[object], cursor: Cursor | None, limit: int) -> Page:
        if cursor is not None:
            where += f" AND ({TIME}, arrival) < (?, ?)"
            params = [*params, cursor.time, cursor.arrival]
        rows = self.store.query(
            f"SELECT arrival, raw, {TIME} FROM events WHERE deleted = 0 AND {where}"  # noqa: S608
            f" ORDER BY {TIME} DESC, arrival DESC LIMIT ?",
            [*params, limit + 1],
        )
        events = [_decode(str(raw)) for _, raw, _ in rows[:limit]]
        following = None
        if len(rows) > limit:
            arrival, _, time = rows[limit - 1]
            following = Cursor(int(str(time)), int(str(arrival)))
        return Page(events, following)

    def feed(self, cursor: Cursor | None = None, limit: int = DEFAULT_LIMIT) -> Page:
        """Posts of this node's authors and of followed authors."""
        return self._page(
            f"kind = 'post' AND author IN {VISIBLE_AUTHORS}", [self.collective], cursor, limit
        )

    def of_kind(
        self,
        kind: str,
        *,
        scope: str = "all",
        cursor: Cursor | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page:
        """Items of ``kind``: ``local`` (this node's authors), ``federated`` (followed
        authors) or ``all`` (both)."""
        local = "(SELECT author FROM users UNION SELECT ?)"
        if scope == "local":
            where, params = f"author IN {local}", [self.collective]
        elif scope == "federated":
            where = f"author IN {VISIBLE_AUTHORS} AND author NOT IN {local}"
            params = [self.collective, self.collective]
        elif scope == "all":
            where, params = f"author IN {VISIBLE_AUTHORS}", [self.collective]
        else:
            raise ValueError("scope must be all, local or federated")
        return self._page(f"kind = ? AND {where}", [kind, *params], cursor, limit)

    def by_author(
        self, author: str, kind: str, cursor: Cursor | None = None, limit: int = DEFAULT_LIMIT
    ) -> Page:
        return self._page("author = ? AND kind = ?", [author, kind], cursor, limit)

    def get(self, event_id: str) -> Event | None:
        rows = self.store.query("SELECT raw FROM events WHERE id = ? AND deleted = 0", (event_id,))
        return _decode(str(rows[0][0])) if rows else None

    def counts(self, author: str) -> dict[str, int]:
        rows = self.store.query(
            "SELECT kind, count(*) FROM events WHERE author = ? AND deleted = 0"
            " AND kind IN ('post', 'track', 'offer', 'course') GROUP BY kind",
            (author,),
        )
        found = {str(k): int(str(n)) for k, n in rows}
        return {kind: found.get(kind, 0) for kind in ("post", "track", "offer", "course")}

    def profile(self, author: str) -> dict[str, Any] | None:
        """The body of ``author``'s latest profile event, if we hold one."""
        rows = self.store.query(
            "SELECT raw FROM events WHERE author = ? AND kind = 'profile' AND deleted = 0"
            " ORDER BY seq DESC LIMIT 1",
            (author,),
        )
        if not rows:
            return None
        body = _decode(str(rows[0][0])).body
        return dict(body) if body is not None else None

    def local_names(self) -> dict[str, str]:
        """Author id → user name for this node's members."""
        rows = self.store.query("SELECT author, name FROM users")
        return {str(a): str(n) for a, n in rows}

    def is_following(self, author: str) -> bool:
        return bool(self.store.query("SELECT 1 FROM follows WHERE author = ?", (author,)))


def _decode(raw: str) -> Event:
    try:
        return decode_event(raw.encode())
    except ProtocolError as exc:  # the store only holds events that decoded once
        raise ValueError(f"a stored event no longer decodes: {exc}") from exc
