"""Build the Talas signed-event test vectors in specs/vectors/events.json.

Usage, from the project root::

    .venv/bin/python specs/vectors/make_events.py > specs/vectors/events.json

Everything is derived from fixed 32-byte seeds and fixed inputs, and Ed25519
signatures are deterministic, so the output is byte-for-byte stable; the test
suite (tests/test_spec_vectors.py) checks that the committed file equals what
:func:`render` produces today.  Signatures, ids and wire forms come from
Talas's own code (``protocol.event.sign_event``); the expected outcome of every
invalid and feed vector is written here by hand, from specs/protocol.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocol.canonical import MAX_EVENT_BYTES, MAX_SAFE_INTEGER, JSONValue, canonical_bytes
from protocol.event import SIGNATURE_DOMAIN, Event, sign_event
from protocol.keys import SigningKey

DESCRIPTION = (
    "Test vectors for the Talas signed event, v=1 (specs/protocol.md). "
    "seed, public_key, signing_bytes, sig and id are lowercase hex; wire is the event's "
    "JSON text, to be UTF-8 encoded. "
    "valid: signing input with the Ed25519 key derived from seed (RFC 8032) MUST give exactly "
    "signing_bytes, sig, id and wire; with_body false means wire is the body-less envelope "
    "(tombstone) of that event. Parsing wire MUST accept it, with that id. "
    "invalid: parsing wire MUST reject it; error is a substring of the reference "
    "implementation's message (informative for other implementations). Each breaks one rule; "
    "where the broken value still has a canonical form, the rest is made consistent (the "
    "body_hash matches the body and the signature is valid over the envelope as it stands), "
    "so the vector fails for the rule it is named after. The others are hand-edited copies of "
    "a valid event. "
    "feeds: offer each wire in turn to a node that holds nothing yet; expect gives the verdict "
    "for each. A node re-offers held events once their gap fills; these vectors show that by "
    "repeating a held wire after the event that fills its gap."
)

SEED_A = bytes(range(32))
SEED_B = hashlib.sha256(b"talas spec vectors: author b").digest()
SEED_C = hashlib.sha256(b"talas spec vectors: author c").digest()
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in ms since the Unix epoch
MAX_TEXT = 20_000  # the longest post text, in code points


def _blob(label: str) -> str:
    """A stand-in content hash (as if the sha256 of a blob's bytes)."""
    return hashlib.sha256(label.encode()).hexdigest()


def _sign(
    seed: bytes, *, seq: int, prev: str | None, kind: str, created: int, body: dict[str, JSONValue]
) -> Event:
    key = SigningKey(seed)
    return sign_event(key, seq=seq, prev=prev, kind=kind, created=created, body=body)


class _Chain:
    """One author's feed, signed event by event, one minute apart."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.key = SigningKey(seed)
        self.events: list[Event] = []

    def next(self, kind: str, body: dict[str, JSONValue]) -> Event:
        seq = len(self.events) + 1
        prev = self.events[-1].id if self.events else None
        event = _sign(
            self.seed, seq=seq, prev=prev, kind=kind, created=T0 + 60_000 * seq, body=body
        )
        self.events.append(event)
        return event


def _body(event: Event) -> dict[str, JSONValue]:
    assert event.body is not None
    return dict(event.body)


def _nested(levels: int) -> JSONValue:
    """``levels`` arrays, each inside the next: [[...[]...]]."""
    value: JSONValue = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _sized_post_body(wire_bytes: int) -> dict[str, JSONValue]:
    """A post whose text is MAX_TEXT code points and whose wire form is ``wire_bytes`` long.

    Most of the text is a 4-byte emoji (two UTF-16 code units), so the vector
    also pins that text lengths count code points, not bytes or UTF-16 units.
    """
    # The empty text is invalid, so measure the fixed part on an unchecked Event;
    # key, hashes and signature have fixed lengths, only the text varies.
    author = SigningKey(SEED_C).id
    empty = Event("", author, 1, None, "post", T0, "0" * 64, "0" * 128, {"text": ""})
    extra = wire_bytes - len(empty.wire_bytes()) - MAX_TEXT  # bytes beyond 1 per code point
    emoji, two_byte = divmod(extra, 3)
    ascii_ = MAX_TEXT - emoji - two_byte
    return {"text": "\U0001f3b6" * emoji + "\u00e9" * two_byte + "a" * ascii_}


# -- building invalid wires ---------------------------------------------------


def _wire(obj: dict[str, JSONValue]) -> str:
    return canonical_bytes(obj).decode()


def _unsigned(event: Event) -> dict[str, JSONValue]:
    obj = event.to_json()
    del obj["sig"]
    return obj


def _forge(key: SigningKey, obj: dict[str, JSONValue], *, domain: bytes = SIGNATURE_DOMAIN) -> str:
    """The wire of ``obj`` (no "sig" yet) signed as it stands, with no validation.

    The signature covers ``domain`` + JCS(envelope), as for a valid event, so
    an invalid vector fails for the rule it is about, not for its signature.
    """
    envelope = {k: v for k, v in obj.items() if k != "body"}
    return _wire({**obj, "sig": key.sign(domain + canonical_bytes(envelope)).hex()})


def _variant(key: SigningKey, event: Event, **changes: JSONValue) -> str:
    """``event`` with some fields changed, re-signed."""
    return _forge(key, {**_unsigned(event), **changes})


def _without(key: SigningKey, event: Event, name: str) -> str:
    """``event`` without field ``name``, re-signed (or just unsigned, for "sig")."""
    obj = _unsigned(event)
    if name == "sig":
        return _wire(obj)
    del obj[name]
    return _forge(key, obj)


def _with_body(key: SigningKey, event: Event, body: JSONValue) -> str:
    """``event`` with another body and its matching body_hash, re-signed."""
    body_hash = hashlib.sha256(canonical_bytes(body)).hexdigest()
    return _variant(key, event, body=body, body_hash=body_hash)


def _splice(wire: str, old: str, new: str) -> str:
    """Hand-edit raw JSON: replace the one occurrence of ``old`` in ``wire``."""
    assert wire.count(old) == 1, old
    return wire.replace(old, new)


# -- the vectors ----------------------------------------------------------------


@dataclass(frozen=True)
class _Material:
    """The events the vectors are made of."""

    a: list[Event]  # author A (SEED_A): one event of every kind, seq 1..12
    b: list[Event]  # author B (SEED_B): two posts
    a1_fork: Event  # a second seq 1 by A
    a2_fork: Event  # a second seq 2 by A, after a[0]
    a3_fork: Event  # seq 3 by A, after a2_fork


def _events() -> _Material:
    a, b = _Chain(SEED_A), _Chain(SEED_B)
    b1 = b.next("post", {"text": "Field recordings from the harbour, all CC-BY."})
    b.next("post", {"text": "Part two: the fog horn.", "reply_to": b1.id})
    a1 = a.next("post", {"text": "Hello from Talas."})
    a2 = a.next(
        "post", {"text": "Second post: new loop up soon.", "tags": ["ambient", "field-recording"]}
    )
    a.next(
        "profile",
        {
            "name": "Ana Example",
            "bio": "Modular synths and tape loops.",
            "avatar": _blob("avatar.png"),
            "links": ["https://example.org/ana"],
        },
    )
    a.next(
        "track",
        {
            "title": "Harbour Loop",
            "blob": _blob("harbour-loop.flac"),
            "size": 18_345_678,
            "mime": "audio/flac",
            "duration_ms": 187_500,
            "sample_rate": 48_000,
            "channels": 2,
            "artist": "Ana Example",
            "license": "CC-BY-4.0",
        },
    )
    a.next(
        "offer",
        {
            "title": "Spring reverb tank",
            "category": "gear",
            "offered": "Accutronics 4AB3C1B, works, a little rust.",
            "wanted": "A mixing session or a guitar pedal.",
            "condition": "good",
            "status": "open",
            "location": "Lisbon",
            "blobs": [_blob("reverb.jpg")],
        },
    )
    a.next(
        "course",
        {
            "title": "Tape loops from scratch",
            "summary": "Splice, tension and wow.",
            "level": "beginner",
            "lessons": [
                {"title": "Cutting and splicing", "format": "guide", "text": "Use a razor."},
                {
                    "title": "Recording the loop",
                    "format": "audio",
                    "blob": _blob("lesson-2.ogg"),
                    "minutes": 12,
                },
            ],
            "prerequisites": [],
        },
    )
    a.next("like", {"target": b1.id})
    a.next("follow", {"author": b.key.id, "active": True})
    a.next("delete", {"target": a2.id, "reason": "posted too early"})
    a.next(
        "gig.announce",
        {"venue": "Sala 1", "starts": T0 + 86_400_000, "lineup": [{"name": "Ana Example"}]},
    )
    a.next(
        "post",
        {
            # JCS sorts keys by UTF-16 code units: the emoji key (D83C DFB5)
            # comes before U+FB01 although its code point is larger.
            "text": "Ünïcödé — 音楽 🎶🎸, עברית, e\u0301 and a \u2028 line separator",
            "\ufb01eld": "ligature key",
            "\U0001f3b5": "emoji key",
        },
    )
    a.next(
        "x.numbers",
        {
            "int": 42,
            "negative": -7,
            "max_safe": MAX_SAFE_INTEGER,
            "min_safe": -MAX_SAFE_INTEGER,
            "fraction": 120.5,
            "whole_float": 1.0,
            "negative_zero": -0.0,
            "tiny": 1e-7,
            "huge": 1e21,
            "third": 1 / 3,
            "escapes": 'quote " backslash \\ tab \t newline \n nul \x00 unit \x1f del \x7f',
        },
    )
    a2_fork = _sign(SEED_A, seq=2, prev=a1.id, kind="post", created=a2.created, body={"text": "No"})
    return _Material(
        a=a.events,
        b=b.events,
        a1_fork=_sign(SEED_A, seq=1, prev=None, kind="post", created=T0, body={"text": "Other"}),
        a2_fork=a2_fork,
        a3_fork=_sign(
            SEED_A, seq=3, prev=a2_fork.id, kind="post", created=T0 + 180_000, body={"text": "B"}
        ),
    )


def _valid(name: str, seed: bytes, event: Event, *, with_body: bool = True) -> JSONValue:
    return {
        "name": name,
        "seed": seed.hex(),
        "public_key": event.author,
        "input": {
            "seq": event.seq,
            "prev": event.prev,
            "kind": event.kind,
            "created": event.created,
            "body": _body(event),
        },
        "with_body": with_body,
        "signing_bytes": event.signing_bytes().hex(),
        "sig": event.sig,
        "id": event.id,
        "wire": event.wire_bytes(with_body=with_body).decode(),
    }


def _biggest() -> Event:
    body = _sized_post_body(MAX_EVENT_BYTES)
    return _sign(SEED_C, seq=1, prev=None, kind="post", created=T0, body=body)


def _valid_vectors(ev: _Material) -> list[JSONValue]:
    a = ev.a
    names = [
        "post_seq_1",
        "post_seq_2_with_prev",
        "profile",
        "track",
        "offer",
        "course_with_lessons",
        "like",
        "follow",
        "delete",
        "unknown_kind",
        "non_ascii_text_and_utf16_key_order",
        "canonical_numbers_and_escapes",
    ]
    longest_kind = "a" + "z0_.-" * 12 + "end"
    assert len(longest_kind) == 64
    at_most = _sign(
        SEED_C,
        seq=MAX_SAFE_INTEGER,
        prev=_blob("an earlier event"),
        kind=longest_kind,
        created=MAX_SAFE_INTEGER,
        body={},
    )
    at_least = _sign(SEED_C, seq=1, prev=None, kind="a", created=0, body={})
    # Depth counts the event object (1) and the body (2): 30 arrays reach 32.
    deep = _sign(SEED_C, seq=1, prev=None, kind="x.deep", created=T0, body={"d": _nested(30)})
    return [
        *(_valid(name, SEED_A, event) for name, event in zip(names, a, strict=True)),
        _valid("tombstone_body_less_envelope", SEED_A, a[1], with_body=False),
        _valid("post_reply_by_other_author", SEED_B, ev.b[1]),
        _valid("largest_seq_created_and_kind", SEED_C, at_most),
        _valid("smallest_created_and_kind", SEED_C, at_least),
        _valid("nesting_depth_exactly_32", SEED_C, deep),
        _valid("size_exactly_65536_bytes_text_20000_code_points", SEED_C, _biggest()),
    ]


def _invalid_vectors(ev: _Material) -> list[JSONValue]:
    key, other = SigningKey(SEED_A), SigningKey(SEED_B)
    a1, a2, profile, track, offer, course, like, follow, delete = ev.a[:9]
    w1 = a1.wire_bytes().decode()
    # The lowest bit of the signature's first byte (in R) flipped.
    flipped = a1.sig[:1] + format(int(a1.sig[1], 16) ^ 1, "x") + a1.sig[2:]
    biggest = _biggest()
    tab = _with_body(key, a1, {"text": "Hello\tfrom Talas."})  # JCS escapes the tab
    one_byte_more: dict[str, JSONValue] = {
        "text": str(_body(biggest)["text"]).replace("a", "\u00e9", 1)
    }
    cases: list[tuple[str, str, str]] = [
        *(
            (f"missing_{name}", _without(key, a1, name), f"missing event field(s): {name}")
            for name in ("v", "author", "seq", "prev", "kind", "created", "body_hash", "sig")
        ),
        ("version_2", _variant(key, a1, v=2), "unsupported event version"),
        ("version_string", _variant(key, a1, v="1"), "unsupported event version"),
        ("extra_top_level_field", _variant(key, a1, x=1), "unknown event field(s): x"),
        ("author_uppercase_hex", _variant(key, a1, author=key.id.upper()), "'author' must be 64"),
        ("author_too_short", _variant(key, a1, author=key.id[:62]), "'author' must be 64"),
        (
            "body_hash_uppercase_hex",
            _variant(key, a1, body_hash=a1.body_hash.upper()),
            "'body_hash' must be 64 lowercase hex",
        ),
        ("sig_uppercase_hex", _splice(w1, a1.sig, a1.sig.upper()), "'sig' must be 128"),
        ("sig_not_string", _splice(w1, f'"sig":"{a1.sig}"', '"sig":0'), "'sig' must be 128"),
        ("sig_too_short", _splice(w1, a1.sig, a1.sig[:126]), "'sig' must be 128"),
        ("prev_uppercase_hex", _variant(key, a2, prev=a1.id.upper()), "event seq 2 needs 'prev'"),
        ("kind_uppercase", _variant(key, a1, kind="Post"), "'kind' must match"),
        ("kind_65_characters", _variant(key, a1, kind="a" * 65), "'kind' must match"),
        ("kind_empty", _variant(key, a1, kind=""), "'kind' must match"),
        ("kind_starts_with_digit", _variant(key, a1, kind="1post"), "'kind' must match"),
        ("kind_not_string", _variant(key, a1, kind=7), "'kind' must match"),
        ("seq_0", _variant(key, a1, seq=0), "'seq' must be an integer in [1, 2^53-1]"),
        ("seq_string", _variant(key, a1, seq="1"), "'seq' must be an integer"),
        ("seq_boolean", _variant(key, a1, seq=True), "'seq' must be an integer"),
        ("created_negative", _variant(key, a1, created=-1), "'created' must be an integer in [0,"),
        ("created_fraction", _variant(key, a1, created=T0 + 0.5), "'created' must be an integer"),
        ("seq_1_with_prev", _variant(key, a1, prev=_blob("x")), "must have prev null"),
        ("seq_2_without_prev", _variant(key, a2, prev=None), "event seq 2 needs 'prev'"),
        ("body_hash_mismatch", _variant(key, a1, body={"text": "Hello!"}), "does not match"),
        ("body_array", _with_body(key, a1, []), "'body' must be a JSON object"),
        ("body_null", _with_body(key, a1, None), "'body' must be a JSON object"),
        ("signature_bit_flipped", _splice(w1, a1.sig, flipped), "signature"),
        ("signature_by_other_key", _splice(w1, key.id, other.id), "signature"),
        ("signature_without_domain", _forge(key, _unsigned(a1), domain=b""), "signature"),
        (
            "signature_over_other_envelope",
            _splice(w1, f'"created":{a1.created}', f'"created":{a1.created + 1}'),
            "signature",
        ),
        (
            "duplicate_key",
            _splice(w1, '"kind":"post",', '"kind":"post","kind":"post",'),
            "duplicate key 'kind'",
        ),
        (
            "duplicate_key_in_body",
            _splice(w1, '{"text":', '{"text":"a","text":'),
            "duplicate key 'text'",
        ),
        ("nan", _splice(w1, '{"text":', '{"n":NaN,"text":'), "NaN/Infinity not allowed"),
        ("infinity", _splice(w1, '{"text":', '{"n":-Infinity,"text":'), "NaN/Infinity"),
        ("float_overflow", _splice(w1, '{"text":', '{"n":1e400,"text":'), "overflows to Infinity"),
        (
            "integer_beyond_2_53",
            _splice(w1, f'"created":{a1.created}', f'"created":{MAX_SAFE_INTEGER + 1}'),
            "outside ±(2^53-1)",
        ),
        (
            "negative_integer_beyond_2_53",
            _splice(w1, '{"text":', '{"n":-9007199254740992,"text":'),
            "outside ±(2^53-1)",
        ),
        (
            "float_that_jcs_writes_as_unsafe_integer",
            _splice(w1, '{"text":', '{"n":1e20,"text":'),
            "outside ±(2^53-1)",
        ),
        (
            "nesting_depth_33",
            _with_body(key, a1, {**_body(a1), "d": _nested(31)}),
            "nesting deeper than 32",
        ),
        ("over_65536_bytes", _with_body(SigningKey(SEED_C), biggest, one_byte_more), "65536-byte"),
        (
            "canonical_form_over_65536_bytes",
            _with_body(key, a1, {**_body(a1), "n": [1e15] * 4000}).replace(
                "1000000000000000", "1e15"
            ),
            "in canonical form, over the 65536-byte cap",
        ),
        ("lone_high_surrogate", _splice(w1, "Hello", "Hello \\ud800"), "lone surrogate"),
        ("lone_low_surrogate_key", _splice(w1, '{"text":', '{"\\udc00":1,"text":'), "surrogate"),
        ("byte_order_mark", "\ufeff" + w1, "byte order mark"),
        ("not_an_object", "[" + w1 + "]", "an event must be a JSON object"),
        ("trailing_data", w1 + "{}", "not JSON"),
        ("raw_control_character_in_string", _splice(tab, "\\t", "\t"), "not JSON"),
        ("post_text_empty", _with_body(key, a1, {"text": ""}), "body.text must be 1..20000"),
        ("post_text_missing", _with_body(key, a1, {"tags": []}), "body.text is required"),
        ("post_text_nul", _with_body(key, a1, {"text": "a\x00b"}), "must not contain NUL"),
        (
            "post_tag_with_space",
            _with_body(key, a1, {"text": "t", "tags": ["lo fi"]}),
            "body.tags[0] must be a tag",
        ),
        (
            "post_tag_with_hash",
            _with_body(key, a1, {"text": "t", "tags": ["#lofi"]}),
            "body.tags[0] must be a tag",
        ),
        (
            "profile_name_101_characters",
            _with_body(key, profile, {"name": "a" * 101}),
            "body.name must be 1..100 characters, got 101",
        ),
        (
            "profile_name_not_string",
            _with_body(key, profile, {"name": ["Ana"]}),
            "body.name must be a string",
        ),
        (
            "offer_bad_condition",
            _with_body(key, offer, {**_body(offer), "condition": "Mint!"}),
            "body.condition must be a lowercase token",
        ),
        (
            "offer_missing_wanted",
            _with_body(key, offer, {k: v for k, v in _body(offer).items() if k != "wanted"}),
            "body.wanted is required",
        ),
        (
            "course_no_lessons",
            _with_body(key, course, {**_body(course), "lessons": []}),
            "body.lessons must have 1..200 items, got 0",
        ),
        (
            "course_lesson_without_title",
            _with_body(key, course, {**_body(course), "lessons": [{"format": "guide"}]}),
            "body.lessons[0].title is required",
        ),
        (
            "course_lesson_bad_format",
            _with_body(key, course, {**_body(course), "lessons": [{"title": "t", "format": "VR"}]}),
            "body.lessons[0].format must be a lowercase token",
        ),
        (
            "track_channels_0",
            _with_body(key, track, {**_body(track), "channels": 0}),
            "body.channels must be an integer in [1, 64]",
        ),
        (
            "track_size_fraction",
            _with_body(key, track, {**_body(track), "size": 1.5}),
            "body.size must be an integer",
        ),
        (
            "track_mime_uppercase",
            _with_body(key, track, {**_body(track), "mime": "Audio/FLAC"}),
            "body.mime must be a MIME type",
        ),
        (
            "like_target_uppercase_hex",
            _with_body(key, like, {"target": ev.b[0].id.upper()}),
            "body.target must be 64 lowercase hex",
        ),
        (
            "follow_active_not_boolean",
            _with_body(key, follow, {"author": other.id, "active": 1}),
            "body.active must be true or false",
        ),
        (
            "delete_without_target",
            _with_body(key, delete, {"reason": "oops"}),
            "body.target is required",
        ),
    ]
    return [{"name": name, "wire": wire, "error": error} for name, wire, error in cases]


def _feed_vectors(ev: _Material) -> list[JSONValue]:
    def w(event: Event) -> str:
        return event.wire_bytes().decode()

    a1, a2, a3, a4, a5 = (w(e) for e in ev.a[:5])
    b1, b2 = (w(e) for e in ev.b)
    f1, f2, f3 = w(ev.a1_fork), w(ev.a2_fork), w(ev.a3_fork)
    tomb2 = ev.a[1].wire_bytes(with_body=False).decode()
    feeds: list[tuple[str, list[str], list[str]]] = [
        ("in_order_append", [a1, a2, a3], ["append", "append", "append"]),
        (
            "duplicate",
            [a1, a1, a2, a1, a2],
            ["append", "duplicate", "append", "duplicate", "duplicate"],
        ),
        ("gap_held", [a1, a3], ["append", "hold"]),
        ("first_event_missing", [a2], ["hold"]),
        (
            "gap_filled_then_held_events_released",
            [a1, a3, a4, a2, a3, a4],
            ["append", "hold", "hold", "append", "append", "append"],
        ),
        ("fork_at_seq_1", [a1, f1], ["append", "fork"]),
        ("fork_at_known_seq", [a1, a2, a3, f2], ["append", "append", "append", "fork"]),
        ("fork_at_next_seq_prev_mismatch", [a1, a2, f3], ["append", "append", "fork"]),
        ("held_event_forks_when_released", [a1, f3, a2, f3], ["append", "hold", "append", "fork"]),
        (
            "frozen_after_fork",
            [a1, a2, f2, a3, a1, a2, f2, a5],
            ["append", "append", "fork", "frozen", "duplicate", "duplicate", "frozen", "frozen"],
        ),
        (
            "authors_are_independent",
            [a1, b1, f1, b2, a2],
            ["append", "append", "fork", "append", "frozen"],
        ),
        (
            "tombstone_is_the_same_event",
            [a1, tomb2, a3, a2],
            ["append", "append", "append", "duplicate"],
        ),
    ]
    for name, wires, expect in feeds:
        assert len(wires) == len(expect), name
    return [
        {"name": name, "events": list[JSONValue](wires), "expect": list[JSONValue](expect)}
        for name, wires, expect in feeds
    ]


def build() -> dict[str, JSONValue]:
    """Every vector, as the JSON value written to events.json."""
    events = _events()
    return {
        "description": DESCRIPTION,
        "valid": _valid_vectors(events),
        "invalid": _invalid_vectors(events),
        "feeds": _feed_vectors(events),
    }


def render() -> str:
    """events.json exactly as committed: indented, UTF-8, one final newline."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.buffer.write(render().encode())


if __name__ == "__main__":
    main()
