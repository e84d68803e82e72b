"""Strict JSON parsing and RFC 8785 (JCS) canonical bytes for signed data.

Signatures and ids are computed over canonical bytes, so every node must agree
on exactly which inputs are JSON and what their canonical form is.  Python's
``json`` module is too lenient for that (duplicate keys, lone surrogates,
NaN, ``1e400`` becoming infinity, RecursionError on deep nesting), so
:func:`parse_strict` wraps its C decoder with hooks and cheap pre-checks, and
every refusal is an :class:`InvalidJSON` saying what was wrong.

Both functions sit on the hot ingest path, hence the fast paths below; each is
backed by a slow path that is only taken when a cheap test says it might be
needed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeAlias

import rfc8785

from protocol.errors import InvalidJSON

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

MAX_EVENT_BYTES: int = 65536
MAX_DEPTH: int = 32
MAX_SAFE_INTEGER: int = 2**53 - 1

# Byte classes for the pre-checks: "[" and "{" -> "[", digits -> "0", else " ".
_MARKS = bytes(0x5B if b in b"[{" else 0x30 if b in b"0123456789" else 0x20 for b in range(256))
_SIXTEEN_DIGITS = b"0" * 16
# Longest in-range integer literal: "-9007199254740991" (17 characters).
_MAX_INT_LITERAL = len(str(-MAX_SAFE_INTEGER))
_TWO_53 = float(2**53)
# A JSON string, or an unterminated one running to the end of the input.  The
# unrolled-loop form matches in linear time and never restarts inside a
# string, so hostile runs of quotes and backslashes cannot make it quadratic.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")
# Pre-filter: lone surrogates can only come from \uD800-\uDFFF escapes (the
# strict UTF-8 decode refuses encoded surrogates).  False positives are fine.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")


def _clip(text: str, limit: int = 40) -> str:
    """Shorten untrusted text for an error message: messages stay small."""
    return text if len(text) <= limit else text[:limit] + "…"


def _show(text: str) -> str:
    return repr(_clip(text))


def _object(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJSON(f"duplicate key {_show(key)}")
            seen.add(key)
    return obj


def _int(literal: str) -> int:
    # The length test comes first: int() of a huge literal is slow and raises
    # ValueError past sys.get_int_max_str_digits().
    if len(literal) <= _MAX_INT_LITERAL:
        value = int(literal)
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
    raise InvalidJSON(f"integer {_clip(literal)} outside ±(2^53-1)")


def _float_error(value: float, shown: str) -> InvalidJSON | None:
    """Why a float has no acceptable JCS form, or None if it has one.

    JCS writes any double in [2^53, 1e21) without an exponent (1e20 becomes
    100000000000000000000), i.e. as an integer literal outside the safe range
    that parse_strict refuses.  Refusing those floats on both sides keeps the
    invariant that whatever one node canonicalises, every node can parse.
    """
    if -_TWO_53 < value < _TWO_53:
        return None
    if not math.isfinite(value):
        return InvalidJSON(f"NaN/Infinity not allowed ({shown})")
    if abs(value) < 1e21:
        return InvalidJSON(f"number {shown} outside ±(2^53-1): JCS writes it as an integer")
    return None


def _float(literal: str) -> float | int:
    """A JSON number with a fraction or exponent.

    Integral values in the safe range come back as int: JSON has one number
    type, so ``1.0``, ``1e0`` and ``1`` are the same value with the same
    canonical form ("1"), and must pass the same integer checks.
    """
    value = float(literal)
    error = _float_error(value, _clip(literal))
    if error is None:
        return int(value) if value.is_integer() and abs(value) < _TWO_53 else value
    if math.isinf(value):
        error = InvalidJSON(f"number {_clip(literal)} overflows to Infinity")
    raise error


def _constant(name: str) -> float:
    raise InvalidJSON(f"NaN/Infinity not allowed ({name})")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_int=_int, parse_float=_float, parse_constant=_constant
)
_DECODER_SHORT_INTS = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=_float, parse_constant=_constant
)


def _check_depth(data: bytes, max_depth: int) -> None:
    """Exact nesting bound, ignoring brackets inside strings.

    Only brackets outside strings are left after the two C-level passes.  Up to
    the first byte the decoder would reject, both lex strings identically, so
    the depth counted here is the depth the decoder would reach.
    """
    depth = 0
    for byte in _STRING.sub(b"", data).translate(None, _NOT_BRACKET):
        if byte in _OPEN:
            depth += 1
            if depth > max_depth:
                raise InvalidJSON(f"nesting deeper than {max_depth}")
        else:
            depth -= 1


def _find_surrogate(value: JSONValue) -> str | None:
    if isinstance(value, str):
        match = _SURROGATE.search(value)
        return None if match is None else match.group()
    items: list[JSONValue] = []
    if isinstance(value, dict):
        items.extend(value)
        items.extend(value.values())
    elif isinstance(value, list):
        items = value
    for item in items:
        found = _find_surrogate(item)
        if found is not None:
            return found
    return None


def parse_strict(
    data: bytes, *, max_bytes: int = MAX_EVENT_BYTES, max_depth: int = MAX_DEPTH
) -> JSONValue:
    """Parse untrusted bytes as strict I-JSON (RFC 7493) within our bounds.

    Raises :class:`InvalidJSON`, and nothing else, for any input refused.
    """
    size = len(data)
    if size > max_bytes:
        raise InvalidJSON(f"input is {size} bytes, over the {max_bytes}-byte cap")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from exc
    # One C-level pass classifies every byte for the two pre-checks below.
    marks = data.translate(_MARKS)
    # An integer literal outside the safe range has at least 16 digits; with
    # no run that long anywhere, the per-integer hook can be skipped.
    decoder = _DECODER if _SIXTEEN_DIGITS in marks else _DECODER_SHORT_INTS
    try:
        # Nesting cannot exceed the number of opening brackets anywhere, so
        # the precise scan only runs for inputs with many brackets.
        if marks.count(b"[") > max_depth:
            _check_depth(data, max_depth)
        value: JSONValue = decoder.decode(text)
        if _SURROGATE_ESCAPE.search(data) is not None:
            # Paired escapes were already combined into one code point, so any
            # surrogate left in the result is a lone one.
            found = _find_surrogate(value)
            if found is not None:
                raise InvalidJSON(f"lone surrogate in string (U+{ord(found):04X})")
    except json.JSONDecodeError as exc:
        if text.startswith("\ufeff"):  # the decoder refuses a BOM; say why
            raise InvalidJSON("invalid UTF-8: byte order mark not allowed") from exc
        raise InvalidJSON(f"not JSON: {exc.msg}: line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:  # backstop: max_depth above the interpreter's limit
        raise InvalidJSON("nesting too deep for this interpreter") from exc
    except ValueError as exc:  # backstop: nothing known reaches here
        raise InvalidJSON(f"not JSON: {exc}") from exc
    return value


# Theory of operation for canonical_bytes
# ---------------------------------------
# RFC 8785 output differs from json.dumps(sort_keys=True, ensure_ascii=False,
# separators=(",", ":")) in exactly two places:
#
# * numbers: JCS writes floats the ECMAScript way (56.0 -> 56, 1e30 -> 1e+30)
#   whereas Python writes repr(); integers are the same decimal digits in both.
# * key order: JCS sorts by UTF-16 code units, Python by code points.  At the
#   first position where two keys differ, if both characters are in the BMP
#   each is a single code unit equal to its code point, and earlier positions
#   are identical in both encodings, so the orders agree.  Only a key holding
#   a non-BMP character (a surrogate pair in UTF-16) can sort differently.
#
# String escaping is identical: both escape '"', '\\' and U+0000-U+001F only
# (\b \f \n \r \t, else lowercase \u00xx) and write everything else, including
# U+007F and U+2028, as UTF-8; tests check every code point against rfc8785.
# Lone surrogates fail the final UTF-8 encode on either path.
#
# So _scan validates the value in one walk and reports whether it holds a
# float, a non-BMP key or a subclass of a JSON type (an IntEnum, say: rather
# than reason about how the C encoder prints those, let rfc8785 convert them
# with int()/float()/dict()/list()); only then do we fall back to rfc8785.
# Everything rfc8785 would refuse or accept wrongly (tuples, non-str keys,
# unsafe ints, NaN, floats in [2^53, 1e21)) is refused by _scan first, so the
# fallback can only fail on a lone surrogate.

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
)


_JSON_BASES: tuple[type[Any], ...] = (dict, list, str, int, float)


def _bad_int(value: int) -> InvalidJSON:
    # str() of a huge int is slow and can raise; its size says enough.
    shown = _clip(str(value)) if value.bit_length() < 256 else f"of {value.bit_length()} bits"
    return InvalidJSON(f"integer {shown} outside ±(2^53-1)")


def _scan(value: Any) -> bool:
    """Validate ``value`` as JSON; True if the json-module fast path is exact."""
    kind = type(value)
    fast = True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise InvalidJSON(f"object key {key!r} is not a string")
                fast = False
            elif not key.isascii() and _NON_BMP.search(key) is not None:
                fast = False
            inner = type(item)
            if inner is str or (inner is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER):
                continue
            if not _scan(item):
                fast = False
        return fast
    if kind is list:
        for item in value:
            inner = type(item)
            if inner is str or (inner is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER):
                continue
            if not _scan(item):
                fast = False
        return fast
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return True
        raise _bad_int(value)
    if kind is float:
        error = _float_error(value, repr(value))
        if error is None:
            return False
        raise error
    # Subclasses of JSON types are checked as the base value rfc8785 converts
    # them to, and always take the rfc8785 path.
    for base in _JSON_BASES:
        if isinstance(value, base):
            _scan(base(value))
            return False
    raise InvalidJSON(f"{kind.__name__} is not a JSON type")


def _surrogate_error(exc: UnicodeEncodeError) -> InvalidJSON:
    char = exc.object[exc.start : exc.start + 1]
    return InvalidJSON(f"lone surrogate in string (U+{ord(char):04X})")


def canonical_bytes(value: JSONValue) -> bytes:
    """RFC 8785 (JCS) bytes of ``value``: the exact bytes signatures and ids cover.

    Raises :class:`InvalidJSON`, and nothing else, if ``value`` has no JSON form.
    """
    try:
        if _scan(value):
            return _ENCODER.encode(value).encode("utf-8")
        return bytes(rfc8785.dumps(value))
    except UnicodeEncodeError as exc:
        raise _surrogate_error(exc) from exc
    except rfc8785.CanonicalizationError as exc:
        if isinstance(exc.__cause__, UnicodeEncodeError):
            raise _surrogate_error(exc.__cause__) from exc
        raise InvalidJSON(f"cannot canonicalise: {exc}") from exc
    except RecursionError as exc:
        raise InvalidJSON("value nested too deeply (or cyclic) to canonicalise") from exc
    except (ValueError, TypeError) as exc:  # backstop: nothing known reaches here
        raise InvalidJSON(f"cannot canonicalise: {exc}") from exc
