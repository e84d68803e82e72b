"""The sans-IO microphone protocol: framing, payloads, connections, spec vectors, fuzzing.

The worked examples of specs/mic-module.md §12 are parsed out of the spec and
checked against the code both ways, so the document cannot drift from it.
The fuzz test is the issue's behavioural requirement: 100k damaged frames,
no exception, no single receive_data+drain call over 100 ms, bounded buffer.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.connection import (
    MAX_QUEUED_EVENTS,
    NEED_DATA,
    BadRequest,
    DeviceConnection,
    HostConnection,
    ProtocolViolation,
    Request,
    Response,
)
from hardware.errors import InvalidSetting, LocalProtocolError
from hardware.framing import (
    HEADER_SIZE,
    MAX_BUFFERED,
    MAX_PAYLOAD,
    FrameParser,
    crc16,
    encode_frame,
)
from hardware.messages import (
    Ack,
    ChangeSettings,
    ChannelLevel,
    Command,
    DeviceError,
    ErrorCode,
    GetInfo,
    GetSettings,
    Identify,
    LevelReport,
    LevelsStarted,
    LowCut,
    MessageType,
    ModuleInfo,
    Part,
    PartCheck,
    PartStatus,
    Pattern,
    PayloadError,
    Ping,
    Reply,
    SelfTest,
    SelfTestResult,
    Settings,
    Slot,
    StartLevels,
    StopLevels,
    decode_command,
    decode_levels,
    decode_reply,
    encode_command,
    encode_levels,
    encode_reply,
    reply_type,
)

SPEC = Path(__file__).resolve().parent.parent / "specs" / "mic-module.md"

# --------------------------------------------------------------------------- helpers


def reference_crc16(data: bytes) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE, straight from its definition."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def drain(conn: HostConnection | DeviceConnection) -> list[Any]:
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def frame_with_header(type_: int, seq: int, length: int, payload: bytes, version: int = 1) -> bytes:
    """A frame whose header (with a valid HCRC) claims ``length``, whatever the payload."""
    head = bytes((version, type_, seq)) + length.to_bytes(2, "big")
    hcrc = crc16(head)
    fcrc = reference_crc16(head + payload)
    return b"\xa5\x5a" + head + hcrc.to_bytes(2, "big") + payload + fcrc.to_bytes(2, "big")


# --------------------------------------------------------------------------- strategies

names = st.text(min_size=1, max_size=12).filter(lambda s: s.isprintable() and len(s.encode()) <= 32)
details = st.text(max_size=20).filter(lambda s: s.isprintable() and len(s.encode()) <= 64)
gains = st.integers(0, 120).map(lambda half: half / 2)
patterns = st.sampled_from(Pattern)
low_cuts = st.sampled_from(LowCut)
slots = st.sampled_from(Slot)
settings_st = st.builds(Settings, gains, patterns, st.booleans(), low_cuts, st.booleans())
parts = st.builds(Part, slots, names, names, names)
infos = st.builds(
    ModuleInfo,
    names,
    names,
    names,
    st.integers(1, 4),
    st.lists(parts, max_size=8).map(tuple),
)


@st.composite
def channel_levels(draw: st.DrawFn) -> ChannelLevel:
    peak = draw(st.integers(-12000, 0))
    rms = draw(st.integers(-12000, peak))
    return ChannelLevel(peak / 100, rms / 100)


level_reports = st.builds(
    LevelReport,
    st.integers(0, 0xFFFF),
    st.booleans(),
    st.lists(channel_levels(), min_size=1, max_size=4).map(tuple),
)
checks = st.builds(PartCheck, slots, st.sampled_from(PartStatus), st.integers(0, 0xFFFF), details)
commands: st.SearchStrategy[Command] = st.one_of(
    st.just(Ping()),
    st.builds(Identify, st.integers(0, 60)),
    st.just(GetInfo()),
    st.just(GetSettings()),
    st.builds(
        ChangeSettings,
        st.none() | gains,
        st.none() | patterns,
        st.none() | st.booleans(),
        st.none() | low_cuts,
        st.none() | st.booleans(),
    ),
    st.builds(StartLevels, st.integers(10, 1000)),
    st.just(StopLevels()),
    st.just(SelfTest()),
)
device_errors = st.builds(
    DeviceError,
    st.integers(1, 255),
    st.text(max_size=30).filter(lambda s: s.isprintable() and len(s.encode()) <= 128),
)


def replies_for(command: Command) -> st.SearchStrategy[Reply]:
    """Replies a module may give to ``command``."""
    ok: st.SearchStrategy[Reply]
    match command:
        case GetInfo():
            ok = infos
        case GetSettings() | ChangeSettings():
            ok = settings_st
        case StartLevels():
            ok = st.builds(LevelsStarted, st.integers(10, 1000))
        case SelfTest():
            ok = st.builds(SelfTestResult, st.lists(checks, max_size=8).map(tuple))
        case _:
            ok = st.just(Ack())
    return ok | device_errors


# --------------------------------------------------------------------------- CRC and framing


def test_crc_check_values() -> None:
    assert crc16(b"123456789") == 0x29B1 == reference_crc16(b"123456789")
    assert crc16(b"") == 0xFFFF


@given(st.binary(max_size=300))
def test_crc_matches_its_definition(data: bytes) -> None:
    assert crc16(data) == reference_crc16(data)


def test_frame_layout() -> None:
    frame = encode_frame(0x02, 7, b"\x05")
    assert frame[:2] == b"\xa5\x5a"
    assert frame[2:7] == bytes((1, 0x02, 7, 0, 1))
    assert int.from_bytes(frame[7:9], "big") == reference_crc16(frame[2:7])
    assert frame[9:10] == b"\x05"
    assert int.from_bytes(frame[10:], "big") == reference_crc16(frame[2:7] + b"\x05")
    empty = encode_frame(0x01, 1, b"")
    assert empty[7:9] == empty[9:11], "an empty payload's FCRC equals its HCRC"


def test_encode_frame_refuses_oversize_payload() -> None:
    encode_frame(0x01, 1, bytes(MAX_PAYLOAD))
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(0x01, 1, bytes(MAX_PAYLOAD + 1))


@given(
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40))),
    st.data(),
)
def test_frames_survive_any_split(specs: list[tuple[int, int, bytes]], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(t, s, p) for t, s, p in specs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = FrameParser()
    frames = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        frames += parser.feed(stream[start:end])
    assert [(f.type, f.seq, f.payload) for f in frames] == specs
    assert parser.buffered == 0 and parser.stats.discarded_bytes == 0


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise_and_stay_bounded(first: bytes, second: bytes) -> None:
    for conn in (HostConnection(), DeviceConnection()):
        conn.receive_data(first)
        assert conn.buffered_bytes <= MAX_BUFFERED
        drain(conn)
        conn.receive_data(second)
        assert conn.buffered_bytes <= MAX_BUFFERED
        drain(conn)


@given(st.binary(max_size=200), st.sampled_from([b"", b"\xa5", b"\xa5\x5a\x01"]))
def test_a_good_frame_after_noise_is_found(noise: bytes, tail: bytes) -> None:
    parser = FrameParser()
    good = encode_frame(0x01, 9, b"")
    frames = parser.feed(noise + tail) + parser.feed(good) + parser.feed(bytes(MAX_PAYLOAD + 11))
    assert (frames[-1].type, frames[-1].seq) == (0x01, 9)


def test_corrupt_header_is_skipped_without_waiting() -> None:
    """A bit flip in LEN fails HCRC at once: the good frame behind it comes out now."""
    good = encode_frame(0x81, 1, b"")
    damaged = bytearray(encode_frame(0x83, 2, b"x" * 10))
    damaged[6] ^= 0x40  # LEN claims 74 bytes
    parser = FrameParser()
    frames = parser.feed(bytes(damaged) + good)
    assert [(f.type, f.seq) for f in frames] == [(0x81, 1)]
    assert parser.stats.bad_header == 1


def test_length_lie_with_valid_header_recovers_the_swallowed_frame() -> None:
    """A header that verifies but claims too much swallows what follows; the rescan finds it."""
    liar = frame_with_header(0x84, 3, 40, b"\x30\x00\x01\x00\x00")  # 5 real bytes, claims 40
    good = encode_frame(0x81, 4, b"")
    parser = FrameParser()
    assert parser.feed(liar + good) == []  # still waiting for 40 bytes
    frames = parser.feed(bytes(40))
    assert [(f.type, f.seq) for f in frames] == [(0x81, 4)]
    assert parser.stats.bad_crc == 1


def test_oversize_length_is_refused_even_with_a_valid_header_crc() -> None:
    parser = FrameParser()
    frames = parser.feed(frame_with_header(0x83, 1, MAX_PAYLOAD + 1, b"") + encode_frame(1, 2, b""))
    assert [(f.type, f.seq) for f in frames] == [(1, 2)]
    assert parser.stats.oversize == 1


def test_buffer_never_exceeds_one_frame() -> None:
    parser = FrameParser()
    parser.feed(frame_with_header(0x83, 1, MAX_PAYLOAD, b"")[:HEADER_SIZE])
    for _ in range(11):  # 9 + 1100 bytes: the claimed 1035-byte frame completes
        parser.feed(b"\x00" * 100)
        assert parser.buffered <= MAX_BUFFERED
    assert parser.buffered == 0  # the claimed frame completed, failed FCRC, was scanned past


# --------------------------------------------------------------------------- payloads


@given(commands)
def test_command_round_trip(command: Command) -> None:
    type_, payload = encode_command(command)
    assert decode_command(type_, payload) == command


@given(commands.flatmap(lambda c: st.tuples(st.just(c), replies_for(c))))
def test_reply_round_trip(pair: tuple[Command, Reply]) -> None:
    command, reply = pair
    request_type, _ = encode_command(command)
    type_ = reply_type(request_type, reply)
    assert decode_reply(type_, encode_reply(type_, reply)) == reply


@given(level_reports)
def test_level_report_round_trip(report: LevelReport) -> None:
    assert decode_levels(encode_levels(report)) == report


@given(st.integers(0, 255), st.binary(max_size=80))
def test_decoding_any_payload_raises_only_payload_error(type_: int, payload: bytes) -> None:
    for decode in (decode_command, decode_reply):
        with contextlib.suppress(PayloadError):
            decode(type_, payload)
    with contextlib.suppress(PayloadError):
        decode_levels(payload)


@pytest.mark.parametrize(
    ("type_", "payload", "code"),
    [
        (0x02, b"", ErrorCode.BAD_LENGTH),  # IDENTIFY without seconds
        (0x02, b"\x05\x00", ErrorCode.BAD_LENGTH),  # trailing byte
        (0x02, b"\x3d", ErrorCode.BAD_VALUE),  # 61 s
        (0x05, b"\x01\x79\x00\x00\x00\x00", ErrorCode.BAD_VALUE),  # gain 60.5 dB
        (0x05, b"\x02\x00\x04\x00\x00\x00", ErrorCode.BAD_VALUE),  # pattern 4
        (0x05, b"\x04\x00\x00\x02\x00\x00", ErrorCode.BAD_VALUE),  # phantom 2
        (0x05, b"\x08\x00\x00\x00\x03\x00", ErrorCode.BAD_VALUE),  # low-cut 3
        (0x05, b"\x20\x00\x00\x00\x00\x00", ErrorCode.BAD_VALUE),  # reserved mask bit
        (0x05, b"\x01\x00", ErrorCode.BAD_LENGTH),  # truncated SET
        (0x06, b"\x00\x09", ErrorCode.BAD_VALUE),  # 9 ms
        (0x06, b"\x03\xe9", ErrorCode.BAD_VALUE),  # 1001 ms
        (0x01, b"\x00", ErrorCode.BAD_LENGTH),  # PING with a payload
        (0x42, b"", ErrorCode.UNKNOWN_COMMAND),
        (0x81, b"", ErrorCode.UNKNOWN_COMMAND),  # a reply type is no command
    ],
)
def test_invalid_commands(type_: int, payload: bytes, code: ErrorCode) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_command(type_, payload)
    assert caught.value.code is code


def test_set_ignores_fields_outside_its_mask() -> None:
    change = decode_command(0x05, b"\x10\xff\xff\xff\xff\x01")
    assert change == ChangeSettings(mute=True)


@pytest.mark.parametrize(
    ("type_", "payload"),
    [
        (0x84, b"\x30\x00\x01\x00"),  # settings truncated
        (0x84, b"\x79\x00\x01\x00\x00"),  # gain 60.5
        (0x83, b"\x00\x01x\x01y\x01\x00"),  # empty serial, then a truncated rest
        (0x83, b"\x01\x07\x01m\x011\x01\x00"),  # serial is a control character
        (0x83, b"\x01\xff\x01m\x011\x01\x00"),  # serial is not UTF-8
        (0x83, b"\x01s\x01m\x011\x05\x00"),  # 5 channels
        (0x83, b"\x01s\x01m\x011\x01\x01\x05\x01a\x01b\x01c"),  # slot 5
        (0x88, b"\x01\x01\x03\x00\x00\x00"),  # status 3
        (0x88, b"\x09"),  # 9 checks
        (0xFF, b"\x00\x00"),  # error code 0
    ],
)
def test_invalid_replies(type_: int, payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_reply(type_, payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x01\x00\x00",  # no channels
        b"\x00\x01\x00\x05" + b"\x00\x00\x00\x00" * 5,  # 5 channels
        b"\x00\x01\x00\x01\x00\x01\x00\x00",  # peak +0.01 dBFS
        b"\x00\x01\x00\x01\xd1\x1f\xd1\x1f",  # -120.01 dBFS
        b"\x00\x01\x00\x01\xfc\x18\xfb\xb4\x00",  # trailing byte
        b"\x00\x01\x00\x01\xf0\x60\xfc\x18",  # rms (-10) above peak (-40)
    ],
)
def test_invalid_level_reports(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_levels(payload)


def test_level_reserved_flag_bits_are_ignored() -> None:
    report = decode_levels(b"\x00\x01\xfe\x01\x00\x00\x00\x00")
    assert report.muted is False


@pytest.mark.parametrize("gain", [-0.5, 60.5, 12.25, float("nan"), True])
def test_out_of_range_gain_is_refused_locally(gain: float) -> None:
    with pytest.raises(InvalidSetting):
        ChangeSettings(gain_db=gain)


def test_values_validate_themselves() -> None:
    with pytest.raises(InvalidSetting):
        Identify(61)
    with pytest.raises(InvalidSetting):
        StartLevels(5)
    with pytest.raises(InvalidSetting):
        ModuleInfo("x" * 33, "m", "1", 1)
    with pytest.raises(InvalidSetting):
        ChannelLevel(-10.0, -5.0)


def test_json_forms() -> None:
    s = Settings(40.5, Pattern.FIGURE8, True, LowCut.HZ_160, False)
    assert s.as_dict() == {
        "gain_db": 40.5,
        "pattern": "figure8",
        "phantom": True,
        "low_cut_hz": 160,
        "mute": False,
    }
    result = SelfTestResult((PartCheck(Slot.CAPSULE, PartStatus.FAIL, 0x101, "dead"),))
    assert result.as_dict()["passed"] is False


# --------------------------------------------------------------------------- connections


@given(st.lists(commands.flatmap(lambda c: st.tuples(st.just(c), replies_for(c))), max_size=8))
def test_host_and_device_converse(exchanges: list[tuple[Command, Reply]]) -> None:
    host, device = HostConnection(), DeviceConnection()
    for command, reply in exchanges:
        seq, data = host.send(command)
        device.receive_data(data)
        assert drain(device) == [Request(seq, command)]
        host.receive_data(device.reply(seq, reply))
        assert drain(host) == [Response(seq, reply)]
    assert host.outstanding == frozenset()


@given(level_reports)
def test_levels_reach_the_host(report: LevelReport) -> None:
    host = HostConnection()
    host.receive_data(DeviceConnection().send_levels(report))
    assert drain(host) == [report]


def test_sequence_numbers_cycle_and_skip_outstanding() -> None:
    host = HostConnection()
    seqs = [host.send(Ping())[0] for _ in range(255)]
    assert seqs == list(range(1, 256))
    with pytest.raises(LocalProtocolError):
        host.send(Ping())
    host.forget(7)
    host.forget(200)
    assert host.send(Ping())[0] == 7
    assert host.send(Ping())[0] == 200


def test_host_drops_late_reply_after_forget() -> None:
    host, device = HostConnection(), DeviceConnection()
    seq, data = host.send(Ping())
    device.receive_data(data)
    drain(device)
    host.forget(seq)
    host.receive_data(device.reply(seq, Ack()))
    assert drain(host) == []
    assert host.stats.unexpected == 1


def test_host_refuses_a_reply_of_another_command() -> None:
    host = HostConnection()
    seq, _ = host.send(GetSettings())
    host.receive_data(encode_frame(0x81, seq, b""))  # PING_REPLY to GET_SETTINGS
    [event] = drain(host)
    assert isinstance(event, ProtocolViolation) and event.seq == seq
    assert host.outstanding == frozenset()


@pytest.mark.parametrize(
    ("frame", "names_request"),
    [
        (encode_frame(0x84, 1, b"\x30\x00\x01"), True),  # truncated settings
        (encode_frame(0x84, 1, b"\x30\x07\x01\x00\x00"), True),  # pattern 7
        (encode_frame(0x84, 1, b"", version=2), True),
        (encode_frame(0x04, 1, b""), True),  # a request echoed back (loopback)
        (encode_frame(0x55, 1, b""), True),  # unknown type
        (encode_frame(0xC0, 1, b"\x00\x00\x00\x01\x00\x00\x00\x00"), False),  # LEVELS, SEQ 1
        (encode_frame(0xC0, 0, b"\x00\x00\x00\x00"), False),  # LEVELS without channels
    ],
)
def test_host_reports_violations(frame: bytes, names_request: bool) -> None:
    host = HostConnection()
    seq, _ = host.send(GetSettings())
    host.receive_data(frame)
    [event] = drain(host)
    assert isinstance(event, ProtocolViolation)
    assert event.seq == (seq if names_request else None)
    assert host.stats.rejected == 1


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (encode_frame(0x42, 3, b""), ErrorCode.UNKNOWN_COMMAND),
        (encode_frame(0x02, 3, b""), ErrorCode.BAD_LENGTH),
        (encode_frame(0x02, 3, b"\xff"), ErrorCode.BAD_VALUE),
        (encode_frame(0x01, 3, b"", version=9), ErrorCode.UNSUPPORTED_VERSION),
    ],
)
def test_device_answers_bad_requests_with_errors(frame: bytes, code: ErrorCode) -> None:
    device = DeviceConnection()
    device.receive_data(frame)
    [event] = drain(device)
    assert isinstance(event, BadRequest) and event.seq == 3 and event.code is code
    reply = device.reply(3, DeviceError(event.code, event.reason))
    assert reply[3] == MessageType.ERROR and reply[4] == 3


def test_device_ignores_unnumbered_requests() -> None:
    device = DeviceConnection()
    device.receive_data(encode_frame(0x01, 0, b""))
    assert drain(device) == []
    assert device.stats.rejected == 1


def test_device_reply_misuse_raises_locally() -> None:
    device = DeviceConnection()
    with pytest.raises(LocalProtocolError):
        device.reply(1, Ack())  # nothing to answer
    device.receive_data(encode_frame(0x03, 1, b""))
    drain(device)
    with pytest.raises(LocalProtocolError):
        device.reply(1, Ack())  # GET_INFO is answered with ModuleInfo


def test_event_queue_is_bounded() -> None:
    host = HostConnection()
    report = encode_frame(0xC0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00")
    host.receive_data(report * (MAX_QUEUED_EVENTS + 10))
    assert len(drain(host)) == MAX_QUEUED_EVENTS
    assert host.stats.dropped_events == 10


# --------------------------------------------------------------------------- spec vectors

VECTOR_RE = re.compile(
    r"^#### (V\d+): [^\n]*\n\n```text\n(.*?)```\n\nOne line: `([0-9a-f]+)`", re.S | re.M
)


def spec_vectors() -> dict[str, tuple[bytes, bytes]]:
    """name -> (bytes from the annotated block, bytes from the one-line form)."""
    vectors = {}
    for name, block, line in VECTOR_RE.findall(SPEC.read_text(encoding="utf-8")):
        hex_parts = [re.split(r"\s{2,}", row.strip())[0] for row in block.splitlines()]
        vectors[name] = (bytes.fromhex(" ".join(hex_parts)), bytes.fromhex(line))
    return vectors


INFO = ModuleInfo(
    "TM2-000001",
    "Talas TM-2",
    "1.4.2",
    2,
    (
        Part(Slot.CAPSULE, "TC-2D", "C-0001", "B"),
        Part(Slot.FIRMWARE, "talas-mic-fw", "F-0001", "1.4.2"),
    ),
)
# name -> (direction, request command for replies, seq, message)
EXPECTED: dict[str, tuple[str, Command | None, int, Any]] = {
    "V1": ("request", None, 1, Ping()),
    "V2": ("reply", Ping(), 1, Ack()),
    "V3": ("request", None, 2, Identify(5)),
    "V4": ("request", None, 3, GetInfo()),
    "V5": ("reply", GetInfo(), 3, INFO),
    "V6": ("request", None, 4, ChangeSettings(gain_db=40.5, pattern=Pattern.OMNI)),
    "V7": ("reply", ChangeSettings(), 4, Settings(40.5, Pattern.OMNI, True, LowCut.HZ_80, False)),
    "V8": ("request", None, 5, StartLevels(100)),
    "V9": (
        "levels",
        None,
        0,
        LevelReport(7, False, (ChannelLevel(-12.5, -24.75), ChannelLevel(-30.0, -41.2))),
    ),
    "V10": (
        "reply",
        SelfTest(),
        6,
        SelfTestResult(
            (
                PartCheck(Slot.CAPSULE, PartStatus.FAIL, 0x0101, "polarisation low"),
                PartCheck(Slot.PREAMP, PartStatus.PASS, 0, ""),
            )
        ),
    ),
    "V11": ("reply", ChangeSettings(), 7, DeviceError(ErrorCode.BAD_VALUE, "gain above 60 dB")),
}


def test_spec_has_every_vector() -> None:
    assert sorted(spec_vectors()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_vector(name: str) -> None:
    annotated, one_line = spec_vectors()[name]
    assert annotated == one_line
    direction, request, seq, message = EXPECTED[name]
    if direction == "request":
        type_, payload = encode_command(message)
        assert encode_frame(type_, seq, payload) == annotated
        device = DeviceConnection()
        device.receive_data(annotated)
        assert drain(device) == [Request(seq, message)]
    elif direction == "levels":
        assert DeviceConnection().send_levels(message) == annotated
        host = HostConnection()
        host.receive_data(annotated)
        assert drain(host) == [message]
    else:
        assert request is not None
        type_ = reply_type(encode_command(request)[0], message)
        assert encode_frame(type_, seq, encode_reply(type_, message)) == annotated
        host = HostConnection()
        while host.send(request)[0] != seq:  # make ``seq`` the outstanding request
            pass
        host.receive_data(annotated)
        assert drain(host) == [Response(seq, message)]


def test_spec_resynchronisation_example() -> None:
    v1 = spec_vectors()["V1"][0]
    damaged = bytearray(v1)
    damaged[6] = 0x03
    parser = FrameParser()
    frames = parser.feed(bytes.fromhex("00 ff a5") + bytes(damaged) + v1)
    assert [(f.type, f.seq) for f in frames] == [(0x01, 1)]
    assert parser.stats.discarded_bytes == 14
    assert parser.stats.bad_header == 1


# --------------------------------------------------------------------------- fuzzing

FUZZ_FRAMES = 100_000
MAX_CALL_SECONDS = 0.100


def _reframe(rng: random.Random, frame: bytes) -> bytes:
    """Valid CRCs around wrong content: the connection, not the parser, must refuse it."""
    version, type_, seq, payload = frame[2], frame[3], frame[4], bytearray(frame[9:-2])
    what = rng.randrange(5)
    if what == 0 and payload:
        payload[rng.randrange(len(payload))] = rng.randrange(256)
    elif what == 1:
        del payload[rng.randrange(len(payload) + 1) :]
    elif what == 2:
        payload += rng.randbytes(rng.randint(1, 4))
    elif what == 3:
        type_ = rng.randrange(256)
    else:
        version, seq = rng.randrange(256), rng.randrange(256)
    return encode_frame(type_, seq, bytes(payload), version=version)


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One damaged (or intact) version of ``frame``, as a noisy serial line would deliver it."""
    roll = rng.random()
    if roll < 0.30:
        return frame
    if roll < 0.42:  # bit flips
        data = bytearray(frame)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if roll < 0.50:  # truncated
        return frame[: rng.randrange(len(frame))]
    if roll < 0.58:  # a length lie under a valid header CRC
        claimed = rng.choice([0, rng.randrange(MAX_PAYLOAD + 1), MAX_PAYLOAD, 0xFFFF])
        return frame_with_header(frame[3], frame[4], claimed, frame[9:-2])
    if roll < 0.68:  # garbage around it
        junk = rng.randbytes(rng.randint(1, 64))
        return junk + frame if rng.random() < 0.5 else frame + junk
    if roll < 0.74:  # SYNC lookalikes and false starts
        return b"\xa5\x5a" * rng.randint(1, 8) + b"\xa5" + frame
    if roll < 0.80:  # a frame cut in two with noise between
        cut = rng.randrange(1, len(frame))
        return frame[:cut] + rng.randbytes(rng.randint(1, 8)) + frame[cut:]
    if roll < 0.94:
        return _reframe(rng, frame)
    return rng.randbytes(rng.randint(1, 200))


def test_fuzzed_frames_never_crash_hang_or_grow() -> None:
    rng = random.Random(20240611)
    host, device = HostConnection(), DeviceConnection()
    exchanges: list[tuple[Command, Reply]] = [
        (GetInfo(), INFO),
        (GetSettings(), Settings(12.0, Pattern.OMNI, False, LowCut.OFF, True)),
        (StartLevels(50), LevelsStarted(50)),
        (SelfTest(), EXPECTED["V10"][3]),
        (Ping(), Ack()),
        (Ping(), DeviceError(ErrorCode.BUSY, "self-test running")),
    ]
    requests: list[Command] = [
        Ping(),
        Identify(10),
        GetInfo(),
        ChangeSettings(gain_db=33.5, mute=True, low_cut=LowCut.HZ_80),
        StartLevels(20),
        SelfTest(),
    ]
    command_pool = [encode_command(c) for c in requests]
    levels = encode_levels(EXPECTED["V9"][3])
    worst = 0.0
    events = 0
    for i in range(FUZZ_FRAMES):
        if i % 2:
            conn: HostConnection | DeviceConnection = device
            type_, payload = rng.choice(command_pool)
            frame = encode_frame(type_, rng.randint(0, 255), payload)
        else:
            conn = host
            if rng.random() < 0.2:
                frame = encode_frame(0xC0, 0, levels)
            else:
                command, reply = rng.choice(exchanges)
                if len(host.outstanding) > 200:
                    for seq in list(host.outstanding)[:100]:
                        host.forget(seq)
                seq, _ = host.send(command)
                rtype = reply_type(encode_command(command)[0], reply)
                frame = encode_frame(rtype, seq, encode_reply(rtype, reply))
        chunk = mutate(rng, frame)
        start = time.perf_counter()
        conn.receive_data(chunk)
        events += len(drain(conn))
        elapsed = time.perf_counter() - start
        worst = max(worst, elapsed)
        assert conn.buffered_bytes <= MAX_BUFFERED
    print(f"fuzz: worst call {worst * 1e3:.2f} ms, {events} events")
    print(f"fuzz: host {host.stats}\nfuzz: device {device.stats}")
    assert worst < MAX_CALL_SECONDS, f"slowest receive_data+drain took {worst * 1000:.1f} ms"
    assert events > FUZZ_FRAMES // 4  # most intact frames still got through
    for conn in (host, device):
        stats = conn.stats
        assert stats.bad_crc and stats.bad_header and stats.oversize and stats.rejected
    # After all that, the link still works: a clean frame followed by idle fill is found.
    device.receive_data(encode_frame(0x01, 77, b"") + bytes(MAX_PAYLOAD + 11))
    assert Request(77, Ping()) in drain(device)
