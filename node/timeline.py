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
import json
from dataclasses import dataclass
from typing import Any

from node.store import Store
from protocol.event import Event

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
            # The plain bound lets SQLite seek the expression index to the cursor;
            # the row-value comparison alone is only a filter (a scan from the top).
            where += f" AND {TIME} <= ? AND ({TIME}, arrival) < (?, ?)"
            params = [*params, cursor.time, cursor.time, cursor.arrival]
        rows = self.store.query(
            f"SELECT arrival, {TIME}, {_COLUMNS} FROM events"  # noqa: S608
            f" WHERE deleted = 0 AND {where} ORDER BY {TIME} DESC, arrival DESC LIMIT ?",
            [*params, limit + 1],
        )
        events = [trusted_event(row[2:]) for row in rows[:limit]]
        following = None
        if len(rows) > limit:
            arrival, time = rows[limit - 1][:2]
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
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM events WHERE id = ? AND deleted = 0",  # noqa: S608
            (event_id,),
        )
        return trusted_event(rows[0]) if rows else None

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
        return self.profiles([author]).get(author)

    def profiles(self, authors: list[str]) -> dict[str, dict[str, Any]]:
        """Latest profile bodies of ``authors`` (those we hold), in one query."""
        if not authors:
            return {}
        marks = ",".join("?" * len(authors))
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM events WHERE kind = 'profile' AND deleted = 0"  # noqa: S608
            f" AND author IN ({marks}) AND seq = (SELECT max(seq) FROM events AS latest"
            " WHERE latest.author = events.author AND latest.kind = 'profile'"
            " AND latest.deleted = 0)",
            authors,
        )
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            event = trusted_event(row)
            if event.body is not None:
                found[event.author] = dict(event.body)
        return found

    def local_names(self) -> dict[str, str]:
        """Author id → user name for this node's members."""
        rows = self.store.query("SELECT author, name FROM users")
        return {str(a): str(n) for a, n in rows}

    def is_following(self, author: str) -> bool:
        return bool(self.store.query("SELECT 1 FROM follows WHERE author = ?", (author,)))


_COLUMNS = "id, author, seq, prev, kind, created, raw"


def trusted_event(row: tuple[object, ...]) -> Event:
    """An event from a stored row, without re-verifying it.

    The store holds only events that were parsed strictly, hashed and
    verified when they arrived, so reading them back for display needs the
    body and the indexed columns, not a second validation: that was half the
    CPU of a feed page.  Signature, hash and canonical form are checked again
    wherever events leave the node (export, replication reads the raw bytes).
    """
    event_id, author, seq, prev, kind, created, raw = row
    envelope = json.loads(str(raw))
    body = envelope.get("body")
    return Event(
        id=str(event_id),
        author=str(author),
        seq=int(str(seq)),
        prev=None if prev is None else str(prev),
        kind=str(kind),
        created=int(str(created)),
        body_hash=str(envelope.get("body_hash", "")),
        sig=str(envelope.get("sig", "")),
        body=body if isinstance(body, dict) else None,
    )
