"""Body schemas for the event kinds Talas renders, as pure validation rules.

Each known kind maps to a table of fields; each field has a check and says
whether it is required.  Fields a schema does not name are allowed and
ignored: a newer node may add optional fields, and an older node refusing
them would break the author's hash chain for everyone behind it.  Unknown
kinds are accepted with any object body: they are stored and relayed, never
rendered.  Size is bounded by the event size cap, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from protocol.canonical import MAX_SAFE_INTEGER, JSONValue
from protocol.errors import InvalidEvent

Check = Callable[[JSONValue, str], None]
"""A check takes a value and its dotted path (for messages) and raises on error."""

_HEX32 = re.compile(r"[0-9a-f]{64}\Z")
_TAG = re.compile(r"[^\s#]{1,64}\Z")
_MIME = re.compile(r"[a-z]+/[a-z0-9.+-]{1,100}\Z")


def _fail(path: str, message: str) -> None:
    raise InvalidEvent(f"body.{path} {message}")


def text(minimum: int, maximum: int) -> Check:
    """A string of ``minimum``..``maximum`` code points, no NUL."""

    def check(value: JSONValue, path: str) -> None:
        if not isinstance(value, str):
            _fail(path, "must be a string")
            return
        if not minimum <= len(value) <= maximum:
            _fail(path, f"must be {minimum}..{maximum} characters, got {len(value)}")
        if "\x00" in value:
            _fail(path, "must not contain NUL")

    return check


def integer(minimum: int = 0, maximum: int = MAX_SAFE_INTEGER) -> Check:
    def check(value: JSONValue, path: str) -> None:
        if type(value) is not int or not minimum <= value <= maximum:
            _fail(path, f"must be an integer in [{minimum}, {maximum}]")

    return check


def boolean(value: JSONValue, path: str) -> None:
    if not isinstance(value, bool):
        _fail(path, "must be true or false")


def hex_id(value: JSONValue, path: str) -> None:
    """An event id, author id or content hash: 64 lowercase hex characters."""
    if not isinstance(value, str) or _HEX32.match(value) is None:
        _fail(path, "must be 64 lowercase hex characters")


def pattern(regex: re.Pattern[str], what: str) -> Check:
    def check(value: JSONValue, path: str) -> None:
        if not isinstance(value, str) or regex.match(value) is None:
            _fail(path, f"must be {what}")

    return check


_TOKEN = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")


def one_of(*known: str) -> Check:
    """A lowercase token; ``known`` are the values this version renders.

    Other tokens are accepted so that a newer node can add a value (a new
    offer condition, say) without older nodes refusing the event, which would
    stall that author's feed behind a gap on every older node.
    """
    assert all(_TOKEN.match(k) for k in known)

    def check(value: JSONValue, path: str) -> None:
        if not isinstance(value, str) or _TOKEN.match(value) is None:
            _fail(path, f"must be a lowercase token such as {', '.join(known)}")

    return check


def list_of(item: Check, minimum: int, maximum: int) -> Check:
    def check(value: JSONValue, path: str) -> None:
        if not isinstance(value, list):
            _fail(path, "must be a list")
            return
        if not minimum <= len(value) <= maximum:
            _fail(path, f"must have {minimum}..{maximum} items, got {len(value)}")
        for index, element in enumerate(value):
            item(element, f"{path}[{index}]")

    return check


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = False


Schema = Mapping[str, Field]


def obj(schema: Schema) -> Check:
    """A nested object validated against ``schema``."""

    def check(value: JSONValue, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, "must be an object")
            return
        _check_fields(schema, value, f"{path}.")

    return check


def _check_fields(schema: Schema, body: dict[str, JSONValue], prefix: str) -> None:
    for name, spec in schema.items():
        if name in body:
            spec.check(body[name], prefix + name)
        elif spec.required:
            raise InvalidEvent(f"body.{prefix}{name} is required")


CONDITIONS = ("new", "like-new", "good", "fair", "for-parts", "not-applicable")
OFFER_CATEGORIES = ("gear", "preset", "sample", "service", "other")
LESSON_FORMATS = ("guide", "tutorial", "exercise", "audio", "video", "reading")
LEVELS = ("beginner", "intermediate", "advanced")

PART_SLOTS = ("capsule", "preamp", "body", "firmware")
REPAIR_ACTIONS = ("part-swapped", "firmware-updated", "repaired", "inspected", "transferred")

_title = Field(text(1, 300), required=True)
_serial = pattern(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"),
    "a serial number (1-64 letters, digits, . _ -)",
)
_part: Schema = {
    "slot": Field(one_of(*PART_SLOTS), required=True),
    "model": Field(text(1, 100), required=True),
    "serial": Field(_serial, required=True),
    "revision": Field(text(0, 50)),
}
_lesson: Schema = {
    "title": _title,
    "format": Field(one_of(*LESSON_FORMATS)),
    "text": Field(text(0, 20_000)),
    "blob": Field(hex_id),
    "minutes": Field(integer(0, 100_000)),
}

SCHEMAS: dict[str, Schema] = {
    "profile": {
        "name": Field(text(1, 100), required=True),
        "bio": Field(text(0, 5_000)),
        "avatar": Field(hex_id),
        "links": Field(list_of(text(1, 500), 0, 20)),
    },
    "post": {
        "text": Field(text(1, 20_000), required=True),
        "reply_to": Field(hex_id),
        "tracks": Field(list_of(hex_id, 0, 20)),
        "tags": Field(list_of(pattern(_TAG, "a tag without spaces or #"), 0, 20)),
    },
    "track": {
        "title": _title,
        "blob": Field(hex_id, required=True),
        "size": Field(integer(1), required=True),
        "mime": Field(pattern(_MIME, "a MIME type such as audio/wav"), required=True),
        "duration_ms": Field(integer(0), required=True),
        "sample_rate": Field(integer(1, 768_000), required=True),
        "channels": Field(integer(1, 64), required=True),
        "artist": Field(text(0, 300)),
        "description": Field(text(0, 5_000)),
        "license": Field(text(0, 200)),
    },
    "offer": {
        "title": _title,
        "category": Field(one_of(*OFFER_CATEGORIES), required=True),
        "offered": Field(text(1, 5_000), required=True),
        "wanted": Field(text(1, 5_000), required=True),
        "condition": Field(one_of(*CONDITIONS), required=True),
        "status": Field(one_of("open", "closed")),
        "location": Field(text(0, 200)),
        "blobs": Field(list_of(hex_id, 0, 20)),
        "hardware": Field(_serial),
    },
    "course": {
        "title": _title,
        "summary": Field(text(0, 5_000)),
        "level": Field(one_of(*LEVELS)),
        "lessons": Field(list_of(obj(_lesson), 1, 200), required=True),
        "prerequisites": Field(list_of(hex_id, 0, 50)),
    },
    "hardware": {
        "serial": Field(_serial, required=True),
        "model": Field(text(1, 100), required=True),
        "firmware": Field(text(1, 50)),
        "parts": Field(list_of(obj(_part), 0, 32), required=True),
        "notes": Field(text(0, 5_000)),
    },
    "repair": {
        "serial": Field(_serial, required=True),
        "action": Field(one_of(*REPAIR_ACTIONS), required=True),
        "removed": Field(obj(_part)),
        "installed": Field(obj(_part)),
        "firmware_from": Field(text(1, 50)),
        "firmware_to": Field(text(1, 50)),
        "by": Field(text(1, 100), required=True),
        "when": Field(integer(0), required=True),
        "notes": Field(text(0, 5_000)),
    },
    "dm": {
        "to": Field(hex_id, required=True),
        "nonce": Field(pattern(re.compile(r"[0-9a-f]{48}\Z"), "48 lowercase hex"), required=True),
        "box": Field(
            pattern(re.compile(r"[A-Za-z0-9+/]{1,8000}={0,2}\Z"), "base64 (at most 8000)"),
            required=True,
        ),
    },
    "like": {"target": Field(hex_id, required=True)},
    "follow": {
        "author": Field(hex_id, required=True),
        "active": Field(boolean),
    },
    "delete": {
        "target": Field(hex_id, required=True),
        "reason": Field(text(0, 500)),
    },
}

KNOWN_KINDS = frozenset(SCHEMAS)


def validate_body(kind: str, body: dict[str, JSONValue]) -> None:
    """Raise :class:`InvalidEvent` if ``body`` breaks the schema of ``kind``."""
    schema = SCHEMAS.get(kind)
    if schema is not None:
        _check_fields(schema, body, "")
