"""End-to-end encrypted direct messages between authors, as pure functions.

A direct message is an ordinary signed ``dm`` event in the sender's feed, so
it is stored and relayed like anything else and reaches a recipient who was
offline when it was sent (store and forward by federation).  Its body holds
only the recipient's author id, a nonce and a NaCl ``crypto_box``
(X25519 + XSalsa20-Poly1305) of the text, keyed from both authors' Ed25519
keys converted to X25519.  Relays and every other reader see who wrote to
whom and when, not what.  The box authenticates the sender's key as well;
the event signature already does, so a forged sender fails twice.

The nonce comes from the caller (randomness is not this module's business):
24 random bytes per message.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions

from protocol.errors import ProtocolError
from protocol.keys import SigningKey

NONCE_BYTES = 24
MAX_TEXT = 4000
MAX_BOX_CHARS = 8000


class UnreadableMessage(ProtocolError):
    """Not for this key, tampered with, or not a direct message body at all."""


def _x25519_public(author_hex: str) -> bytes:
    try:
        return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(bytes.fromhex(author_hex)))
    except (ValueError, nacl.exceptions.RuntimeError) as exc:
        raise UnreadableMessage(f"not a usable author key: {exc}") from exc


def _x25519_secret(key: SigningKey) -> bytes:
    secret = sodium.crypto_sign_seed_keypair(key.seed)[1]
    return bytes(sodium.crypto_sign_ed25519_sk_to_curve25519(secret))


def seal(sender: SigningKey, recipient: str, text: str, nonce: bytes) -> dict[str, Any]:
    """The ``dm`` event body carrying ``text`` from ``sender`` to author ``recipient``."""
    if not 1 <= len(text) <= MAX_TEXT or "\x00" in text:
        raise ValueError(f"a direct message is 1..{MAX_TEXT} characters, without NUL")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    plain = json.dumps({"text": text}, ensure_ascii=False).encode()
    box = sodium.crypto_box(plain, nonce, _x25519_public(recipient), _x25519_secret(sender))
    return {
        "to": recipient,
        "nonce": nonce.hex(),
        "box": base64.b64encode(box).decode(),
    }


def open_message(reader: SigningKey, other: str, body: dict[str, Any]) -> str:
    """The text of ``body``, read by ``reader`` (its recipient, or its sender) with ``other``.

    The box is symmetric in the two key pairs, so the sender can read back
    what it sent with (its own key, the recipient) and the recipient with
    (its own key, the sender).
    """
    try:
        nonce = bytes.fromhex(str(body["nonce"]))
        box = base64.b64decode(str(body["box"]), validate=True)
    except (KeyError, ValueError, binascii.Error) as exc:
        raise UnreadableMessage("not a direct message body") from exc
    if len(nonce) != NONCE_BYTES:
        raise UnreadableMessage("bad nonce")
    try:
        plain = sodium.crypto_box_open(box, nonce, _x25519_public(other), _x25519_secret(reader))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise UnreadableMessage("cannot open this message with these keys") from exc
    try:
        text = json.loads(plain.decode())["text"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableMessage("the opened message is not well formed") from exc
    if not isinstance(text, str):
        raise UnreadableMessage("the opened message is not text")
    return text
