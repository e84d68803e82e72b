"""Live-call signalling (protocol.signalling): signed envelopes, replay cache, call states.

Sans-IO except for the two aiortc tests at the end of the fingerprint section,
which run real WebRTC peer connections on loopback to show what the signature
buys: the DTLS certificate must match the fingerprint the node signed.  The
published vectors in specs/vectors/signalling.json are replayed here, and the
committed file must equal what specs/vectors/make_signalling.py builds today.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCCertificate
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import errors
from protocol.canonical import JSONValue, canonical_bytes
from protocol.event import SIGNATURE_DOMAIN
from protocol.handshake import STATIC_KEY_DOMAIN
from protocol.keys import SigningKey
from protocol.signalling import (
    DEFAULT_LIFETIME_MS,
    MAX_LIFETIME_MS,
    MAX_SDP_BYTES,
    MAX_SIGNAL_BYTES,
    MAX_SKEW_MS,
    SIGNAL_DOMAIN,
    SIGNED_FIELDS,
    TRANSITIONS,
    WIRE_FIELDS,
    BadSignature,
    CallSignalling,
    CallState,
    Close,
    Deliver,
    Expired,
    Local,
    Malformed,
    NonceCache,
    NotForMe,
    NotYetValid,
    Origin,
    Refuse,
    Remote,
    Replayed,
    Signal,
    SignalKind,
    SignallingError,
    Transmit,
    WrongSender,
    certificate_fingerprint,
    check_sdp,
    decode_signal,
    decode_value,
    refusal_reason,
    sha256_fingerprints_only,
    sign_signal,
    verify_signal,
)

FUZZ = settings(max_examples=300, deadline=None, database=None)

VECTORS_DIR = Path(__file__).resolve().parent.parent / "specs" / "vectors"
SIGNALLING_JSON = VECTORS_DIR / "signalling.json"
MAKE_SIGNALLING = VECTORS_DIR / "make_signalling.py"
VECTORS: dict[str, Any] = json.loads(SIGNALLING_JSON.read_text(encoding="utf-8"))

CALLER = SigningKey(bytes([1]) * 32)
CALLEE = SigningKey(bytes([2]) * 32)
OTHER = SigningKey(bytes([3]) * 32)
T0 = 1_700_000_000_000
SESSION = "5e55104d" * 4
NONCE = "a0a0b1b1" * 4
FP = ":".join(f"{i:02X}" for i in range(0xA0, 0xC0))
FP_OTHER = ":".join(f"{i:02X}" for i in range(0x10, 0x30))


def sdp(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


def offer_sdp(fingerprint: str = FP) -> str:
    return sdp(
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:actpass",
        "a=mid:0",
        "a=rtpmap:111 opus/48000/2",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=mid:1",
        "a=sctp-port:5000",
    )


FP_LINE_OTHER = f"a=fingerprint:sha-256 {FP_OTHER}\r\n"
SHA384_LINE = "a=fingerprint:sha-384 " + ":".join(["AA"] * 48) + "\r\n"
CANDIDATE_SDP = sdp("a=mid:0", "a=candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host")


def signed(
    kind: SignalKind = SignalKind.OFFER,
    text: str | None = None,
    *,
    key: SigningKey = CALLER,
    to: SigningKey = CALLEE,
    nonce: str = NONCE,
    session: str = SESSION,
    now_ms: int = T0,
    lifetime_ms: int = DEFAULT_LIFETIME_MS,
) -> Signal:
    if text is None:
        text = {
            SignalKind.OFFER: offer_sdp(),
            SignalKind.ANSWER: offer_sdp(FP_OTHER),
            SignalKind.CANDIDATE: CANDIDATE_SDP,
            SignalKind.BYE: "",
        }[kind]
    return sign_signal(
        key, kind=kind, session=session, to=to.id, sdp=text, nonce=nonce,
        now_ms=now_ms, lifetime_ms=lifetime_ms,
    )  # fmt: skip


def receive(
    data: bytes,
    *,
    me: SigningKey = CALLEE,
    sender: SigningKey = CALLER,
    now_ms: int = T0 + 1_000,
    seen: NonceCache | None = None,
) -> Signal:
    return verify_signal(
        data, expected_from=sender.id, me=me.id, now_ms=now_ms,
        seen=NonceCache() if seen is None else seen,
    )  # fmt: skip


def raw_signed(key: SigningKey, fields: dict[str, JSONValue]) -> bytes:
    """Sign ``fields`` exactly as given, bypassing sign_signal's checks."""
    sig = key.sign(SIGNAL_DOMAIN + canonical_bytes(fields)).hex()
    return canonical_bytes({**fields, "sig": sig})


def offer_fields(**changes: JSONValue) -> dict[str, JSONValue]:
    fields: dict[str, JSONValue] = {
        "v": 1, "kind": "offer", "session": SESSION, "from": CALLER.id, "to": CALLEE.id,
        "sdp": offer_sdp(), "nonce": NONCE, "issued_ms": T0,
        "expires_ms": T0 + DEFAULT_LIFETIME_MS,
    }  # fmt: skip
    fields.update(changes)
    return fields


# -- envelope: round trip -----------------------------------------------------------


@pytest.mark.parametrize("kind", list(SignalKind))
def test_round_trip(kind: SignalKind) -> None:
    signal = signed(kind)
    assert signal.sender == CALLER.id and signal.recipient == CALLEE.id
    assert signal.issued_ms == T0 and signal.expires_ms == T0 + DEFAULT_LIFETIME_MS
    received = receive(signal.wire_bytes())
    assert received == signal
    expected = {SignalKind.OFFER: FP, SignalKind.ANSWER: FP_OTHER}.get(kind)
    assert received.fingerprint == expected


def test_signing_bytes_and_wire_follow_the_spec() -> None:
    signal = signed()
    wire = json.loads(signal.wire_bytes())
    assert wire.keys() == WIRE_FIELDS
    fields = {k: v for k, v in wire.items() if k != "sig"}
    assert fields.keys() == SIGNED_FIELDS
    assert fields["from"] == CALLER.id and fields["v"] == 1 and fields["kind"] == "offer"
    assert signal.signing_bytes() == SIGNAL_DOMAIN + canonical_bytes(fields)
    assert signal.wire_bytes() == canonical_bytes(wire)
    assert SIGNAL_DOMAIN == b"talas/signal/v1\x00"
    assert len({SIGNAL_DOMAIN, SIGNATURE_DOMAIN, STATIC_KEY_DOMAIN}) == 3


def test_non_canonical_but_equal_input_is_accepted() -> None:
    """Whitespace, member order and escapes do not matter: the signature is over JCS."""
    signal = signed()
    obj = signal.to_json()
    loose = json.dumps(dict(reversed(list(obj.items()))), indent=1, ensure_ascii=True)
    assert receive(loose.replace("v=0", "\\u0076=0").encode()) == signal


def test_errors_reuse_the_protocol_bases() -> None:
    for cls in (Malformed, BadSignature, Expired, NotYetValid, NotForMe, WrongSender, Replayed):
        assert issubclass(cls, SignallingError)
    assert issubclass(SignallingError, errors.ProtocolError)
    assert issubclass(BadSignature, errors.BadSignature)
    assert issubclass(NotYetValid, Expired)


# -- envelope: tampering ------------------------------------------------------------


def _other_hex(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


TAMPERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "kind": lambda w: {**w, "kind": "answer"},
    "session": lambda w: {**w, "session": _other_hex(w["session"])},
    "nonce": lambda w: {**w, "nonce": _other_hex(w["nonce"])},
    "issued_ms": lambda w: {**w, "issued_ms": w["issued_ms"] - 1},
    "expires_ms": lambda w: {**w, "expires_ms": w["expires_ms"] + 1},
    "sdp_body": lambda w: {**w, "sdp": w["sdp"].replace("a=mid:1", "a=mid:2")},
    "fingerprint_one_char": lambda w: {**w, "sdp": w["sdp"].replace(FP, FP[:-1] + "0")},
    "fingerprint_swapped": lambda w: {**w, "sdp": w["sdp"].replace(FP, FP_OTHER)},
    "sig": lambda w: {**w, "sig": _other_hex(w["sig"])},
    "v": lambda w: {**w, "v": 2},
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_every_tampered_field_is_refused(name: str) -> None:
    wire = signed().to_json()
    tampered = canonical_bytes(TAMPERS[name](dict(wire)))
    error = Malformed if name == "v" else BadSignature
    with pytest.raises(error):
        receive(tampered)


def test_swapped_recipient_is_refused_even_by_the_new_recipient() -> None:
    tampered = canonical_bytes({**signed().to_json(), "to": OTHER.id})
    with pytest.raises(NotForMe):
        receive(tampered)
    with pytest.raises(BadSignature):
        receive(tampered, me=OTHER)


def test_swapped_sender_is_refused_even_on_the_new_senders_link() -> None:
    tampered = canonical_bytes({**signed().to_json(), "from": OTHER.id})
    with pytest.raises(WrongSender):
        receive(tampered)
    with pytest.raises(BadSignature):
        receive(tampered, sender=OTHER)


def test_a_relayed_signal_is_refused() -> None:
    """B cannot pass A's genuine offer to C: wrong link, and not addressed to C."""
    wire = signed().wire_bytes()
    with pytest.raises(WrongSender):
        receive(wire, me=OTHER, sender=CALLEE)
    with pytest.raises(NotForMe):
        receive(wire, me=OTHER, sender=CALLER)


@pytest.mark.parametrize("position", range(0, len(FP), 1))
def test_any_character_of_the_fingerprint_is_bound(position: int) -> None:
    if FP[position] == ":":
        return
    replacement = "0" if FP[position] != "0" else "F"
    changed = FP[:position] + replacement + FP[position + 1 :]
    wire = signed().to_json()
    assert isinstance(wire["sdp"], str)
    tampered = canonical_bytes({**wire, "sdp": wire["sdp"].replace(FP, changed)})
    with pytest.raises(BadSignature):
        receive(tampered)


@FUZZ
@given(st.data())
def test_any_single_byte_change_is_refused(data: st.DataObject) -> None:
    wire = bytearray(signed().wire_bytes())
    position = data.draw(st.integers(0, len(wire) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != wire[position]))
    wire[position] = byte
    with pytest.raises(SignallingError):
        receive(bytes(wire))


# -- envelope: time -----------------------------------------------------------------


def test_expiry_boundaries() -> None:
    wire = signed().wire_bytes()
    expires = T0 + DEFAULT_LIFETIME_MS
    assert receive(wire, now_ms=expires - 1).expires_ms == expires
    with pytest.raises(Expired) as caught:
        receive(wire, now_ms=expires)
    assert not isinstance(caught.value, NotYetValid)
    with pytest.raises(Expired):
        receive(wire, now_ms=expires + 10**9)


def test_future_issue_beyond_the_skew_is_refused() -> None:
    wire = signed().wire_bytes()
    assert receive(wire, now_ms=T0 - MAX_SKEW_MS) is not None
    with pytest.raises(NotYetValid):
        receive(wire, now_ms=T0 - MAX_SKEW_MS - 1)


@pytest.mark.parametrize("lifetime", [0, -1, MAX_LIFETIME_MS + 1, 10**12])
def test_bad_lifetime_is_refused_to_sign(lifetime: int) -> None:
    with pytest.raises(Malformed):
        signed(lifetime_ms=lifetime)


def test_longest_lifetime_is_accepted() -> None:
    signal = signed(lifetime_ms=MAX_LIFETIME_MS)
    assert receive(signal.wire_bytes(), now_ms=T0 + MAX_LIFETIME_MS - 1) == signal


@pytest.mark.parametrize(
    "changes",
    [
        {"expires_ms": T0 + MAX_LIFETIME_MS + 1},
        {"expires_ms": T0},
        {"expires_ms": T0 - 1},
        {"issued_ms": -1},
        {"issued_ms": T0 + 0.5},
        {"issued_ms": True},
        {"expires_ms": "1700000030000"},
    ],
    ids=repr,
)
def test_signed_but_bad_times_are_malformed(changes: dict[str, JSONValue]) -> None:
    with pytest.raises(Malformed):
        receive(raw_signed(CALLER, offer_fields(**changes)))


# -- envelope: replay ---------------------------------------------------------------


def test_replayed_nonce_is_refused() -> None:
    seen = NonceCache()
    wire = signed().wire_bytes()
    receive(wire, seen=seen)
    with pytest.raises(Replayed):
        receive(wire, seen=seen)
    # A new signal with the same nonce is refused too, until the first expires.
    with pytest.raises(Replayed):
        receive(signed(SignalKind.BYE, now_ms=T0 + 500).wire_bytes(), seen=seen)
    assert receive(wire, seen=NonceCache()) is not None


def test_refused_signals_do_not_enter_the_cache() -> None:
    seen = NonceCache()
    genuine = signed().to_json()
    forged = canonical_bytes({**genuine, "sig": _other_hex(str(genuine["sig"]))})
    with pytest.raises(BadSignature):
        receive(forged, seen=seen)
    with pytest.raises(NotForMe):
        receive(canonical_bytes(genuine), me=OTHER, seen=seen)
    with pytest.raises(Expired):
        receive(canonical_bytes(genuine), now_ms=T0 + 10**6, seen=seen)
    assert len(seen) == 0
    receive(canonical_bytes(genuine), seen=seen)
    assert len(seen) == 1


def test_nonces_are_per_sender() -> None:
    seen = NonceCache()
    receive(signed().wire_bytes(), seen=seen)
    from_other = signed(key=OTHER).wire_bytes()
    assert receive(from_other, sender=OTHER, seen=seen).nonce == NONCE


def test_nonce_cache_forgets_at_expiry() -> None:
    cache = NonceCache()
    cache.admit(CALLER.id, NONCE, 1_000, 0)
    with pytest.raises(Replayed):
        cache.admit(CALLER.id, NONCE, 1_000, 999)
    cache.purge(1_000)
    assert len(cache) == 0
    with pytest.raises(Expired):
        cache.admit(CALLER.id, NONCE, 1_000, 999)  # its clock never steps back


def test_nonce_cache_overflow_fails_closed() -> None:
    cache = NonceCache(capacity=2)
    cache.admit("a", "1", 100, 0)
    cache.admit("a", "2", 300, 0)
    cache.admit("a", "3", 200, 0)  # over capacity: "1" (expiring first) is forgotten
    assert len(cache) == 2 and cache.floor == 100
    with pytest.raises(Replayed):
        cache.admit("a", "1", 100, 0)  # a replay of the forgotten nonce
    with pytest.raises(Replayed):
        cache.admit("b", "9", 50, 0)  # fresh, but cannot be told from a replay
    cache.admit("b", "9", 101, 0)  # accepted, then at once the first to go
    assert cache.floor == 101 and len(cache) == 2
    for sender, nonce, expires in [("b", "9", 101), ("a", "3", 200), ("a", "2", 300)]:
        with pytest.raises(Replayed):
            cache.admit(sender, nonce, expires, 0)
    cache.purge(200)
    assert len(cache) == 1
    with pytest.raises(ValueError):
        NonceCache(capacity=0)


@FUZZ
@given(
    st.integers(1, 6),
    st.lists(
        st.tuples(st.sampled_from("ab"), st.sampled_from("xyz"), st.integers(1, 40),
                  st.integers(0, 10)),
        max_size=60,
    ),
)  # fmt: skip
def test_nonce_cache_never_admits_a_replay(
    capacity: int, steps: list[tuple[str, str, int, int]]
) -> None:
    """Model: a signal (sender, nonce, expiry) is accepted at most once; the cache
    stays within capacity; with room to spare it refuses exactly the nonces it holds."""
    cache, roomy = NonceCache(capacity), NonceCache(1000)
    accepted: set[tuple[str, str, int]] = set()
    held: dict[tuple[str, str], int] = {}  # what roomy should hold: pair -> expiry
    now = 0
    for sender, nonce, lifetime, advance in steps:
        now += advance
        expires = now + lifetime
        try:
            cache.admit(sender, nonce, expires, now)
        except Replayed:
            pass
        else:
            assert (sender, nonce, expires) not in accepted, "replay admitted"
            accepted.add((sender, nonce, expires))
        assert len(cache) <= capacity
        held = {pair: e for pair, e in held.items() if e > now}
        try:
            roomy.admit(sender, nonce, expires, now)
        except Replayed:
            assert (sender, nonce) in held
        else:
            assert (sender, nonce) not in held
            held[(sender, nonce)] = expires
        assert len(roomy) == len(held) and roomy.floor == -1


# -- envelope: addressing, size, shape -----------------------------------------------


def test_wrong_recipient_and_wrong_sender() -> None:
    wire = signed().wire_bytes()
    with pytest.raises(NotForMe):
        receive(wire, me=OTHER)
    with pytest.raises(WrongSender):
        receive(wire, sender=OTHER)


def test_signalling_oneself_is_malformed() -> None:
    with pytest.raises(Malformed):
        signed(to=CALLER)


def test_huge_sdp_is_refused() -> None:
    line = "a=x-pad:" + "p" * 1000
    huge = offer_sdp() + sdp(*[line] * (MAX_SDP_BYTES // len(line)))
    assert len(huge) > MAX_SDP_BYTES
    with pytest.raises(Malformed):
        signed(text=huge)
    with pytest.raises(Malformed):
        receive(raw_signed(CALLER, offer_fields(sdp=huge)))
    with pytest.raises(Malformed, match="over"):
        receive(b" " * (MAX_SIGNAL_BYTES + 1))


def test_longest_sdp_with_worst_escaping_fits_the_envelope() -> None:
    """Every SDP byte may cost two in JSON: the envelope cap allows for that."""
    body = offer_sdp()
    filler = '"\\' * 49  # 98 characters, each escaped to two
    line = "a=x:" + filler
    while len(body) + len(line) + 2 + 4 <= MAX_SDP_BYTES:  # room for a last "a=" line
        body += line + "\r\n"
    body += "a=" + "\\" * (MAX_SDP_BYTES - len(body) - 4) + "\r\n"
    assert len(body) == MAX_SDP_BYTES
    signal = signed(text=body)
    wire = signal.wire_bytes()
    assert MAX_SDP_BYTES * 1.9 < len(wire) <= MAX_SIGNAL_BYTES
    assert receive(wire) == signal


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"null",
        b"[]",
        b"{}",
        b"not json",
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",
        b'{"v":1',
        b'{"v":1}',
        b'{"v":1,"v":1}',
        b'{"v":NaN}',
        b'{"sdp":"\\ud800"}',
        b'{"v":[[[[1]]]]}',
    ],
)
def test_malformed_json_is_refused(data: bytes) -> None:
    with pytest.raises(Malformed):
        receive(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"v": 1.5},
        {"v": "1"},
        {"kind": "Offer"},
        {"kind": None},
        {"session": SESSION.upper()},
        {"session": SESSION + "00"},
        {"nonce": NONCE[:-1]},
        {"nonce": 7},
        {"from": CALLER.id.upper()},
        {"to": CALLEE.id[:-2]},
        {"sdp": None},
        {"sdp": ["v=0"]},
        {"extra": 1},
    ],
    ids=repr,
)
def test_signed_but_bad_fields_are_malformed(changes: dict[str, JSONValue]) -> None:
    with pytest.raises(Malformed):
        receive(raw_signed(CALLER, offer_fields(**changes)))


def test_missing_fields_are_malformed() -> None:
    for name in SIGNED_FIELDS:
        fields = offer_fields()
        del fields[name]
        with pytest.raises(Malformed, match="missing"):
            receive(raw_signed(CALLER, fields))


def test_decode_signal_skips_the_signature_and_clock() -> None:
    wire = signed().to_json()
    forged = canonical_bytes({**wire, "sig": "00" * 64})
    assert decode_signal(forged).sig == "00" * 64
    with pytest.raises(BadSignature):
        receive(forged, now_ms=T0 + 10**9)  # signature first, then the clock


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_signalling_errors(data: bytes) -> None:
    with pytest.raises(SignallingError):
        receive(data)


_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(WIRE_FIELDS)), _JSON, max_size=10), st.booleans())
def test_arbitrary_envelopes_raise_only_signalling_errors(
    changes: dict[str, Any], keep_the_rest: bool
) -> None:
    obj: dict[str, Any] = {**signed().to_json(), **changes} if keep_the_rest else changes
    data = json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")
    try:
        receive(data)
    except SignallingError:
        return
    assert not changes or all(signed().to_json()[k] == v for k, v in changes.items())


@FUZZ
@given(_JSON)
def test_decode_value_raises_only_malformed(value: JSONValue) -> None:
    with pytest.raises(Malformed):
        decode_value(value)


# -- SDP and the fingerprint ---------------------------------------------------------


def test_fingerprint_at_session_level() -> None:
    body = offer_sdp().replace(f"a=fingerprint:sha-256 {FP}\r\n", "")
    session_level = body.replace("t=0 0\r\n", f"t=0 0\r\na=fingerprint:sha-256 {FP}\r\n")
    assert check_sdp(SignalKind.ANSWER, session_level) == FP


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("none", offer_sdp().replace(f"a=fingerprint:sha-256 {FP}\r\n", "")),
        ("conflicting", offer_sdp().replace("a=mid:1\r\n", f"a=mid:1\r\n{FP_LINE_OTHER}")),
        ("one differs", offer_sdp().replace(FP, FP_OTHER, 1)),
        ("sha-1", offer_sdp().replace("sha-256 " + FP, "sha-1 " + FP[:59])),
        ("sha-384 as well", offer_sdp().replace("a=mid:0\r\n", f"a=mid:0\r\n{SHA384_LINE}")),
        ("SHA-256", offer_sdp().replace("sha-256", "SHA-256")),
        ("lowercase hex", offer_sdp(FP.lower())),
        ("no colons", offer_sdp(FP.replace(":", ""))),
        ("31 pairs", offer_sdp(FP[3:])),
        ("33 pairs", offer_sdp(FP + ":AA")),
        ("two spaces", offer_sdp().replace("sha-256 ", "sha-256  ")),
        ("trailing space", offer_sdp().replace(FP + "\r\n", FP + " \r\n")),
        ("attribute case", offer_sdp().replace("a=fingerprint:", "a=FINGERPRINT:")),
        ("flag form", offer_sdp().replace("a=mid:0", "a=fingerprint\r\na=mid:0")),
        ("bare LF", offer_sdp().replace("\r\n", "\n")),
        ("bare CR", offer_sdp().replace("s=-\r\n", "s=-\r")),
        ("no final CRLF", offer_sdp()[:-2]),
        ("empty line", offer_sdp().replace("s=-\r\n", "s=-\r\n\r\n")),
        ("tab", offer_sdp().replace("s=-", "s=\t-")),
        ("NUL", offer_sdp().replace("s=-", "s=\x00")),
        ("non-ASCII", offer_sdp().replace("s=-", "s=é")),
        ("uppercase type", offer_sdp().replace("s=-", "S=-")),
        ("not v=0", offer_sdp().replace("v=0", "v=1")),
        ("empty", ""),
    ],
)  # fmt: skip
def test_bad_offer_sdp_is_malformed(name: str, text: str) -> None:
    with pytest.raises(Malformed):
        check_sdp(SignalKind.OFFER, text)
    with pytest.raises(Malformed):
        check_sdp(SignalKind.ANSWER, text)


def test_candidate_and_bye_sdp() -> None:
    assert check_sdp(SignalKind.CANDIDATE, CANDIDATE_SDP) is None
    assert check_sdp(SignalKind.CANDIDATE, sdp("a=end-of-candidates")) is None
    for bad in ("", "v=0\r\n" + CANDIDATE_SDP, CANDIDATE_SDP + f"a=fingerprint:sha-256 {FP}\r\n"):
        with pytest.raises(Malformed):
            check_sdp(SignalKind.CANDIDATE, bad)
    assert check_sdp(SignalKind.BYE, "") is None
    with pytest.raises(Malformed):
        check_sdp(SignalKind.BYE, CANDIDATE_SDP)


def test_sha256_fingerprints_only() -> None:
    extra = sdp("a=fingerprint:sha-384 " + ":".join(["AA"] * 48), "a=fingerprint:SHA-512 AB:CD")
    body = offer_sdp().replace("a=mid:0\r\n", "a=mid:0\r\n" + extra)
    with pytest.raises(Malformed):
        check_sdp(SignalKind.OFFER, body)
    assert sha256_fingerprints_only(body) == offer_sdp()
    assert sha256_fingerprints_only(offer_sdp()) == offer_sdp()


@FUZZ
@given(st.text(max_size=300), st.sampled_from(list(SignalKind)))
def test_check_sdp_raises_only_malformed(text: str, kind: SignalKind) -> None:
    with contextlib.suppress(Malformed):
        check_sdp(kind, text)


def test_certificate_fingerprint_format() -> None:
    fingerprint = certificate_fingerprint(b"certificate")
    assert check_sdp(SignalKind.OFFER, offer_sdp(fingerprint)) == fingerprint
    for name, cert in VECTORS["certificates"].items():
        assert certificate_fingerprint(bytes.fromhex(cert["der"])) == cert["fingerprint"], name


def test_fingerprint_matches_aiortc() -> None:
    certificate = RTCCertificate.generateCertificate()
    der = certificate._cert.public_bytes(Encoding.DER)
    (sha256,) = [f for f in certificate.getFingerprints() if f.algorithm == "sha-256"]
    assert certificate_fingerprint(der) == sha256.value


async def _aiortc_call(*, signed_fingerprint_of_another_cert: bool) -> tuple[str, str]:
    """Offer and answer between two aiortc peers, every SDP signed by the sending node
    and verified by the receiving one; return both connection states once settled."""
    caller, callee, stranger = RTCPeerConnection(), RTCPeerConnection(), RTCPeerConnection()
    settled = asyncio.Event()

    def _changed() -> None:
        if callee.connectionState in ("connected", "failed"):
            settled.set()

    callee.on("connectionstatechange", _changed)
    try:
        caller.createDataChannel("chat")
        stranger.createDataChannel("chat")
        await caller.setLocalDescription(await caller.createOffer())
        await stranger.setLocalDescription(await stranger.createOffer())
        offer_text = sha256_fingerprints_only(caller.localDescription.sdp)
        if signed_fingerprint_of_another_cert:
            theirs = sha256_fingerprints_only(stranger.localDescription.sdp)
            offer_text = offer_text.replace(
                str(check_sdp(SignalKind.OFFER, offer_text)),
                str(check_sdp(SignalKind.OFFER, theirs)),
            )
        offer = receive(signed(text=offer_text).wire_bytes())
        await callee.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        await callee.setLocalDescription(await callee.createAnswer())
        answer_text = sha256_fingerprints_only(callee.localDescription.sdp)
        answer = receive(
            signed(SignalKind.ANSWER, answer_text, key=CALLEE, to=CALLER).wire_bytes(),
            me=CALLER,
            sender=CALLEE,
        )
        await caller.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        await asyncio.wait_for(settled.wait(), 20)
        return caller.connectionState, callee.connectionState
    finally:
        for pc in (caller, callee, stranger):
            await pc.close()


def test_aiortc_connects_with_signed_sdp() -> None:
    _, callee_state = asyncio.run(_aiortc_call(signed_fingerprint_of_another_cert=False))
    assert callee_state == "connected"


def test_aiortc_refuses_a_certificate_other_than_the_signed_fingerprint() -> None:
    """What the signature buys: a fingerprint cannot be swapped without the node key
    (BadSignature above), and the endpoint refuses any certificate but the signed one."""
    _, callee_state = asyncio.run(_aiortc_call(signed_fingerprint_of_another_cert=True))
    assert callee_state == "failed"


# -- the call state machine ----------------------------------------------------------

_L, _R = Origin.LOCAL, Origin.REMOTE
_O, _A, _C, _B = SignalKind.OFFER, SignalKind.ANSWER, SignalKind.CANDIDATE, SignalKind.BYE
_I, _OS, _OR, _AN, _X = (
    CallState.IDLE, CallState.OFFER_SENT, CallState.OFFER_RECEIVED, CallState.ANSWERED,
    CallState.CLOSED,
)  # fmt: skip

# The table of specs/live.md §8, written out independently of the code.
# (state, origin, kind) -> (next state, action classes); anything absent is refused.
EXPECTED: dict[tuple[CallState, Origin, SignalKind], tuple[CallState, tuple[type, ...]]] = {
    (_I, _L, _O): (_OS, (Transmit,)),
    (_I, _R, _O): (_OR, (Deliver,)),
    (_I, _L, _B): (_X, (Close,)),
    (_OS, _L, _C): (_OS, (Transmit,)),
    (_OS, _R, _A): (_AN, (Deliver,)),
    (_OS, _L, _B): (_X, (Transmit, Close)),
    (_OS, _R, _B): (_X, (Close,)),
    (_OR, _R, _C): (_OR, (Deliver,)),
    (_OR, _L, _A): (_AN, (Transmit,)),
    (_OR, _L, _B): (_X, (Transmit, Close)),
    (_OR, _R, _B): (_X, (Close,)),
    (_AN, _L, _C): (_AN, (Transmit,)),
    (_AN, _R, _C): (_AN, (Deliver,)),
    (_AN, _L, _B): (_X, (Transmit, Close)),
    (_AN, _R, _B): (_X, (Close,)),
}

# How to bring a callee-side and a caller-side machine into each state.
_PATHS: dict[CallState, list[tuple[Origin, SignalKind]]] = {
    _I: [],
    _OS: [(_L, _O)],
    _OR: [(_R, _O)],
    _AN: [(_L, _O), (_R, _A)],
    _X: [(_L, _B)],
}

_SDP_FOR = {_O: offer_sdp(), _A: offer_sdp(FP_OTHER), _C: CANDIDATE_SDP, _B: ""}


def remote(kind: SignalKind, *, key: SigningKey = CALLEE, session: str = SESSION) -> Remote:
    """A verified signal of ``kind`` from the peer (CALLEE) to the machine's node (CALLER)."""
    signal = signed(kind, _SDP_FOR[kind], key=key, to=CALLER, session=session)
    return Remote(receive(signal.wire_bytes(), me=CALLER, sender=key))


def event(origin: Origin, kind: SignalKind) -> Local | Remote:
    return Local(kind, _SDP_FOR[kind]) if origin is _L else remote(kind)


def machine_in(state: CallState) -> CallSignalling:
    call = CallSignalling(session=SESSION, me=CALLER.id, peer=CALLEE.id)
    for origin, kind in _PATHS[state]:
        assert not any(isinstance(a, Refuse) for a in call.handle(event(origin, kind)))
    assert call.state is state
    return call


def test_transition_table_is_the_specified_one() -> None:
    assert {k: (v[0], len(v[1])) for k, v in TRANSITIONS.items()} == {
        k: (v[0], len(v[1])) for k, v in EXPECTED.items()
    }


@pytest.mark.parametrize(
    ("state", "origin", "kind"),
    [(s, o, k) for s in CallState for o in Origin for k in SignalKind],
    ids=lambda v: str(v.value),
)
def test_every_transition(state: CallState, origin: Origin, kind: SignalKind) -> None:
    call = machine_in(state)
    actions = call.handle(event(origin, kind))
    expected = EXPECTED.get((state, origin, kind))
    if expected is None:
        assert actions == [Refuse(refusal_reason(state, origin, kind))]
        assert call.state is state
        return
    assert call.state is expected[0]
    assert [type(a) for a in actions] == list(expected[1])
    for action in actions:
        if isinstance(action, Transmit):
            assert action == Transmit(kind, SESSION, CALLEE.id, _SDP_FOR[kind])
        elif isinstance(action, Deliver):
            assert action.signal.kind is kind and action.signal.sender == CALLEE.id
        elif isinstance(action, Close):
            assert action.reason == ("hung up" if origin is _L else "peer hung up")


@pytest.mark.parametrize(
    ("state", "origin", "kind", "reason"),
    [
        (_I, _R, _A, "answer without an offer"),
        (_I, _L, _A, "answer without an offer"),
        (_I, _R, _C, "candidate without an offer"),
        (_I, _R, _B, "bye without an offer"),
        (_OS, _R, _O, "duplicate offer"),
        (_OS, _L, _O, "duplicate offer"),
        (_OR, _R, _O, "duplicate offer"),
        (_AN, _R, _O, "duplicate offer"),
        (_OS, _L, _A, "side that received the offer"),
        (_OR, _R, _A, "side that received the offer"),
        (_AN, _R, _A, "duplicate answer"),
        (_OS, _R, _C, "candidate before the answer"),
        (_OR, _L, _C, "candidate before the answer"),
        (_X, _R, _O, "closed"),
        (_X, _L, _B, "closed"),
    ],
)
def test_refusal_reasons(state: CallState, origin: Origin, kind: SignalKind, reason: str) -> None:
    (action,) = machine_in(state).handle(event(origin, kind))
    assert isinstance(action, Refuse) and reason in action.reason


def test_answer_from_the_wrong_node_is_refused() -> None:
    call = machine_in(_OS)
    wrong = remote(_A, key=OTHER)
    assert call.handle(wrong) == [Refuse(f"signal from {OTHER.id[:16]}…, not from the peer")]
    assert call.state is _OS and call.peer_fingerprint is None
    (action,) = call.handle(remote(_A))
    assert isinstance(action, Deliver) and call.peer_fingerprint == FP_OTHER


def test_signal_for_another_session_is_refused() -> None:
    call = machine_in(_OS)
    (action,) = call.handle(remote(_A, session="f" * 32))
    assert action == Refuse("signal for another call") and call.state is _OS


def test_local_sdp_is_checked_before_anything_is_sent() -> None:
    call = machine_in(_I)
    (action,) = call.handle(Local(_O, offer_sdp().replace(FP, FP.lower())))
    assert isinstance(action, Refuse) and "fingerprint" in action.reason
    assert call.state is _I
    (action,) = call.handle(Local(_B, "x"))
    assert isinstance(action, Refuse) and call.state is _I


def test_machine_arguments_are_checked() -> None:
    for session, me, peer in [
        ("nope", CALLER.id, CALLEE.id),
        (SESSION, CALLER.id, CALLER.id),
        (SESSION, CALLER.id, "x" * 64),
    ]:
        with pytest.raises(ValueError):
            CallSignalling(session=session, me=me, peer=peer)


def test_a_whole_call_between_two_nodes() -> None:
    """Both sides' machines, joined by sign_signal and verify_signal."""
    caller = CallSignalling(session=SESSION, me=CALLER.id, peer=CALLEE.id)
    callee = CallSignalling(session=SESSION, me=CALLEE.id, peer=CALLER.id)
    keys = {CALLER.id: CALLER, CALLEE.id: CALLEE}
    caches = {CALLER.id: NonceCache(), CALLEE.id: NonceCache()}
    machines = {CALLER.id: caller, CALLEE.id: callee}
    nonces = iter(f"{i:032x}" for i in range(1, 100))
    now = T0

    def run(me: str, local: Local) -> list[Any]:
        """Apply a local event on ``me``; carry every Transmit to the peer; return
        what the peer did with it."""
        delivered: list[Any] = []
        for action in machines[me].handle(local):
            if isinstance(action, Transmit):
                wire = sign_signal(
                    keys[me], kind=action.kind, session=action.session, to=action.to,
                    sdp=action.sdp, nonce=next(nonces), now_ms=now,
                ).wire_bytes()  # fmt: skip
                got = verify_signal(
                    wire, expected_from=me, me=action.to, now_ms=now + 50,
                    seen=caches[action.to],
                )  # fmt: skip
                delivered += machines[action.to].handle(Remote(got))
        return delivered

    (d,) = run(CALLER.id, Local(_O, offer_sdp(FP)))
    assert isinstance(d, Deliver) and d.signal.fingerprint == FP
    assert caller.state is _OS and callee.state is _OR
    (d,) = run(CALLER.id, Local(_C, CANDIDATE_SDP))
    assert isinstance(d, Deliver) and d.signal.kind is _C
    now += 5_000
    (d,) = run(CALLEE.id, Local(_A, offer_sdp(FP_OTHER)))
    assert isinstance(d, Deliver) and caller.state is callee.state is _AN
    assert caller.peer_fingerprint == callee.local_fingerprint == FP_OTHER
    assert callee.peer_fingerprint == caller.local_fingerprint == FP
    (d,) = run(CALLEE.id, Local(_C, CANDIDATE_SDP))
    assert isinstance(d, Deliver)
    now += 60_000
    assert run(CALLER.id, Local(_B)) == [Close("peer hung up")]
    assert caller.state is callee.state is _X


# -- vectors ------------------------------------------------------------------------


def test_signalling_json_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "make_signalling_under_test"
    spec = importlib.util.spec_from_file_location(name, MAKE_SIGNALLING)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    render = cast(Callable[[], str], module.render)
    assert SIGNALLING_JSON.read_text(encoding="utf-8") == render(), (
        "specs/vectors/signalling.json is stale: run "
        ".venv/bin/python specs/vectors/make_signalling.py > specs/vectors/signalling.json"
    )


def test_vector_constants() -> None:
    assert bytes.fromhex(VECTORS["domain"]) == SIGNAL_DOMAIN
    assert VECTORS["limits"] == {
        "max_sdp_bytes": MAX_SDP_BYTES,
        "max_signal_bytes": MAX_SIGNAL_BYTES,
        "max_lifetime_ms": MAX_LIFETIME_MS,
        "max_skew_ms": MAX_SKEW_MS,
    }
    for node in VECTORS["nodes"].values():
        assert SigningKey(bytes.fromhex(node["seed"])).id == node["id"]
    for section in ("valid", "invalid", "sdp"):
        names = [case["name"] for case in VECTORS[section]]
        assert len(names) == len(set(names)), section


def _cases(section: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in VECTORS[section]]


@pytest.mark.parametrize("case", _cases("valid"))
def test_valid_vector(case: dict[str, Any]) -> None:
    key = SigningKey(bytes.fromhex(VECTORS["nodes"][case["sender"]]["seed"]))
    given_ = case["input"]
    signal = sign_signal(
        key, kind=SignalKind(given_["kind"]), session=given_["session"], to=given_["to"],
        sdp=given_["sdp"], nonce=given_["nonce"], now_ms=given_["issued_ms"],
        lifetime_ms=given_["lifetime_ms"],
    )  # fmt: skip
    assert signal.signing_bytes().hex() == case["signing_bytes"]
    assert signal.sig == case["sig"]
    assert signal.wire_bytes().decode() == case["wire"]
    wire = json.loads(case["wire"])
    fields = {k: v for k, v in wire.items() if k != "sig"}
    assert bytes.fromhex(case["signing_bytes"]) == SIGNAL_DOMAIN + canonical_bytes(fields)
    for now in case["accept_at"]:
        got = verify_signal(case["wire"].encode(), **case["verify"], now_ms=now, seen=NonceCache())
        assert got == signal and got.fingerprint == case["fingerprint"]
    for now, error in case["refuse_at"].items():
        with pytest.raises(SignallingError) as caught:
            verify_signal(
                case["wire"].encode(), **case["verify"], now_ms=int(now), seen=NonceCache()
            )
        assert type(caught.value).__name__ == error


@pytest.mark.parametrize("case", _cases("invalid"))
def test_invalid_vector(case: dict[str, Any]) -> None:
    with pytest.raises(SignallingError) as caught:
        verify_signal(case["wire"].encode(), **case["verify"], seen=NonceCache())
    assert type(caught.value).__name__ == case["error"]
    assert case["reason"] in str(caught.value)


def test_replay_vector() -> None:
    case = VECTORS["replay"]
    seen = NonceCache()
    outcomes = []
    for _ in case["outcomes"]:
        try:
            verify_signal(case["wire"].encode(), **case["verify"], seen=seen)
        except SignallingError as exc:
            outcomes.append(type(exc).__name__)
        else:
            outcomes.append("ok")
    assert outcomes == case["outcomes"] == ["ok", "Replayed"]


@pytest.mark.parametrize("case", _cases("sdp"))
def test_sdp_vector(case: dict[str, Any]) -> None:
    kind = SignalKind(case["kind"])
    if "error" in case:
        with pytest.raises(Malformed) as caught:
            check_sdp(kind, case["sdp"])
        assert str(caught.value) == case["error"]
    else:
        assert check_sdp(kind, case["sdp"]) == case["fingerprint"]


def test_transition_vectors_are_the_specified_table() -> None:
    rows = VECTORS["transitions"]
    assert len(rows) == len(CallState) * len(Origin) * len(SignalKind)
    names = {Transmit: "transmit", Deliver: "deliver", Close: "close"}
    for row in rows:
        key = (CallState(row["state"]), Origin(row["origin"]), SignalKind(row["kind"]))
        expected = EXPECTED.get(key)
        if expected is None:
            assert row["refused"] == refusal_reason(*key)
        else:
            assert row["next"] == expected[0].value
            assert row["actions"] == [names[cls] for cls in expected[1]]
