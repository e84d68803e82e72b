"""Checks on uploaded audio before it enters the library.

An upload is hostile until proven otherwise: it is served to browsers and
replicated to peers.  :func:`probe_audio` accepts only a short list of
containers and codecs and refuses files whose headers promise more audio than
the file holds (a WAV claiming 4 GB, a cut-off FLAC or Ogg), absurd sample
rates or channel counts, and files whose first frames do not decode.

The work is bounded whatever the input: FFmpeg reads through a wrapper that
gives up at a wall-clock deadline and after too many bytes without an audio
packet; packets are demuxed, not decoded (only the first few frames are); and
past a cap the end of a long file is checked by seeking instead of reading it.

Every refusal is a :class:`BadMedia` whose message is meant for the uploader.
:func:`probe_audio` blocks; trio code calls it through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from node.errors import RemoteError

if TYPE_CHECKING:  # PyAV loads FFmpeg (~17 MB): only when a file is probed
    import av
    from av.audio.frame import AudioFrame
    from av.audio.stream import AudioStream
    from av.container import InputContainer

MAX_TRACK_BYTES = 200 * 1024 * 1024
MIN_SAMPLE_RATE = 1
MAX_SAMPLE_RATE = 768_000
MIN_CHANNELS = 1
MAX_CHANNELS = 64
PROBE_SECONDS = 1.5
"""Wall-clock budget for one probe; honest files up to the cap need a small fraction."""

MAX_FILENAME_CHARS = 120
MAX_FILENAME_BYTES = 240

_SCAN_PACKETS = 20_000
_SCAN_BYTES = 16 * 1024 * 1024
_SCAN_SECONDS = PROBE_SECONDS / 3
"""Caps on demuxing from the start before switching to a seek near the claimed end.

Typical tracks are read in full, which measures their length exactly; past any
cap (long files, a slow board or slow storage) only the last seconds are read.
"""
_OPEN_BYTES = 48 * 1024 * 1024
"""Reading allowed while FFmpeg opens the file: headers, cover art, an MP4 index at the end."""
_GAP_BYTES = 16 * 1024 * 1024
"""Reading allowed between two audio packets, or for a seek; far above any real frame."""
_TAIL_SECONDS = 2
_TAIL_PACKETS = 5_000
_DECODE_FRAMES = 3
_DECODE_PACKETS = 64
_READ_TIMEOUT = 0.5
_IO_BUFFER = 64 * 1024
_MAX_RIFF_CHUNKS = 64
_MP3_SYNC_WINDOW = 64 * 1024
_OGG_MAX_PAGE = 27 + 255 + 255 * 255

_PCM = frozenset(
    {
        "pcm_u8", "pcm_s8",
        "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le",
        "pcm_s16be", "pcm_s24be", "pcm_s32be", "pcm_f32be", "pcm_f64be",
    }
)  # fmt: skip


@dataclass(frozen=True)
class _Format:
    container: str
    mime: str
    codecs: frozenset[str]
    label: str


_FORMATS: dict[str, _Format] = {
    "wav": _Format("wav", "audio/wav", _PCM, "WAV"),
    "aiff": _Format("aiff", "audio/aiff", _PCM, "AIFF"),
    "flac": _Format("flac", "audio/flac", frozenset({"flac"}), "FLAC"),
    "mp3": _Format("mp3", "audio/mpeg", frozenset({"mp3"}), "MP3"),
    "ogg": _Format("ogg", "audio/ogg", frozenset({"vorbis", "opus"}), "Ogg"),
    "mov,mp4,m4a,3gp,3g2,mj2": _Format("mp4", "audio/mp4", frozenset({"aac", "alac"}), "MP4"),
}
_SUPPORTED = "WAV, AIFF, FLAC, MP3, Ogg (Vorbis or Opus) and M4A (AAC or ALAC)"
_CONTAINER_OPTIONS = {
    # Only our demuxers may even parse the header (no playlists, no image or text formats).
    "format_whitelist": "wav,aiff,flac,mp3,ogg,mov",
    # Nothing may open a second file or URL (MP4 data references, playlists).
    "protocol_whitelist": "none",
    "probesize": str(1024 * 1024),
    "analyzeduration": str(2_000_000),
    "max_streams": "16",
}

_UNREADABLE = f"This is not an audio file we can read. Supported formats: {_SUPPORTED}."
_TOO_SLOW = "The file took too long to read; it is probably damaged."
_JUNK = "The file contains a long stretch of data that is not audio; it is probably damaged."
_NO_AUDIO = "The file contains no audio."


class BadMedia(RemoteError, ValueError):
    """An uploaded file is not audio we accept; the message is safe to show the uploader."""


@dataclass(frozen=True)
class AudioInfo:
    """What the library records about a checked upload; every field comes from the file."""

    mime: str
    container: str
    codec: str
    duration_ms: int
    sample_rate: int
    channels: int


def probe_audio(path: Path) -> AudioInfo:
    """Check that ``path`` is one honest audio track we accept, and describe it.

    Raises :class:`BadMedia` for anything else, within about :data:`PROBE_SECONDS`.
    """
    import av  # lazy: FFmpeg loads only when a file is probed
    import av.error

    deadline = time.monotonic() + PROBE_SECONDS
    with contextlib.suppress(Exception):
        av.error.err_check(0)  # drop an exception PyAV stashed for this thread and never raised
    try:
        with _open_regular(path) as handle:
            fd = handle.fileno()
            size = os.fstat(fd).st_size
            if size == 0:
                raise BadMedia("The file is empty.")
            if size > MAX_TRACK_BYTES:
                raise BadMedia(f"The file is larger than {_human(MAX_TRACK_BYTES)}.")
            _check_wav_header(fd, size)
            reader = _BoundedReader(handle, deadline, _OPEN_BYTES)
            with av.open(
                reader,
                "r",
                container_options=_CONTAINER_OPTIONS,
                timeout=(PROBE_SECONDS, _READ_TIMEOUT),
                buffer_size=_IO_BUFFER,
            ) as container:
                info = _inspect(container, reader, fd, size, deadline)
            av.error.err_check(0)  # raises what our reader raised if FFmpeg swallowed it
            if reader.stopped is not None:
                raise reader.stopped
            return info
    except BadMedia:
        raise
    except (_TookTooLong, av.error.ExitError) as exc:
        raise BadMedia(_TOO_SLOW) from exc
    except _NotAudioData as exc:
        raise BadMedia(_JUNK) from exc
    except (av.error.FFmpegError, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise BadMedia(_UNREADABLE) from exc


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO]:
    """Open ``path`` without blocking on a FIFO, and refuse anything but a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadMedia("The upload is not a regular file.")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


class _TookTooLong(Exception):
    """Raised inside PyAV's read callback once the probe's deadline has passed."""


class _NotAudioData(Exception):
    """Raised inside PyAV's read callback when FFmpeg reads far without finding audio."""


class _BoundedReader:
    """File wrapper for PyAV that bounds what FFmpeg does between our own checks.

    Each read checks the deadline and draws on a byte allowance that is renewed
    after every packet.  Reads are the one thing every demuxer loop does, so
    this reaches inside FFmpeg: fed 200 MB of zeros after one valid frame, a
    parser would otherwise build a single giant packet, taking that much
    memory and seconds of CPU.  PyAV re-raises our exception at its next error
    check; later reads return end-of-file so that only one is ever pending.
    """

    def __init__(self, raw: BinaryIO, deadline: float, allowance: int) -> None:
        self._raw = raw
        self._deadline = deadline
        self.allowance = allowance
        self.total = 0
        self.stopped: Exception | None = None

    def read(self, size: int = -1) -> bytes:
        if self.stopped is not None:
            return b""
        if time.monotonic() > self._deadline:
            self.stopped = _TookTooLong()
            raise self.stopped
        data = self._raw.read(size if size >= 0 else _IO_BUFFER)
        self.allowance -= len(data)
        self.total += len(data)
        if self.allowance < 0:
            self.stopped = _NotAudioData()
            raise self.stopped
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _inspect(
    container: InputContainer, reader: _BoundedReader, fd: int, size: int, deadline: float
) -> AudioInfo:
    """Everything after opening: streams, codec, limits, decoding, and the length check."""
    fmt = _FORMATS.get(container.format.name)
    if fmt is None:
        raise BadMedia(_UNREADABLE)
    stream = _single_audio_stream(container)
    codec = stream.codec_context.codec.canonical_name
    if codec not in fmt.codecs:
        raise BadMedia(
            f"This {fmt.label} file uses the {codec} codec, which is not supported. "
            f"Supported formats: {_SUPPORTED}."
        )
    _check_rate_and_channels(stream.codec_context.sample_rate, stream.codec_context.channels)
    time_base = stream.time_base
    if time_base is None or time_base <= 0:
        raise BadMedia(_UNREADABLE)
    if fmt.container == "ogg" and not _ogg_ends_cleanly(fd, size):
        # Ogg has no length header: a cut-off file shows only as a missing last page.
        raise BadMedia("The file is truncated: it stops before the end of its Ogg stream.")
    claimed = _claimed_ticks(container, stream, time_base)
    # An MP3 without a Xing/VBRI header has only FFmpeg's bitrate guess for a length.
    trust_claim = claimed is not None and (fmt.container != "mp3" or _mp3_has_length(fd))

    scan = _scan(container, stream, reader, deadline)
    if scan.first is None or scan.end is None or scan.decoded is None:
        raise BadMedia(_NO_AUDIO)
    first, end = scan.first, scan.end
    if claimed is not None and not scan.complete:
        if trust_claim:
            end = _tail_end(container, stream, reader, first + claimed, time_base, deadline)
        else:
            end = first + claimed
    elif not scan.complete:
        raise BadMedia("The file is too long to check and its header gives no length.")
    ticks = end - first
    if trust_claim and claimed is not None:
        slack = max(claimed // 100, int(Fraction(1, 4) / time_base))
        if ticks < claimed - slack:
            raise BadMedia(
                f"The file is truncated or damaged: its header promises "
                f"{_clock(claimed * time_base)} of audio but only "
                f"{_clock(max(ticks, 0) * time_base)} is there."
            )
        if claimed <= ticks <= claimed + slack:
            ticks = claimed  # packet ends include encoder padding the header leaves out
    # Negative timestamps are encoder priming (AAC, Opus pre-skip), not audio.
    ticks = min(ticks, end - max(first, 0))
    duration_ms = int(ticks * time_base * 1000)
    if duration_ms <= 0:
        raise BadMedia("The file contains no audio (its duration is zero).")
    rate, channels = scan.decoded
    return AudioInfo(
        mime=fmt.mime,
        container=fmt.container,
        codec=codec,
        duration_ms=duration_ms,
        sample_rate=rate,
        channels=channels,
    )


def _single_audio_stream(container: InputContainer) -> AudioStream:
    """The one audio stream; cover art is fine, real video and extra audio tracks are not."""
    from av.stream import Disposition

    video = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    audio = list(container.streams.audio)
    if not audio:
        raise BadMedia("The file contains video but no audio." if video else _NO_AUDIO)
    if video:
        raise BadMedia("The file contains video; upload the audio on its own.")
    if len(audio) > 1:
        raise BadMedia(
            f"The file contains {len(audio)} audio tracks; upload a file with exactly one."
        )
    return audio[0]


def _check_rate_and_channels(rate: int, channels: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadMedia(
            f"The sample rate ({rate} Hz) is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz."
        )
    if not MIN_CHANNELS <= channels <= MAX_CHANNELS:
        raise BadMedia(
            f"The file has {channels} audio channels; {MIN_CHANNELS}-{MAX_CHANNELS} are allowed."
        )


def _claimed_ticks(
    container: InputContainer, stream: AudioStream, time_base: Fraction
) -> int | None:
    """The length the headers announce, in the stream's time base, or None if unknown."""
    import av

    if stream.duration is not None and stream.duration > 0:
        return stream.duration
    if container.duration is not None and container.duration > 0:
        return int(Fraction(container.duration, av.time_base) / time_base)
    return None


@dataclass
class _Scan:
    first: int | None = None
    end: int | None = None
    complete: bool = False
    decoded: tuple[int, int] | None = None


def _scan(
    container: InputContainer, stream: AudioStream, reader: _BoundedReader, deadline: float
) -> _Scan:
    """Demux from the start, decoding only the first frames, until EOF or a cap."""
    scan = _Scan()
    frames = tried = packets = 0
    stop_at = min(time.monotonic() + _SCAN_SECONDS, deadline)
    stop_after = reader.total + _SCAN_BYTES
    reader.allowance = _GAP_BYTES
    for packet in container.demux(stream):
        reader.allowance = _GAP_BYTES
        now = time.monotonic()
        if now > deadline:
            raise BadMedia(_TOO_SLOW)
        if packet.size == 0:
            continue  # PyAV's flush packet at EOF
        packets += 1
        if packet.pts is not None:
            if scan.first is None or packet.pts < scan.first:
                scan.first = packet.pts
            packet_end = packet.pts + (packet.duration or 0)
            if scan.end is None or packet_end > scan.end:
                scan.end = packet_end
        if frames < _DECODE_FRAMES and tried < _DECODE_PACKETS:
            tried += 1
            frames += _decode(stream, packet, scan)
        if packets >= _SCAN_PACKETS or reader.total > stop_after or now > stop_at:
            break
    else:
        scan.complete = True
        if packets and frames == 0:
            frames += _decode(stream, None, scan)
    if packets and frames == 0:
        raise BadMedia("The audio could not be decoded; the file is damaged.")
    return scan


def _decode(stream: AudioStream, packet: av.Packet[AudioStream] | None, scan: _Scan) -> int:
    """Decode one packet (None flushes); check and count the frames it yields."""
    import av.error

    try:
        frames: list[AudioFrame] = stream.decode(packet)
    except av.error.FFmpegError as exc:
        raise BadMedia("The audio could not be decoded; the file is damaged.") from exc
    count = 0
    for frame in frames:
        if frame.samples <= 0:
            continue
        _check_rate_and_channels(frame.sample_rate, frame.layout.nb_channels)
        if scan.decoded is None:
            scan.decoded = (frame.sample_rate, frame.layout.nb_channels)
        count += 1
    return count


def _tail_end(
    container: InputContainer,
    stream: AudioStream,
    reader: _BoundedReader,
    claimed_end: int,
    time_base: Fraction,
    deadline: float,
) -> int:
    """Seek shortly before the claimed end and return where the audio really stops (0: none)."""
    reader.allowance = _GAP_BYTES
    container.seek(max(claimed_end - int(_TAIL_SECONDS / time_base), 0), stream=stream)
    end = 0
    packets = 0
    for packet in container.demux(stream):
        reader.allowance = _GAP_BYTES
        if time.monotonic() > deadline:
            raise BadMedia(_TOO_SLOW)
        if packet.size == 0 or packet.pts is None:
            continue
        packets += 1
        if packets > _TAIL_PACKETS:
            raise BadMedia(
                "The file holds much more audio than its header says "
                f"({_clock(claimed_end * time_base)}); it is damaged or several files "
                "joined together. Export it again."
            )
        end = max(end, packet.pts + (packet.duration or 0))
    return end


def _pread(fd: int, size: int, offset: int) -> bytes:
    """Read without moving the file offset FFmpeg is using."""
    return os.pread(fd, size, offset) if offset >= 0 else b""


def _check_wav_header(fd: int, size: int) -> None:
    """Check a WAV's format fields and compare its data chunk's size with the bytes present.

    FFmpeg quietly clamps an oversized (or 0xFFFFFFFF "unknown") data size to
    the file, but other players trust the header, so such files are refused
    here.  Anything that is not RIFF/RF64/BW64 WAVE is left to FFmpeg.
    """
    head = _pread(fd, 12, 0)
    magic = head[:4]
    if len(head) < 12 or magic not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
        return
    offset = 12
    ds64_data: int | None = None
    for _ in range(_MAX_RIFF_CHUNKS):
        chunk = _pread(fd, 8 + 16, offset)
        if len(chunk) < 8:
            raise BadMedia("The WAV file ends before its audio starts; it is truncated.")
        chunk_id = chunk[:4]
        (chunk_size,) = struct.unpack("<I", chunk[4:8])
        body = chunk[8:]
        if chunk_id == b"fmt ":
            if chunk_size < 16 or len(body) < 8:
                raise BadMedia("The WAV file's format header is damaged.")
            channels, rate = struct.unpack("<2xHI", body[:8])
            _check_rate_and_channels(rate, channels)
        elif chunk_id == b"ds64" and magic != b"RIFF" and len(body) >= 16:
            (ds64_data,) = struct.unpack("<Q", body[8:16])
        elif chunk_id == b"data":
            declared = chunk_size
            if magic != b"RIFF" and chunk_size == 0xFFFFFFFF and ds64_data is not None:
                declared = ds64_data
            present = max(size - offset - 8, 0)
            if declared == 0 and present == 0:
                raise BadMedia(_NO_AUDIO)
            if declared == 0 or declared > present:
                # A lie, a cut-off file, or 0 / 0xFFFFFFFF from a recorder that never
                # finished its header: other players would trust the wrong number.
                raise BadMedia(
                    f"The WAV header says it holds {_human(declared)} of audio but the file "
                    f"has {_human(present)}; it is truncated or damaged. Export it again."
                )
            return
        offset += 8 + chunk_size + (chunk_size & 1)
    raise BadMedia("The WAV file has too many chunks before its audio.")


def _mp3_has_length(fd: int) -> bool:
    """Whether the first MP3 frame is a Xing/Info header with a frame count, or VBRI.

    Without one, FFmpeg's duration is a guess from the bitrate, so a mismatch
    with what the packets say is no lie and must not be refused.
    """
    offset = 0
    for _ in range(4):  # ID3v2 tags, possibly more than one
        tag = _pread(fd, 10, offset)
        if len(tag) < 10 or tag[:3] != b"ID3":
            break
        if any(b & 0x80 for b in tag[6:10]):
            return False
        length = (tag[6] << 21) | (tag[7] << 14) | (tag[8] << 7) | tag[9]
        offset += 10 + length + (10 if tag[5] & 0x10 else 0)
    window = _pread(fd, _MP3_SYNC_WINDOW, offset)
    for start in range(len(window) - 4):
        if window[start] != 0xFF or window[start + 1] & 0xE0 != 0xE0:
            continue
        version = (window[start + 1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        layer = (window[start + 1] >> 1) & 3  # 1: Layer III
        if version == 1 or layer != 1 or window[start + 2] >> 4 == 15:
            continue
        mono = window[start + 3] >> 6 == 3
        side_info = (17 if mono else 32) if version == 3 else (9 if mono else 17)
        xing = start + 4 + side_info
        if window[xing : xing + 4] in (b"Xing", b"Info"):
            flags = window[xing + 4 : xing + 8]
            return len(flags) == 4 and bool(flags[3] & 1)
        return window[start + 36 : start + 40] == b"VBRI"
    return False


def _ogg_ends_cleanly(fd: int, size: int) -> bool:
    """Whether the last Ogg page is complete and flagged end-of-stream."""
    start = max(size - _OGG_MAX_PAGE, 0)
    tail = _pread(fd, size - start, start)
    at = tail.rfind(b"OggS")
    while at >= 0:
        header = tail[at : at + 27]
        if len(header) == 27 and header[4] == 0:
            segments = header[26]
            lacing = tail[at + 27 : at + 27 + segments]
            page_end = at + 27 + segments + sum(lacing)
            return len(lacing) == segments and page_end <= len(tail) and bool(header[5] & 4)
        at = tail.rfind(b"OggS", 0, at)
    return False


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _clock(seconds: Fraction) -> str:
    total = int(seconds)
    if total >= 3600:
        return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"
    if total >= 60:
        return f"{total // 60}:{total % 60:02d}"
    return f"{float(seconds):.2f} s"


# --- file names --------------------------------------------------------------

_SEPARATORS = re.compile(r"[/\\]")
_WINDOWS_UNSAFE = str.maketrans(dict.fromkeys('<>:"|?*', "_"))
_SAFE_EXTENSION = re.compile(r"[A-Za-z0-9]{1,10}")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{name}{digit}" for name in ("COM", "LPT") for digit in "0123456789¹²³"}
)


def sanitise_filename(name: str) -> str:
    """A display and download name that is safe on any OS, from whatever the client sent.

    Only the last path component survives (either separator), so ``../../x``
    becomes ``x``; control and format characters (NUL, bidi overrides) go,
    whitespace collapses, leading dots go (no hidden files), characters Windows
    forbids become ``_``, and long names are cut to 120 characters keeping a
    plain extension.  Returns ``upload`` if nothing is left.
    """
    text = _SEPARATORS.split(unicodedata.normalize("NFC", name))[-1]
    kept = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        elif not unicodedata.category(char).startswith("C"):
            kept.append(char)
    text = " ".join("".join(kept).translate(_WINDOWS_UNSAFE).split()).strip(". ")
    stem, dot, extension = text.rpartition(".")
    if not (dot and stem and _SAFE_EXTENSION.fullmatch(extension)):
        stem, extension = text, ""
    suffix = f".{extension}" if extension else ""
    if stem.split(".")[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        stem = "_" + stem
    stem = _fit(stem, MAX_FILENAME_CHARS - len(suffix), MAX_FILENAME_BYTES - len(suffix))
    return stem + suffix if stem else "upload"


def _fit(stem: str, max_chars: int, max_bytes: int) -> str:
    """Cut ``stem`` to both limits and tidy the new end."""
    stem = stem[:max_chars]
    while len(stem.encode()) > max_bytes:
        stem = stem[:-1]
    return stem.rstrip(". ")
