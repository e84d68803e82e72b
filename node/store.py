"""The node's event store: SQLite in WAL mode, shared by the daemon and the CLI.

Theory of operation
-------------------
Several processes may open one data dir at once (``talas run`` and
``talas post``), so every write runs in a ``BEGIN IMMEDIATE`` transaction:
SQLite serialises writers and each one reads the feed heads it extends inside
its own transaction.  Ingest takes events that have already been *verified*
and applies the pure feed rules of :mod:`protocol.feed` to a whole batch in one
transaction, with one ``executemany`` for the inserts (5x faster than
sqlite-utils' ``insert_all`` on this path).  A batch is acknowledged only when
its COMMIT returns; with WAL a committed batch survives kill -9 and an
interrupted one leaves nothing (see :meth:`Store.transaction` for power loss).

``UNIQUE(id)`` and ``UNIQUE(author, seq)`` make storing the same event twice
impossible whatever the code above them does.  ``arrival`` (the rowid) is the
local order of arrival: the cursor for "what is new since I last looked".
Events whose predecessor is missing wait in ``pending`` (bounded per author)
and are appended when the gap fills; conflicting events go to ``forks`` as
evidence and freeze the feed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from node.errors import StoreError
from protocol.canonical import JSONValue
from protocol.errors import ProtocolError
from protocol.event import Event, decode_event, sign_event
from protocol.feed import FeedHead, Position, Verdict, advance, classify, freeze, position
from protocol.keys import SigningKey

PENDING_PER_AUTHOR = 10_000
PENDING_TOTAL = 200_000
BUSY_TIMEOUT_MS = 15_000


def _migration_1(db: sqlite_utils.Database) -> None:
    events = db.table("events")
    events.create(
        {
            "arrival": int, "id": str, "author": str, "seq": int, "prev": str, "kind": str,
            "created": int, "received": int, "deleted": int, "bodyless": int, "raw": str,
        },
        pk="arrival",
        not_null={
            "id", "author", "seq", "kind", "created", "received", "deleted", "bodyless", "raw",
        },
        defaults={"deleted": 0, "bodyless": 0},
    )  # fmt: skip
    events.create_index(["id"], unique=True, index_name="events_id")
    events.create_index(["author", "seq"], unique=True, index_name="events_author_seq")
    events.create_index(["kind", "created"], index_name="events_kind_created")
    db.table("feeds").create(
        {"author": str, "head_seq": int, "head_id": str, "frozen": int, "updated": int},
        pk="author",
        not_null={"head_seq", "head_id", "frozen", "updated"},
        defaults={"frozen": 0},
    )
    db.table("pending").create(
        {"id": str, "author": str, "seq": int, "raw": str, "received": int},
        pk="id",
        not_null={"author", "seq", "raw", "received"},
    )
    db.table("pending").create_index(["author", "seq"], index_name="pending_author_seq")
    db.table("forks").create(
        {
            "author": str, "seq": int, "existing_id": str, "conflicting_id": str,
            "conflicting_raw": str, "detected": int,
        },
        pk=("author", "conflicting_id"),
        not_null={"seq", "existing_id", "conflicting_raw", "detected"},
    )  # fmt: skip
    db.table("meta").create({"key": str, "value": str}, pk="key", not_null={"value"})


def _migration_2(db: sqlite_utils.Database) -> None:
    """Federation: peers to dial, follows and blocks, known replication scopes."""
    db.table("peers").create(
        {
            "address": str, "pinned_id": str, "node_id": str, "state": str, "last_seen": int,
            "last_error": str, "lag": int, "added": int,
        },
        pk="address",
        not_null={"state", "added"},
        defaults={"state": "new"},
    )  # fmt: skip
    db.table("follows").create({"author": str, "since": int}, pk="author", not_null={"since"})
    db.table("blocks").create(
        {"target": str, "what": str, "since": int}, pk="target", not_null={"what", "since"}
    )
    db.table("scopes").create(
        {"hash": str, "authors": str, "seen": int, "peer": str},
        pk="hash",
        not_null={"authors", "seen", "peer"},
    )


def _migration_3(db: sqlite_utils.Database) -> None:
    """Accounts, sessions and API tokens; uploads; the feed's time index.

    Secrets are stored only as SHA-256 digests: a copy of the database does
    not sign anyone in.  The feed orders by ``min(created, received)`` so an
    event dated in the future cannot sit on top of every feed: it counts as
    no newer than the moment this node first stored it.  The index is on that
    expression (SQLite matches it when queries use the same expression), with
    the rowid (arrival) as the implicit tie-break.
    """
    db.table("users").create(
        {
            "name": str, "role": str, "password": str, "author": str, "author_key": str,
            "created": int,
        },
        pk="name",
        not_null={"role", "password", "author", "author_key", "created"},
    )  # fmt: skip
    db.table("sessions").create(
        {"digest": str, "user": str, "csrf": str, "created": int, "expires": int, "seen": int},
        pk="digest",
        not_null={"user", "csrf", "created", "expires", "seen"},
    )
    db.table("sessions").create_index(["user"], index_name="sessions_user")
    db.table("tokens").create(
        {"digest": str, "user": str, "label": str, "created": int, "used": int},
        pk="digest",
        not_null={"user", "label", "created"},
    )
    db.table("tokens").create_index(["user"], index_name="tokens_user")
    db.table("uploads").create(
        {"blob": str, "filename": str, "mime": str, "user": str, "created": int},
        pk="blob",
        not_null={"filename", "mime", "user", "created"},
    )
    db.execute("CREATE INDEX events_kind_time ON events (kind, min(created, received))")
    db.execute("CREATE INDEX events_author_kind_seq ON events (author, kind, seq)")


def _migration_4(db: sqlite_utils.Database) -> None:
    """Attached mic modules: re-attached when the node starts."""
    db.table("mics").create(
        {"target": str, "serial": str, "attached_by": str, "attached": int},
        pk="target",
        not_null={"attached_by", "attached"},
    )


def _migration_5(db: sqlite_utils.Database) -> None:
    """Live chat: rooms, their member nodes, and message history (node/live/chat.py).

    A message is numbered per (room, origin node) by ``oseq``, contiguous from 1:
    a node stores another node's messages only in that order, so the highest
    ``oseq`` held is what to ask for after.  ``id`` de-duplicates; history reads
    in (lamport, author, id) order.
    """
    db.table("chat_rooms").create({"room": str, "created": int}, pk="room", not_null={"created"})
    db.table("chat_members").create(
        {"room": str, "node_id": str, "added": int},
        pk=("room", "node_id"),
        not_null={"added"},
        foreign_keys=[("room", "chat_rooms", "room")],
    )
    db.table("chat_messages").create(
        {
            "room": str, "origin": str, "oseq": int, "id": str, "author": str,
            "author_name": str, "sent_ms": int, "lamport": int, "text": str, "received": int,
        },
        pk=("room", "origin", "oseq"),
        not_null={"id", "author", "author_name", "sent_ms", "lamport", "text", "received"},
    )  # fmt: skip
    db.table("chat_messages").create_index(["id"], unique=True, index_name="chat_messages_id")
    db.table("chat_messages").create_index(
        ["room", "lamport", "author", "id"], index_name="chat_messages_order"
    )


def _migration_6(db: sqlite_utils.Database) -> None:
    """Chat messages carry their author's signature (``protocol/chat_line.py``).

    Messages stored before this migration keep an empty ``sig``: they were
    accepted unsigned, and are never sent on (a peer refuses them).
    """
    db.execute("ALTER TABLE chat_messages ADD COLUMN sig TEXT NOT NULL DEFAULT ''")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
]
"""Schema migrations in order; ``PRAGMA user_version`` counts those applied."""


@dataclass
class IngestReport:
    """What one ingest batch did, event by event class."""

    accepted: list[Event] = field(default_factory=list)
    duplicates: int = 0
    held: int = 0
    forks: list[tuple[str, int]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (event id, why)

    def merge(self, other: IngestReport) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.held += other.held
        self.forks += other.forks
        self.refused += other.refused


@dataclass(frozen=True, slots=True)
class EventRef:
    """What watchers need of a newly stored event, read without decoding it."""

    arrival: int
    id: str
    author: str
    seq: int
    kind: str


@dataclass(frozen=True)
class StoredEvent:
    arrival: int
    event: Event
    deleted: bool


class _Batch:
    """Per-transaction working state of :meth:`Store._ingest_locked`."""

    def __init__(self, conn: sqlite3.Connection, now_ms: int) -> None:
        self.conn = conn
        self.now_ms = now_ms
        self.heads: dict[str, FeedHead | None] = {}
        self.dirty_heads: set[str] = set()
        self.rows: dict[str, tuple[object, ...]] = {}  # event id -> row, in append order
        self.ids_by_pos: dict[tuple[str, int], str] = {}
        self.new_events: dict[str, Event] = {}
        self.tombstones: list[str] = []
        self.held_now: set[str] = set()  # events of this batch still waiting for a gap
        self.pending_count: int | None = None
        self.pending_authors = {
            row[0] for row in conn.execute("SELECT DISTINCT author FROM pending")
        }
        self.report = IngestReport()

    def pending_total(self) -> int:
        if self.pending_count is None:
            self.pending_count = int(
                self.conn.execute("SELECT count(*) FROM pending").fetchone()[0]
            )
        return self.pending_count

    def head(self, author: str) -> FeedHead | None:
        if author not in self.heads:
            row = self.conn.execute(
                "SELECT head_seq, head_id, frozen FROM feeds WHERE author = ?", (author,)
            ).fetchone()
            self.heads[author] = (
                None if row is None else FeedHead(author, row[0], row[1], bool(row[2]))
            )
        return self.heads[author]

    def id_at(self, author: str, seq: int) -> str | None:
        found = self.ids_by_pos.get((author, seq))
        if found is None:
            row = self.conn.execute(
                "SELECT id FROM events WHERE author = ? AND seq = ?", (author, seq)
            ).fetchone()
            found = None if row is None else row[0]
        return found

    def lookup(self, event_id: str) -> tuple[str, str] | None:
        """(author, kind) of a held event, from this batch or the database."""
        new = self.new_events.get(event_id)
        if new is not None:
            return new.author, new.kind
        row = self.conn.execute(
            "SELECT author, kind FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1])


class Store:
    """One SQLite connection to a node's database, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only from the start: SQLite gives the -wal and -shm files
            # the database file's permissions.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{path}: could not switch SQLite to WAL mode (got {mode})")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._synchronous = "FULL"
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        self._lock = threading.RLock()
        self._migrate()
        # Reads use their own connection: under WAL they see the last commit and
        # never wait for a write transaction in progress on the other one.
        try:
            self._reader = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        self._read_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._conn.close()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: committed on success, rolled back on any error.

        Every commit survives a crash of the process (WAL).  ``durable`` commits
        also survive power loss (the WAL is fsynced): required for what this
        node signs, since losing a signed event and signing another at the same
        seq would fork our own feed.  Events received from peers can be fetched
        again, so ingest skips that fsync (it was a third of catch-up time).
        """
        with self._lock:
            try:
                wanted = "FULL" if durable else "NORMAL"
                if self._synchronous != wanted:
                    self._conn.execute(f"PRAGMA synchronous = {wanted}")
                    self._synchronous = wanted
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot start a write: {exc}") from exc
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: commit failed: {exc}") from exc

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """A read of committed data (never of a write transaction in progress)."""
        with self._read_lock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: query failed: {exc}") from exc

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Talas "
                    f"({len(MIGRATIONS)}): upgrade Talas"
                )
            db = sqlite_utils.Database(conn)
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(db)
                conn.execute(f"PRAGMA user_version = {number}")

    def integrity_problems(self) -> list[str]:
        """``PRAGMA quick_check``: an empty list means the database is sound."""
        rows = self.query("PRAGMA quick_check")
        return [str(row[0]) for row in rows if row[0] != "ok"]

    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return None if not rows else str(rows[0][0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- writing ------------------------------------------------------------

    def ingest(self, events: Sequence[Event], *, now_ms: int) -> IngestReport:
        """Store a batch of *verified* events in one transaction."""
        try:
            with self.transaction(durable=False) as conn:
                return self._ingest_locked(conn, events, now_ms)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: ingest failed: {exc}") from exc

    def append_local(
        self, key: SigningKey, *, kind: str, body: dict[str, JSONValue], now_ms: int
    ) -> Event:
        """Sign the next event of ``key``'s feed and store it, atomically."""
        try:
            with self.transaction() as conn:
                batch_head = _Batch(conn, now_ms).head(key.id)
                if batch_head is not None and batch_head.frozen:
                    raise StoreError(f"feed {key.id} is frozen by a fork; it cannot grow")
                event = sign_event(
                    key,
                    seq=1 if batch_head is None else batch_head.seq + 1,
                    prev=None if batch_head is None else batch_head.id,
                    kind=kind,
                    created=now_ms,
                    body=body,
                )
                report = self._ingest_locked(conn, [event], now_ms)
                if report.accepted != [event]:
                    raise StoreError(f"could not append to own feed: {report}")
                return event
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: append failed: {exc}") from exc

    def _ingest_locked(
        self, conn: sqlite3.Connection, events: Sequence[Event], now_ms: int
    ) -> IngestReport:
        batch = _Batch(conn, now_ms)
        # Sorting by (author, seq) turns events delivered in any order into
        # appends wherever the batch itself fills the gaps.
        for event in sorted(events, key=lambda e: (e.author, e.seq)):
            self._offer(batch, event)
        conn.executemany(
            "INSERT INTO events (id, author, seq, prev, kind, created, received, deleted,"
            " bodyless, raw) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            list(batch.rows.values()),
        )
        for event_id in batch.tombstones:
            stored = conn.execute("SELECT raw FROM events WHERE id = ?", (event_id,)).fetchone()
            tombstone = decode_event(stored[0].encode()).without_body()
            conn.execute(
                "UPDATE events SET deleted = 1, bodyless = 0, raw = ? WHERE id = ?",
                (tombstone.wire_bytes().decode(), event_id),
            )
        conn.executemany(
            "INSERT INTO feeds (author, head_seq, head_id, frozen, updated) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(author) DO UPDATE SET head_seq = excluded.head_seq,"
            " head_id = excluded.head_id, frozen = excluded.frozen, updated = excluded.updated",
            [
                (h.author, h.seq, h.id, int(h.frozen), now_ms)
                for author in batch.dirty_heads
                if (h := batch.heads[author]) is not None
            ],
        )
        batch.report.held = len(batch.held_now)
        return batch.report

    def _offer(self, batch: _Batch, event: Event) -> None:
        """Apply ``event``, then every held event its arrival unblocks (iteratively)."""
        queue = [event]
        while queue:
            current = queue.pop()
            if self._apply(batch, current) and current.author in batch.pending_authors:
                queue.extend(self._take_pending(batch, current.author, current.seq + 1))

    def _apply(self, batch: _Batch, event: Event) -> bool:
        """Apply the feed rules to one event; True when it was appended."""
        head = batch.head(event.author)
        where = position(head, event.seq)
        held_id = batch.id_at(event.author, event.seq) if where is Position.KNOWN else None
        verdict = classify(head, event, held_id)
        report = batch.report
        if verdict is Verdict.APPEND:
            batch.rows[event.id] = (
                event.id, event.author, event.seq, event.prev, event.kind, event.created,
                batch.now_ms, int(event.body is None), event.wire_bytes().decode(),
            )  # fmt: skip
            batch.ids_by_pos[(event.author, event.seq)] = event.id
            batch.new_events[event.id] = event
            batch.heads[event.author] = advance(head, event)
            batch.dirty_heads.add(event.author)
            report.accepted.append(event)
            if event.kind == "delete":
                self._apply_delete(batch, event)
            return True
        if verdict is Verdict.DUPLICATE:
            report.duplicates += 1
            if event.body is not None:
                self._restore_body(batch, event)
        elif verdict is Verdict.HOLD:
            self._hold(batch, event)
        elif verdict is Verdict.FORK:
            assert head is not None
            existing = held_id if where is Position.KNOWN else head.id
            batch.conn.execute(
                "INSERT OR IGNORE INTO forks (author, seq, existing_id, conflicting_id,"
                " conflicting_raw, detected) VALUES (?, ?, ?, ?, ?, ?)",
                (event.author, event.seq, existing, event.id, event.wire_bytes().decode(),
                 batch.now_ms),
            )  # fmt: skip
            batch.heads[event.author] = freeze(head)
            batch.dirty_heads.add(event.author)
            batch.conn.execute("DELETE FROM pending WHERE author = ?", (event.author,))
            report.forks.append((event.author, event.seq))
        else:
            report.refused.append((event.id, "feed frozen after a fork by its author"))
        return False

    def _restore_body(self, batch: _Batch, event: Event) -> None:
        """A full copy of an event we hold body-less (and not deleted): keep the body.

        A relay may forward envelopes without bodies; the body hash in the
        signed envelope lets any later full copy restore the content, so no
        relay can withhold it for good.
        """
        in_batch = batch.new_events.get(event.id)
        if in_batch is not None:  # appended earlier in this batch, not inserted yet
            restored = in_batch.body is None
            if restored:
                row = batch.rows[event.id]
                batch.rows[event.id] = (*row[:-2], 0, event.wire_bytes().decode())
                batch.new_events[event.id] = event
        else:
            restored = (
                batch.conn.execute(
                    "UPDATE events SET raw = ?, bodyless = 0 WHERE id = ? AND bodyless = 1",
                    (event.wire_bytes().decode(), event.id),
                ).rowcount
                > 0
            )
        if restored and event.kind == "delete":
            self._apply_delete(batch, event)

    def _hold(self, batch: _Batch, event: Event) -> None:
        head = batch.head(event.author)
        if event.seq > (0 if head is None else head.seq) + PENDING_PER_AUTHOR:
            batch.report.refused.append((event.id, "too far ahead of the feed we hold"))
            return
        (count,) = batch.conn.execute(
            "SELECT count(*) FROM pending WHERE author = ?", (event.author,)
        ).fetchone()
        if count >= PENDING_PER_AUTHOR:
            batch.report.refused.append((event.id, "too many events held for this author's gap"))
            return
        if batch.pending_total() >= PENDING_TOTAL:
            batch.report.refused.append((event.id, "too many events held for gaps on this node"))
            return
        batch.conn.execute(
            "INSERT OR IGNORE INTO pending (id, author, seq, raw, received) VALUES (?, ?, ?, ?, ?)",
            (event.id, event.author, event.seq, event.wire_bytes().decode(), batch.now_ms),
        )
        batch.pending_authors.add(event.author)
        batch.held_now.add(event.id)
        batch.pending_count = batch.pending_total() + 1

    def _take_pending(self, batch: _Batch, author: str, seq: int) -> list[Event]:
        rows = batch.conn.execute(
            "SELECT id, raw FROM pending WHERE author = ? AND seq = ?", (author, seq)
        ).fetchall()
        if rows:
            batch.conn.execute("DELETE FROM pending WHERE author = ? AND seq = ?", (author, seq))
        batch.held_now.difference_update(event_id for event_id, _ in rows)
        # Held events were verified before they were held.
        return [decode_event(raw.encode()) for _, raw in rows]

    def _apply_delete(self, batch: _Batch, event: Event) -> None:
        assert event.body is not None or event.kind == "delete"
        if event.body is None:
            return
        target = event.body.get("target")
        assert isinstance(target, str)
        found = batch.lookup(target)
        # Only an author's own earlier content can be deleted, and never a delete.
        if found is not None and found[0] == event.author and found[1] != "delete":
            batch.tombstones.append(target)

    # -- reading ------------------------------------------------------------

    def head(self, author: str) -> FeedHead | None:
        rows = self.query("SELECT head_seq, head_id, frozen FROM feeds WHERE author = ?", (author,))
        if not rows:
            return None
        seq, head_id, frozen = rows[0]
        assert isinstance(seq, int) and isinstance(head_id, str)
        return FeedHead(author, seq, head_id, bool(frozen))

    def heads(self) -> list[FeedHead]:
        rows = self.query("SELECT author, head_seq, head_id, frozen FROM feeds ORDER BY author")
        return [FeedHead(str(a), int(str(s)), str(i), bool(f)) for a, s, i, f in rows]

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` need no more work: checked before verifying.

        Events held body-less are left out so a full copy can restore the body.
        """
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for sql in (
                f"SELECT id FROM events WHERE bodyless = 0 AND id IN ({marks})",  # noqa: S608
                f"SELECT id FROM pending WHERE id IN ({marks})",  # noqa: S608
            ):
                found.update(str(row[0]) for row in self.query(sql, chunk))
        return found

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self.query("SELECT arrival, raw, deleted FROM events WHERE id = ?", (event_id,))
        return None if not rows else self._stored(rows[0])

    def latest_arrival(self) -> int:
        rows = self.query("SELECT max(arrival) FROM events")
        value = rows[0][0]
        return int(value) if isinstance(value, int) else 0

    def refs_since(self, arrival: int, *, limit: int = 1000) -> list[EventRef]:
        """References to events that arrived after ``arrival``, oldest first (no decoding)."""
        rows = self.query(
            "SELECT arrival, id, author, seq, kind FROM events WHERE arrival > ?"
            " ORDER BY arrival LIMIT ?",
            (arrival, limit),
        )
        return [
            EventRef(int(str(a)), str(i), str(w), int(str(s)), str(k)) for a, i, w, s, k in rows
        ]

    def since(self, arrival: int, *, limit: int = 1000) -> list[StoredEvent]:
        """Events that arrived after ``arrival``, oldest first."""
        rows = self.query(
            "SELECT arrival, raw, deleted FROM events WHERE arrival > ? ORDER BY arrival LIMIT ?",
            (arrival, limit),
        )
        return [self._stored(row) for row in rows]

    def iter_raw(self, *, author: str | None = None, batch: int = 2000) -> Iterator[str]:
        """Canonical wire form of stored events, by author then seq (export order)."""
        where, params = ("WHERE author = ?", [author]) if author else ("", [])
        last: tuple[str, int] = ("", 0)
        while True:
            cond = "(author, seq) > (?, ?)"
            sql = (
                f"SELECT author, seq, raw FROM events {where} {'AND' if where else 'WHERE'} {cond}"  # noqa: S608
                " ORDER BY author, seq LIMIT ?"
            )
            rows = self.query(sql, [*params, *last, batch])
            if not rows:
                return
            for _, _, raw in rows:
                yield str(raw)
            last = (str(rows[-1][0]), int(str(rows[-1][1])))

    def heads_for(self, authors: Sequence[str]) -> dict[str, FeedHead]:
        """Heads of the given authors that we hold (absent authors are left out)."""
        found: dict[str, FeedHead] = {}
        for start in range(0, len(authors), 500):
            chunk = list(authors[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.query(
                f"SELECT author, head_seq, head_id, frozen FROM feeds WHERE author IN ({marks})",  # noqa: S608
                chunk,
            )
            for a, s, i, f in rows:
                found[str(a)] = FeedHead(str(a), int(str(s)), str(i), bool(f))
        return found

    def events_after(self, author: str, seq: int, *, limit: int = 1000) -> list[tuple[int, bytes]]:
        """(seq, canonical wire bytes) of ``author``'s events after ``seq``, in order."""
        rows = self.query(
            "SELECT seq, raw FROM events WHERE author = ? AND seq > ? ORDER BY seq LIMIT ?",
            (author, seq, limit),
        )
        return [(int(str(s)), str(raw).encode()) for s, raw in rows]

    def count(self, table: str = "events") -> int:
        if table not in {"events", "pending", "forks", "feeds"}:
            raise ValueError(table)
        return int(str(self.query(f"SELECT count(*) FROM {table}")[0][0]))  # noqa: S608

    def forks(self, author: str | None = None) -> list[tuple[str, int, str, str]]:
        """Fork evidence: (author, seq, id we hold, conflicting id)."""
        sql = "SELECT author, seq, existing_id, conflicting_id FROM forks"
        rows = self.query(sql + " WHERE author = ?", (author,)) if author else self.query(sql)
        return [(str(a), int(str(s)), str(e), str(c)) for a, s, e, c in rows]

    @staticmethod
    def _stored(row: tuple[object, ...]) -> StoredEvent:
        arrival, raw, deleted = row
        assert isinstance(arrival, int) and isinstance(raw, str)
        try:
            event = decode_event(raw.encode())
        except ProtocolError as exc:
            raise StoreError(f"stored event {arrival} no longer decodes: {exc}") from exc
        return StoredEvent(arrival, event, bool(deleted))
