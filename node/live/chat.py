"""Chat rooms between nodes, over one WebRTC data channel per peer node.

Theory of operation
-------------------
A **room** (``collective``, ``jam-<id>``...) is a set of member *nodes*;
users post through their own node.  Every node keeps the whole history of
its rooms in SQLite (``chat_rooms``, ``chat_members``, ``chat_messages``) and
sends its *own* messages to every other member over the data channel to that
node (a full mesh: nothing is relayed, so a message reaches a member only over
a direct channel between the two nodes, and a node cannot pass off messages
as another node's).

Each message carries a random 128-bit ``id`` (de-duplication), a Lamport
clock and its origin's per-room counter ``oseq`` (1, 2, 3... per origin node
and room).  History reads in ``(lamport, author, id)`` order: a node stamps
a new message with one more than the highest Lamport value it holds for the
room, and holding a message is seeing it, so the clock advances on receive.
Every node computes the same total order from the same set of messages,
whatever order they arrived in.

A node stores another node's messages only in ``oseq`` order, so "what I
hold of yours" is one number per (room, origin): the highest ``oseq``.  When
a channel opens, each side sends ``join`` (its member list) and ``want``
(after that number) for every room the two share; the other answers with a
bounded ``msgs`` batch of its own messages and ``more`` when there is more,
which the receiver asks for next (pull, so the receiver paces the exchange).
Live messages go out at once on open channels; a gap (a message beyond the
next ``oseq``) is dropped and answered with a ``want``.  The store is the
outbox: a message posted while a channel is down is fetched by the peer's
``want`` when the channel comes back, exactly once (``oseq``, ``id``), in
order.

Every message is signed by its author's key (``protocol/chat_line.py``: the
room, origin, ``oseq``, id, author, name, time, clock and text), and a node
stores a peer's message only if the signature verifies, so no node can put
words in the mouth of an author whose key it does not hold, alter a message,
or pass another node's message off as its own.

Frames are JSON text on the data channel, parsed under the strict rules
(``protocol.canonical.parse_strict``) and checked field by field
(:func:`parse_frame`: sans-IO, raises :class:`BadChatFrame`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

import trio

from node.errors import RemoteError
from node.ratelimit import RateLimiter
from node.store import Store
from protocol.canonical import MAX_SAFE_INTEGER, parse_strict
from protocol.chat_line import sign_line, verify_line
from protocol.errors import BadSignature, InvalidJSON
from protocol.event import is_hex32
from protocol.keys import SigningKey

log = logging.getLogger(__name__)

ROOM_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
MAX_TEXT = 4000
"""Longest message text, in characters."""
MAX_NAME = 64
"""Longest ``author_name``, in characters."""
MAX_MEMBERS = 32
"""Member nodes per room, this one included."""
MAX_ROOMS = 256
"""Rooms a node is in; a join to a further room is ignored."""
MAX_FRAME_BYTES = 65536
"""Largest frame (aiortc's default remote max message size)."""
BATCH_MESSAGES = 100
BATCH_BYTES = 48_000
"""A ``msgs`` batch stops growing past this many bytes (a 4000-character text is <17 KB)."""
MAX_LAMPORT_JUMP = 1_000_000
"""A peer's message may be at most this far ahead of the room's clock here."""
MAX_BAD_FRAMES = 20
"""Invalid frames a channel may send before it is closed."""
FRAMES_PER_S = 200.0
FRAME_BURST = 1000
"""Frames a peer may send per second (sustained, burst) before its channel is closed."""

_ID = re.compile(r"[0-9a-f]{32}\Z")


class BadChatFrame(RemoteError):
    """A peer sent a chat frame we refuse."""


# -- values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatMessage:
    room: str
    origin: str
    """The node the message was posted on (the channel it came over)."""
    oseq: int
    id: str
    author: str
    author_name: str
    sent_ms: int
    lamport: int
    text: str
    sig: str = ""
    """The author's signature (``protocol/chat_line.py``); empty only for pre-signature rows."""

    def signed_fields(self) -> dict[str, Any]:
        return {
            "room": self.room, "origin": self.origin, "oseq": self.oseq, "id": self.id,
            "author": self.author, "author_name": self.author_name, "sent_ms": self.sent_ms,
            "lamport": self.lamport, "text": self.text,
        }  # fmt: skip

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "oseq": self.oseq, "author": self.author,
            "author_name": self.author_name, "sent_ms": self.sent_ms, "lamport": self.lamport,
            "text": self.text, "sig": self.sig,
        }  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """The API's view: the wire fields, the room, the origin node and a history cursor."""
        wire = self.wire()
        del wire["sig"]  # checked on arrival; not the API's business
        return {
            **wire,
            "room": self.room,
            "origin": self.origin,
            "cursor": HistoryCursor(self.lamport, self.author, self.id).encode(),
        }


@dataclass(frozen=True, slots=True)
class HistoryCursor:
    """A position in a room's history: after (lamport, author, id)."""

    lamport: int
    author: str
    id: str

    def encode(self) -> str:
        raw = f"{self.lamport}.{self.author}.{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> HistoryCursor | None:
        if not text:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            lamport, author, message_id = raw.split(".")
            cursor = cls(int(lamport), author, message_id)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            cursor = None
        if cursor is None or not is_hex32(cursor.author) or not _ID.match(cursor.id):
            raise ValueError("invalid cursor: pass back the 'cursor' of a message")
        return cursor


def check_room(room: object) -> str:
    if not isinstance(room, str) or ROOM_PATTERN.match(room) is None:
        raise ValueError(
            "a room is 1 to 64 characters: lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return room


def check_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise ValueError(f"text must be a non-blank string of at most {MAX_TEXT} characters")
    return text


# -- frames (sans-IO) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """I am in ``room`` with these member nodes."""

    room: str
    members: frozenset[str]


@dataclass(frozen=True, slots=True)
class Want:
    """Send me your own messages in ``room`` after your ``oseq`` ``after``."""

    room: str
    after: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Some of my own messages in ``room``, in ``oseq`` order.

    ``reply``: the answer to a Want (``more``: ask again); otherwise a live message.
    """

    room: str
    messages: tuple[dict[str, Any], ...]
    more: bool = False
    reply: bool = False


Frame = Join | Want | Batch


def encode_frame(frame: Frame) -> str:
    body: dict[str, Any]
    match frame:
        case Join(room, members):
            body = {"t": "join", "room": room, "members": sorted(members)}
        case Want(room, after):
            body = {"t": "want", "room": room, "after": after}
        case Batch(room, messages, more, reply):
            body = {"t": "msgs", "room": room, "msgs": list(messages), "more": more, "reply": reply}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _int(value: Any, name: str, low: int) -> int:
    if type(value) is not int or not low <= value <= MAX_SAFE_INTEGER:
        raise BadChatFrame(f"{name} must be an integer in [{low}, 2^53-1]")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadChatFrame(f"{name} must be true or false")
    return value


def check_wire_message(room: str, origin: str, obj: Any) -> ChatMessage:
    """A message as a peer sent it, checked; ``origin`` is the node it came from."""
    if not isinstance(obj, dict):
        raise BadChatFrame("a message must be an object")
    message_id, author, name = obj.get("id"), obj.get("author"), obj.get("author_name")
    if not isinstance(message_id, str) or not _ID.match(message_id):
        raise BadChatFrame("message id must be 32 lowercase hex characters")
    if not is_hex32(author):
        raise BadChatFrame("author must be 64 lowercase hex characters")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise BadChatFrame(f"author_name must be a string of at most {MAX_NAME} characters")
    try:
        text = check_text(obj.get("text"))
    except ValueError as exc:
        raise BadChatFrame(str(exc)) from None
    assert isinstance(author, str)
    message = ChatMessage(
        room=room,
        origin=origin,
        oseq=_int(obj.get("oseq"), "oseq", 1),
        id=message_id,
        author=author,
        author_name=name,
        sent_ms=_int(obj.get("sent_ms"), "sent_ms", 0),
        lamport=_int(obj.get("lamport"), "lamport", 1),
        text=text,
        sig=str(obj.get("sig")),
    )
    try:
        verify_line(message.signed_fields(), obj.get("sig"))
    except BadSignature as exc:
        raise BadChatFrame(f"message {message_id}: {exc}") from None
    return message


def parse_frame(text: str) -> Frame:
    """One frame from a data channel; :class:`BadChatFrame` for anything refused."""
    try:
        data = text.encode("utf-8")
        obj = parse_strict(data, max_bytes=MAX_FRAME_BYTES, max_depth=3)
    except (UnicodeEncodeError, InvalidJSON) as exc:
        raise BadChatFrame(f"not a chat frame: {exc}") from None
    if not isinstance(obj, dict):
        raise BadChatFrame("a chat frame must be an object")
    try:
        room = check_room(obj.get("room"))
    except ValueError as exc:
        raise BadChatFrame(str(exc)) from None
    match obj.get("t"):
        case "join":
            members = obj.get("members")
            if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
                raise BadChatFrame(f"members must be a list of 1 to {MAX_MEMBERS} node ids")
            if not all(is_hex32(m) for m in members):
                raise BadChatFrame("members must be node ids (64 lowercase hex characters)")
            return Join(room, frozenset(str(m) for m in members))
        case "want":
            return Want(room, _int(obj.get("after"), "after", 0))
        case "msgs":
            messages = obj.get("msgs")
            if not isinstance(messages, list) or len(messages) > BATCH_MESSAGES:
                raise BadChatFrame(f"msgs must be a list of at most {BATCH_MESSAGES} messages")
            more, reply = _bool(obj.get("more"), "more"), _bool(obj.get("reply"), "reply")
            checked: list[dict[str, Any]] = []
            for message in messages:
                if not isinstance(message, dict):
                    raise BadChatFrame("each message must be an object")
                checked.append(message)  # its fields are checked on arrival
            return Batch(room, tuple(checked), more, reply)
        case other:
            raise BadChatFrame(f"unknown chat frame {str(other)[:40]!r}")


# -- the store (blocking: call from a worker thread) ----------------------------------

_COLUMNS = "room, origin, oseq, id, author, author_name, sent_ms, lamport, text, sig"
_INSERT = (
    f"INSERT INTO chat_messages ({_COLUMNS}, received) "  # noqa: S608 - constant columns
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _int_of(value: object) -> int:
    assert isinstance(value, int)
    return value


def _message(row: tuple[object, ...]) -> ChatMessage:
    room, origin, oseq, message_id, author, name, sent, lamport, text, sig = row
    return ChatMessage(
        str(room), str(origin), _int_of(oseq), str(message_id), str(author), str(name),
        _int_of(sent), _int_of(lamport), str(text), str(sig),
    )  # fmt: skip


def load_rooms(store: Store) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {
        str(room): set() for (room,) in store.query("SELECT room FROM chat_rooms")
    }
    for room, node_id in store.query("SELECT room, node_id FROM chat_members"):
        rooms.setdefault(str(room), set()).add(str(node_id))
    return rooms


def save_room(store: Store, room: str, members: Iterable[str], now_ms: int) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO chat_rooms (room, created) VALUES (?, ?)", (room, now_ms)
        )
        conn.executemany(
            "INSERT OR IGNORE INTO chat_members (room, node_id, added) VALUES (?, ?, ?)",
            [(room, member, now_ms) for member in members],
        )


def append_own(
    store: Store,
    room: str,
    origin: str,
    key: SigningKey,
    author_name: str,
    text: str,
    now_ms: int,
) -> ChatMessage:
    """Store a message posted here, signed by ``key``: the next ``oseq``, the room's clock + 1."""
    with store.transaction() as conn:
        (oseq,) = conn.execute(
            "SELECT coalesce(max(oseq), 0) + 1 FROM chat_messages WHERE room = ? AND origin = ?",
            (room, origin),
        ).fetchone()
        (lamport,) = conn.execute(
            "SELECT coalesce(max(lamport), 0) + 1 FROM chat_messages WHERE room = ?", (room,)
        ).fetchone()
        message = ChatMessage(
            room, origin, oseq, secrets.token_hex(16), key.id, author_name, now_ms, lamport, text
        )
        message = replace(message, sig=sign_line(key, message.signed_fields()))
        conn.execute(_INSERT, (*_message_row(message), now_ms))
    return message


def _message_row(m: ChatMessage) -> tuple[object, ...]:
    return (
        m.room, m.origin, m.oseq, m.id, m.author, m.author_name, m.sent_ms, m.lamport, m.text,
        m.sig,
    )  # fmt: skip


@dataclass
class Stored:
    """What :func:`store_remote` did with a peer's messages."""

    stored: list[ChatMessage]
    have: int
    """The origin's highest ``oseq`` now held here."""
    gap: bool
    """A message skipped ahead of ``have + 1``: it and those after it were dropped."""
    refused: list[str]


def store_remote(
    store: Store, room: str, origin: str, messages: list[ChatMessage], now_ms: int
) -> Stored:
    """Store a peer's own messages in ``oseq`` order, skipping those held, stopping at a gap."""
    result = Stored([], 0, False, [])
    with store.transaction(durable=False) as conn:
        (have,) = conn.execute(
            "SELECT coalesce(max(oseq), 0) FROM chat_messages WHERE room = ? AND origin = ?",
            (room, origin),
        ).fetchone()
        (clock,) = conn.execute(
            "SELECT coalesce(max(lamport), 0) FROM chat_messages WHERE room = ?", (room,)
        ).fetchone()
        for message in messages:
            if message.oseq <= have:
                continue  # held already
            if message.oseq > have + 1:
                result.gap = True
                break
            if message.lamport > clock + MAX_LAMPORT_JUMP:
                result.refused.append(f"lamport {message.lamport} jumps past {clock}")
                break
            taken = conn.execute("SELECT 1 FROM chat_messages WHERE id = ?", (message.id,))
            if taken.fetchone() is not None:
                result.refused.append(f"message id {message.id} reused")
                break
            conn.execute(_INSERT, (*_message_row(message), now_ms))
            have = message.oseq
            clock = max(clock, message.lamport)
            result.stored.append(message)
    result.have = have
    return result


def held_from(store: Store, room: str, origin: str) -> int:
    """The highest ``oseq`` of ``origin``'s messages in ``room`` held here (0: none)."""
    rows = store.query(
        "SELECT coalesce(max(oseq), 0) FROM chat_messages WHERE room = ? AND origin = ?",
        (room, origin),
    )
    return _int_of(rows[0][0])


def own_after(store: Store, room: str, origin: str, after: int) -> tuple[list[ChatMessage], bool]:
    """The next batch of ``origin``'s messages after ``oseq`` ``after``; and whether more follow."""
    rows = store.query(
        f"SELECT {_COLUMNS} FROM chat_messages WHERE room = ? AND origin = ? AND oseq > ? "  # noqa: S608 - constant columns
        "ORDER BY oseq LIMIT ?",
        (room, origin, after, BATCH_MESSAGES + 1),
    )
    batch: list[ChatMessage] = []
    size = 0
    for row in rows[:BATCH_MESSAGES]:
        message = _message(row)
        cost = len(encode_frame(Batch(room, (message.wire(),))).encode())
        if batch and size + cost > BATCH_BYTES:
            return batch, True
        batch.append(message)
        size += cost
    return batch, len(rows) > BATCH_MESSAGES


def history(store: Store, room: str, after: HistoryCursor | None, limit: int) -> list[ChatMessage]:
    """A room's messages in (lamport, author, id) order, after ``after``."""
    params: list[object] = [room]
    where = "room = ?"
    if after is not None:
        where += " AND (lamport, author, id) > (?, ?, ?)"
        params += [after.lamport, after.author, after.id]
    rows = store.query(
        f"SELECT {_COLUMNS} FROM chat_messages WHERE {where} "  # noqa: S608 - constant clauses
        "ORDER BY lamport, author, id LIMIT ?",
        (*params, limit),
    )
    return [_message(row) for row in rows]


# -- the service ----------------------------------------------------------------------


class Channels(Protocol):
    """What chat needs from the per-peer data channels (node/live/channels.py)."""

    def send(self, peer: str, text: str) -> bool:
        """Queue ``text`` on the open channel to ``peer``; False when none is open."""

    def is_open(self, peer: str) -> bool: ...

    def wake(self) -> None:
        """Some peer may want a channel now (rooms changed, a message waits)."""


class ChatService:
    """Rooms, history and the chat protocol of one node; frames in, frames out."""

    def __init__(
        self, store: Store, me: str, channels: Channels, *, clock: Callable[[], int] | None = None
    ) -> None:
        from node.daemon import now_ms  # the daemon imports this package lazily

        self.store = store
        self.me = me
        self.channels = channels
        self.rooms: dict[str, set[str]] = {}
        self._now_ms = clock or now_ms
        self._bad_frames: dict[str, int] = {}
        self._frames = RateLimiter(rate=FRAMES_PER_S, burst=FRAME_BURST)
        self.received = 0
        self.refused = 0

    async def load(self) -> None:
        self.rooms = await trio.to_thread.run_sync(load_rooms, self.store)

    # -- for the channels ----------------------------------------------------------

    def wanted_peers(self) -> set[str]:
        """The nodes this one shares a room with: it keeps a channel to each it can reach."""
        peers: set[str] = set()
        for members in self.rooms.values():
            peers |= members
        peers.discard(self.me)
        return peers

    def _shared(self, peer: str) -> list[str]:
        return sorted(room for room, members in self.rooms.items() if peer in members)

    async def on_open(self, peer: str) -> None:
        """A channel to ``peer`` opened: tell it our rooms, ask for what we lack."""
        self._bad_frames.pop(peer, None)
        for room in self._shared(peer):
            self._send(peer, Join(room, frozenset(self.rooms[room])))
            held = await trio.to_thread.run_sync(held_from, self.store, room, peer)
            self._send(peer, Want(room, held))

    def on_close(self, peer: str) -> None:
        self._bad_frames.pop(peer, None)

    async def on_frame(self, peer: str, text: str) -> None:
        """Handle one frame from ``peer``; raises BadChatFrame once a channel sent too many."""
        if not self._frames.allow(peer, trio.current_time()):
            raise BadChatFrame(f"more than {FRAMES_PER_S:.0f} frames per second")
        try:
            frame = parse_frame(text)
            await self._handle(peer, frame)
        except BadChatFrame as exc:
            self.refused += 1
            count = self._bad_frames[peer] = self._bad_frames.get(peer, 0) + 1
            log.warning("chat frame from %s refused: %s", peer[:16], exc)
            if count > MAX_BAD_FRAMES:
                raise BadChatFrame(f"{count} invalid chat frames") from exc

    def _send(self, peer: str, frame: Frame) -> bool:
        return self.channels.send(peer, encode_frame(frame))

    async def _handle(self, peer: str, frame: Frame) -> None:
        members = self.rooms.get(frame.room)
        if isinstance(frame, Join):
            await self._on_join(peer, frame)
            return
        if members is None or peer not in members:
            raise BadChatFrame(f"{peer[:16]}… is not a member of room {frame.room!r} here")
        if isinstance(frame, Want):
            batch, more = await trio.to_thread.run_sync(
                own_after, self.store, frame.room, self.me, frame.after
            )
            self._send(peer, Batch(frame.room, tuple(m.wire() for m in batch), more, reply=True))
            return
        messages = [check_wire_message(frame.room, peer, m) for m in frame.messages]
        result = await trio.to_thread.run_sync(
            store_remote, self.store, frame.room, peer, messages, self._now_ms()
        )
        self.received += len(result.stored)
        if result.refused:
            raise BadChatFrame("; ".join(result.refused))
        # The answer to our want with more to come, or a live message past a gap
        # (e.g. sent before the peer had our want): ask from what we hold.
        if (frame.reply and frame.more) or (result.gap and not frame.reply):
            self._send(peer, Want(frame.room, result.have))

    async def _on_join(self, peer: str, frame: Join) -> None:
        if peer not in frame.members:
            raise BadChatFrame(f"a join for room {frame.room!r} must list its sender")
        members = self.rooms.get(frame.room)
        if members is None:
            if len(self.rooms) >= MAX_ROOMS:
                raise BadChatFrame(f"already in {MAX_ROOMS} rooms")
            members = set()
        room_is_new = not members
        if not room_is_new and peer not in members:
            # Only a member may add members (it learns of the room from one).
            raise BadChatFrame(f"{peer[:16]}… is not a member of room {frame.room!r} here")
        added = sorted(frame.members - members)[: max(0, MAX_MEMBERS - len(members | {self.me}))]
        if not added and not room_is_new:
            return
        fresh = {*members, *added, self.me}
        await trio.to_thread.run_sync(save_room, self.store, frame.room, fresh, self._now_ms())
        fresh = self.rooms[frame.room] = self.rooms.get(frame.room, set()) | fresh  # raced?
        if room_is_new:  # the peer added us: ask for the history it holds
            held = await trio.to_thread.run_sync(held_from, self.store, frame.room, peer)
            self._send(peer, Join(frame.room, frozenset(fresh)))
            self._send(peer, Want(frame.room, held))
        self.channels.wake()

    # -- for the API ---------------------------------------------------------------

    async def join(self, room: str, peers: Iterable[str]) -> set[str]:
        """Create or join ``room`` with ``peers`` (node ids); tell every member."""
        check_room(room)
        members = self.rooms.get(room)
        if members is None and len(self.rooms) >= MAX_ROOMS:
            raise ValueError(f"this node is already in {MAX_ROOMS} rooms")
        fresh = {*(members or ()), *peers, self.me}
        if len(fresh) > MAX_MEMBERS:
            raise ValueError(f"a room has at most {MAX_MEMBERS} member nodes")
        await trio.to_thread.run_sync(save_room, self.store, room, fresh, self._now_ms())
        fresh = self.rooms[room] = self.rooms.get(room, set()) | fresh  # a join may have raced
        for member in sorted(fresh - {self.me}):
            self._send(member, Join(room, frozenset(fresh)))  # the rest learn it on open
            if members is None or member not in members:
                held = await trio.to_thread.run_sync(held_from, self.store, room, member)
                self._send(member, Want(room, held))
        self.channels.wake()
        return fresh

    async def post(self, room: str, key: SigningKey, author_name: str, text: str) -> ChatMessage:
        """Store a message signed by ``key`` and send it to every member with an open channel."""
        members = self.rooms.get(room)
        if members is None:
            raise KeyError(room)
        check_text(text)
        work = partial(
            append_own, self.store, room, self.me, key, author_name[:MAX_NAME], text,
            self._now_ms(),
        )  # fmt: skip
        message = await trio.to_thread.run_sync(work)
        frame = Batch(room, (message.wire(),))
        waiting = [peer for peer in sorted(members - {self.me}) if not self._send(peer, frame)]
        if waiting:
            self.channels.wake()  # sent by the peer's want once a channel opens
        return message

    async def history(
        self, room: str, after: HistoryCursor | None, limit: int
    ) -> list[ChatMessage]:
        return await trio.to_thread.run_sync(history, self.store, room, after, limit)
