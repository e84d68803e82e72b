"""Chat messages are signed by their authors: a node cannot forge or alter another's words."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from node.live.chat import (
    BadChatFrame,
    ChatMessage,
    append_own,
    check_wire_message,
    history,
    save_room,
    store_remote,
)
from node.store import Store
from protocol.chat_line import SIGNED_FIELDS, sign_line, signing_bytes, verify_line
from protocol.errors import BadSignature
from protocol.keys import SigningKey

ROOM = "collective"
ORIGIN = "cd" * 32
ADA = SigningKey(bytes(range(32)))
MALLORY = SigningKey(os.urandom(32))


def signed(key: SigningKey = ADA, text: str = "in E", oseq: int = 1) -> ChatMessage:
    message = ChatMessage(ROOM, ORIGIN, oseq, f"{oseq:032x}", key.id, "Ada", 5, oseq, text)
    return replace(message, sig=sign_line(key, message.signed_fields()))


def test_a_signed_message_verifies_and_each_field_is_covered() -> None:
    message = signed()
    verify_line(message.signed_fields(), message.sig)
    assert signing_bytes(message.signed_fields()).startswith(b"talas/chat/v1\x00")
    changes = {
        "room": "other", "origin": "ef" * 32, "oseq": 2, "id": "f" * 32, "author": MALLORY.id,
        "author_name": "Eve", "sent_ms": 6, "lamport": 9, "text": "in F",
    }  # fmt: skip
    assert set(changes) == set(SIGNED_FIELDS)
    for name, value in changes.items():
        with pytest.raises(BadSignature):
            verify_line({**message.signed_fields(), name: value}, message.sig)
    for bad in ("", "00" * 64, message.sig.upper(), None, 5):
        with pytest.raises(BadSignature):
            verify_line(message.signed_fields(), bad)


def test_nobody_signs_for_another_author() -> None:
    fields = signed().signed_fields()
    with pytest.raises(ValueError, match="author it names"):
        sign_line(MALLORY, fields)


def test_a_peer_message_must_carry_its_authors_signature() -> None:
    good = signed()
    assert check_wire_message(ROOM, ORIGIN, good.wire()) == good
    forged = {**good.wire(), "text": "I quit the band"}  # altered after signing
    unsigned = {**good.wire(), "sig": ""}
    impostor = signed(MALLORY).wire() | {"author": ADA.id}  # signed by someone else
    for wire in (forged, unsigned, impostor):
        with pytest.raises(BadChatFrame, match="sig"):
            check_wire_message(ROOM, ORIGIN, wire)
    # Replayed by another node as its own: the origin is signed too.
    with pytest.raises(BadChatFrame):
        check_wire_message(ROOM, "ef" * 32, good.wire())


def test_own_messages_are_stored_signed_and_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    try:
        save_room(store, ROOM, [ORIGIN, "ab" * 32], 0)
        mine = append_own(store, ROOM, ORIGIN, ADA, "Ada", "first", 10)
        verify_line(mine.signed_fields(), mine.sig)
        theirs = signed(text="second", oseq=1)
        other = replace(theirs, origin="ab" * 32)
        other = replace(other, sig=sign_line(ADA, other.signed_fields()))
        assert store_remote(store, ROOM, "ab" * 32, [other], 11).stored == [other]
        read = history(store, ROOM, None, 10)
        assert sorted(m.text for m in read) == ["first", "second"]
        for message in read:
            verify_line(message.signed_fields(), message.sig)
    finally:
        store.close()
