"""The published test vectors (specs/vectors/events.json) against Talas's own code.

Valid vectors are re-signed from their seed and input and must reproduce the
exact signed bytes, signature, id and wire form, then parse back to that id.
Invalid vectors must be refused by :func:`protocol.event.parse_event` with the
expected reason.  Feed vectors run through :mod:`protocol.feed` with a small
in-memory model of a store.  Finally, the committed file must equal what
specs/vectors/make_events.py builds today, so vectors cannot drift silently
from the code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from protocol.canonical import canonical_bytes
from protocol.errors import ProtocolError
from protocol.event import SIGNATURE_DOMAIN, parse_event, sign_event
from protocol.feed import FeedHead, Position, Verdict, advance, classify, freeze, position
from protocol.keys import SigningKey

VECTORS_DIR = Path(__file__).resolve().parent.parent / "specs" / "vectors"
EVENTS_JSON = VECTORS_DIR / "events.json"
MAKE_EVENTS = VECTORS_DIR / "make_events.py"

VECTORS: dict[str, Any] = json.loads(EVENTS_JSON.read_text(encoding="utf-8"))


def _cases(section: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in VECTORS[section]]


def test_vector_names_are_unique() -> None:
    for section in ("valid", "invalid", "feeds"):
        names = [case["name"] for case in VECTORS[section]]
        assert len(names) == len(set(names)), section


def test_enough_invalid_vectors() -> None:
    assert len(VECTORS["invalid"]) >= 20


@pytest.mark.parametrize("case", _cases("valid"))
def test_valid_vector_is_reproduced_and_accepted(case: dict[str, Any]) -> None:
    key = SigningKey(bytes.fromhex(case["seed"]))
    assert key.id == case["public_key"]
    given = case["input"]
    event = sign_event(
        key,
        seq=given["seq"],
        prev=given["prev"],
        kind=given["kind"],
        created=given["created"],
        body=given["body"],
    )
    with_body: bool = case["with_body"]
    assert event.signing_bytes().hex() == case["signing_bytes"]
    assert event.sig == case["sig"]
    assert event.id == case["id"]
    assert event.wire_bytes(with_body=with_body).decode() == case["wire"]

    parsed = parse_event(case["wire"].encode())
    assert parsed.id == case["id"]
    assert parsed.author == case["public_key"]
    assert (parsed.body is not None) is with_body
    # Parsing then re-encoding gives the canonical wire form back, unchanged.
    assert parsed.wire_bytes().decode() == case["wire"]


@pytest.mark.parametrize("case", _cases("valid"))
def test_valid_vector_matches_its_definition(case: dict[str, Any]) -> None:
    """signing_bytes and id follow the spec's formulas, checked independently."""
    wire = json.loads(case["wire"])
    envelope = {k: v for k, v in wire.items() if k not in ("body", "sig")}
    expected_signing = SIGNATURE_DOMAIN + canonical_bytes(envelope)
    assert bytes.fromhex(case["signing_bytes"]) == expected_signing
    signed = canonical_bytes({**envelope, "sig": wire["sig"]})
    assert hashlib.sha256(signed).hexdigest() == case["id"]
    body_hash = hashlib.sha256(canonical_bytes(case["input"]["body"])).hexdigest()
    assert wire["body_hash"] == body_hash
    if case["with_body"]:
        assert canonical_bytes(wire).decode() == case["wire"]
    else:
        # The body-less wire form is exactly what the id hashes.
        assert case["wire"].encode() == signed


@pytest.mark.parametrize("case", _cases("invalid"))
def test_invalid_vector_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_event(case["wire"].encode())
    assert case["error"] in str(caught.value)


class FeedModel:
    """The least a store must remember to apply the feed rules: ids by position, heads."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, int], str] = {}
        self.heads: dict[str, FeedHead] = {}

    def offer(self, wire: str) -> Verdict:
        event = parse_event(wire.encode())
        head = self.heads.get(event.author)
        held = None
        if position(head, event.seq) is Position.KNOWN:
            held = self.ids.get((event.author, event.seq))
        verdict = classify(head, event, held)
        if verdict is Verdict.APPEND:
            self.ids[(event.author, event.seq)] = event.id
            self.heads[event.author] = advance(head, event)
        elif verdict is Verdict.FORK:
            assert head is not None
            self.heads[event.author] = freeze(head)
        return verdict


@pytest.mark.parametrize("case", _cases("feeds"))
def test_feed_vector_verdicts(case: dict[str, Any]) -> None:
    assert len(case["events"]) == len(case["expect"])
    model = FeedModel()
    verdicts = [model.offer(wire).value for wire in case["events"]]
    assert verdicts == case["expect"]


def test_committed_vectors_match_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "talas_make_events"
    spec = importlib.util.spec_from_file_location(name, MAKE_EVENTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as an import would (dataclasses look it up there).
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    render = cast(Callable[[], str], module.render)
    assert EVENTS_JSON.read_text(encoding="utf-8") == render(), (
        "specs/vectors/events.json is stale: run "
        ".venv/bin/python specs/vectors/make_events.py > specs/vectors/events.json"
    )
