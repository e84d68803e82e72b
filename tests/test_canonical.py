"""Tests for protocol.canonical: strict parsing and RFC 8785 canonical bytes.

rfc8785 (PyPI) is the independent reference for canonical output; the
cyberphone vectors in ../shared/vectors/rfc8785 check both against the RFC's
own examples.
"""

from __future__ import annotations

import enum
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.canonical import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_SAFE_INTEGER,
    JSONValue,
    canonical_bytes,
    parse_strict,
)
from protocol.errors import InvalidJSON, ProtocolError

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "rfc8785"
VECTOR_NAMES = sorted(path.name[3:-5] for path in VECTORS.glob("in_*.json"))

EVENT: dict[str, JSONValue] = {
    "v": 1,
    "author": "3f" * 32,
    "seq": 1234,
    "prev": "a1" * 32,
    "kind": "post.track",
    "created": 1717171717171,
    "body_hash": "b2" * 32,
    "sig": "c3" * 64,
    "body": {
        "title": "Nocturne for a rainy Tuesday — live at Café Étoile 🎹",
        "text": "Recorded in one take.\nThanks to everyone who came out!",
        "tags": ["jazz", "live", "piano", "trio"],
        "media": {"mime": "audio/ogg", "size": 4811234, "duration_ms": 312000, "ok": True},
        "license": None,
    },
}

FUZZ = settings(max_examples=300, deadline=None, database=None)


# --- RFC 8785 vectors -------------------------------------------------------


def test_vector_folder_is_present() -> None:
    assert VECTORS.is_dir(), f"missing RFC 8785 vectors at {VECTORS}"
    assert len(VECTOR_NAMES) >= 6, f"expected the six cyberphone vectors, found {VECTOR_NAMES}"


@pytest.mark.parametrize("name", VECTOR_NAMES or ["<vectors missing>"])
def test_rfc8785_vector(name: str) -> None:
    source = (VECTORS / f"in_{name}.json").read_bytes()
    expected = (VECTORS / f"out_{name}.json").read_bytes()
    assert canonical_bytes(parse_strict(source)) == expected
    assert canonical_bytes(parse_strict(expected)) == expected


# --- parse_strict: what it accepts -------------------------------------------


def test_parses_typical_event() -> None:
    data = json.dumps(EVENT, ensure_ascii=False, indent=2).encode()
    assert parse_strict(data) == EVENT


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b" 1 ", 1),
        (b'"x"', "x"),
        (b"null", None),
        (b"[true,false]", [True, False]),
        (b"{}", {}),
        (b"4.50", 4.5),
        (b"1e30", 1e30),
        (b"1e-400", 0.0),
        (b"-0", 0),
        (b"9007199254740991", MAX_SAFE_INTEGER),
        (b"-9007199254740991", -MAX_SAFE_INTEGER),
        (b"9007199254740991.0", float(MAX_SAFE_INTEGER)),
        (b'"\\ud83d\\ude02"', "\U0001f602"),  # a paired surrogate escape is one character
        (b'"\\\\ud800"', "\\ud800"),  # an escaped backslash, not a surrogate escape
        (b'"\\u2028\\u007f"', "\u2028\x7f"),
    ],
)
def test_accepts(data: bytes, expected: JSONValue) -> None:
    assert parse_strict(data) == expected


def test_size_cap_is_inclusive() -> None:
    data = b'"' + b"a" * (MAX_EVENT_BYTES - 2) + b'"'
    assert len(data) == MAX_EVENT_BYTES
    assert parse_strict(data) == "a" * (MAX_EVENT_BYTES - 2)


def test_depth_limit_is_inclusive() -> None:
    assert parse_strict(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    nested = b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH
    assert parse_strict(nested) is not None


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[{" * 500 + '\\"[' + "]}" * 10
    data = json.dumps([[text, {"k[": text}]]).encode()
    assert parse_strict(data) == [[text, {"k[": text}]]


# --- parse_strict: what it refuses -------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b'"\xff"', "invalid UTF-8 at byte 1"),
        (b'"\xc0\xaf"', "invalid UTF-8"),  # overlong "/"
        (b'"\xed\xa0\x80"', "invalid UTF-8"),  # UTF-8-encoded surrogate
        (b'"\xe2\x82"', "invalid UTF-8"),  # truncated sequence
        (b'{"seq":1,"seq":2}', "duplicate key 'seq'"),
        (b'{"a":{"b":1,"c":2,"b":1}}', "duplicate key 'b'"),
        (b'{"a":1,"\\u0061":2}', "duplicate key 'a'"),
        (b"NaN", "NaN/Infinity not allowed"),
        (b"[Infinity]", "NaN/Infinity not allowed"),
        (b'{"x":-Infinity}', "NaN/Infinity not allowed"),
        (b"1e400", "number 1e400 overflows to Infinity"),
        (b"[-1e400]", "overflows to Infinity"),
        (b"1e20", "number 1e20 outside ±(2^53-1)"),
        (b"-9007199254740992.0", "outside ±(2^53-1)"),
        (b"9007199254740992", "integer 9007199254740992 outside ±(2^53-1)"),
        (b"[9007199254740993]", "integer 9007199254740993 outside ±(2^53-1)"),
        (b"-9007199254740992", "integer -9007199254740992 outside ±(2^53-1)"),
        (b"1" * 5000, "outside ±(2^53-1)"),  # past int()'s digit limit: still InvalidJSON
        (b'"\\ud800"', "lone surrogate in string (U+D800)"),
        (b'"\\uDC00x"', "lone surrogate in string (U+DC00)"),
        (b'["ok","\\ude02\\ud83d"]', "lone surrogate"),  # pair in the wrong order
        (b'"\\ud83d\\ud83d"', "lone surrogate"),
        (b'{"\\ud800":1}', "lone surrogate"),  # in a key
        (b"[" * 33 + b"]" * 33, "nesting deeper than 32"),
        (b'{"a":' * 33 + b"1" + b"}" * 33, "nesting deeper than 32"),
        (b"{} x", "not JSON: Extra data: line 1 column 4"),
        (b"{}{}", "not JSON: Extra data"),
        (b"[1 2]", "not JSON: Expecting ',' delimiter: line 1 column 4"),
        (b'{"a" 1}', "not JSON: Expecting ':' delimiter"),
        (b"", "not JSON: Expecting value"),
        (b"[1,]", "not JSON"),
        (b"'a'", "not JSON"),
        (b'"a\nb"', "not JSON: Invalid control character"),
        (b'"\\x"', "not JSON: Invalid \\escape"),
        (b'["' + b"[" * 100, "not JSON: Unterminated string"),
        (b"[01]", "not JSON"),
    ],
)
def test_rejects(data: bytes, message: str) -> None:
    with pytest.raises(InvalidJSON) as info:
        parse_strict(data)
    assert message in str(info.value)


def test_rejects_oversize_before_looking_at_content() -> None:
    data = b"\xff" * 70000  # not UTF-8 either: the size must be what is reported
    with pytest.raises(InvalidJSON, match="input is 70000 bytes, over the 65536-byte cap"):
        parse_strict(data)
    with pytest.raises(InvalidJSON, match="input is 11 bytes, over the 10-byte cap"):
        parse_strict(b'"123456789"', max_bytes=10)


def test_custom_depth_bound() -> None:
    assert parse_strict(b"[[[]]]", max_depth=3) == [[[]]]
    with pytest.raises(InvalidJSON, match="nesting deeper than 2"):
        parse_strict(b"[[[]]]", max_depth=2)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100000 + b"]" * 100000,
        b'{"a":' * 50000 + b"1" + b"}" * 50000,
        b"[{" * 50000,
        b'{"a":[' * 30000,
        b"[]" * 50000 + b"[" * 100,
        b'["' + b'\\"' * 40000 + b"[" * 100,  # hostile to naive string skipping
        b'"' * 20000 + b"[" * 100,
    ],
)
def test_deep_or_hostile_nesting_fails_fast(data: bytes) -> None:
    start = time.perf_counter()
    for max_depth in (MAX_DEPTH, 10**6):
        with pytest.raises(InvalidJSON):
            parse_strict(data)  # over the default size cap
        with pytest.raises(InvalidJSON):
            parse_strict(data, max_bytes=10**6, max_depth=max_depth)
    assert time.perf_counter() - start < 2.0


def test_deep_nesting_reports_depth() -> None:
    with pytest.raises(InvalidJSON, match="nesting deeper than 32"):
        parse_strict(b"[" * 100000 + b"]" * 100000, max_bytes=10**6)


def test_invalid_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse_strict(b"{")


# --- canonical_bytes ---------------------------------------------------------


def test_canonical_event_matches_reference_and_takes_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = rfc8785.dumps(EVENT)

    def refuse(value: object) -> bytes:
        raise AssertionError("fast path expected")

    monkeypatch.setattr(rfc8785, "dumps", refuse)
    assert canonical_bytes(EVENT) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, b"true"),
        ([True, False, 1, 0], b"[true,false,1,0]"),
        ({"b": True, "a": 1}, b'{"a":1,"b":true}'),
        (56.0, b"56"),
        (-0.0, b"0"),
        (1e30, b"1e+30"),
        (1e21, b"1e+21"),
        (1e-7, b"1e-7"),
        (0.000001, b"0.000001"),
        (5e-324, b"5e-324"),
        (float(MAX_SAFE_INTEGER), b"9007199254740991"),
        ("\u2028\x7f\x1f\b", b'"\xe2\x80\xa8\x7f\\u001f\\b"'),
        # UTF-16 order puts U+1F602 (D83D DE02) before U+FB33; code-point order would not.
        ({"\ufb33": 1, "\U0001f602": 2}, '{"\U0001f602":2,"\ufb33":1}'.encode()),
        (
            {"\ufb33": 1, "a\U0001f602": 2, "a\uffff": 3},
            '{"a\U0001f602":2,"a\uffff":3,"\ufb33":1}'.encode(),
        ),
    ],
)
def test_canonical_examples(value: JSONValue, expected: bytes) -> None:
    assert canonical_bytes(value) == expected
    assert rfc8785.dumps(value) == expected


class Level(enum.IntEnum):
    LOUD = 11


class Mode(enum.StrEnum):
    MINOR = "minor"


class Ordered(dict[str, JSONValue]):
    pass


def test_subclasses_of_json_types_canonicalise_like_rfc8785() -> None:
    value: JSONValue = Ordered(z=[Level.LOUD, Mode.MINOR], a=Ordered(b=1))
    assert canonical_bytes(value) == rfc8785.dumps(value) == b'{"a":{"b":1},"z":[11,"minor"]}'


def test_every_code_point_escapes_like_rfc8785() -> None:
    # Escaping is per character, so chunks of consecutive code points suffice.
    points = [cp for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF]
    for start in range(0, len(points), 4096):
        text = "".join(map(chr, points[start : start + 4096]))
        assert canonical_bytes(text) == rfc8785.dumps(text)
        assert canonical_bytes({text: text}) == rfc8785.dumps({text: text})
    bmp_keys: dict[str, JSONValue] = {chr(cp): cp for cp in points if cp <= 0xFFFF}
    assert canonical_bytes(bmp_keys) == rfc8785.dumps(bmp_keys)


def _cyclic() -> list[JSONValue]:
    value: list[JSONValue] = []
    value.append(value)
    return value


def _deep(levels: int) -> JSONValue:
    value: JSONValue = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "NaN/Infinity not allowed"),
        ([float("inf")], "NaN/Infinity not allowed"),
        ({"a": -float("inf")}, "NaN/Infinity not allowed"),
        (1e20, "outside ±(2^53-1)"),
        ([-(2.0**53)], "outside ±(2^53-1)"),
        ("\ud800", "lone surrogate in string (U+D800)"),
        ({"a": ["x\udfff"]}, "lone surrogate in string (U+DFFF)"),
        ({"\udbff": 1}, "lone surrogate"),
        ({"\udbff": 1, "\U0001f602": 2}, "lone surrogate"),  # on the rfc8785 path
        ({"a": ["\udbff", 1.5]}, "lone surrogate"),  # on the rfc8785 path
        (2**53, "integer 9007199254740992 outside ±(2^53-1)"),
        ({"a": [-(2**53)]}, "integer -9007199254740992 outside ±(2^53-1)"),
        ([10**10000], "outside ±(2^53-1)"),
        ({1: "a"}, "object key 1 is not a string"),
        ({None: 1}, "is not a string"),
        ({True: 1}, "is not a string"),
        ({("a",): 1}, "is not a string"),
        ((1, 2), "tuple is not a JSON type"),
        ({"a": (1,)}, "tuple is not a JSON type"),
        ([b"bytes"], "bytes is not a JSON type"),
        ({"a": {1, 2}}, "set is not a JSON type"),
        ([Decimal("1.5")], "Decimal is not a JSON type"),
        ([1.5, object()], "object is not a JSON type"),
        (_cyclic(), "nested too deeply"),
        (_deep(100000), "nested too deeply"),
    ],
)
def test_canonical_rejects(value: object, message: str) -> None:
    with pytest.raises(InvalidJSON) as info:
        canonical_bytes(value)  # type: ignore[arg-type]
    assert message in str(info.value)


# --- properties ---------------------------------------------------------------

_SPECIAL = '\x00\x01\x08\x09\x0a\x0c\x0d\x1f\x20"\\/\x7f\x80\u2028\u2029\ufeff\uffff'
_TEXT = st.text(
    st.sampled_from(_SPECIAL)
    | st.characters(codec="utf-8")
    | st.characters(min_codepoint=0xE000, max_codepoint=0x10FFFF, codec="utf-8"),
    max_size=12,
)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: not 2.0**53 <= abs(f) < 1e21
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.sampled_from([0, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
    | _FLOATS
    | _TEXT
)
# Keys that collide early, mixing non-BMP characters (surrogate pairs in UTF-16)
# with U+E000..U+FFFF: the one place UTF-16 and code-point order disagree.
_KEYS = _TEXT | st.text(st.sampled_from("a\ue000\ufb33\uffff\U00010000\U0001f602"), max_size=3)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(JSON_VALUES)
def test_canonical_bytes_matches_rfc8785(value: JSONValue) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


@FUZZ
@given(JSON_VALUES)
def test_canonical_bytes_round_trip_is_idempotent(value: JSONValue) -> None:
    encoded = canonical_bytes(value)
    assert canonical_bytes(parse_strict(encoded, max_bytes=10**6, max_depth=100)) == encoded


@FUZZ
@given(st.floats(min_value=2.0**53, max_value=1e21, exclude_max=True), st.booleans())
def test_floats_jcs_writes_as_unsafe_integers_are_refused(value: float, negate: bool) -> None:
    value = -value if negate else value
    with pytest.raises(InvalidJSON, match="outside"):
        canonical_bytes(value)
    with pytest.raises(InvalidJSON, match="outside"):
        parse_strict(rfc8785.dumps(value))  # what a lenient encoder would have sent


def _check_parse(data: bytes) -> None:
    """parse_strict only ever raises InvalidJSON, and what it accepts canonicalises."""
    try:
        value = parse_strict(data)
    except InvalidJSON:
        return
    encoded = canonical_bytes(value)
    assert canonical_bytes(parse_strict(encoded, max_bytes=10**6)) == encoded


_JSONISH = st.text(st.sampled_from(list('[]{}",:0123456789.eE-+ \\/utrfalsnNIy\ud800é')))


@FUZZ
@given(st.binary(max_size=200) | _JSONISH.map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_fuzz_parse_raises_only_invalid_json(data: bytes) -> None:
    _check_parse(data)


@FUZZ
@given(JSON_VALUES, st.data())
def test_fuzz_mutated_canonical_bytes(value: JSONValue, data: st.DataObject) -> None:
    encoded = bytearray(canonical_bytes(value))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(encoded)))
        if data.draw(st.booleans()) and at < len(encoded):
            del encoded[at]
        else:
            encoded[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    _check_parse(bytes(encoded))


@settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.integers(0, 200), st.sampled_from([b"[", b"{", b'{"a":', b'["', b"[{"]))
def test_fuzz_nesting_never_escapes(depth: int, opener: bytes) -> None:
    _check_parse(opener * depth + b"1" + b"]" * depth)
