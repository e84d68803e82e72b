"""Tests for the signed event (protocol.event): wire form, ids, signatures, hostile input."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from protocol.canonical import MAX_EVENT_BYTES, MAX_SAFE_INTEGER, JSONValue, canonical_bytes
from protocol.errors import BadSignature, InvalidEvent, ProtocolError
from protocol.event import (
    ENVELOPE_FIELDS,
    SIGNATURE_DOMAIN,
    Event,
    body_hash_of,
    decode_event,
    parse_event,
    sign_event,
)
from protocol.keys import SigningKey
from protocol.kinds import KNOWN_KINDS, SCHEMAS
from tests.conftest import T0, growing_event, signing_key

HEX_A = "a" * 64
HEX_B = "0123456789abcdef" * 4

# One valid body per known kind, using optional fields too where they exist.
VALID_BODIES: dict[str, dict[str, JSONValue]] = {
    "profile": {"name": "Ada", "bio": "modular synths", "avatar": HEX_A, "links": ["https://a.b"]},
    "post": {"text": "new track out 🎶", "reply_to": HEX_A, "tracks": [HEX_B], "tags": ["jazz"]},
    "track": {
        "title": "Nocturne",
        "blob": HEX_B,
        "size": 123456,
        "mime": "audio/flac",
        "duration_ms": 183000,
        "sample_rate": 48000,
        "channels": 2,
        "license": "CC-BY-4.0",
    },
    "offer": {
        "title": "Juno-60",
        "category": "gear",
        "offered": "a Juno-60",
        "wanted": "a Rhodes",
        "condition": "good",
        "status": "open",
    },
    "course": {
        "title": "Ear training",
        "level": "beginner",
        "lessons": [{"title": "Intervals", "format": "exercise", "minutes": 20}],
    },
    "hardware": {
        "serial": "TM1-000042",
        "model": "Talas M1",
        "firmware": "1.4.2",
        "parts": [{"slot": "capsule", "model": "LDC-34", "serial": "C-991", "revision": "B"}],
    },
    "repair": {
        "serial": "TM1-000042",
        "action": "part-swapped",
        "removed": {"slot": "capsule", "model": "LDC-34", "serial": "C-991"},
        "installed": {"slot": "capsule", "model": "LDC-34", "serial": "C-1204"},
        "by": "Ada's workshop",
        "when": 1_750_000_000_000,
    },
    "dm": {"to": HEX_B, "nonce": "ab" * 24, "box": "c2VhbGVk"},
    "like": {"target": HEX_A},
    "follow": {"author": HEX_B, "active": True},
    "delete": {"target": HEX_A, "reason": "typo"},
}
UNKNOWN_KIND = "x.future-kind_2"
ALL_KINDS = [*sorted(KNOWN_KINDS), UNKNOWN_KIND]

KEY = signing_key(1)
OTHER_KEY = signing_key(2)


def test_valid_bodies_cover_every_known_kind() -> None:
    assert set(VALID_BODIES) == KNOWN_KINDS


def body_for(kind: str) -> dict[str, JSONValue]:
    return VALID_BODIES.get(kind, {"anything": [1, 2.5, None, {"nested": "ok"}]})


def sample_event(
    *, seq: int = 2, kind: str = "post", body: dict[str, JSONValue] | None = None
) -> Event:
    prev = None if seq == 1 else HEX_B
    return sign_event(
        KEY,
        seq=seq,
        prev=prev,
        kind=kind,
        created=T0,
        body=body_for(kind) if body is None else body,
    )


def rewire(
    event: Event, changes: dict[str, JSONValue] | None = None, *, with_body: bool = True
) -> bytes:
    """Canonical wire bytes of ``event`` with some fields replaced (not re-signed)."""
    obj = event.to_json(with_body=with_body)
    obj.update(changes or {})
    return canonical_bytes(obj)


# -- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("seq", [1, 2, MAX_SAFE_INTEGER])
def test_sign_parse_round_trip(kind: str, seq: int) -> None:
    event = sample_event(seq=seq, kind=kind)
    wire = event.wire_bytes()
    parsed = parse_event(wire)
    assert parsed == event
    assert parsed.body == body_for(kind)
    assert parsed.author == KEY.id
    assert (parsed.seq, parsed.kind, parsed.created) == (seq, kind, T0)
    assert parsed.prev == (None if seq == 1 else HEX_B)
    assert parsed.wire_bytes() == wire
    # The envelope's commitment is the sha256 of the canonical body.
    assert parsed.body_hash == hashlib.sha256(canonical_bytes(body_for(kind))).hexdigest()
    # The wire is exactly the RFC 8785 form of the documented object.
    assert json.loads(wire) == {
        "v": 1,
        "author": KEY.id,
        "seq": seq,
        "prev": event.prev,
        "kind": kind,
        "created": T0,
        "body_hash": event.body_hash,
        "sig": event.sig,
        "body": body_for(kind),
    }


def test_id_and_signature_follow_the_documented_definitions() -> None:
    """id = sha256(canonical(envelope + sig)); sig covers DOMAIN || canonical(envelope)."""
    event = sample_event()
    envelope = {k: v for k, v in event.to_json(with_body=False).items() if k != "sig"}
    assert set(envelope) == ENVELOPE_FIELDS
    assert event.signing_bytes() == SIGNATURE_DOMAIN + canonical_bytes(envelope)
    assert KEY.sign(event.signing_bytes()).hex() == event.sig
    signed_envelope = event.to_json(with_body=False)
    assert event.id == hashlib.sha256(canonical_bytes(signed_envelope)).hexdigest()


def test_id_changes_when_sig_changes() -> None:
    event = sample_event()
    sig = bytearray(bytes.fromhex(event.sig))
    sig[0] ^= 1
    altered = decode_event(rewire(event, {"sig": sig.hex()}))  # decodes; signature not checked
    assert altered.sig != event.sig
    assert altered.id != event.id
    # ... but not when only the body is dropped: the body is committed by hash.
    assert decode_event(event.wire_bytes(with_body=False)).id == event.id


def test_distinct_events_have_distinct_ids() -> None:
    events = [sample_event(seq=s, kind=k) for s in (1, 2, 3) for k in ALL_KINDS]
    assert len({e.id for e in events}) == len(events)


# -- fast wire splicing == generic canonical encoder -------------------------------

_TWO_53 = 2.0**53
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    # Floats in [2^53, 1e21) have no parseable JCS form; they get their own test.
    | st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda f: abs(f) < _TWO_53 or abs(f) >= 1e21
    )
    | st.text(max_size=12)
)
json_values: st.SearchStrategy[JSONValue] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
kinds = st.sampled_from(ALL_KINDS) | st.from_regex(r"[a-z][a-z0-9_.-]{0,63}", fullmatch=True)
keys = st.sampled_from([signing_key(i) for i in (1, 2, 3)])


@st.composite
def bodies(draw: st.DrawFn, kind: str) -> dict[str, JSONValue]:
    """A valid body for ``kind``: the schema's fields plus arbitrary extra fields."""
    schema = SCHEMAS.get(kind, {})
    extra = draw(
        st.dictionaries(
            st.text(max_size=10).filter(lambda name: name not in schema), json_values, max_size=5
        )
    )
    base = VALID_BODIES.get(kind, {})
    return {**extra, **base}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=keys,
    kind=kinds,
    seq=st.integers(1, MAX_SAFE_INTEGER),
    created=st.integers(0, MAX_SAFE_INTEGER),
    data=st.data(),
)
def test_wire_bytes_equal_generic_canonical_encoding(
    key: SigningKey, kind: str, seq: int, created: int, data: st.DataObject
) -> None:
    body = data.draw(bodies(kind))
    prev = None if seq == 1 else data.draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
    event = sign_event(key, seq=seq, prev=prev, kind=kind, created=created, body=body)
    assert event.wire_bytes() == canonical_bytes(event.to_json())
    assert event.wire_bytes(with_body=False) == canonical_bytes(event.to_json(with_body=False))
    tombstone = event.without_body()
    assert tombstone.wire_bytes() == canonical_bytes(tombstone.to_json())
    # And whatever we sign, a peer parses back to the same event.
    parsed = parse_event(event.wire_bytes())
    assert parsed == event
    assert parsed.wire_bytes() == event.wire_bytes()


@settings(max_examples=40, deadline=None)
@given(value=st.floats(min_value=_TWO_53, max_value=1e21, exclude_max=True))
def test_whatever_is_signed_parses_back_floats_near_2_53(value: float) -> None:
    """Floats JCS writes as huge integer literals: refuse to sign them or round-trip them."""
    try:
        event = sign_event(
            KEY, seq=1, prev=None, kind="post", created=T0, body={"text": "x", "n": value}
        )
    except ProtocolError:
        return
    assert parse_event(event.wire_bytes()) == event


def test_sign_event_refuses_nesting_peers_would_refuse() -> None:
    deep: JSONValue = []
    for _ in range(30):  # event object 1 + body 2 + 31 lists = depth 33
        deep = [deep]
    with pytest.raises(InvalidEvent, match="nesting"):
        sign_event(KEY, seq=1, prev=None, kind="post", created=T0, body={"text": "x", "deep": deep})


def test_nesting_at_the_depth_limit_is_accepted() -> None:
    deep: JSONValue = []
    for _ in range(29):  # event object 1 + body 2 + 30 lists = depth 32, the maximum
        deep = [deep]
    event = sign_event(
        KEY, seq=1, prev=None, kind="post", created=T0, body={"text": "x", "deep": deep}
    )
    assert parse_event(event.wire_bytes()) == event
    # One more level anywhere is refused on the receiving side.
    wire = event.wire_bytes()
    assert b'"deep":[[' in wire and b']],"text"' in wire
    deeper = wire.replace(b'"deep":[', b'"deep":[[', 1).replace(b'],"text"', b']],"text"', 1)
    with pytest.raises(InvalidEvent, match="nesting"):
        parse_event(deeper)


# -- signature and envelope tampering ---------------------------------------------


def test_every_single_signature_bit_flip_is_rejected() -> None:
    event = sample_event()
    sig = bytes.fromhex(event.sig)
    accepted: list[int] = []
    for bit in range(len(sig) * 8):
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        wire = rewire(event, {"sig": flipped.hex()})
        try:
            parse_event(wire)
        except BadSignature:
            continue
        accepted.append(bit)
    assert len(sig) * 8 == 512
    assert accepted == []


TAMPERINGS: dict[str, tuple[dict[str, JSONValue], bool, str]] = {
    # name: (changed fields, keep body, expected message)
    "author": ({"author": OTHER_KEY.id}, True, "signature does not verify"),
    "seq": ({"seq": 3}, True, "signature does not verify"),
    "prev": ({"prev": HEX_A}, True, "signature does not verify"),
    "prev-bodyless": ({"prev": HEX_A}, False, "signature does not verify"),
    "kind": ({"kind": "postx"}, True, "signature does not verify"),
    "created": ({"created": T0 + 1}, True, "signature does not verify"),
    "created-zero": ({"created": 0}, True, "signature does not verify"),
    "body_hash-bodyless": (
        {"body_hash": body_hash_of({"text": "other"})},
        False,
        "signature does not verify",
    ),
    "body_hash": ({"body_hash": body_hash_of({"text": "other"})}, True, "does not match"),
    "body": ({"body": {"text": "edited"}}, True, "'body' does not match 'body_hash'"),
    "body-extra-field": (
        {"body": {**VALID_BODIES["post"], "x": 1}},
        True,
        "'body' does not match 'body_hash'",
    ),
    "sig-of-other-event": (
        {"sig": sample_event(seq=3).sig},
        True,
        "signature does not verify",
    ),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_changed_envelope_field_is_rejected(name: str) -> None:
    changes, with_body, message = TAMPERINGS[name]
    event = sample_event()
    wire = rewire(event, changes, with_body=with_body)
    assert wire != event.wire_bytes(with_body=with_body)
    with pytest.raises(InvalidEvent, match=message):
        parse_event(wire)


def test_structural_envelope_errors_have_clear_messages() -> None:
    event = sample_event()
    cases: list[tuple[dict[str, JSONValue], str]] = [
        ({"v": 2}, "unsupported event version"),
        ({"v": True}, "unsupported event version"),
        ({"seq": 0}, "'seq' must be an integer"),
        ({"created": -1}, "'created' must be an integer"),
        ({"prev": None}, "needs 'prev'"),
        ({"seq": 1}, "seq 1\\) must have prev null"),
        ({"author": KEY.id.upper()}, "'author' must be 64 lowercase hex"),
        ({"sig": event.sig[:-2]}, "'sig' must be 128 lowercase hex"),
        ({"kind": "Post"}, "'kind' must match"),
        ({"body": "text"}, "'body' must be a JSON object"),
        ({"extra": 1}, "unknown event field\\(s\\): extra"),
    ]
    for changes, message in cases:
        with pytest.raises(InvalidEvent, match=message):
            parse_event(rewire(event, changes))
    # A fractional number in an integer field is refused.
    wire = event.wire_bytes()
    integer_fields = {
        b"seq": "'seq' must be an integer",
        b"created": "'created' must be an integer",
        b"v": "unsupported event version",
    }
    for field, why in integer_fields.items():
        start = wire.index(b'"' + field + b'":') + len(field) + 3
        end = start + next(i for i, c in enumerate(wire[start:]) if c in b",}")
        floated = wire[:end] + b".5" + wire[end:]
        with pytest.raises(InvalidEvent, match=why):
            parse_event(floated)
    obj = event.to_json()
    del obj["sig"]
    with pytest.raises(InvalidEvent, match="missing event field\\(s\\): sig"):
        parse_event(canonical_bytes(obj))


# -- tombstones and body-less envelopes ---------------------------------------------


def test_tombstone_keeps_id_and_verifies() -> None:
    event = sample_event()
    tombstone = event.without_body()
    assert tombstone.body is None
    assert (tombstone.id, tombstone.sig, tombstone.body_hash) == (
        event.id,
        event.sig,
        event.body_hash,
    )
    wire = tombstone.wire_bytes()
    assert wire == event.wire_bytes(with_body=False)
    assert "body" not in json.loads(wire)
    parsed = parse_event(wire)
    assert parsed.id == event.id
    assert parsed.body is None
    assert parsed == tombstone
    assert parsed.wire_bytes() == wire


def test_bodyless_wire_of_an_invalid_body_still_parses() -> None:
    # The schema is checked only when the body is present: a tombstone of any
    # kind is relayable (its body is gone, so there is nothing to check).
    event = sample_event(kind="track")
    parsed = parse_event(event.wire_bytes(with_body=False))
    assert parsed.kind == "track"
    assert parsed.body is None


# -- lenient-but-valid input ---------------------------------------------------------


def _reserialise(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _reserialise(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_reserialise(v, rng) for v in value]
    return value


def test_non_canonical_input_is_accepted_and_canonicalised() -> None:
    body: dict[str, JSONValue] = {
        "text": 'café "bar" \\ tab\t 𝄞 ♫ \u2028 \x01',
        "tags": ["ünïcode", "😀"],
        "n": 1.5,
        "zeta": {"b": 1, "a": [True, None]},
    }
    event = sample_event(body=body)
    canonical = event.wire_bytes()
    obj = json.loads(canonical)
    variants = [
        json.dumps(obj, indent=2).encode(),  # whitespace, \uXXXX escapes incl. surrogate pairs
        json.dumps(obj, ensure_ascii=False, indent="\t").encode(),
        json.dumps(dict(reversed(list(obj.items())))).encode(),  # reordered keys
        b"  \r\n" + json.dumps(obj).encode() + b"\n ",  # surrounding whitespace
        json.dumps(obj).replace('"text"', '"\\u0074ext"').encode(),  # escaped key
        json.dumps(obj).replace(": 1.5", ": 15e-1").encode(),  # another number spelling
        # The same integers spelled as floats: JSON numbers, equal to the canonical ones.
        json.dumps(obj).replace(f'"seq": {obj["seq"]}', f'"seq": {obj["seq"]}.0').encode(),
        json.dumps(obj).replace(f'"created": {T0}', f'"created": {T0}.000').encode(),
        json.dumps(obj).replace('"v": 1', '"v": 1E0').encode(),
    ]
    for variant in variants:
        assert variant != canonical
        parsed = parse_event(variant)
        assert parsed == event
        assert parsed.wire_bytes() == canonical


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    indent=st.none() | st.integers(0, 3),
    ascii_only=st.booleans(),
    body=bodies("post"),
)
def test_reserialised_events_parse_to_the_canonical_form(
    seed: int, indent: int | None, ascii_only: bool, body: dict[str, JSONValue]
) -> None:
    event = sample_event(body=body)
    shuffled = _reserialise(event.to_json(), random.Random(seed))
    variant = json.dumps(shuffled, indent=indent, ensure_ascii=ascii_only).encode()
    parsed = parse_event(variant)
    assert parsed.id == event.id
    assert parsed.wire_bytes() == event.wire_bytes()


def test_size_cap_applies_to_the_canonical_form() -> None:
    """Input under 64 KiB whose canonical form is over it is refused.

    Otherwise the node would accept an event whose wire form (what it stores
    and relays) it, and every peer, refuses to decode.
    """
    raw, _ = growing_event(KEY)
    assert len(raw) <= MAX_EVENT_BYTES
    with pytest.raises(InvalidEvent, match="over the 65536-byte cap"):
        parse_event(raw)
    short, _ = growing_event(KEY, count=1000)
    parsed = parse_event(short)  # small enough either way
    assert parsed.wire_bytes().count(b"100000") == 1000
    assert decode_event(parsed.wire_bytes()) == parsed


# -- hostile input ------------------------------------------------------------------


def _only_protocol_errors(data: bytes) -> None:
    try:
        parse_event(data)
    except ProtocolError:
        return
    # Reaching here means the input was accepted: it must then be a real event.
    raise AssertionError(f"hostile input accepted: {data[:80]!r}")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
@example(b"")
@example(b"\xef\xbb\xbf{}")
@example(b"{}")
@example(b"null")
@example(b"[]")
@example(b'{"v":1}')
@example(b"\xff\xfe")
@example(b'"\\ud800"')
@example(b"1e999")
@example(b"123456789012345678901234567890")
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    _only_protocol_errors(data)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_events_raise_only_protocol_errors(data: st.DataObject) -> None:
    wire = bytearray(sample_event().wire_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(wire) - 1))
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if action == "replace":
            assume(wire[where] != byte)
            wire[where] = byte
        elif action == "insert":
            wire.insert(where, byte)
        else:
            del wire[where]
    try:
        parsed = parse_event(bytes(wire))
    except ProtocolError:
        return
    # Only inserting insignificant whitespace can leave a valid event.
    assert parsed == sample_event()


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(sorted(ENVELOPE_FIELDS | {"sig", "body"})), value=json_values)
def test_hostile_field_values_raise_only_protocol_errors(field: str, value: JSONValue) -> None:
    event = sample_event()
    obj = event.to_json()
    assume(obj[field] != value)
    obj[field] = value
    with pytest.raises(ProtocolError):
        parse_event(canonical_bytes(obj))


@settings(max_examples=100, deadline=None)
@given(value=json_values)
def test_arbitrary_json_is_not_an_event(value: JSONValue) -> None:
    with pytest.raises(ProtocolError):
        parse_event(canonical_bytes(value))


def test_every_truncation_is_rejected() -> None:
    wire = sample_event(kind="course").wire_bytes()
    for cut in range(len(wire)):
        with pytest.raises(ProtocolError):
            parse_event(wire[:cut])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[" * 200_000, id="deep-lists"),
        pytest.param(b'{"a":' * 50_000, id="deep-objects"),
        pytest.param(b"[" * 60_000 + b"]" * 60_000, id="deep-balanced-over-cap"),
        pytest.param(b"[" * 30_000 + b"]" * 30_000, id="deep-balanced"),
        pytest.param(b'{"body":' * 5_000 + b"1" + b"}" * 5_000, id="deep-body"),
        pytest.param(b'"' + b"x" * 1_000_000 + b'"', id="huge-string"),
        pytest.param(b'{"v":1,"body":{"text":"' + b"a" * 70_000 + b'"}}', id="huge-body"),
        pytest.param(b"9" * 60_000, id="huge-integer"),
        pytest.param(b"0." + b"1" * 60_000, id="long-float"),
        pytest.param(b'["\\' + b'\\"' * 30_000 + b'"]', id="escape-storm"),
        pytest.param(b'{"a":1,' * 9_000 + b'"a":1}', id="duplicate-keys"),
    ],
)
def test_huge_and_deep_inputs_raise_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_event(data)


def test_deep_nesting_inside_a_signed_event_is_refused_without_recursion_error() -> None:
    event = sample_event()
    wire = event.wire_bytes()
    inner = b"[" * 5_000 + b"]" * 5_000
    hostile = wire.replace(b'"body":{', b'"body":{"deep":' + inner + b",", 1)
    with pytest.raises(InvalidEvent, match="nesting"):
        parse_event(hostile)


# -- signing refuses what peers would reject ---------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        ("post", {}, "body.text is required"),
        ("post", {"text": ""}, "body.text must be 1..20000"),
        ("post", {"text": "x\x00y"}, "body.text must not contain NUL"),
        ("post", {"text": "x", "tags": ["has space"]}, r"body.tags\[0\]"),
        ("track", {**VALID_BODIES["track"], "channels": 0}, "body.channels"),
        ("track", {**VALID_BODIES["track"], "mime": "Audio/WAV"}, "body.mime"),
        ("like", {"target": HEX_A.upper()}, "body.target must be 64 lowercase hex"),
        ("follow", {"author": HEX_A, "active": 1}, "body.active must be true or false"),
        ("offer", {**VALID_BODIES["offer"], "condition": "Mint"}, "body.condition"),
        ("offer", {**VALID_BODIES["offer"], "category": ["gear"]}, "body.category"),
        ("course", {"title": "c", "lessons": []}, "body.lessons must have 1..200"),
        ("course", {"title": "c", "lessons": [{"format": "guide"}]}, "lessons.*title"),
        ("profile", {"name": 7}, "body.name must be a string"),
        ("delete", {"reason": "no target"}, "body.target is required"),
    ],
)
def test_sign_event_refuses_schema_violations(
    kind: str, body: dict[str, JSONValue], message: str
) -> None:
    with pytest.raises(InvalidEvent, match=message):
        sign_event(KEY, seq=1, prev=None, kind=kind, created=T0, body=body)


def test_unknown_tokens_and_extra_fields_are_accepted_for_forward_compatibility() -> None:
    # A newer node may add an enum value or an optional field; refusing it here
    # would stall that author's feed behind a gap on every older node.
    body: dict[str, JSONValue] = {
        **VALID_BODIES["offer"],
        "condition": "mint",
        "category": "synth-module",
        "shipping": {"eu": True},
    }
    event = sign_event(KEY, seq=1, prev=None, kind="offer", created=T0, body=body)
    assert parse_event(event.wire_bytes()).body == body


@pytest.mark.parametrize(
    ("seq", "prev", "kind", "created"),
    [
        (0, None, "post", T0),
        (1, HEX_A, "post", T0),
        (2, None, "post", T0),
        (1, None, "Post", T0),
        (1, None, "post", -1),
        (MAX_SAFE_INTEGER + 1, HEX_A, "post", T0),
    ],
)
def test_sign_event_refuses_invalid_envelopes(
    seq: int, prev: str | None, kind: str, created: int
) -> None:
    with pytest.raises(ProtocolError):
        sign_event(KEY, seq=seq, prev=prev, kind=kind, created=created, body={"text": "x"})


def _padded(pad: int) -> dict[str, JSONValue]:
    return {"text": "x", "padding": "p" * pad}


def test_sign_event_size_cap_is_exactly_64_kib() -> None:
    base = len(
        sign_event(KEY, seq=1, prev=None, kind="post", created=T0, body=_padded(0)).wire_bytes()
    )
    fits = MAX_EVENT_BYTES - base
    event = sign_event(KEY, seq=1, prev=None, kind="post", created=T0, body=_padded(fits))
    assert len(event.wire_bytes()) == MAX_EVENT_BYTES == 65536
    assert parse_event(event.wire_bytes()) == event
    with pytest.raises(InvalidEvent, match="over the 65536-byte cap"):
        sign_event(KEY, seq=1, prev=None, kind="post", created=T0, body=_padded(fits + 1))
    with pytest.raises(InvalidEvent, match="cap"):
        sign_event(KEY, seq=1, prev=None, kind="x", created=T0, body=_padded(200_000))
    # The receiving side draws the line in the same place.
    big = rewire(event).replace(b'"padding":"', b'"padding":"p', 1)
    assert len(big) == MAX_EVENT_BYTES + 1
    with pytest.raises(InvalidEvent, match="cap"):
        decode_event(big)


def test_sign_event_refuses_unencodable_bodies() -> None:
    unencodable: list[dict[str, JSONValue]] = [
        {"text": "x", "n": float("nan")},
        {"text": "x", "n": float("inf")},
        {"text": "x", "s": "\ud800"},
        {"text": "x", "n": 2**53},
    ]
    for body in unencodable:
        with pytest.raises(ProtocolError):
            sign_event(KEY, seq=1, prev=None, kind="post", created=T0, body=body)
