"""Replication messages on the peer link, and their framing into Noise chunks.

Theory of operation
-------------------
Every application message is one type byte and a body.  Control messages
carry a small JSON object; an ``Events`` batch carries many signed events as
length-prefixed canonical bytes (one WebSocket message per event measured at
~4k/s, far too slow: batches amortise framing, encryption and syscalls).

A Noise transport message holds at most 65,519 bytes of plaintext, so an
application message is cut into chunks, each prefixed with one flag byte
(``MORE`` or ``LAST``) and reassembled on the far side under a hard cap.
Bytes in, messages out; no I/O.

Replication (see ``specs/federation.md``): each side sends ``Want`` (digests of
the authors it replicates and of its heads for them).  A side that knows that
scope compares with its own heads: equal digests mean nothing to exchange
(``InSync``); otherwise it asks for the full ``Vector`` (``NeedVector``) and
then streams the missing events in order, then live.

Live signalling (``specs/live.md`` §9) rides the same link as one more binary
type, ``0x03 | envelope``: a signed WebRTC offer or answer, carried as the
exact bytes the sender signed.  The framing layer does not parse it (the live
layer verifies it strictly); it only bounds its size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from protocol.canonical import MAX_EVENT_BYTES
from protocol.errors import ProtocolError
from protocol.signalling import MAX_SIGNAL_BYTES

MAX_MESSAGE = 4 * 1024 * 1024
MAX_EVENTS_PER_BATCH = 4096
MAX_INTEREST_AUTHORS = 10_000
MAX_VECTOR_AUTHORS = 50_000  # ~3.7 MB of JSON: a full vector fits in MAX_MESSAGE
CHUNK_PLAINTEXT = 65535 - 16 - 1
_MORE, _LAST = 0x01, 0x00
_CONTROL, _EVENTS, _SIGNAL = 0x01, 0x02, 0x03
_U32 = struct.Struct(">I")


class FramingError(ProtocolError):
    """A peer sent a malformed or oversized message."""


@dataclass(frozen=True, slots=True)
class Want:
    """The authors I replicate (by digest), the digest of my heads for them, and
    the digest of my interest (what I follow or own; None: nothing announced)."""

    scope_hash: str
    vector_hash: str
    interest_hash: str | None = None


@dataclass(frozen=True, slots=True)
class NeedVector:
    """I do not know your scope, or our heads differ: send me your vector."""


@dataclass(frozen=True, slots=True)
class NeedInterest:
    """I do not know the interest list behind your digest: send it."""


@dataclass(frozen=True, slots=True)
class Vector:
    """My latest seq for every author I replicate (0 = I hold none)."""

    heads: dict[str, int]


@dataclass(frozen=True, slots=True)
class InSync:
    """I hold exactly your heads for your scope: nothing to send you."""


@dataclass(frozen=True, slots=True)
class Events:
    """A batch of signed events, each in its canonical wire form."""

    events: list[bytes]


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class Goodbye:
    reason: str


@dataclass(frozen=True, slots=True)
class Interest:
    """The authors I follow or own (not those I relay): ask your other peers for them."""

    authors: frozenset[str]


@dataclass(frozen=True, slots=True)
class SignalMessage:
    """A signed live-signalling envelope (``specs/live.md`` §9), as the sender signed it.

    Not parsed here: between 1 and ``MAX_SIGNAL_BYTES`` bytes, verified by the live layer.
    """

    envelope: bytes


Message = (
    Want
    | NeedVector
    | Vector
    | InSync
    | Events
    | Ping
    | Pong
    | Goodbye
    | Interest
    | NeedInterest
    | SignalMessage
)

_HEX64 = frozenset("0123456789abcdef")


def _hex32(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX64:
        raise FramingError(f"{what} must be 64 lowercase hex characters")
    return value


def _nonce(value: Any) -> int:
    if type(value) is not int or not 0 <= value < 2**53:
        raise FramingError("nonce must be an integer in [0, 2^53)")
    return value


def _check_signal(envelope: bytes) -> bytes:
    if not 1 <= len(envelope) <= MAX_SIGNAL_BYTES:
        raise FramingError(f"a signal is 1 to {MAX_SIGNAL_BYTES} bytes, not {len(envelope)}")
    return envelope


def encode(message: Message) -> bytes:
    """One application message as bytes (before chunking)."""
    if isinstance(message, SignalMessage):
        return bytes([_SIGNAL]) + _check_signal(message.envelope)
    if isinstance(message, Events):
        parts = [bytes([_EVENTS]), _U32.pack(len(message.events))]
        for raw in message.events:
            parts += [_U32.pack(len(raw)), raw]
        return b"".join(parts)
    body: dict[str, Any]
    match message:
        case Want(scope_hash, vector_hash, interest_hash):
            body = {"t": "want", "scope": scope_hash, "heads": vector_hash}
            if interest_hash is not None:
                body["interest"] = interest_hash
        case NeedVector():
            body = {"t": "need_vector"}
        case NeedInterest():
            body = {"t": "need_interest"}
        case Vector(heads):
            body = {"t": "vector", "heads": heads}
        case InSync():
            body = {"t": "in_sync"}
        case Ping(nonce):
            body = {"t": "ping", "n": nonce}
        case Pong(nonce):
            body = {"t": "pong", "n": nonce}
        case Goodbye(reason):
            body = {"t": "bye", "reason": reason[:200]}
        case Interest(authors):
            body = {"t": "interest", "authors": sorted(authors)}
    return bytes([_CONTROL]) + json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes) -> Message:
    """Parse one application message; anything malformed raises FramingError."""
    if not data:
        raise FramingError("empty message")
    if len(data) > MAX_MESSAGE:
        raise FramingError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    kind = data[0]
    if kind == _EVENTS:
        return Events(_decode_events(data))
    if kind == _SIGNAL:
        return SignalMessage(_check_signal(data[1:]))
    if kind != _CONTROL:
        raise FramingError(f"unknown message type {kind}")
    try:
        body = json.loads(data[1:].decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise FramingError(f"control message is not UTF-8 JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise FramingError("control message must be an object")
    return _decode_control(body)


def _decode_control(body: dict[str, Any]) -> Message:
    match body.get("t"):
        case "want":
            interest = body.get("interest")
            return Want(
                _hex32(body.get("scope"), "scope"),
                _hex32(body.get("heads"), "heads"),
                None if interest is None else _hex32(interest, "interest"),
            )
        case "need_vector":
            return NeedVector()
        case "need_interest":
            return NeedInterest()
        case "vector":
            heads = body.get("heads")
            if not isinstance(heads, dict) or len(heads) > MAX_VECTOR_AUTHORS:
                raise FramingError(
                    f"vector heads must be an object of at most {MAX_VECTOR_AUTHORS} authors"
                )
            for author, seq in heads.items():
                _hex32(author, "vector author")
                if type(seq) is not int or not 0 <= seq < 2**53:
                    raise FramingError("vector seq must be an integer in [0, 2^53)")
            return Vector(heads)
        case "in_sync":
            return InSync()
        case "ping":
            return Ping(_nonce(body.get("n")))
        case "pong":
            return Pong(_nonce(body.get("n")))
        case "bye":
            reason = body.get("reason")
            return Goodbye(reason[:200] if isinstance(reason, str) else "")
        case "interest":
            authors = body.get("authors")
            if not isinstance(authors, list) or len(authors) > MAX_INTEREST_AUTHORS:
                raise FramingError(
                    f"interest authors must be a list of at most {MAX_INTEREST_AUTHORS}"
                )
            return Interest(frozenset(_hex32(a, "interest author") for a in authors))
        case other:
            raise FramingError(f"unknown control message {str(other)[:40]!r}")


def _decode_events(data: bytes) -> list[bytes]:
    if len(data) < 5:
        raise FramingError("truncated events batch")
    (count,) = _U32.unpack_from(data, 1)
    if count > MAX_EVENTS_PER_BATCH:
        raise FramingError(f"batch of {count} events exceeds {MAX_EVENTS_PER_BATCH}")
    events: list[bytes] = []
    offset = 5
    for _ in range(count):
        if offset + 4 > len(data):
            raise FramingError("truncated events batch")
        (size,) = _U32.unpack_from(data, offset)
        offset += 4
        if size > MAX_EVENT_BYTES or offset + size > len(data):
            raise FramingError("event length out of bounds")
        events.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise FramingError("trailing bytes after events batch")
    return events


def chunks(message: bytes) -> Iterator[bytes]:
    """Cut an encoded message into flag-prefixed Noise plaintexts."""
    if len(message) > MAX_MESSAGE:
        raise FramingError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE}")
    for start in range(0, max(len(message), 1), CHUNK_PLAINTEXT):
        piece = message[start : start + CHUNK_PLAINTEXT]
        last = start + CHUNK_PLAINTEXT >= len(message)
        yield bytes([_LAST if last else _MORE]) + piece


class Reassembler:
    """Joins chunks back into messages, refusing to buffer beyond MAX_MESSAGE."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bytes | None:
        """Add one decrypted chunk; return a whole message when it completes."""
        if not chunk or chunk[0] not in (_MORE, _LAST):
            raise FramingError("bad chunk flag")
        if chunk[0] == _MORE and len(chunk) - 1 < CHUNK_PLAINTEXT:
            # Only the last chunk may be short: this also bounds the chunk count.
            raise FramingError("a non-final chunk must be full")
        self._size += len(chunk) - 1
        if self._size > MAX_MESSAGE:
            raise FramingError(f"message exceeds {MAX_MESSAGE} bytes")
        self._parts.append(chunk[1:])
        if chunk[0] == _MORE:
            return None
        message = b"".join(self._parts)
        self._parts, self._size = [], 0
        return message
