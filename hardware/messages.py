"""Commands, replies and their payloads (specs/mic-module.md, "Messages").

Every message is a frozen dataclass that validates itself on construction, so
an invalid value cannot exist on either side of the link.  Payloads are a
compact fixed binary layout, big-endian; strings are a length byte followed by
UTF-8.  Encoding and decoding are table-driven: one row per frame type gives
its message class and its payload codec.

Decoding raises :class:`PayloadError` (with the protocol error code a device
answers with); :mod:`hardware.connection` turns it into an event, so nothing
escapes from ``receive_data``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from hardware.errors import InvalidSetting

# --------------------------------------------------------------------------- enums


class Pattern(enum.Enum):
    """Polar pattern; the value is its name in the JSON API."""

    CARDIOID = "cardioid"
    SUPERCARDIOID = "supercardioid"
    OMNI = "omni"
    FIGURE8 = "figure8"


class LowCut(enum.Enum):
    """High-pass filter corner; the value is the frequency in Hz (0: off)."""

    OFF = 0
    HZ_80 = 80
    HZ_160 = 160


class Slot(enum.Enum):
    """Where a part sits in the modular microphone."""

    CAPSULE = "capsule"
    PREAMP = "preamp"
    BODY = "body"
    FIRMWARE = "firmware"


class PartStatus(enum.Enum):
    """Outcome of one part's self-test."""

    PASS = "pass"  # noqa: S105 (a test verdict, not a password)
    FAIL = "fail"
    ABSENT = "absent"


class ErrorCode(enum.IntEnum):
    """Codes of ERROR frames; a host accepts any other non-zero code as well."""

    UNKNOWN_COMMAND = 0x01
    BAD_LENGTH = 0x02
    BAD_VALUE = 0x03
    BUSY = 0x04
    HARDWARE_FAULT = 0x05
    UNSUPPORTED_VERSION = 0x06


class MessageType(enum.IntEnum):
    """The TYPE byte.  A reply's type is its request's type | 0x80."""

    PING = 0x01
    IDENTIFY = 0x02
    GET_INFO = 0x03
    GET_SETTINGS = 0x04
    SET = 0x05
    START_LEVELS = 0x06
    STOP_LEVELS = 0x07
    SELF_TEST = 0x08
    PING_REPLY = 0x81
    IDENTIFY_REPLY = 0x82
    INFO_REPLY = 0x83
    SETTINGS_REPLY = 0x84
    SET_REPLY = 0x85
    START_LEVELS_REPLY = 0x86
    STOP_LEVELS_REPLY = 0x87
    SELF_TEST_REPLY = 0x88
    LEVELS = 0xC0
    ERROR = 0xFF


REPLY_FLAG = 0x80

_PATTERN_CODES = {
    Pattern.CARDIOID: 0,
    Pattern.SUPERCARDIOID: 1,
    Pattern.OMNI: 2,
    Pattern.FIGURE8: 3,
}
_LOWCUT_CODES = {LowCut.OFF: 0, LowCut.HZ_80: 1, LowCut.HZ_160: 2}
_SLOT_CODES = {Slot.CAPSULE: 1, Slot.PREAMP: 2, Slot.BODY: 3, Slot.FIRMWARE: 4}
_STATUS_CODES = {PartStatus.PASS: 0, PartStatus.FAIL: 1, PartStatus.ABSENT: 2}

# --------------------------------------------------------------------------- bounds

MAX_GAIN_DB = 60.0
MAX_IDENTIFY_SECONDS = 60
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 10, 1000
MAX_CHANNELS = 4
MAX_PARTS = 8
MAX_NAME_BYTES = 32
MAX_DETAIL_BYTES = 64
MAX_ERROR_MESSAGE_BYTES = 128
FLOOR_DBFS = -120.0
"""Level meters clamp here: silence, mute and anything quieter read -120.00 dBFS."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSetting(message)


def _check_text(value: str, what: str, limit: int, *, empty_ok: bool = False) -> None:
    _check(isinstance(value, str), f"{what} must be a string")
    _check(empty_ok or value != "", f"{what} must not be empty")
    _check(value.isprintable(), f"{what} must be printable text")
    _check(len(value.encode()) <= limit, f"{what} is over {limit} bytes of UTF-8")


def _check_gain(gain_db: float) -> None:
    _check(
        isinstance(gain_db, int | float)
        and not isinstance(gain_db, bool)
        and 0.0 <= gain_db <= MAX_GAIN_DB
        and float(gain_db * 2).is_integer(),
        f"gain must be 0..60 dB in 0.5 dB steps, not {gain_db!r}",
    )


def _check_int(value: int, low: int, high: int, what: str) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        f"{what} must be an integer in {low}..{high}, not {value!r}",
    )


def _check_level(value: float, what: str) -> None:
    _check(
        isinstance(value, int | float) and math.isfinite(value) and FLOOR_DBFS <= value <= 0.0,
        f"{what} must be -120..0 dBFS, not {value!r}",
    )


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Settings:
    """The module's audio settings (GET_SETTINGS and SET replies)."""

    gain_db: float
    pattern: Pattern
    phantom: bool
    low_cut: LowCut
    mute: bool

    def __post_init__(self) -> None:
        _check_gain(self.gain_db)
        _check(isinstance(self.pattern, Pattern), "pattern must be a Pattern")
        _check(isinstance(self.phantom, bool), "phantom must be a bool")
        _check(isinstance(self.low_cut, LowCut), "low_cut must be a LowCut")
        _check(isinstance(self.mute, bool), "mute must be a bool")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (pattern by name, low cut in Hz, 0 meaning off)."""
        return {
            "gain_db": self.gain_db,
            "pattern": self.pattern.value,
            "phantom": self.phantom,
            "low_cut_hz": self.low_cut.value,
            "mute": self.mute,
        }


@dataclass(frozen=True, slots=True)
class Part:
    """One entry of the parts inventory: a repairable, replaceable part."""

    slot: Slot
    model: str
    serial: str
    revision: str

    def __post_init__(self) -> None:
        _check(isinstance(self.slot, Slot), "slot must be a Slot")
        _check_text(self.model, "part model", MAX_NAME_BYTES)
        _check_text(self.serial, "part serial", MAX_NAME_BYTES)
        _check_text(self.revision, "part revision", MAX_NAME_BYTES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot.value,
            "model": self.model,
            "serial": self.serial,
            "revision": self.revision,
        }


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """GET_INFO reply: who the module is and what it is made of."""

    serial: str
    model: str
    firmware: str
    channels: int
    parts: tuple[Part, ...] = ()

    def __post_init__(self) -> None:
        _check_text(self.serial, "module serial", MAX_NAME_BYTES)
        _check_text(self.model, "module model", MAX_NAME_BYTES)
        _check_text(self.firmware, "firmware version", MAX_NAME_BYTES)
        _check_int(self.channels, 1, MAX_CHANNELS, "channel count")
        _check(isinstance(self.parts, tuple), "parts must be a tuple")
        _check(len(self.parts) <= MAX_PARTS, f"at most {MAX_PARTS} parts")
        _check(all(isinstance(p, Part) for p in self.parts), "parts must be Part objects")

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "model": self.model,
            "firmware": self.firmware,
            "channels": self.channels,
            "parts": [part.as_dict() for part in self.parts],
        }


@dataclass(frozen=True, slots=True)
class PartCheck:
    """One part's self-test outcome; ``code`` is the part's own diagnostic (0: none)."""

    slot: Slot
    status: PartStatus
    code: int = 0
    detail: str = ""

    def __post_init__(self) -> None:
        _check(isinstance(self.slot, Slot), "slot must be a Slot")
        _check(isinstance(self.status, PartStatus), "status must be a PartStatus")
        _check_int(self.code, 0, 0xFFFF, "diagnostic code")
        _check_text(self.detail, "detail", MAX_DETAIL_BYTES, empty_ok=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot.value,
            "status": self.status.value,
            "code": self.code,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class SelfTestResult:
    """SELF_TEST reply: one check per part tested."""

    checks: tuple[PartCheck, ...]

    def __post_init__(self) -> None:
        _check(isinstance(self.checks, tuple), "checks must be a tuple")
        _check(len(self.checks) <= MAX_PARTS, f"at most {MAX_PARTS} checks")
        _check(all(isinstance(c, PartCheck) for c in self.checks), "checks must be PartChecks")

    @property
    def passed(self) -> bool:
        """Every part tested passed (an absent part is not a pass)."""
        return all(check.status is PartStatus.PASS for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [check.as_dict() for check in self.checks]}


@dataclass(frozen=True, slots=True)
class ChannelLevel:
    """Meters of one capsule channel over the last interval, in dBFS (resolution 0.01 dB)."""

    peak_dbfs: float
    rms_dbfs: float

    def __post_init__(self) -> None:
        _check_level(self.peak_dbfs, "peak")
        _check_level(self.rms_dbfs, "rms")
        _check(self.rms_dbfs <= self.peak_dbfs, "rms cannot exceed peak")


@dataclass(frozen=True, slots=True)
class LevelReport:
    """Unsolicited LEVELS frame; ``counter`` (mod 65536) reveals lost reports."""

    counter: int
    muted: bool
    channels: tuple[ChannelLevel, ...]

    def __post_init__(self) -> None:
        _check_int(self.counter, 0, 0xFFFF, "report counter")
        _check(isinstance(self.muted, bool), "muted must be a bool")
        _check(isinstance(self.channels, tuple), "channels must be a tuple")
        _check(1 <= len(self.channels) <= MAX_CHANNELS, f"1..{MAX_CHANNELS} channels")
        _check(all(isinstance(c, ChannelLevel) for c in self.channels), "ChannelLevel items")

    def as_dict(self) -> dict[str, Any]:
        return {
            "counter": self.counter,
            "muted": self.muted,
            "channels": [{"peak_dbfs": c.peak_dbfs, "rms_dbfs": c.rms_dbfs} for c in self.channels],
        }


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness check; the reply is empty."""


@dataclass(frozen=True, slots=True)
class Identify:
    """Blink the module's LED for ``seconds`` (0 stops blinking)."""

    seconds: int

    def __post_init__(self) -> None:
        _check_int(self.seconds, 0, MAX_IDENTIFY_SECONDS, "identify seconds")


@dataclass(frozen=True, slots=True)
class GetInfo:
    """Ask for serial, model, firmware, channel count and parts inventory."""


@dataclass(frozen=True, slots=True)
class GetSettings:
    """Ask for the current settings."""


@dataclass(frozen=True, slots=True)
class ChangeSettings:
    """Change the settings given (None: leave as is); all or nothing, replies the result."""

    gain_db: float | None = None
    pattern: Pattern | None = None
    phantom: bool | None = None
    low_cut: LowCut | None = None
    mute: bool | None = None

    def __post_init__(self) -> None:
        if self.gain_db is not None:
            _check_gain(self.gain_db)
        _check(self.pattern is None or isinstance(self.pattern, Pattern), "pattern: Pattern")
        _check(self.phantom is None or isinstance(self.phantom, bool), "phantom: bool")
        _check(self.low_cut is None or isinstance(self.low_cut, LowCut), "low_cut: LowCut")
        _check(self.mute is None or isinstance(self.mute, bool), "mute: bool")

    def apply_to(self, settings: Settings) -> Settings:
        """The settings after this change."""
        return Settings(
            gain_db=settings.gain_db if self.gain_db is None else self.gain_db,
            pattern=settings.pattern if self.pattern is None else self.pattern,
            phantom=settings.phantom if self.phantom is None else self.phantom,
            low_cut=settings.low_cut if self.low_cut is None else self.low_cut,
            mute=settings.mute if self.mute is None else self.mute,
        )


@dataclass(frozen=True, slots=True)
class StartLevels:
    """Start (or re-time) unsolicited LEVELS frames every ``interval_ms``."""

    interval_ms: int

    def __post_init__(self) -> None:
        _check_int(self.interval_ms, MIN_INTERVAL_MS, MAX_INTERVAL_MS, "meter interval (ms)")


@dataclass(frozen=True, slots=True)
class StopLevels:
    """Stop LEVELS frames."""


@dataclass(frozen=True, slots=True)
class SelfTest:
    """Run every part's self-test; may take up to SELF_TEST_BUDGET seconds."""


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Ack:
    """An empty reply: the command was done (PING, IDENTIFY, STOP_LEVELS)."""


@dataclass(frozen=True, slots=True)
class LevelsStarted:
    """START_LEVELS reply with the interval the module will actually use."""

    interval_ms: int

    def __post_init__(self) -> None:
        _check_int(self.interval_ms, MIN_INTERVAL_MS, MAX_INTERVAL_MS, "meter interval (ms)")


@dataclass(frozen=True, slots=True)
class DeviceError:
    """ERROR reply: the module refused or failed the request."""

    code: int
    message: str = ""

    def __post_init__(self) -> None:
        _check_int(self.code, 1, 0xFF, "error code")
        _check_text(self.message, "error message", MAX_ERROR_MESSAGE_BYTES, empty_ok=True)


Command: TypeAlias = (
    Ping | Identify | GetInfo | GetSettings | ChangeSettings | StartLevels | StopLevels | SelfTest
)
Reply: TypeAlias = Ack | ModuleInfo | Settings | LevelsStarted | SelfTestResult | DeviceError
Message: TypeAlias = Command | Reply | LevelReport

# --------------------------------------------------------------------------- codec


class PayloadError(Exception):
    """A payload that does not decode; ``code`` is the ERROR code a device answers with."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason


class _Reader:
    """Cursor over a payload; every shortfall or leftover is a BAD_LENGTH error."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise PayloadError(ErrorCode.BAD_LENGTH, "payload truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def i16(self) -> int:
        return int.from_bytes(self.take(2), "big", signed=True)

    def text(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise PayloadError(ErrorCode.BAD_VALUE, "string is not UTF-8") from exc

    def flag(self, what: str) -> bool:
        value = self.u8()
        if value > 1:
            raise PayloadError(ErrorCode.BAD_VALUE, f"{what} must be 0 or 1, not {value}")
        return value == 1

    def end(self) -> None:
        if self._pos != len(self._data):
            raise PayloadError(ErrorCode.BAD_LENGTH, "trailing bytes after payload")


def _enum_from(codes: dict[Any, int], value: int, what: str) -> Any:
    for member, code in codes.items():
        if code == value:
            return member
    raise PayloadError(ErrorCode.BAD_VALUE, f"unknown {what} code {value}")


def _text(value: str) -> bytes:
    raw = value.encode()
    return bytes((len(raw),)) + raw


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _centi(value: float) -> bytes:
    return round(value * 100).to_bytes(2, "big", signed=True)


def _empty(_: Any) -> bytes:
    return b""


def _settings_body(s: Settings) -> bytes:
    return bytes(
        (
            round(s.gain_db * 2),
            _PATTERN_CODES[s.pattern],
            int(s.phantom),
            _LOWCUT_CODES[s.low_cut],
            int(s.mute),
        )
    )


def _read_settings(r: _Reader) -> Settings:
    gain = r.u8()
    if gain > MAX_GAIN_DB * 2:
        raise PayloadError(ErrorCode.BAD_VALUE, f"gain {gain / 2} dB above 60")
    pattern = _enum_from(_PATTERN_CODES, r.u8(), "pattern")
    phantom = r.flag("phantom")
    low_cut = _enum_from(_LOWCUT_CODES, r.u8(), "low-cut")
    mute = r.flag("mute")
    return Settings(gain / 2, pattern, phantom, low_cut, mute)


# SET mask bits, in payload order.
_MASK_GAIN, _MASK_PATTERN, _MASK_PHANTOM, _MASK_LOWCUT, _MASK_MUTE = 1, 2, 4, 8, 16
_MASK_ALL = 0x1F


def _encode_change(c: ChangeSettings) -> bytes:
    mask = 0
    body = [0, 0, 0, 0, 0]
    if c.gain_db is not None:
        mask |= _MASK_GAIN
        body[0] = round(c.gain_db * 2)
    if c.pattern is not None:
        mask |= _MASK_PATTERN
        body[1] = _PATTERN_CODES[c.pattern]
    if c.phantom is not None:
        mask |= _MASK_PHANTOM
        body[2] = int(c.phantom)
    if c.low_cut is not None:
        mask |= _MASK_LOWCUT
        body[3] = _LOWCUT_CODES[c.low_cut]
    if c.mute is not None:
        mask |= _MASK_MUTE
        body[4] = int(c.mute)
    return bytes((mask, *body))


def _decode_change(r: _Reader) -> ChangeSettings:
    mask = r.u8()
    if mask & ~_MASK_ALL:
        raise PayloadError(ErrorCode.BAD_VALUE, f"reserved SET mask bits 0x{mask:02x}")
    gain, pattern, phantom, low_cut, mute = r.take(5)
    if mask & _MASK_GAIN and gain > MAX_GAIN_DB * 2:
        raise PayloadError(ErrorCode.BAD_VALUE, f"gain {gain / 2} dB above 60")
    for bit, value, what in ((_MASK_PHANTOM, phantom, "phantom"), (_MASK_MUTE, mute, "mute")):
        if mask & bit and value > 1:
            raise PayloadError(ErrorCode.BAD_VALUE, f"{what} must be 0 or 1, not {value}")
    return ChangeSettings(
        gain_db=gain / 2 if mask & _MASK_GAIN else None,
        pattern=_enum_from(_PATTERN_CODES, pattern, "pattern") if mask & _MASK_PATTERN else None,
        phantom=phantom == 1 if mask & _MASK_PHANTOM else None,
        low_cut=_enum_from(_LOWCUT_CODES, low_cut, "low-cut") if mask & _MASK_LOWCUT else None,
        mute=mute == 1 if mask & _MASK_MUTE else None,
    )


def _encode_info(info: ModuleInfo) -> bytes:
    out = _text(info.serial) + _text(info.model) + _text(info.firmware)
    out += bytes((info.channels, len(info.parts)))
    for part in info.parts:
        out += bytes((_SLOT_CODES[part.slot],))
        out += _text(part.model) + _text(part.serial) + _text(part.revision)
    return out


def _decode_info(r: _Reader) -> ModuleInfo:
    serial, model, firmware = r.text(), r.text(), r.text()
    channels, count = r.u8(), r.u8()
    if count > MAX_PARTS:
        raise PayloadError(ErrorCode.BAD_VALUE, f"{count} parts, at most {MAX_PARTS}")
    parts = tuple(
        Part(_enum_from(_SLOT_CODES, r.u8(), "slot"), r.text(), r.text(), r.text())
        for _ in range(count)
    )
    return ModuleInfo(serial, model, firmware, channels, parts)


def _encode_self_test(result: SelfTestResult) -> bytes:
    out = bytes((len(result.checks),))
    for check in result.checks:
        out += bytes((_SLOT_CODES[check.slot], _STATUS_CODES[check.status]))
        out += _u16(check.code) + _text(check.detail)
    return out


def _decode_self_test(r: _Reader) -> SelfTestResult:
    count = r.u8()
    if count > MAX_PARTS:
        raise PayloadError(ErrorCode.BAD_VALUE, f"{count} checks, at most {MAX_PARTS}")
    checks = tuple(
        PartCheck(
            _enum_from(_SLOT_CODES, r.u8(), "slot"),
            _enum_from(_STATUS_CODES, r.u8(), "status"),
            r.u16(),
            r.text(),
        )
        for _ in range(count)
    )
    return SelfTestResult(checks)


def _encode_levels(report: LevelReport) -> bytes:
    out = _u16(report.counter) + bytes((int(report.muted), len(report.channels)))
    for channel in report.channels:
        out += _centi(channel.peak_dbfs) + _centi(channel.rms_dbfs)
    return out


def _decode_levels(r: _Reader) -> LevelReport:
    counter = r.u16()
    muted = bool(r.u8() & 0x01)  # bits 1..7 are reserved: ignored on receipt
    count = r.u8()
    if not 1 <= count <= MAX_CHANNELS:
        raise PayloadError(ErrorCode.BAD_VALUE, f"{count} channels, 1..{MAX_CHANNELS}")
    channels = tuple(ChannelLevel(r.i16() / 100, r.i16() / 100) for _ in range(count))
    return LevelReport(counter, muted, channels)


def _decode_error(r: _Reader) -> DeviceError:
    code = r.u8()
    if code == 0:
        raise PayloadError(ErrorCode.BAD_VALUE, "error code 0")
    return DeviceError(code, r.text())


@dataclass(frozen=True, slots=True)
class _Row:
    """One frame type: its message class and payload codec."""

    code: MessageType
    message: type[Any]
    encode: Callable[[Any], bytes]
    decode: Callable[[_Reader], Any]


_COMMAND_ROWS = (
    _Row(MessageType.PING, Ping, _empty, lambda r: Ping()),
    _Row(MessageType.IDENTIFY, Identify, lambda c: bytes((c.seconds,)), lambda r: Identify(r.u8())),
    _Row(MessageType.GET_INFO, GetInfo, _empty, lambda r: GetInfo()),
    _Row(MessageType.GET_SETTINGS, GetSettings, _empty, lambda r: GetSettings()),
    _Row(MessageType.SET, ChangeSettings, _encode_change, _decode_change),
    _Row(
        MessageType.START_LEVELS,
        StartLevels,
        lambda c: _u16(c.interval_ms),
        lambda r: StartLevels(r.u16()),
    ),
    _Row(MessageType.STOP_LEVELS, StopLevels, _empty, lambda r: StopLevels()),
    _Row(MessageType.SELF_TEST, SelfTest, _empty, lambda r: SelfTest()),
)
_REPLY_ROWS = (
    _Row(MessageType.PING_REPLY, Ack, _empty, lambda r: Ack()),
    _Row(MessageType.IDENTIFY_REPLY, Ack, _empty, lambda r: Ack()),
    _Row(MessageType.INFO_REPLY, ModuleInfo, _encode_info, _decode_info),
    _Row(MessageType.SETTINGS_REPLY, Settings, _settings_body, _read_settings),
    _Row(MessageType.SET_REPLY, Settings, _settings_body, _read_settings),
    _Row(
        MessageType.START_LEVELS_REPLY,
        LevelsStarted,
        lambda m: _u16(m.interval_ms),
        lambda r: LevelsStarted(r.u16()),
    ),
    _Row(MessageType.STOP_LEVELS_REPLY, Ack, _empty, lambda r: Ack()),
    _Row(MessageType.SELF_TEST_REPLY, SelfTestResult, _encode_self_test, _decode_self_test),
    _Row(
        MessageType.ERROR,
        DeviceError,
        lambda m: bytes((m.code,)) + _text(m.message),
        _decode_error,
    ),
)
_LEVELS_ROW = _Row(MessageType.LEVELS, LevelReport, _encode_levels, _decode_levels)

_COMMAND_BY_CLASS = {row.message: row for row in _COMMAND_ROWS}
_COMMAND_BY_TYPE = {int(row.code): row for row in _COMMAND_ROWS}
_REPLY_BY_TYPE = {int(row.code): row for row in _REPLY_ROWS}
COMMAND_TYPES = frozenset(_COMMAND_BY_TYPE)
REPLY_TYPES = frozenset(_REPLY_BY_TYPE)


def _decode(row: _Row, payload: bytes) -> Any:
    reader = _Reader(payload)
    try:
        message = row.decode(reader)
    except InvalidSetting as exc:  # a field decoded but its value is out of range
        raise PayloadError(ErrorCode.BAD_VALUE, str(exc)) from exc
    reader.end()
    return message


def encode_command(command: Command) -> tuple[int, bytes]:
    """(TYPE, payload) of a command."""
    row = _COMMAND_BY_CLASS[type(command)]
    return int(row.code), row.encode(command)


def decode_command(type_: int, payload: bytes) -> Command:
    """The command a request frame carries; PayloadError when it carries none."""
    row = _COMMAND_BY_TYPE.get(type_)
    if row is None:
        raise PayloadError(ErrorCode.UNKNOWN_COMMAND, f"unknown command type 0x{type_:02x}")
    command: Command = _decode(row, payload)
    return command


def reply_type(request_type: int, reply: Reply) -> int:
    """The TYPE of ``reply`` to a request of ``request_type``; ValueError if it cannot answer it."""
    if isinstance(reply, DeviceError):
        return int(MessageType.ERROR)
    row = _REPLY_BY_TYPE.get(request_type | REPLY_FLAG)
    if row is None or not isinstance(reply, row.message):
        raise ValueError(f"{type(reply).__name__} does not answer request 0x{request_type:02x}")
    return int(row.code)


def encode_reply(type_: int, reply: Reply) -> bytes:
    """The payload of a reply frame of TYPE ``type_`` (from :func:`reply_type`)."""
    payload: bytes = _REPLY_BY_TYPE[type_].encode(reply)
    return payload


def decode_reply(type_: int, payload: bytes) -> Reply:
    """The reply a reply or ERROR frame carries; PayloadError when it carries none."""
    row = _REPLY_BY_TYPE.get(type_)
    if row is None:
        raise PayloadError(ErrorCode.UNKNOWN_COMMAND, f"unknown reply type 0x{type_:02x}")
    reply: Reply = _decode(row, payload)
    return reply


def encode_levels(report: LevelReport) -> bytes:
    return _encode_levels(report)


def decode_levels(payload: bytes) -> LevelReport:
    report: LevelReport = _decode(_LEVELS_ROW, payload)
    return report
