"""Replication messages and their chunk framing (protocol.messages), bytes only."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import MAX_EVENT_BYTES
from protocol.handshake import Session
from protocol.messages import (
    CHUNK_PLAINTEXT,
    MAX_EVENTS_PER_BATCH,
    MAX_INTEREST_AUTHORS,
    MAX_MESSAGE,
    MAX_VECTOR_AUTHORS,
    Events,
    FramingError,
    Goodbye,
    InSync,
    Interest,
    Message,
    NeedVector,
    Ping,
    Pong,
    Reassembler,
    Vector,
    Want,
    chunks,
    decode,
    encode,
)

U32 = struct.Struct(">I")
MORE, LAST = 0x01, 0x00
CONTROL, EVENTS = 0x01, 0x02


def hex32(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def control(body: object) -> bytes:
    return bytes([CONTROL]) + json.dumps(body).encode()


def batch(events: list[bytes], *, count: int | None = None) -> bytes:
    parts = [bytes([EVENTS]), U32.pack(len(events) if count is None else count)]
    for raw in events:
        parts += [U32.pack(len(raw)), raw]
    return b"".join(parts)


def reassemble(pieces: list[bytes]) -> list[bytes]:
    reassembler = Reassembler()
    out = [reassembler.feed(piece) for piece in pieces]
    assert all(m is None for m in out[:-1])
    return [m for m in out if m is not None]


EXAMPLES: list[Message] = [
    Want(hex32("scope"), hex32("heads")),
    NeedVector(),
    Vector({hex32("a"): 0, hex32("b"): 12, hex32("c"): 2**53 - 1}),
    Vector({}),
    InSync(),
    Events([b'{"an":"event"}', b"", bytes(range(256)), bytes(MAX_EVENT_BYTES)]),
    Events([]),
    Ping(0),
    Ping(2**53 - 1),
    Pong(42),
    Goodbye("bye"),
    Goodbye(""),
    Goodbye('déjà vu ♪ \u0000 "quoted"'),
]


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    encoded = encode(message)
    assert decode(encoded) == message
    assert reassemble(list(chunks(encoded))) == [encoded]


def test_type_bytes_and_control_members() -> None:
    assert encode(Events([b"x"])) == b"\x02\x00\x00\x00\x01\x00\x00\x00\x01x"
    assert encode(Events([])) == b"\x02\x00\x00\x00\x00"
    assert encode(NeedVector()) == b'\x01{"t":"need_vector"}'
    assert encode(InSync()) == b'\x01{"t":"in_sync"}'
    assert encode(Ping(7)) == b'\x01{"t":"ping","n":7}'
    assert encode(Pong(7)) == b'\x01{"t":"pong","n":7}'
    assert encode(Goodbye("x")) == b'\x01{"t":"bye","reason":"x"}'
    want = Want(hex32("s"), hex32("h"))
    body = {"t": "want", "scope": want.scope_hash, "heads": want.vector_hash}
    assert json.loads(encode(want)[1:]) == body
    assert json.loads(encode(Vector({hex32("a"): 3}))[1:]) == {
        "t": "vector",
        "heads": {hex32("a"): 3},
    }


def test_goodbye_reason_is_cut_to_200_code_points() -> None:
    assert decode(encode(Goodbye("é" * 500))) == Goodbye("é" * 200)
    assert decode(control({"t": "bye", "reason": "x" * 300})) == Goodbye("x" * 200)
    assert decode(control({"t": "bye"})) == Goodbye("")
    assert decode(control({"t": "bye", "reason": 5})) == Goodbye("")


def test_unknown_control_members_are_ignored() -> None:
    assert decode(control({"t": "ping", "n": 1, "extra": [1, 2]})) == Ping(1)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.binary(min_size=32, max_size=32).map(bytes.hex),
        st.integers(min_value=0, max_value=2**53 - 1),
        max_size=50,
    ),
    st.lists(st.binary(max_size=300), max_size=20),
    st.integers(min_value=0, max_value=2**53 - 1),
    st.text(max_size=300),
)
def test_round_trip_fuzz(heads: dict[str, int], events: list[bytes], nonce: int, text: str) -> None:
    for message in (Vector(heads), Events(events), Ping(nonce), Pong(nonce)):
        assert decode(encode(message)) == message
    assert decode(encode(Goodbye(text))) == Goodbye(text[:200])


# -- chunking -------------------------------------------------------------------------


def test_chunk_fits_one_noise_message() -> None:
    assert CHUNK_PLAINTEXT + 1 == Session.MAX_PLAINTEXT == 65535 - 16


@pytest.mark.parametrize(
    ("size", "pieces"),
    [
        (1, 1),
        (CHUNK_PLAINTEXT - 1, 1),
        (CHUNK_PLAINTEXT, 1),
        (CHUNK_PLAINTEXT + 1, 2),
        (2 * CHUNK_PLAINTEXT, 2),
        (2 * CHUNK_PLAINTEXT + 1, 3),
        (MAX_MESSAGE - 1, -(-(MAX_MESSAGE - 1) // CHUNK_PLAINTEXT)),
        (MAX_MESSAGE, -(-MAX_MESSAGE // CHUNK_PLAINTEXT)),
    ],
)
def test_chunking_and_reassembly(size: int, pieces: int) -> None:
    message = bytes(i % 251 for i in range(size))
    cut = list(chunks(message))
    assert len(cut) == pieces
    assert [c[0] for c in cut] == [MORE] * (pieces - 1) + [LAST]
    assert all(len(c) == CHUNK_PLAINTEXT + 1 for c in cut[:-1])
    assert 2 <= len(cut[-1]) <= CHUNK_PLAINTEXT + 1
    assert b"".join(c[1:] for c in cut) == message
    assert reassemble(cut) == [message]


def test_empty_message_is_one_empty_last_chunk() -> None:
    assert list(chunks(b"")) == [bytes([LAST])]
    assert reassemble([bytes([LAST])]) == [b""]
    with pytest.raises(FramingError, match="empty"):
        decode(b"")


def test_oversize_message_is_not_chunked() -> None:
    with pytest.raises(FramingError, match="exceeds"):
        list(chunks(bytes(MAX_MESSAGE + 1)))


def test_reassembler_handles_consecutive_messages() -> None:
    reassembler = Reassembler()
    first, second = bytes(CHUNK_PLAINTEXT * 2), b"\x01{}"
    out = [reassembler.feed(c) for c in [*chunks(first), *chunks(second), *chunks(first)]]
    assert [m for m in out if m is not None] == [first, second, first]


def test_reassembler_refuses_more_than_max_message() -> None:
    reassembler = Reassembler()
    piece = bytes([MORE]) + bytes(CHUNK_PLAINTEXT)
    fed = 0
    with pytest.raises(FramingError, match="exceeds"):
        while True:
            reassembler.feed(piece)
            fed += CHUNK_PLAINTEXT
    assert fed <= MAX_MESSAGE < fed + CHUNK_PLAINTEXT
    # With full non-final chunks, a message takes at most this many chunks.
    assert len(list(chunks(bytes(MAX_MESSAGE)))) == fed // CHUNK_PLAINTEXT + 1


def test_reassembler_accepts_exactly_max_message() -> None:
    message = bytes(MAX_MESSAGE)
    assert reassemble(list(chunks(message))) == [message]
    *pieces, last = chunks(message)
    assert len(last) - 1 < CHUNK_PLAINTEXT  # room for one more byte in the last chunk
    reassembler = Reassembler()
    for piece in pieces:
        assert reassembler.feed(piece) is None
    with pytest.raises(FramingError, match="exceeds"):
        reassembler.feed(last + b"\x00")  # the same message, one byte too long


@pytest.mark.parametrize("size", [0, 1, CHUNK_PLAINTEXT // 2, CHUNK_PLAINTEXT - 1])
def test_a_short_non_final_chunk_is_refused(size: int) -> None:
    """Only the last chunk may be short.  Otherwise a peer could send endless empty
    MORE chunks, each costing a buffered entry and none counting towards MAX_MESSAGE."""
    short = bytes([MORE]) + bytes(size)
    with pytest.raises(FramingError, match="non-final chunk must be full"):
        Reassembler().feed(short)
    after_a_full_one = Reassembler()
    assert after_a_full_one.feed(bytes([MORE]) + bytes(CHUNK_PLAINTEXT)) is None
    with pytest.raises(FramingError, match="non-final chunk must be full"):
        after_a_full_one.feed(short)
    after_a_message = Reassembler()
    assert after_a_message.feed(bytes([LAST]) + b"\x01{}") == b"\x01{}"
    with pytest.raises(FramingError, match="non-final chunk must be full"):
        after_a_message.feed(short)


@pytest.mark.parametrize("chunk", [b"", b"\x02", b"\x02data", b"\xffdata", b"\x80"])
def test_bad_chunk_flag(chunk: bytes) -> None:
    with pytest.raises(FramingError, match="flag"):
        Reassembler().feed(chunk)


# -- caps and malformed input -------------------------------------------------------


def test_oversize_message_is_refused() -> None:
    with pytest.raises(FramingError, match="exceeds"):
        decode(bytes([CONTROL]) + bytes(MAX_MESSAGE))
    with pytest.raises(FramingError, match="exceeds"):
        decode(batch([bytes(MAX_EVENT_BYTES)] * 64))


def test_largest_batches_are_accepted() -> None:
    assert decode(batch([b""] * MAX_EVENTS_PER_BATCH)) == Events([b""] * MAX_EVENTS_PER_BATCH)
    biggest = (MAX_MESSAGE - 5) // (4 + MAX_EVENT_BYTES)
    events = [bytes(MAX_EVENT_BYTES)] * biggest
    assert decode(encode(Events(events))) == Events(events)


def test_too_many_events_are_refused() -> None:
    with pytest.raises(FramingError, match="exceeds"):
        decode(batch([b""] * (MAX_EVENTS_PER_BATCH + 1)))
    with pytest.raises(FramingError, match="exceeds"):
        decode(batch([], count=2**32 - 1))


def test_oversize_event_is_refused() -> None:
    assert decode(batch([bytes(MAX_EVENT_BYTES)])) == Events([bytes(MAX_EVENT_BYTES)])
    with pytest.raises(FramingError, match="out of bounds"):
        decode(batch([bytes(MAX_EVENT_BYTES + 1)]))


def test_every_truncation_of_a_batch_is_refused() -> None:
    whole = batch([b"abc", b"", b"defgh"])
    for end in range(1, len(whole)):
        with pytest.raises(FramingError, match=r"truncated|out of bounds|trailing"):
            decode(whole[:end])


def test_trailing_bytes_are_refused() -> None:
    for extra in (b"\x00", b"abc", U32.pack(0)):
        with pytest.raises(FramingError, match="trailing"):
            decode(batch([b"abc"]) + extra)
    with pytest.raises(FramingError, match="trailing"):
        decode(batch([b"abc", b"def"], count=1))


@pytest.mark.parametrize("kind", [0x00, 0x04, 0x10, 0x7B, 0xFF])
def test_unknown_types_are_refused(kind: int) -> None:
    with pytest.raises(FramingError, match="unknown message type"):
        decode(bytes([kind]) + b'{"t":"ping","n":1}')


BAD_CONTROL: dict[str, bytes] = {
    "not json": b"\x01{not json",
    "empty body": b"\x01",
    "invalid utf-8": b'\x01{"t":"bye","reason":"\xff"}',
    "array": control(["t", "ping"]),
    "string": control("ping"),
    "null": control(None),
    "no type": control({"n": 1}),
    "unknown type": control({"t": "gossip"}),
    "type not a string": control({"t": 7}),
    "want without heads": control({"t": "want", "scope": hex32("s")}),
    "want uppercase": control({"t": "want", "scope": hex32("s").upper(), "heads": hex32("h")}),
    "want short": control({"t": "want", "scope": "ab", "heads": hex32("h")}),
    "want number": control({"t": "want", "scope": 5, "heads": hex32("h")}),
    "vector list": control({"t": "vector", "heads": [hex32("a")]}),
    "vector missing": control({"t": "vector"}),
    "vector bad author": control({"t": "vector", "heads": {"alice": 1}}),
    "vector negative": control({"t": "vector", "heads": {hex32("a"): -1}}),
    "vector float": control({"t": "vector", "heads": {hex32("a"): 1.0}}),
    "vector bool": control({"t": "vector", "heads": {hex32("a"): True}}),
    "vector 2^53": control({"t": "vector", "heads": {hex32("a"): 2**53}}),
    "vector null": control({"t": "vector", "heads": {hex32("a"): None}}),
    "ping missing": control({"t": "ping"}),
    "ping negative": control({"t": "ping", "n": -1}),
    "ping 2^53": control({"t": "ping", "n": 2**53}),
    "ping float": control({"t": "ping", "n": 1.5}),
    "ping string": control({"t": "pong", "n": "1"}),
    "ping bool": control({"t": "pong", "n": False}),
    "ping nan": b'\x01{"t":"ping","n":NaN}',
    "ping huge": b'\x01{"t":"ping","n":' + b"9" * 5000 + b"}",
    "deep nesting": b"\x01" + b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("data", BAD_CONTROL.values(), ids=list(BAD_CONTROL))
def test_malformed_control_messages_are_refused(data: bytes) -> None:
    with pytest.raises(FramingError):
        decode(data)


def test_a_vector_of_max_vector_authors_can_be_sent() -> None:
    """A full vector fits in MAX_MESSAGE whatever its seqs, up to 15 digits each.

    A seq of 16 digits (10^15 or more) would need a feed of that many events: feeds
    are contiguous from seq 1, so no node can hold such a head.
    """
    heads = {f"{i:064x}": 10**15 - 1 for i in range(MAX_VECTOR_AUTHORS)}
    encoded = encode(Vector(heads))
    assert len(encoded) <= MAX_MESSAGE
    assert reassemble(list(chunks(encoded))) == [encoded]
    assert decode(encoded) == Vector(heads)


def test_a_vector_over_max_vector_authors_is_refused() -> None:
    too_many = {f"{i:064x}": 0 for i in range(MAX_VECTOR_AUTHORS + 1)}
    encoded = encode(Vector(too_many))
    assert len(encoded) <= MAX_MESSAGE  # refused for its author count, not its size
    with pytest.raises(FramingError, match=f"at most {MAX_VECTOR_AUTHORS} authors"):
        decode(encoded)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_control_messages_must_be_utf8(encoding: str) -> None:
    body = '{"t":"in_sync"}'.encode(encoding)
    assert json.loads(body) == {"t": "in_sync"}  # what a lenient decoder would accept
    with pytest.raises(FramingError, match="UTF-8"):
        decode(b"\x01" + body)


def test_raw_utf8_in_control_messages_is_accepted() -> None:
    raw = '{"t":"bye","reason":"déjà ♪ \U0001f600"}'.encode()
    assert decode(b"\x01" + raw) == Goodbye("déjà ♪ \U0001f600")


# -- fuzzing --------------------------------------------------------------------------


def _decode_or_framing_error(data: bytes) -> None:
    with contextlib.suppress(FramingError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_decode(data: bytes) -> None:
    _decode_or_framing_error(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([CONTROL, EVENTS]), st.binary(max_size=256))
def test_fuzz_decode_known_types(kind: int, body: bytes) -> None:
    _decode_or_framing_error(bytes([kind]) + body)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["want", "need_vector", "vector", "in_sync", "ping", "pong", "bye", "x"]),
    st.dictionaries(st.sampled_from(["scope", "heads", "n", "reason"]), _JSON, max_size=3),
)
def test_fuzz_control_members(kind: str, members: dict[str, object]) -> None:
    _decode_or_framing_error(bytes([CONTROL]) + json.dumps({"t": kind, **members}).encode())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300), max_size=6), st.binary(max_size=12))
def test_fuzz_damaged_batches(events: list[bytes], damage: bytes) -> None:
    whole = batch(events)
    for data in (whole[: len(whole) // 2], whole + damage, whole[:5] + damage + whole[5:]):
        _decode_or_framing_error(data)


_CHUNKS = st.one_of(
    st.binary(max_size=64),  # any bytes at all: mostly bad flags and short MORE chunks
    st.builds(
        lambda flag, size, fill: bytes([flag]) + bytes([fill]) * size,
        st.sampled_from([MORE, LAST]),
        st.sampled_from([0, 1, CHUNK_PLAINTEXT - 1, CHUNK_PLAINTEXT]),
        st.integers(min_value=0, max_value=255),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_CHUNKS, max_size=8))
def test_fuzz_reassembler(pieces: list[bytes]) -> None:
    """The reassembler agrees with a model of the rules on any chunk sequence."""
    reassembler = Reassembler()
    pending = b""
    for piece in pieces:
        refused = (
            not piece
            or piece[0] not in (MORE, LAST)
            or (piece[0] == MORE and len(piece) - 1 < CHUNK_PLAINTEXT)
            or len(pending) + len(piece) - 1 > MAX_MESSAGE
        )
        if refused:
            with pytest.raises(FramingError):
                reassembler.feed(piece)
            return
        out = reassembler.feed(piece)
        pending += piece[1:]
        if piece[0] == LAST:
            assert out == pending
            pending = b""
        else:
            assert out is None


def test_interest_round_trip_and_limits() -> None:
    authors = frozenset({"ab" * 32, "cd" * 32})
    message = Interest(authors)
    assert decode(encode(message)) == message
    assert (
        encode(message)
        == b'\x01{"t":"interest","authors":["' + b"ab" * 32 + b'","' + b"cd" * 32 + b'"]}'
    )
    too_many = (
        b'\x01{"t":"interest","authors":['
        + b",".join(b'"%064x"' % i for i in range(MAX_INTEREST_AUTHORS + 1))
        + b"]}"
    )
    with pytest.raises(FramingError, match="at most"):
        decode(too_many)
    for bad in (b'{"t":"interest","authors":"ab"}', b'{"t":"interest","authors":["AB"]}'):
        with pytest.raises(FramingError):
            decode(b"\x01" + bad)
