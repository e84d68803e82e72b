"""The peer-link handshake: Noise XX with the node key bound to the Noise static key.

Theory of operation
-------------------
Two nodes run ``Noise_XX_25519_ChaChaPoly_SHA256`` (the ``noiseprotocol``
package implements the Noise framework; we do not).  XX gives mutual
authentication of the Noise *static* keys, forward secrecy (ephemeral DH) and
an encrypted transport whose per-direction nonces make any replayed or
reordered message fail authentication.

A Noise static key is an X25519 key, not our Ed25519 node key, so, as in
libp2p's noise spec, each side proves that its node key vouches for its
static key: the handshake payload carries the node's Ed25519 public key and
its signature over ``STATIC_KEY_DOMAIN || noise static public key``.  The
payloads travel inside Noise messages 2 (responder) and 3 (initiator), so
they are encrypted and bound to the transcript.  A peer that names a node id
it cannot sign for fails; an initiator that dialled a pinned node id checks it
after message 2, before revealing its own identity in message 3.

The table below is the whole state machine: (role, state) -> what the next
incoming message must be and what we answer with.

    initiator: START --send m1--> SENT_1 --recv m2 / send m3--> DONE
    responder: START --recv m1 / send m2--> SENT_2 --recv m3--> DONE
"""

from __future__ import annotations

import enum
import json
import warnings
from dataclasses import dataclass
from typing import Any

from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseInvalidMessage, NoiseMaxNonceError

from protocol.canonical import parse_strict
from protocol.errors import ProtocolError
from protocol.keys import SigningKey, verify

NOISE_PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
PROLOGUE = b"talas/p2p/1"
STATIC_KEY_DOMAIN = b"talas/noise-static-key/v1\x00"
PAYLOAD_VERSION = 1
MAX_NOISE_MESSAGE = 65535
MAX_PAYLOAD = 1024


class HandshakeError(ProtocolError):
    """The handshake failed: bad message, bad identity proof, or wrong peer."""


class PeerMismatch(HandshakeError):
    """The peer proved a node id other than the one pinned for this address."""


class State(enum.Enum):
    START = "start"
    SENT_1 = "sent-1"
    SENT_2 = "sent-2"
    DONE = "done"
    FAILED = "failed"


# (initiator?, state) -> (state after the next incoming message, do we answer?)
_TRANSITIONS: dict[tuple[bool, State], tuple[State, bool]] = {
    (True, State.SENT_1): (State.DONE, True),  # recv m2, send m3
    (False, State.START): (State.SENT_2, True),  # recv m1, send m2
    (False, State.SENT_2): (State.DONE, False),  # recv m3
}


def identity_payload(node_key: SigningKey, static_public: bytes) -> bytes:
    """The proof that ``node_key`` vouches for a Noise static key."""
    proof = node_key.sign(STATIC_KEY_DOMAIN + static_public)
    body = {"node": node_key.id, "sig": proof.hex(), "v": PAYLOAD_VERSION}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def check_identity_payload(payload: bytes, static_public: bytes) -> str:
    """Return the node id proven by ``payload`` for ``static_public``, or raise."""
    if len(payload) > MAX_PAYLOAD:
        raise HandshakeError("identity payload too large")
    try:
        body: Any = parse_strict(payload, max_bytes=MAX_PAYLOAD, max_depth=2)
        node_hex, sig_hex, version = body["node"], body["sig"], body["v"]
        node = bytes.fromhex(node_hex)
        sig = bytes.fromhex(sig_hex)
    except (ProtocolError, ValueError, KeyError, TypeError) as exc:
        raise HandshakeError(f"malformed identity payload: {exc}") from exc
    if type(version) is not int or version != PAYLOAD_VERSION or node_hex != node.hex():
        raise HandshakeError("unsupported or non-canonical identity payload")
    try:
        verify(node, STATIC_KEY_DOMAIN + static_public, sig)
    except ProtocolError as exc:
        raise HandshakeError(f"peer cannot prove node id {node_hex}: {exc}") from exc
    return node.hex()


@dataclass(frozen=True)
class Established:
    """What a finished handshake yields."""

    peer_id: str
    handshake_hash: bytes
    session: Session


class Handshake:
    """One side of the handshake.  Bytes in, bytes out; no I/O."""

    def __init__(
        self,
        *,
        initiator: bool,
        node_key: SigningKey,
        static_private: bytes,
        expected_peer: str | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        """``static_private`` (and, for test vectors only, ``ephemeral_private``)
        are 32 random bytes from the caller: this module has no randomness."""
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.state = State.START
        self._node_key = node_key
        self._noise = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
        self._noise.set_prologue(PROLOGUE)
        if initiator:
            self._noise.set_as_initiator()
        else:
            self._noise.set_as_responder()
        self._noise.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
        if ephemeral_private is not None:
            self._noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
        with warnings.catch_warnings():
            # noiseprotocol warns when an ephemeral key is preset (test vectors only).
            warnings.simplefilter("ignore", UserWarning)
            self._noise.start_handshake()
        self._static_public = bytes(self._noise.noise_protocol.keypairs["s"].public_bytes)
        self._peer_id: str | None = None

    def start(self) -> bytes:
        """The initiator's first message."""
        if not self.initiator or self.state is not State.START:
            raise HandshakeError("only an initiator starts, once")
        message = bytes(self._noise.write_message(b""))
        self.state = State.SENT_1
        return message

    def receive(self, data: bytes) -> bytes | None:
        """Consume the peer's next message; return our answer, if any."""
        step = _TRANSITIONS.get((self.initiator, self.state))
        if step is None:
            raise HandshakeError(f"unexpected handshake message in state {self.state.value}")
        if len(data) > MAX_NOISE_MESSAGE:
            self.state = State.FAILED
            raise HandshakeError("handshake message too large")
        next_state, answer = step
        try:
            handshake_state = self._noise.noise_protocol.handshake_state
            payload = bytes(self._noise.read_message(data))
            peer_static = handshake_state.rs
        except Exception as exc:
            # noiseprotocol raises assorted exceptions (its own, cryptography's
            # InvalidTag, ValueError on short keys) on malformed input: all of
            # them mean the same thing here.
            self.state = State.FAILED
            raise HandshakeError(f"handshake message rejected: {exc!r}") from exc
        try:
            self._after_read(payload, peer_static)
            reply = self._write_identity() if answer else None
        except HandshakeError:
            self.state = State.FAILED
            raise
        self.state = next_state
        return reply

    def _after_read(self, payload: bytes, peer_static: Any) -> None:
        """Check the identity payload that messages 2 and 3 carry."""
        carries_identity = self.initiator or self.state is State.SENT_2
        if not carries_identity:
            if payload:
                raise HandshakeError("message 1 must not carry a payload")
            return None
        peer_id = check_identity_payload(payload, bytes(peer_static.public_bytes))
        if self.expected_peer is not None and peer_id != self.expected_peer:
            raise PeerMismatch(
                f"expected node {self.expected_peer}, but the peer proved node {peer_id}"
            )
        if peer_id == self._node_key.id:
            raise HandshakeError("the peer claims our own node id")
        self._peer_id = peer_id
        return None

    def _write_identity(self) -> bytes:
        return bytes(
            self._noise.write_message(identity_payload(self._node_key, self._static_public))
        )

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def established(self) -> Established:
        if self.state is not State.DONE or self._peer_id is None:
            raise HandshakeError("handshake not finished")
        return Established(
            self._peer_id, bytes(self._noise.get_handshake_hash()), Session(self._noise)
        )


class Session:
    """The encrypted transport after the handshake; messages up to MAX_NOISE_MESSAGE.

    Application messages larger than one Noise message are split by
    :mod:`protocol.framing`; this class only seals and opens single chunks.
    """

    MAX_PLAINTEXT = MAX_NOISE_MESSAGE - 16

    def __init__(self, noise: NoiseConnection) -> None:
        self._noise = noise

    def seal(self, plaintext: bytes) -> bytes:
        if len(plaintext) > self.MAX_PLAINTEXT:
            raise ValueError("plaintext exceeds one Noise message")
        return bytes(self._noise.encrypt(plaintext))

    def open(self, ciphertext: bytes) -> bytes:
        try:
            return bytes(self._noise.decrypt(ciphertext))
        except (NoiseInvalidMessage, NoiseMaxNonceError, ValueError) as exc:
            raise HandshakeError(f"transport message failed authentication: {exc}") from exc
