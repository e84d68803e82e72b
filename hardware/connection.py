"""Sans-IO connections of the microphone protocol: host side and device side.

Theory of operation
-------------------
Like h11: bytes go in with ``receive_data``, events come out of
``next_event`` (or :data:`NEED_DATA`), and ``send``-style methods turn
commands into bytes for the caller to write.  No I/O, no clocks, no threads.

``receive_data`` runs the :class:`~hardware.framing.FrameParser` at once and
queues the events the frames produce, so the byte buffer never holds more
than one incomplete frame.  The event queue is bounded too
(:data:`MAX_QUEUED_EVENTS`): an owner that never drains it loses the newest
events, counted in ``stats.dropped_events``, instead of growing memory.

Nothing the peer sends can make ``receive_data`` raise.  Damaged bytes are
skipped and counted by the parser; an intact frame that makes no sense is
counted in ``stats.rejected`` and surfaced as :class:`ProtocolViolation`
(host) or :class:`BadRequest` (device, which answers it with an ERROR frame).

The host numbers requests 1..255 (0 is reserved for unsolicited frames) and
remembers which command each outstanding number carries, so it can check
that a reply answers *that* command.  A request the owner gave up on
(:meth:`HostConnection.forget`, after a timeout) no longer matches: a late
reply is dropped and counted in ``stats.unexpected``.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeAlias, TypeVar

from hardware.errors import LocalProtocolError
from hardware.framing import VERSION, Frame, FrameParser, LinkStats, encode_frame
from hardware.messages import (
    COMMAND_TYPES,
    REPLY_FLAG,
    REPLY_TYPES,
    Command,
    DeviceError,
    ErrorCode,
    LevelReport,
    MessageType,
    PayloadError,
    Reply,
    decode_command,
    decode_levels,
    decode_reply,
    encode_command,
    encode_levels,
    encode_reply,
    reply_type,
)

MAX_QUEUED_EVENTS = 256
UNSOLICITED_SEQ = 0


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _Sentinel.NEED_DATA
"""``next_event`` result: nothing more until more bytes arrive."""
NeedData: TypeAlias = Literal[_Sentinel.NEED_DATA]


@dataclass(frozen=True, slots=True)
class Response:
    """The reply to outstanding request ``seq`` (a :class:`DeviceError` if refused)."""

    seq: int
    message: Reply


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """An intact frame the host cannot accept.

    ``seq`` names the outstanding request it ended (that request will get no
    other answer), or is None when the frame concerned no outstanding request.
    """

    seq: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Request:
    """A valid command from the host; answer it with :meth:`DeviceConnection.reply`."""

    seq: int
    command: Command


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request the device cannot carry out; answer with ``DeviceError(code, reason)``."""

    seq: int
    code: ErrorCode
    reason: str


HostEvent: TypeAlias = Response | LevelReport | ProtocolViolation
DeviceEvent: TypeAlias = Request | BadRequest
_E = TypeVar("_E", HostEvent, DeviceEvent)


class _Connection(Generic[_E]):
    def __init__(self) -> None:
        self.stats = LinkStats()
        self._parser = FrameParser(self.stats)
        self._events: deque[_E] = deque()

    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting for the rest of a frame (bounded by framing.MAX_BUFFERED)."""
        return self._parser.buffered

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the link; never raises because of what they contain."""
        for frame in self._parser.feed(data):
            event = self._on_frame(frame)
            if event is None:
                continue
            if len(self._events) >= MAX_QUEUED_EVENTS:
                self.stats.dropped_events += 1
            else:
                self._events.append(event)

    def next_event(self) -> _E | NeedData:
        """The next event, or NEED_DATA."""
        return self._events.popleft() if self._events else NEED_DATA

    def _on_frame(self, frame: Frame) -> _E | None:
        raise NotImplementedError


class HostConnection(_Connection[HostEvent]):
    """The host (node) side: sends commands, receives replies and level reports."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[int, int] = {}  # seq -> command TYPE
        self._next_seq = 1

    @property
    def outstanding(self) -> frozenset[int]:
        """Sequence numbers of requests still waiting for a reply."""
        return frozenset(self._pending)

    def send(self, command: Command) -> tuple[int, bytes]:
        """Number ``command`` and frame it: returns (seq, bytes to write)."""
        if len(self._pending) >= 255:
            raise LocalProtocolError("255 requests outstanding: forget some first")
        while self._next_seq in self._pending:
            self._next_seq = self._next_seq % 255 + 1
        seq = self._next_seq
        self._next_seq = seq % 255 + 1
        type_, payload = encode_command(command)
        self._pending[seq] = type_
        return seq, encode_frame(type_, seq, payload)

    def forget(self, seq: int) -> None:
        """Stop waiting for ``seq`` (timed out or cancelled): a late reply will be dropped."""
        self._pending.pop(seq, None)

    def _reject(self, seq: int | None, reason: str) -> ProtocolViolation:
        self.stats.rejected += 1
        if seq is not None and self._pending.pop(seq, None) is None:
            seq = None
        return ProtocolViolation(seq, reason)

    def _on_frame(self, frame: Frame) -> HostEvent | None:
        type_, seq = frame.type, frame.seq
        if frame.version != VERSION:
            return self._reject(seq, f"unsupported protocol version {frame.version}")
        if type_ == MessageType.LEVELS:
            if seq != UNSOLICITED_SEQ:
                return self._reject(None, f"LEVELS frame with SEQ {seq}, not 0")
            try:
                return decode_levels(frame.payload)
            except PayloadError as exc:
                return self._reject(None, f"bad LEVELS payload: {exc}")
        if type_ not in REPLY_TYPES:
            what = "a request" if type_ in COMMAND_TYPES else "an unknown"
            return self._reject(seq, f"{what} frame type 0x{type_:02x} sent to the host")
        request = self._pending.get(seq)
        if request is None:
            self.stats.unexpected += 1
            return None
        if type_ != MessageType.ERROR and type_ != request | REPLY_FLAG:
            return self._reject(seq, f"reply type 0x{type_:02x} to request type 0x{request:02x}")
        try:
            message = decode_reply(type_, frame.payload)
        except PayloadError as exc:
            return self._reject(seq, f"bad reply payload: {exc}")
        del self._pending[seq]
        return Response(seq, message)


class DeviceConnection(_Connection[DeviceEvent]):
    """The module side (used by the simulator): receives commands, sends replies and levels."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[int, int] = {}  # seq -> command TYPE, until replied
        self._counter = 0

    def reply(self, seq: int, message: Reply) -> bytes:
        """Frame the reply to request ``seq``; a DeviceError may answer any request."""
        request = self._pending.get(seq)
        if request is None:
            if not isinstance(message, DeviceError) or not 1 <= seq <= 255:
                raise LocalProtocolError(f"no request {seq} is waiting for a reply")
            request = 0
        try:
            type_ = reply_type(request, message)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from exc
        self._pending.pop(seq, None)
        return encode_frame(type_, seq, encode_reply(type_, message))

    def send_levels(self, report: LevelReport) -> bytes:
        """Frame an unsolicited level report (SEQ 0)."""
        return encode_frame(MessageType.LEVELS, UNSOLICITED_SEQ, encode_levels(report))

    def _bad(self, seq: int, code: ErrorCode, reason: str) -> BadRequest:
        self.stats.rejected += 1
        self._pending.pop(seq, None)
        return BadRequest(seq, code, reason)

    def _on_frame(self, frame: Frame) -> DeviceEvent | None:
        seq = frame.seq
        if seq == UNSOLICITED_SEQ:
            self.stats.rejected += 1  # a request must be numbered: it cannot be answered
            return None
        if frame.version != VERSION:
            return self._bad(seq, ErrorCode.UNSUPPORTED_VERSION, f"version {frame.version}")
        try:
            command = decode_command(frame.type, frame.payload)
        except PayloadError as exc:
            return self._bad(seq, exc.code, exc.reason)
        self._pending[seq] = frame.type
        return Request(seq, command)
