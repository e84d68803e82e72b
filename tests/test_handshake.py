"""The peer-link handshake (protocol.handshake), sans-IO: no sockets anywhere.

Two :class:`Handshake` objects are driven against each other by hand.  Hostile
peers are built with the ``noiseprotocol`` package directly, so they can put
any payload they like into a correctly encrypted Noise message: that is what a
real attacker who runs their own Noise code can do.  The published vectors in
specs/vectors/handshake.json are replayed here, and the committed file must
equal what specs/vectors/make_handshake.py builds today.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from node.peerstore import scope_hash
from node.replication import vector_hash
from protocol.feed import FeedHead
from protocol.handshake import (
    MAX_NOISE_MESSAGE,
    MAX_PAYLOAD,
    NOISE_PROTOCOL_NAME,
    PROLOGUE,
    STATIC_KEY_DOMAIN,
    Established,
    Handshake,
    HandshakeError,
    PeerMismatch,
    Session,
    State,
    check_identity_payload,
    identity_payload,
)
from protocol.keys import SigningKey, verify
from protocol.messages import (
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
    decode,
    encode,
)

VECTORS_DIR = Path(__file__).resolve().parent.parent / "specs" / "vectors"
HANDSHAKE_JSON = VECTORS_DIR / "handshake.json"
MAKE_HANDSHAKE = VECTORS_DIR / "make_handshake.py"
VECTORS: dict[str, Any] = json.loads(HANDSHAKE_JSON.read_text(encoding="utf-8"))

ALICE = SigningKey(hashlib.sha256(b"test handshake: alice").digest())
BOB = SigningKey(hashlib.sha256(b"test handshake: bob").digest())
MALLORY = SigningKey(hashlib.sha256(b"test handshake: mallory").digest())


def secret(label: str) -> bytes:
    """A fixed 32-byte X25519 private key, named."""
    return hashlib.sha256(b"test handshake secret: " + label.encode()).digest()


def x25519_public(private: bytes) -> bytes:
    noise = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
    noise.set_keypair_from_private_bytes(Keypair.STATIC, private)
    return bytes(noise.noise_protocol.keypairs["s"].public_bytes)


def initiator(
    key: SigningKey = ALICE, *, expected: str | None = None, fixed: bool = True
) -> Handshake:
    """Alice's side, with fixed ephemeral key (messages are then reproducible) unless not fixed."""
    return Handshake(
        initiator=True,
        node_key=key,
        static_private=secret(f"initiator static {key.id}"),
        expected_peer=expected,
        ephemeral_private=secret("initiator ephemeral") if fixed else None,
    )


def responder(
    key: SigningKey = BOB, *, expected: str | None = None, fixed: bool = True
) -> Handshake:
    return Handshake(
        initiator=False,
        node_key=key,
        static_private=secret(f"responder static {key.id}"),
        expected_peer=expected,
        ephemeral_private=secret("responder ephemeral") if fixed else None,
    )


def run(left: Handshake, right: Handshake) -> tuple[bytes, bytes, bytes]:
    """Drive a complete handshake; return its three messages."""
    m1 = left.start()
    m2 = right.receive(m1)
    assert m2 is not None
    m3 = left.receive(m2)
    assert m3 is not None
    assert right.receive(m3) is None
    return m1, m2, m3


def raw_noise(*, initiator: bool, static_private: bytes) -> Any:
    """A bare Noise XX endpoint with our prologue: whatever payload its owner chooses."""
    noise = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
    noise.set_prologue(PROLOGUE)
    if initiator:
        noise.set_as_initiator()
    else:
        noise.set_as_responder()
    noise.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
    noise.start_handshake()
    return noise


def forged_message_2(victim: Handshake, payload: Callable[[bytes], bytes]) -> bytes:
    """Message 2 from a hostile responder; ``payload`` gets its static public key."""
    static = secret("forger static")
    noise = raw_noise(initiator=False, static_private=static)
    noise.read_message(victim.start())
    return bytes(noise.write_message(payload(x25519_public(static))))


def forged_message_3(victim: Handshake, payload: Callable[[bytes], bytes]) -> bytes:
    """Message 3 from a hostile initiator, after ``victim`` answered its message 1."""
    static = secret("forger static")
    noise = raw_noise(initiator=True, static_private=static)
    m2 = victim.receive(bytes(noise.write_message(b"")))
    assert m2 is not None
    noise.read_message(m2)
    return bytes(noise.write_message(payload(x25519_public(static))))


def flipped(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# -- the happy path -----------------------------------------------------------------


def test_full_handshake_both_sides_agree() -> None:
    left, right = initiator(fixed=False), responder(fixed=False)
    m1, m2, m3 = run(left, right)
    assert left.done and right.done
    assert left.state is State.DONE and right.state is State.DONE
    a, b = left.established(), right.established()
    assert a.peer_id == BOB.id and b.peer_id == ALICE.id
    assert a.handshake_hash == b.handshake_hash and len(a.handshake_hash) == 32
    # XX sizes: e | e, ee, s, es + payload | s, se + payload (tags of 16 bytes).
    assert len(m1) == 32
    assert len(m2) == 32 + 32 + 16 + len(identity_payload(BOB, bytes(32))) + 16
    assert len(m3) == 32 + 16 + len(identity_payload(ALICE, bytes(32))) + 16
    assert b.session.open(a.session.seal(b"\x00hello")) == b"\x00hello"
    assert a.session.open(b.session.seal(b"\x00hi")) == b"\x00hi"


def test_pinned_peer_that_matches_is_accepted() -> None:
    left, right = initiator(expected=BOB.id), responder(expected=ALICE.id)
    run(left, right)
    assert left.established().peer_id == BOB.id
    assert right.established().peer_id == ALICE.id


def test_fresh_ephemeral_keys_give_fresh_sessions() -> None:
    first, second = initiator(fixed=False), responder(fixed=False)
    third, fourth = initiator(fixed=False), responder(fixed=False)
    run(first, second)
    run(third, fourth)
    one, two = first.established(), third.established()
    assert one.handshake_hash != two.handshake_hash
    assert one.session.seal(b"\x00same") != two.session.seal(b"\x00same")


def test_established_before_done_is_refused() -> None:
    left = initiator()
    with pytest.raises(HandshakeError, match="not finished"):
        left.established()
    left.start()
    with pytest.raises(HandshakeError, match="not finished"):
        left.established()


def test_identity_payload_is_canonical_json_over_the_static_key() -> None:
    static = x25519_public(secret("some static"))
    payload = identity_payload(ALICE, static)
    body = json.loads(payload)
    assert list(body) == ["node", "sig", "v"]
    assert payload == json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    assert body["node"] == ALICE.id and body["v"] == 1
    verify(ALICE.public, STATIC_KEY_DOMAIN + static, bytes.fromhex(body["sig"]))
    assert check_identity_payload(payload, static) == ALICE.id


# -- vectors ------------------------------------------------------------------------


def test_handshake_json_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "make_handshake_under_test"
    spec = importlib.util.spec_from_file_location(name, MAKE_HANDSHAKE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    render = cast(Callable[[], str], module.render)
    assert HANDSHAKE_JSON.read_text(encoding="utf-8") == render(), (
        "specs/vectors/handshake.json is stale: run "
        ".venv/bin/python specs/vectors/make_handshake.py > specs/vectors/handshake.json"
    )


def _vector_side(initiating: bool) -> Handshake:
    side = VECTORS["handshake"]["initiator" if initiating else "responder"]
    return Handshake(
        initiator=initiating,
        node_key=SigningKey(bytes.fromhex(side["node_seed"])),
        static_private=bytes.fromhex(side["static_private"]),
        ephemeral_private=bytes.fromhex(side["ephemeral_private"]),
    )


def test_vector_constants() -> None:
    assert VECTORS["protocol_name"].encode() == NOISE_PROTOCOL_NAME
    assert bytes.fromhex(VECTORS["prologue"]) == PROLOGUE == b"talas/p2p/1"
    assert bytes.fromhex(VECTORS["static_key_domain"]) == STATIC_KEY_DOMAIN


@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_vector_identities(role: str) -> None:
    side = VECTORS["handshake"][role]
    key = SigningKey(bytes.fromhex(side["node_seed"]))
    static_public = bytes.fromhex(side["static_public"])
    assert key.id == side["node_id"]
    assert x25519_public(bytes.fromhex(side["static_private"])) == static_public
    assert x25519_public(bytes.fromhex(side["ephemeral_private"])).hex() == side["ephemeral_public"]
    signed = bytes.fromhex(side["signed_bytes"])
    assert signed == STATIC_KEY_DOMAIN + static_public
    verify(key.public, signed, bytes.fromhex(side["signature"]))
    payload = side["identity_payload"].encode()
    assert payload == identity_payload(key, static_public)
    assert check_identity_payload(payload, static_public) == key.id


def test_vector_handshake_reproduces() -> None:
    vector = VECTORS["handshake"]
    m1, m2, m3 = (bytes.fromhex(m) for m in vector["messages"])
    left, right = _vector_side(True), _vector_side(False)
    assert left.start() == m1
    assert m1 == bytes.fromhex(vector["initiator"]["ephemeral_public"])
    assert right.receive(m1) == m2
    assert m2[:32] == bytes.fromhex(vector["responder"]["ephemeral_public"])
    assert left.receive(m2) == m3
    assert right.receive(m3) is None
    a, b = left.established(), right.established()
    assert a.peer_id == vector["responder"]["node_id"]
    assert b.peer_id == vector["initiator"]["node_id"]
    assert a.handshake_hash.hex() == b.handshake_hash.hex() == vector["handshake_hash"]
    out, back = vector["transport"]
    assert (out["from"], back["from"]) == ("initiator", "responder")
    for entry, sender, receiver in ((out, a.session, b.session), (back, b.session, a.session)):
        plaintext = bytes.fromhex(entry["plaintext"])
        assert sender.seal(plaintext).hex() == entry["ciphertext"]
        assert receiver.open(bytes.fromhex(entry["ciphertext"])) == plaintext
        (chunk,) = chunks(plaintext[1:])
        assert chunk == plaintext and plaintext[0] == 0x00
        assert _describe(decode(plaintext[1:])) == entry["message"]


def _message(described: dict[str, Any]) -> Message:
    fields = {k: v for k, v in described.items() if k != "type"}
    match described["type"]:
        case "Want":
            return Want(fields["scope_hash"], fields["vector_hash"])
        case "NeedVector":
            return NeedVector()
        case "Vector":
            return Vector(fields["heads"])
        case "InSync":
            return InSync()
        case "Events":
            return Events([bytes.fromhex(raw) for raw in fields["events"]])
        case "Ping":
            return Ping(fields["nonce"])
        case "Pong":
            return Pong(fields["nonce"])
        case "Goodbye":
            return Goodbye(fields["reason"])
    raise AssertionError(described)


def _describe(message: Message) -> dict[str, Any]:
    match message:
        case Want(scope, heads):
            return {"type": "Want", "scope_hash": scope, "vector_hash": heads}
        case Vector(heads):
            return {"type": "Vector", "heads": heads}
        case Events(events):
            return {"type": "Events", "events": [raw.hex() for raw in events]}
        case Ping(nonce) | Pong(nonce):
            return {"type": type(message).__name__, "nonce": nonce}
        case Goodbye(reason):
            return {"type": "Goodbye", "reason": reason}
    return {"type": type(message).__name__}


def test_message_vectors_cover_every_type() -> None:
    types = {case["message"]["type"] for case in VECTORS["messages"]}
    assert types == {
        "Want", "NeedVector", "Vector", "InSync", "Events", "Ping", "Pong", "Goodbye"
    }  # fmt: skip


@pytest.mark.parametrize("case", VECTORS["messages"], ids=lambda c: str(c["name"]))
def test_message_vector(case: dict[str, Any]) -> None:
    message = _message(case["message"])
    encoded = bytes.fromhex(case["encoded"])
    assert encode(message) == encoded
    assert decode(encoded) == message


@pytest.mark.parametrize("case", VECTORS["digests"], ids=lambda c: str(len(c["authors"])))
def test_digest_vector(case: dict[str, Any]) -> None:
    authors: list[str] = case["authors"]
    heads = {a: FeedHead(a, seq, head) for a, (seq, head) in case["heads"].items()}
    assert scope_hash(authors) == case["scope"]
    assert scope_hash(list(reversed(authors))) == case["scope"]
    assert hashlib.sha256("\n".join(sorted(authors)).encode()).hexdigest() == case["scope"]
    assert vector_hash(heads, authors) == case["vector"]
    lines = "".join(
        f"{a}:{heads[a].seq}:{heads[a].id}\n" if a in heads else f"{a}:0:\n"
        for a in sorted(authors)
    )
    assert hashlib.sha256(lines.encode()).hexdigest() == case["vector"]


# -- forged identities --------------------------------------------------------------


def _signs_other_static(static: bytes) -> bytes:
    return identity_payload(BOB, x25519_public(secret("another static")))


def _claims_bob_signed_by_mallory(static: bytes) -> bytes:
    sig = MALLORY.sign(STATIC_KEY_DOMAIN + static).hex()
    return json.dumps({"node": BOB.id, "sig": sig, "v": 1}).encode()


def _signature_without_domain(static: bytes) -> bytes:
    sig = BOB.sign(static).hex()
    return json.dumps({"node": BOB.id, "sig": sig, "v": 1}).encode()


def _uppercase_node(static: bytes) -> bytes:
    body = json.loads(identity_payload(BOB, static))
    return json.dumps({**body, "node": body["node"].upper()}).encode()


def _version(version: object) -> Callable[[bytes], bytes]:
    def payload(static: bytes) -> bytes:
        return json.dumps({**json.loads(identity_payload(BOB, static)), "v": version}).encode()

    return payload


def _oversized(static: bytes) -> bytes:
    body = json.loads(identity_payload(BOB, static))
    return json.dumps({**body, "pad": "x" * MAX_PAYLOAD}).encode()


def _duplicate_node(static: bytes) -> bytes:
    """Bob's valid payload with a first ``node`` member naming Mallory: a lenient parser
    keeps the last member and a strict one refuses, so parsers could disagree on who
    spoke; the payload MUST be refused."""
    honest = identity_payload(BOB, static)
    assert honest.startswith(b'{"node":')
    return b'{"node":"' + MALLORY.id.encode() + b'",' + honest[1:]


def _nested_member(value: bytes) -> Callable[[bytes], bytes]:
    """Bob's valid payload with one extra member ``x`` holding ``value`` (raw JSON)."""

    def payload(static: bytes) -> bytes:
        honest = identity_payload(BOB, static)
        return honest[:-1] + b',"x":' + value + b"}"

    return payload


def _version_literal(literal: bytes) -> Callable[[bytes], bytes]:
    """Bob's valid payload with ``v`` written as the raw JSON ``literal``."""

    def payload(static: bytes) -> bytes:
        honest = identity_payload(BOB, static)
        assert honest.endswith(b',"v":1}')
        return honest[: -len(b"1}")] + literal + b"}"

    return payload


FORGED_PAYLOADS: dict[str, Callable[[bytes], bytes]] = {
    "signs another static key": _signs_other_static,
    "claims a node id it cannot sign for": _claims_bob_signed_by_mallory,
    "signature without the domain": _signature_without_domain,
    "uppercase node id": _uppercase_node,
    "version 2": _version(2),
    "version as string": _version("1"),
    "oversized payload": _oversized,
    "empty payload": lambda static: b"",
    "not json": lambda static: b"\xffnot json",
    "json array": lambda static: b"[1,2,3]",
    "missing sig": lambda static: json.dumps({"node": BOB.id, "v": 1}).encode(),
    "short sig": lambda static: json.dumps({"node": BOB.id, "sig": "00", "v": 1}).encode(),
    "short node": lambda static: json.dumps({"node": "00", "sig": "00" * 64, "v": 1}).encode(),
    "non-string node": lambda static: json.dumps({"node": 7, "sig": "00", "v": 1}).encode(),
    "duplicate node member": _duplicate_node,
    "nesting deeper than 2": _nested_member(b"[[1]]"),
    "lone surrogate": _nested_member(b'"\\ud800"'),
    "byte order mark": lambda static: b"\xef\xbb\xbf" + identity_payload(BOB, static),
}


@pytest.mark.parametrize("make_payload", FORGED_PAYLOADS.values(), ids=list(FORGED_PAYLOADS))
def test_forged_identity_in_message_2_is_refused(make_payload: Callable[[bytes], bytes]) -> None:
    victim = initiator()
    m2 = forged_message_2(victim, make_payload)
    with pytest.raises(HandshakeError) as caught:
        victim.receive(m2)
    assert not isinstance(caught.value, PeerMismatch)
    assert victim.state is State.FAILED
    with pytest.raises(HandshakeError):
        victim.established()
    with pytest.raises(HandshakeError, match="unexpected handshake message"):
        victim.receive(m2)


@pytest.mark.parametrize("make_payload", FORGED_PAYLOADS.values(), ids=list(FORGED_PAYLOADS))
def test_forged_identity_in_message_3_is_refused(make_payload: Callable[[bytes], bytes]) -> None:
    victim = responder(ALICE)
    m3 = forged_message_3(victim, make_payload)
    with pytest.raises(HandshakeError):
        victim.receive(m3)
    assert victim.state is State.FAILED


def test_an_honest_forger_message_is_accepted() -> None:
    """Control for the forgery tests: the raw Noise peer with a proper payload passes."""
    victim = initiator()
    m2 = forged_message_2(victim, lambda static: identity_payload(MALLORY, static))
    assert victim.receive(m2) is not None
    assert victim.established().peer_id == MALLORY.id


def test_message_1_must_not_carry_a_payload() -> None:
    noise = raw_noise(initiator=True, static_private=secret("forger static"))
    victim = responder()
    with pytest.raises(HandshakeError, match="must not carry a payload"):
        victim.receive(bytes(noise.write_message(b"hello")))
    assert victim.state is State.FAILED


def test_deeply_nested_identity_payload_is_a_handshake_error() -> None:
    victim = initiator()
    m2 = forged_message_2(victim, lambda static: b"[" * MAX_PAYLOAD)
    with pytest.raises(HandshakeError, match="malformed identity payload"):
        victim.receive(m2)
    assert victim.state is State.FAILED


@pytest.mark.parametrize("depth", [3, 4, 100, 400])
def test_identity_payload_nesting_is_capped_at_depth_2(depth: int) -> None:
    value = b"[" * (depth - 1) + b"]" * (depth - 1)
    with pytest.raises(HandshakeError, match="nesting"):
        check_identity_payload(_nested_member(value)(bytes(32)), bytes(32))


@pytest.mark.parametrize("value", [b"7", b'[1,"two",null]', b'{"k":"v"}', b"[]"])
def test_unknown_identity_members_up_to_depth_2_are_ignored(value: bytes) -> None:
    victim = initiator()
    m2 = forged_message_2(victim, _nested_member(value))
    assert victim.receive(m2) is not None
    assert victim.established().peer_id == BOB.id


@pytest.mark.parametrize(
    "literal", [b"true", b"false", b'"1"', b"null", b"[1]", b"{}", b"0", b"-1", b"1.5", b"1e400"]
)
def test_identity_version_must_be_the_integer_1(literal: bytes) -> None:
    victim = initiator()
    m2 = forged_message_2(victim, _version_literal(literal))
    with pytest.raises(HandshakeError):
        victim.receive(m2)
    assert victim.state is State.FAILED


@pytest.mark.parametrize("literal", [b"1", b"1.0", b"1e0", b"10E-1", b"0.1e1"])
def test_identity_version_may_be_any_spelling_of_the_integer_1(literal: bytes) -> None:
    """JSON has one number type: 1.0 and 1e0 are the integer 1 (specs/protocol.md §3.1)."""
    victim = initiator()
    m2 = forged_message_2(victim, _version_literal(literal))
    assert victim.receive(m2) is not None
    assert victim.established().peer_id == BOB.id


# -- pinned ids and men in the middle -------------------------------------------------


def test_pinned_id_mismatch_raises_after_message_2_without_message_3() -> None:
    left, right = initiator(expected=MALLORY.id), responder()
    m2 = right.receive(left.start())
    assert m2 is not None
    with pytest.raises(PeerMismatch, match=BOB.id):
        left.receive(m2)
    assert left.state is State.FAILED
    # Nothing, ever, gets the initiator to reveal its identity (message 3) now.
    with pytest.raises(HandshakeError):
        left.receive(m2)
    with pytest.raises(HandshakeError):
        left.start()
    with pytest.raises(HandshakeError):
        left.established()


def test_responder_pin_mismatch_raises_after_message_3() -> None:
    left, right = initiator(), responder(expected=MALLORY.id)
    m2 = right.receive(left.start())
    assert m2 is not None
    m3 = left.receive(m2)
    assert m3 is not None
    with pytest.raises(PeerMismatch, match=ALICE.id):
        right.receive(m3)
    assert right.state is State.FAILED


def test_man_in_the_middle_with_its_own_key_is_caught_by_a_pinned_initiator() -> None:
    alice = initiator(expected=BOB.id)
    bob = responder()
    to_alice = Handshake(initiator=False, node_key=MALLORY, static_private=secret("m1"))
    to_bob = Handshake(initiator=True, node_key=MALLORY, static_private=secret("m2"))
    # Mallory terminates both handshakes; Bob sees Mallory, Alice would too.
    m2_for_alice = to_alice.receive(alice.start())
    m2_from_bob = bob.receive(to_bob.start())
    assert m2_for_alice is not None and m2_from_bob is not None
    m3_for_bob = to_bob.receive(m2_from_bob)
    assert m3_for_bob is not None
    assert bob.receive(m3_for_bob) is None
    assert bob.established().peer_id == MALLORY.id  # Bob knows who he talks to.
    with pytest.raises(PeerMismatch):
        alice.receive(m2_for_alice)


def test_man_in_the_middle_relaying_the_real_identity_fails_its_signature() -> None:
    """Mallory reads Bob's identity payload (she is Bob's initiator) and presents it to
    Alice in her own Noise session: Bob's signature covers Bob's static key, not hers."""
    bob = responder()
    stolen: list[bytes] = []
    noise = raw_noise(initiator=True, static_private=secret("mallory static"))
    m2_from_bob = bob.receive(bytes(noise.write_message(b"")))
    assert m2_from_bob is not None
    stolen.append(bytes(noise.read_message(m2_from_bob)))
    assert check_identity_payload(stolen[0], x25519_public(secret(f"responder static {BOB.id}")))
    for expected in (BOB.id, None):
        alice = initiator(expected=expected)
        m2 = forged_message_2(alice, lambda static: stolen[0])
        with pytest.raises(HandshakeError, match="cannot prove") as caught:
            alice.receive(m2)
        assert not isinstance(caught.value, PeerMismatch)


def test_unpinned_initiator_learns_whoever_answered() -> None:
    alice, mallory = initiator(), responder(MALLORY)
    run(alice, mallory)
    assert alice.established().peer_id == MALLORY.id


def test_a_peer_with_our_own_node_id_is_refused_by_the_initiator() -> None:
    left, right = initiator(ALICE), responder(ALICE)
    m2 = right.receive(left.start())
    assert m2 is not None
    with pytest.raises(HandshakeError, match="our own node id") as caught:
        left.receive(m2)
    assert not isinstance(caught.value, PeerMismatch)


def test_a_peer_with_our_own_node_id_is_refused_by_the_responder() -> None:
    victim = responder(BOB)
    m3 = forged_message_3(victim, lambda static: identity_payload(BOB, static))
    with pytest.raises(HandshakeError, match="our own node id"):
        victim.receive(m3)


# -- tampering, ordering, replay ------------------------------------------------------


def _reference() -> tuple[bytes, bytes, bytes]:
    return run(initiator(), responder())


def test_fixed_ephemeral_keys_make_the_handshake_reproducible() -> None:
    assert _reference() == _reference()


def test_every_flipped_byte_of_message_2_is_refused() -> None:
    _, m2, _ = _reference()
    for index in range(len(m2)):
        victim = initiator()
        victim.start()
        with pytest.raises(HandshakeError):
            victim.receive(flipped(m2, index))
        assert victim.state is State.FAILED


def test_every_flipped_byte_of_message_3_is_refused() -> None:
    m1, _, m3 = _reference()
    for index in range(len(m3)):
        victim = responder()
        victim.receive(m1)
        with pytest.raises(HandshakeError):
            victim.receive(flipped(m3, index))
        assert victim.state is State.FAILED


@pytest.mark.parametrize("index", [0, 17, 31])
def test_a_flipped_byte_of_message_1_breaks_message_2(index: int) -> None:
    m1, _, _ = _reference()
    left, right = initiator(), responder()
    assert left.start() == m1
    m2 = right.receive(flipped(m1, index))  # any 32 bytes are an X25519 public key
    assert m2 is not None
    with pytest.raises(HandshakeError):
        left.receive(m2)


@pytest.mark.parametrize("which", [1, 2])
def test_truncated_or_extended_messages_are_refused(which: int) -> None:
    reference = _reference()
    for bad in (reference[which][:-1], reference[which][:40], reference[which] + b"\x00"):
        left, right = initiator(), responder()
        m1 = left.start()
        if which == 1:
            with pytest.raises(HandshakeError):
                left.receive(bad)
        else:
            assert right.receive(m1) is not None
            with pytest.raises(HandshakeError):
                right.receive(bad)


def test_short_message_1_is_refused() -> None:
    for size in (0, 1, 31):
        with pytest.raises(HandshakeError):
            responder().receive(bytes(size))


def test_oversized_handshake_message_is_refused() -> None:
    victim = responder()
    with pytest.raises(HandshakeError, match="too large"):
        victim.receive(bytes(MAX_NOISE_MESSAGE + 1))
    assert victim.state is State.FAILED


def test_messages_out_of_order_are_refused() -> None:
    m1, m2, m3 = _reference()
    with pytest.raises(HandshakeError):
        responder().receive(m3)  # message 3 where message 1 belongs
    with pytest.raises(HandshakeError):
        responder().receive(m2)
    with pytest.raises(HandshakeError, match="unexpected"):
        initiator().receive(m2)  # before start()
    with pytest.raises(HandshakeError, match="only an initiator"):
        responder().start()
    left = initiator()
    left.start()
    with pytest.raises(HandshakeError, match="only an initiator"):
        left.start()
    with pytest.raises(HandshakeError):
        left.receive(m1)  # its own message reflected back
    right = responder()
    right.receive(m1)
    with pytest.raises(HandshakeError):
        right.receive(m2)  # its own message reflected back


def test_replayed_handshake_messages_are_refused() -> None:
    m1, m2, m3 = _reference()
    left, right = initiator(), responder()
    run(left, right)
    with pytest.raises(HandshakeError, match="unexpected"):
        left.receive(m2)
    with pytest.raises(HandshakeError, match="unexpected"):
        right.receive(m3)
    with pytest.raises(HandshakeError, match="unexpected"):
        right.receive(m1)
    again = responder()
    again.receive(m1)
    with pytest.raises(HandshakeError):
        again.receive(m1)  # message 1 twice


def test_a_recorded_handshake_cannot_be_replayed_to_fresh_endpoints() -> None:
    m1, m2, m3 = _reference()
    fresh_responder = responder(fixed=False)
    assert fresh_responder.receive(m1) != m2  # its fresh ephemeral changes everything
    with pytest.raises(HandshakeError):
        fresh_responder.receive(m3)
    fresh_initiator = initiator(fixed=False)
    fresh_initiator.start()
    with pytest.raises(HandshakeError):
        fresh_initiator.receive(m2)


# -- the transport ------------------------------------------------------------------


def _sessions() -> tuple[Established, Established]:
    left, right = initiator(fixed=False), responder(fixed=False)
    run(left, right)
    return left.established(), right.established()


def test_transport_round_trips_in_order_both_ways() -> None:
    a, b = _sessions()
    for n in range(5):
        assert b.session.open(a.session.seal(bytes([0, n]))) == bytes([0, n])
        assert a.session.open(b.session.seal(bytes([0, n, n]))) == bytes([0, n, n])
    biggest = bytes(Session.MAX_PLAINTEXT)
    assert b.session.open(a.session.seal(biggest)) == biggest
    with pytest.raises(ValueError, match="exceeds"):
        a.session.seal(bytes(Session.MAX_PLAINTEXT + 1))


def test_replayed_transport_message_fails() -> None:
    a, b = _sessions()
    sealed = a.session.seal(b"\x00one")
    assert b.session.open(sealed) == b"\x00one"
    with pytest.raises(HandshakeError, match="authentication"):
        b.session.open(sealed)


def test_reordered_transport_messages_fail() -> None:
    a, b = _sessions()
    first, second = a.session.seal(b"\x00first"), a.session.seal(b"\x00second")
    with pytest.raises(HandshakeError):
        b.session.open(second)
    # A failed open does not consume a nonce: the link is dead anyway (PeerLink
    # treats any failure as misbehaviour), but the counter is not desynchronised.
    assert b.session.open(first) == b"\x00first"
    assert b.session.open(second) == b"\x00second"


def test_tampered_transport_message_fails() -> None:
    a, b = _sessions()
    sealed = a.session.seal(b"\x00payload bytes")
    for index in range(len(sealed)):
        with pytest.raises(HandshakeError):
            b.session.open(flipped(sealed, index))
    for bad in (sealed[:-1], sealed + b"\x00", b"", sealed[:15], bytes(MAX_NOISE_MESSAGE + 1)):
        with pytest.raises(HandshakeError):
            b.session.open(bad)
    assert b.session.open(sealed) == b"\x00payload bytes"


def test_reflected_transport_message_fails() -> None:
    a, _ = _sessions()
    with pytest.raises(HandshakeError):
        a.session.open(a.session.seal(b"\x00mine"))


def test_transport_of_another_session_fails() -> None:
    a, _ = _sessions()
    _, d = _sessions()
    with pytest.raises(HandshakeError):
        d.session.open(a.session.seal(b"\x00elsewhere"))


# -- fuzzing ------------------------------------------------------------------------


def _must_only_raise_handshake_error(receive: Callable[[bytes], bytes | None], data: bytes) -> None:
    with contextlib.suppress(HandshakeError):
        receive(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_responder_message_1(data: bytes) -> None:
    _must_only_raise_handshake_error(responder().receive, data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_initiator_message_2(data: bytes) -> None:
    victim = initiator()
    victim.start()
    _must_only_raise_handshake_error(victim.receive, data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_responder_message_3(data: bytes) -> None:
    victim = responder()
    victim.receive(_reference()[0])
    _must_only_raise_handshake_error(victim.receive, data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=4), st.booleans())
def test_fuzz_message_sequences(messages: list[bytes], initiating: bool) -> None:
    victim = initiator() if initiating else responder()
    if initiating:
        victim.start()
    for data in messages:
        _must_only_raise_handshake_error(victim.receive, data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=MAX_PAYLOAD + 10))
def test_fuzz_identity_payload(data: bytes) -> None:
    with contextlib.suppress(HandshakeError):
        check_identity_payload(data, bytes(32))


def test_no_warning_escapes_with_preset_ephemeral_keys() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(initiator(), responder())
