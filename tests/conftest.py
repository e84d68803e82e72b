"""Shared helpers for the protocol and store tests: deterministic keys and signed chains."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store import Store
from protocol.canonical import JSONValue, canonical_bytes
from protocol.event import SIGNATURE_DOMAIN, Event, sign_event
from protocol.keys import SigningKey

T0 = 1_700_000_000_000
"""A plausible ``created`` timestamp (ms) for test events."""


def signing_key(i: int) -> SigningKey:
    """Deterministic key number ``i`` (0..255)."""
    return SigningKey(bytes([i]) * 32)


def make_chain(
    key: SigningKey,
    n: int,
    *,
    start: int = 1,
    prev: str | None = None,
    tag: str = "",
    kind: str = "post",
) -> list[Event]:
    """``n`` signed events of ``key``'s feed from seq ``start``, each naming the one before.

    Bodies are deterministic, so the same arguments always give the same ids.
    """
    events: list[Event] = []
    for seq in range(start, start + n):
        body: dict[str, JSONValue] = {"text": f"post {seq} of {key.id[:8]}{tag}"}
        event = sign_event(key, seq=seq, prev=prev, kind=kind, created=T0 + seq, body=body)
        events.append(event)
        prev = event.id
    return events


def numbered(events: list[Event]) -> list[tuple[int, bytes]]:
    """Wire bytes of ``events`` as 1-based numbered lines, as ``ingest_stream`` takes them."""
    return [(number, event.wire_bytes()) for number, event in enumerate(events, start=1)]


def growing_event(key: SigningKey, count: int = 15_000) -> tuple[bytes, str]:
    """A correctly signed seq-1 post whose body spells ``count`` numbers as ``1e5``.

    JCS writes each as ``100000``, so the canonical form is far longer than the
    input.  Built by hand (not with sign_event) so it is whatever a peer could send.
    Returns (raw bytes, event id).
    """
    body: dict[str, JSONValue] = {"text": "x", "a": [1e5] * count}
    envelope: dict[str, JSONValue] = {
        "v": 1, "author": key.id, "seq": 1, "prev": None, "kind": "post", "created": T0,
        "body_hash": hashlib.sha256(canonical_bytes(body)).hexdigest(),
    }  # fmt: skip
    sig = key.sign(SIGNATURE_DOMAIN + canonical_bytes(envelope)).hex()
    signed = canonical_bytes({**envelope, "sig": sig})
    raw = signed[:-1] + b',"body":{"text":"x","a":[' + b",".join([b"1e5"] * count) + b"]}}"
    return raw, hashlib.sha256(signed).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store(tmp_path / "node.sqlite")
    try:
        yield db
    finally:
        db.close()
