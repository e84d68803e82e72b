"""Build the Talas peer-link test vectors in specs/vectors/handshake.json.

Usage, from the project root::

    .venv/bin/python specs/vectors/make_handshake.py > specs/vectors/handshake.json

Every secret is fixed (node key seeds, Noise static and ephemeral X25519
private keys), Ed25519 signatures are deterministic and ChaCha20-Poly1305 with
Noise's counter nonces is too, so the output is byte-for-byte stable.  The
three handshake messages, the handshake hash and the transport messages come
from driving two :class:`protocol.handshake.Handshake` objects against each
other; the message encodings from :func:`protocol.messages.encode`; the
digests from :func:`node.peerstore.scope_hash` and
:func:`node.replication.vector_hash`.  tests/test_handshake.py checks that the
committed file equals what :func:`render` produces today, and replays it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from node.peerstore import scope_hash
from node.replication import vector_hash
from protocol.feed import FeedHead
from protocol.handshake import (
    NOISE_PROTOCOL_NAME,
    PROLOGUE,
    STATIC_KEY_DOMAIN,
    Handshake,
    identity_payload,
)
from protocol.keys import SigningKey
from protocol.messages import (
    CHUNK_PLAINTEXT,
    Events,
    Goodbye,
    InSync,
    Message,
    NeedVector,
    Ping,
    Pong,
    Vector,
    Want,
    chunks,
    encode,
)

DESCRIPTION = (
    "Test vectors for the Talas peer link, talas/p2p/1 (specs/federation.md). "
    "All binary values are lowercase hex. "
    "handshake: an initiator and a responder with the given node key seeds (Ed25519, RFC 8032) "
    "and Noise static and ephemeral X25519 private keys run "
    "Noise_XX_25519_ChaChaPoly_SHA256 with the given prologue; messages[0..2] are the three "
    "handshake messages in order, handshake_hash is the Noise handshake hash h after message 3 "
    "(the same on both sides). Each side's identity_payload is the payload of its identity "
    "message (message 2 for the responder, 3 for the initiator) as UTF-8 JSON text; "
    "signed_bytes is static_key_domain || static_public, the bytes its node key signs. "
    "transport: the first transport message in each direction; plaintext is one chunk "
    "(flag byte, then the encoded message), ciphertext the Noise transport message "
    "carrying it (nonce 0 in each direction). "
    "messages: encoded is the application message (type byte and body) before chunking; "
    "decoding it MUST give message, and encoding message with the reference "
    "implementation gives exactly encoded. Events in a batch are opaque bytes here. "
    "digests: scope is the scope digest of the authors; vector is the heads digest of "
    "heads (author -> [seq, head id]; authors absent from heads count as held up to seq 0)."
)

INITIATOR_SEED = hashlib.sha256(b"talas handshake vectors: initiator node key").digest()
RESPONDER_SEED = hashlib.sha256(b"talas handshake vectors: responder node key").digest()
INITIATOR_STATIC = hashlib.sha256(b"talas handshake vectors: initiator static").digest()
RESPONDER_STATIC = hashlib.sha256(b"talas handshake vectors: responder static").digest()
INITIATOR_EPHEMERAL = hashlib.sha256(b"talas handshake vectors: initiator ephemeral").digest()
RESPONDER_EPHEMERAL = hashlib.sha256(b"talas handshake vectors: responder ephemeral").digest()

AUTHOR_A = hashlib.sha256(b"talas handshake vectors: author a").hexdigest()
AUTHOR_B = hashlib.sha256(b"talas handshake vectors: author b").hexdigest()
AUTHOR_C = hashlib.sha256(b"talas handshake vectors: author c").hexdigest()
HEAD_A = hashlib.sha256(b"talas handshake vectors: head of a").hexdigest()
HEAD_B = hashlib.sha256(b"talas handshake vectors: head of b").hexdigest()

# What each side sends first once the link is up (plaintext of one chunk each).
FIRST_FROM_INITIATOR: Message = Want(
    scope_hash([AUTHOR_A, AUTHOR_B]),
    vector_hash({AUTHOR_A: FeedHead(AUTHOR_A, 3, HEAD_A)}, [AUTHOR_A, AUTHOR_B]),
)
FIRST_FROM_RESPONDER: Message = NeedVector()


def x25519_public(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (RFC 7748)."""
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def codec_messages() -> list[tuple[str, Message]]:
    """One example of every message type, named."""
    return [
        ("want", FIRST_FROM_INITIATOR),
        ("need_vector", NeedVector()),
        ("vector", Vector({AUTHOR_A: 3, AUTHOR_B: 0, AUTHOR_C: 9_007_199_254_740_991})),
        ("vector_empty", Vector({})),
        ("in_sync", InSync()),
        ("events", Events([b'{"example":1}', b"", bytes(range(8))])),
        ("events_empty", Events([])),
        ("ping", Ping(1)),
        ("pong", Pong(9_007_199_254_740_991)),
        ("goodbye", Goodbye("too many invalid events")),
        ("goodbye_unicode", Goodbye("au revoir, à bientôt ♪")),
    ]


def describe(message: Message) -> dict[str, Any]:
    """A message as JSON: its class name and fields (bytes as hex)."""
    match message:
        case Want(scope, heads):
            return {"type": "Want", "scope_hash": scope, "vector_hash": heads}
        case Vector(heads):
            return {"type": "Vector", "heads": dict(heads)}
        case Events(events):
            return {"type": "Events", "events": [raw.hex() for raw in events]}
        case Ping(nonce) | Pong(nonce):
            return {"type": type(message).__name__, "nonce": nonce}
        case Goodbye(reason):
            return {"type": "Goodbye", "reason": reason}
        case _:
            return {"type": type(message).__name__}


def _side(seed: bytes, static: bytes, ephemeral: bytes) -> dict[str, Any]:
    key = SigningKey(seed)
    static_public = x25519_public(static)
    payload = identity_payload(key, static_public)
    return {
        "node_seed": seed.hex(),
        "node_id": key.id,
        "static_private": static.hex(),
        "static_public": static_public.hex(),
        "ephemeral_private": ephemeral.hex(),
        "ephemeral_public": x25519_public(ephemeral).hex(),
        "signed_bytes": (STATIC_KEY_DOMAIN + static_public).hex(),
        "signature": json.loads(payload)["sig"],
        "identity_payload": payload.decode(),
    }


def _one_chunk(message: Message) -> bytes:
    encoded = encode(message)
    assert len(encoded) <= CHUNK_PLAINTEXT
    (chunk,) = chunks(encoded)
    return chunk


def handshake_vector() -> dict[str, Any]:
    """Drive two Handshake objects with the fixed keys; record every byte."""
    initiator = Handshake(
        initiator=True,
        node_key=SigningKey(INITIATOR_SEED),
        static_private=INITIATOR_STATIC,
        ephemeral_private=INITIATOR_EPHEMERAL,
    )
    responder = Handshake(
        initiator=False,
        node_key=SigningKey(RESPONDER_SEED),
        static_private=RESPONDER_STATIC,
        ephemeral_private=RESPONDER_EPHEMERAL,
    )
    m1 = initiator.start()
    m2 = responder.receive(m1)
    assert m2 is not None
    m3 = initiator.receive(m2)
    assert m3 is not None
    assert responder.receive(m3) is None
    left, right = initiator.established(), responder.established()
    assert left.handshake_hash == right.handshake_hash
    out_plain = _one_chunk(FIRST_FROM_INITIATOR)
    back_plain = _one_chunk(FIRST_FROM_RESPONDER)
    out_sealed = left.session.seal(out_plain)
    back_sealed = right.session.seal(back_plain)
    assert right.session.open(out_sealed) == out_plain
    assert left.session.open(back_sealed) == back_plain
    return {
        "initiator": _side(INITIATOR_SEED, INITIATOR_STATIC, INITIATOR_EPHEMERAL),
        "responder": _side(RESPONDER_SEED, RESPONDER_STATIC, RESPONDER_EPHEMERAL),
        "messages": [m1.hex(), m2.hex(), m3.hex()],
        "handshake_hash": left.handshake_hash.hex(),
        "transport": [
            {
                "from": "initiator",
                "message": describe(FIRST_FROM_INITIATOR),
                "plaintext": out_plain.hex(),
                "ciphertext": out_sealed.hex(),
            },
            {
                "from": "responder",
                "message": describe(FIRST_FROM_RESPONDER),
                "plaintext": back_plain.hex(),
                "ciphertext": back_sealed.hex(),
            },
        ],
    }


def digests_vector() -> list[dict[str, Any]]:
    cases: list[tuple[list[str], dict[str, FeedHead]]] = [
        ([], {}),
        ([AUTHOR_B, AUTHOR_A], {AUTHOR_A: FeedHead(AUTHOR_A, 3, HEAD_A)}),
        (
            [AUTHOR_C, AUTHOR_B, AUTHOR_A],
            {AUTHOR_A: FeedHead(AUTHOR_A, 3, HEAD_A), AUTHOR_B: FeedHead(AUTHOR_B, 12, HEAD_B)},
        ),
    ]
    return [
        {
            "authors": authors,
            "heads": {a: [h.seq, h.id] for a, h in sorted(heads.items())},
            "scope": scope_hash(authors),
            "vector": vector_hash(heads, authors),
        }
        for authors, heads in cases
    ]


def build() -> dict[str, Any]:
    return {
        "description": DESCRIPTION,
        "protocol_name": NOISE_PROTOCOL_NAME.decode(),
        "prologue": PROLOGUE.hex(),
        "static_key_domain": STATIC_KEY_DOMAIN.hex(),
        "handshake": handshake_vector(),
        "messages": [
            {"name": name, "message": describe(message), "encoded": encode(message).hex()}
            for name, message in codec_messages()
        ],
        "digests": digests_vector(),
    }


def render() -> str:
    """handshake.json exactly as committed: indented, UTF-8, one final newline."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.buffer.write(render().encode())


if __name__ == "__main__":
    main()
