"""The signed event: Talas's unit of federation.

Theory of operation
-------------------
An event on the wire is one JSON object (canonical per RFC 8785)::

    {"author": hex32, "body": {...}, "body_hash": hex32, "created": ms,
     "kind": str, "prev": hex32 | null, "seq": int, "sig": hex64, "v": 1}

The *envelope* is every field except ``body`` and ``sig``.  The author signs
``SIGNATURE_DOMAIN || canonical(envelope)``; the envelope commits to the body
through ``body_hash = sha256(canonical(body))``.  The event id is
``sha256(canonical(envelope + sig))``.  Because the body is committed by hash
rather than signed inline, a replica can drop the body of a deleted event
(a tombstone) and still relay a verifiable envelope, so the author's hash
chain (``prev`` is the id of the author's previous event) stays intact on
every node.  An event with no ``body`` key is such a body-less envelope.

Decoding is split from signature verification so an ingest pipeline can drop
events it already holds (by id) before paying for the expensive Ed25519 check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from protocol.canonical import MAX_EVENT_BYTES, MAX_SAFE_INTEGER, JSONValue, canonical_bytes
from protocol.canonical import parse_strict as _parse_strict
from protocol.errors import InvalidEvent, InvalidJSON
from protocol.keys import SigningKey, verify
from protocol.kinds import validate_body

EVENT_VERSION = 1
SIGNATURE_DOMAIN = b"talas/event/v1\x00"
ENVELOPE_FIELDS = frozenset({"v", "author", "seq", "prev", "kind", "created", "body_hash"})
WIRE_FIELDS = ENVELOPE_FIELDS | {"sig", "body"}

_HEX32 = re.compile(r"[0-9a-f]{64}\Z")
_HEX64 = re.compile(r"[0-9a-f]{128}\Z")
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")


def is_hex32(value: object) -> bool:
    """True for a 32-byte value in lowercase hex (key ids, event ids, hashes)."""
    return isinstance(value, str) and _HEX32.match(value) is not None


def body_hash_of(body: dict[str, JSONValue]) -> str:
    """The commitment to a body that the envelope carries."""
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


_AUTHOR_PREFIX_LEN = len('{"author":"') + 64 + len('",')  # up to and including the comma


def _envelope_bytes(
    author: str, body_hash: str, created: int, kind: str, prev: str | None, seq: int
) -> bytes:
    # Every field is validated before we get here (hex, safe ints, a kind from
    # KIND_PATTERN), so none needs JSON escaping and this string is exactly the
    # RFC 8785 form with keys in sorted order; tests check it against
    # canonical_bytes.  It runs on every event ingested, hence no generic encoder.
    prev_json = "null" if prev is None else f'"{prev}"'
    return (
        f'{{"author":"{author}","body_hash":"{body_hash}","created":{created},'
        f'"kind":"{kind}","prev":{prev_json},"seq":{seq},"v":{EVENT_VERSION}}}'
    ).encode()


def _signed_envelope_bytes(envelope: bytes, sig: str) -> bytes:
    # Insert "sig" in its sorted position: after "seq", before "v".
    head, _, _ = envelope.rpartition(b',"v":')
    return head + f',"sig":"{sig}","v":{EVENT_VERSION}}}'.encode()


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded event.  ``body`` is None for a body-less (tombstoned) envelope."""

    id: str
    author: str
    seq: int
    prev: str | None
    kind: str
    created: int
    body_hash: str
    sig: str
    body: dict[str, JSONValue] | None
    body_bytes: bytes | None = field(default=None, compare=False, repr=False)
    """Canonical bytes of ``body``, kept from decoding to build the wire form fast."""

    def signing_bytes(self) -> bytes:
        """The exact bytes the author's signature covers."""
        return SIGNATURE_DOMAIN + _envelope_bytes(
            self.author, self.body_hash, self.created, self.kind, self.prev, self.seq
        )

    def to_json(self, *, with_body: bool = True) -> dict[str, JSONValue]:
        """The wire object."""
        obj: dict[str, JSONValue] = {
            "v": EVENT_VERSION,
            "author": self.author,
            "seq": self.seq,
            "prev": self.prev,
            "kind": self.kind,
            "created": self.created,
            "body_hash": self.body_hash,
            "sig": self.sig,
        }
        if with_body and self.body is not None:
            obj["body"] = self.body
        return obj

    def wire_bytes(self, *, with_body: bool = True) -> bytes:
        """Canonical bytes of the wire object: what export and federation send."""
        signed = _signed_envelope_bytes(
            _envelope_bytes(
                self.author, self.body_hash, self.created, self.kind, self.prev, self.seq
            ),
            self.sig,
        )
        if not with_body or self.body is None:
            return signed
        body_bytes = self.body_bytes if self.body_bytes is not None else canonical_bytes(self.body)
        # "body" sorts right after "author", the first key of the envelope.
        cut = _AUTHOR_PREFIX_LEN
        return signed[:cut] + b'"body":' + body_bytes + b"," + signed[cut:]

    def without_body(self) -> Event:
        """The tombstone of this event: same id, same signature, no content."""
        return Event(
            self.id, self.author, self.seq, self.prev, self.kind,
            self.created, self.body_hash, self.sig, None, None,
        )  # fmt: skip


def verify_signature(event: Event) -> None:
    """Raise :class:`BadSignature` unless the author signed this envelope."""
    verify(bytes.fromhex(event.author), event.signing_bytes(), bytes.fromhex(event.sig))


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidEvent(message)


def _safe_int(obj: dict[str, Any], name: str, minimum: int) -> int:
    value = obj.get(name)
    _require(
        type(value) is int and minimum <= value <= MAX_SAFE_INTEGER,
        f"{name!r} must be an integer in [{minimum}, 2^53-1], got {value!r:.80}",
    )
    assert isinstance(value, int)
    return value


def decode_value(obj: JSONValue) -> Event:
    """Check an already-parsed wire object and build the :class:`Event`.

    Everything except the signature is checked here: fields, types, the
    seq/prev relation, the body's hash and the body's schema for its kind.
    """
    _require(isinstance(obj, dict), "an event must be a JSON object")
    assert isinstance(obj, dict)
    extra = obj.keys() - WIRE_FIELDS
    _require(not extra, f"unknown event field(s): {', '.join(sorted(extra))[:200]}")
    missing = (ENVELOPE_FIELDS | {"sig"}) - obj.keys()
    _require(not missing, f"missing event field(s): {', '.join(sorted(missing))}")
    _require(
        obj["v"] == EVENT_VERSION and type(obj["v"]) is int,
        f"unsupported event version {obj['v']!r:.40}",
    )
    author, body_hash, sig, prev, kind = (
        obj["author"], obj["body_hash"], obj["sig"], obj["prev"], obj["kind"],
    )  # fmt: skip
    _require(is_hex32(author), "'author' must be 64 lowercase hex characters")
    _require(is_hex32(body_hash), "'body_hash' must be 64 lowercase hex characters")
    _require(
        isinstance(sig, str) and _HEX64.match(sig) is not None,
        "'sig' must be 128 lowercase hex characters",
    )
    _require(
        isinstance(kind, str) and KIND_PATTERN.match(kind) is not None,
        f"'kind' must match {KIND_PATTERN.pattern[:-2]}, got {kind!r:.80}",
    )
    seq = _safe_int(obj, "seq", 1)
    created = _safe_int(obj, "created", 0)
    if seq == 1:
        _require(prev is None, "the first event of a feed (seq 1) must have prev null")
    else:
        _require(is_hex32(prev), f"event seq {seq} needs 'prev': the id of event {seq - 1}")
    assert isinstance(author, str) and isinstance(body_hash, str) and isinstance(sig, str)
    assert isinstance(kind, str) and (prev is None or isinstance(prev, str))

    body: dict[str, JSONValue] | None = None
    body_bytes = None
    if "body" in obj:
        raw_body = obj["body"]
        _require(isinstance(raw_body, dict), "'body' must be a JSON object")
        assert isinstance(raw_body, dict)
        body = raw_body
        body_bytes = canonical_bytes(body)
        _require(
            hashlib.sha256(body_bytes).hexdigest() == body_hash,
            "'body' does not match 'body_hash'",
        )
        validate_body(kind, body)
    envelope = _envelope_bytes(author, body_hash, created, kind, prev, seq)
    signed = _signed_envelope_bytes(envelope, sig)
    # The cap applies to the canonical form we store and relay, which can be
    # longer than a non-canonical input (1.5e300 becomes 1.5e+300).
    wire_size = len(signed) + (0 if body_bytes is None else len(body_bytes) + len('"body":,'))
    _require(
        wire_size <= MAX_EVENT_BYTES,
        f"event is {wire_size} bytes in canonical form, over the {MAX_EVENT_BYTES}-byte cap",
    )
    event_id = hashlib.sha256(signed).hexdigest()
    return Event(event_id, author, seq, prev, kind, created, body_hash, sig, body, body_bytes)


def decode_event(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse and check wire bytes, without verifying the signature."""
    try:
        obj = _parse_strict(data, max_bytes=max_bytes)
    except InvalidJSON as exc:
        raise InvalidEvent(f"not a valid event: {exc}") from exc
    return decode_value(obj)


def parse_event(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse, check and verify: the whole path for one untrusted event."""
    event = decode_event(data, max_bytes=max_bytes)
    verify_signature(event)
    return event


def sign_event(
    key: SigningKey,
    *,
    seq: int,
    prev: str | None,
    kind: str,
    created: int,
    body: dict[str, JSONValue],
) -> Event:
    """Build and sign a new event; it passes the same checks as a received one."""
    body_hash = body_hash_of(body)
    envelope = _envelope_bytes(key.id, body_hash, created, kind, prev, seq)
    sig = key.sign(SIGNATURE_DOMAIN + envelope).hex()
    obj: dict[str, JSONValue] = {
        "v": EVENT_VERSION, "author": key.id, "seq": seq, "prev": prev, "kind": kind,
        "created": created, "body_hash": body_hash, "sig": sig, "body": body,
    }  # fmt: skip
    # Refuse to sign what peers would reject: the full receiving path, strict
    # parser (depth, size) included, must accept the result.
    event = decode_value(obj)
    decode_event(event.wire_bytes())
    return event
