"""Chat messages signed by their authors, so a node cannot put words in anyone's mouth.

A chat message travels between nodes over data channels (``node/live/chat.py``).
Its author signs, with the Ed25519 author key the message names, the domain
``talas/chat/v1`` and a NUL byte followed by the RFC 8785 canonical form of
the message's fields: the room, the origin node and its per-room counter
(``oseq``), the id, author, author name, time, Lamport clock and text.  The
origin and counter are signed too, so a node cannot replay another node's
message as its own or under another position.  Pure functions: values in,
bytes or a refusal out.
"""

from __future__ import annotations

import re
from typing import Any

from protocol.canonical import canonical_bytes
from protocol.errors import BadSignature, InvalidEvent
from protocol.keys import SigningKey, verify

CHAT_DOMAIN = b"talas/chat/v1\x00"
SIGNED_FIELDS = (
    "room", "origin", "oseq", "id", "author", "author_name", "sent_ms", "lamport", "text",
)  # fmt: skip
_SIG = re.compile(r"[0-9a-f]{128}\Z")


def signing_bytes(fields: dict[str, Any]) -> bytes:
    """What an author signs: the domain, then JCS of exactly :data:`SIGNED_FIELDS`."""
    return CHAT_DOMAIN + canonical_bytes({name: fields[name] for name in SIGNED_FIELDS})


def sign_line(key: SigningKey, fields: dict[str, Any]) -> str:
    """The hex signature of ``fields`` by ``key`` (whose id must be ``fields['author']``)."""
    if key.id != fields["author"]:
        raise ValueError("a chat message is signed by the author it names")
    return key.sign(signing_bytes(fields)).hex()


def verify_line(fields: dict[str, Any], sig: object) -> None:
    """Raise BadSignature unless ``sig`` is the named author's signature over ``fields``."""
    if not isinstance(sig, str) or not _SIG.match(sig):
        raise BadSignature("a chat message's sig is 128 lowercase hex characters")
    try:
        verify(bytes.fromhex(fields["author"]), signing_bytes(fields), bytes.fromhex(sig))
    except InvalidEvent as exc:
        raise BadSignature(f"chat message signature: {exc}") from exc
