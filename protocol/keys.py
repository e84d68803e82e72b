"""Ed25519 keys and signatures, the one place the protocol touches libsodium.

Verification uses libsodium's ``crypto_sign_open`` through PyNaCl's
low-level bindings (they expose no detached verify): it is twice as fast as
``cryptography`` here and applies libsodium's strict rules (rejects non-canonical S, small-order and
non-canonical points), so every node agrees on which signatures are valid.
Randomness is not this module's business: callers pass a 32-byte seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.bindings as sodium
import nacl.exceptions

from protocol.errors import BadSignature, InvalidEvent

PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
SIGNATURE_BYTES = 64


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`BadSignature` unless ``signature`` is valid for ``message``."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidEvent(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    if len(signature) != SIGNATURE_BYTES:
        raise BadSignature(f"signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        sodium.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
        raise BadSignature("signature does not verify") from exc


def is_valid_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Boolean form of :func:`verify`, for callers that only branch on it."""
    try:
        verify(public_key, message, signature)
    except InvalidEvent:
        return False
    return True


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key pair derived from a 32-byte seed."""

    seed: bytes = field(repr=False)
    public: bytes = field(init=False)
    _secret: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(self.seed)}")
        public, secret = sodium.crypto_sign_seed_keypair(self.seed)
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "_secret", secret)

    @property
    def id(self) -> str:
        """The key's public identifier: lowercase hex of the public key."""
        return self.public.hex()

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature over ``message``."""
        signed: bytes = sodium.crypto_sign(message, self._secret)
        return signed[:SIGNATURE_BYTES]
