"""Test media made on the fly, so the suite ships no binary fixtures.

The RIFF/AIFF/PNG builders are pure Python (struct, math, array), which lets
them write headers that lie; :func:`encoded_audio` and :func:`video_only_mp4`
use PyAV's encoders for the compressed formats.
"""

from __future__ import annotations

import array
import io
import math
import random
import struct
import sys
import tempfile
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av

U32_MAX = 0xFFFFFFFF


def pcm_samples(
    seconds: float = 1.0,
    rate: int = 48000,
    channels: int = 1,
    freq: float = 440.0,
    bits: int = 16,
    *,
    big_endian: bool = False,
) -> bytes:
    """Interleaved integer PCM of a sine tone, as WAV/AIFF store it (8-bit is unsigned)."""
    if bits not in (8, 16, 24, 32):
        raise ValueError("bits must be 8, 16, 24 or 32")
    frames = round(seconds * rate)
    peak = (1 << (bits - 1)) - 1
    step = 2 * math.pi * freq / rate
    values = [round(0.5 * peak * math.sin(step * n)) for n in range(frames)]
    if bits == 8:
        return bytes(v + 128 for v in values for _ in range(channels))
    if bits == 24:
        order: Literal["big", "little"] = "big" if big_endian else "little"
        one = b"".join(v.to_bytes(3, order, signed=True) for v in values)
        if channels == 1:
            return one
        return b"".join(one[i : i + 3] * channels for i in range(0, len(one), 3))
    samples = array.array("h" if bits == 16 else "i", (v for v in values for _ in range(channels)))
    if (sys.byteorder == "big") != big_endian:
        samples.byteswap()
    return samples.tobytes()


def wav_header(
    *,
    rate: int,
    channels: int,
    bits: int,
    data_size: int,
    riff_size: int | None = None,
    magic: bytes = b"RIFF",
) -> bytes:
    """A canonical 44-byte PCM WAV header; every field is taken as given so tests can lie."""
    block_align = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", 1, channels & 0xFFFF, rate & U32_MAX, (rate * block_align) & U32_MAX,
        block_align & 0xFFFF, bits,
    )  # fmt: skip
    if riff_size is None:
        riff_size = min(4 + 8 + len(fmt) + 8 + data_size, U32_MAX)
    return (
        magic
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", min(data_size, U32_MAX))
    )


def wav_bytes(
    seconds: float = 1.0,
    rate: int = 48000,
    channels: int = 1,
    freq: float = 440.0,
    bits: int = 16,
) -> bytes:
    """An honest PCM WAV file holding a sine tone."""
    data = pcm_samples(seconds, rate, channels, freq, bits)
    pad = b"\x00" if len(data) % 2 else b""
    return wav_header(rate=rate, channels=channels, bits=bits, data_size=len(data)) + data + pad


def lying_wav(claimed_bytes: int = 4 * 1024**3, actual_seconds: float = 0.05) -> bytes:
    """A WAV whose data chunk claims ``claimed_bytes`` (capped at 0xFFFFFFFF) but holds a few KB."""
    data = pcm_samples(actual_seconds, 48000, 2, 440.0, 16)
    header = wav_header(rate=48000, channels=2, bits=16, data_size=claimed_bytes)
    return header + data


def wav_with_format(rate: int, channels: int, bits: int = 16, data_bytes: int = 4800) -> bytes:
    """A WAV with any (even absurd) rate and channel count and ``data_bytes`` of silence."""
    data = bytes(data_bytes)
    return wav_header(rate=rate, channels=channels, bits=bits, data_size=len(data)) + data


def _extended80(value: int) -> bytes:
    """Encode a positive integer as the IEEE 754 80-bit extended float AIFF uses for its rate."""
    exponent = value.bit_length() - 1
    mantissa = value << (63 - exponent)
    return struct.pack(">HQ", 16383 + exponent, mantissa)


def aiff_bytes(
    seconds: float = 1.0,
    rate: int = 44100,
    channels: int = 2,
    *,
    claimed_frames: int | None = None,
) -> bytes:
    """A 16-bit AIFF; ``claimed_frames`` makes COMM claim more sample frames than SSND holds."""
    data = pcm_samples(seconds, rate, channels, 440.0, 16, big_endian=True)
    frames = len(data) // (2 * channels) if claimed_frames is None else claimed_frames
    comm = struct.pack(">hIh", channels, frames, 16) + _extended80(rate)
    ssnd = struct.pack(">II", 0, 0) + data
    body = b"AIFF"
    body += b"COMM" + struct.pack(">I", len(comm)) + comm
    body += b"SSND" + struct.pack(">I", len(ssnd)) + ssnd
    return b"FORM" + struct.pack(">I", len(body)) + body


def rf64_wav(seconds: float = 1.0, *, claimed_bytes: int | None = None) -> bytes:
    """An RF64 WAV (sizes in a ds64 chunk), optionally claiming ``claimed_bytes`` of audio."""
    data = encoded_audio("wav", "pcm_s16le", seconds, container_options={"rf64": "always"})
    if claimed_bytes is None:
        return data
    at = data.index(b"ds64") + 8 + 8  # riffSize comes first, then dataSize
    return data[:at] + struct.pack("<Q", claimed_bytes) + data[at + 8 :]


def with_id3_cover(mp3: bytes, picture_bytes: int) -> bytes:
    """``mp3`` behind an ID3v2.3 tag holding a cover picture of about ``picture_bytes``."""
    picture = png_bytes() + random_bytes(picture_bytes)
    body = b"\x00image/png\x00\x03\x00" + picture  # encoding, MIME, front cover, no description
    frame = b"APIC" + struct.pack(">I", len(body)) + b"\x00\x00" + body
    size = len(frame)
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + frame + mp3


def png_bytes(width: int = 4, height: int = 4) -> bytes:
    """A small valid grey PNG image."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & U32_MAX
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes([0x80] * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def random_bytes(size: int = 64 * 1024, seed: int = 1) -> bytes:
    """Deterministic noise."""
    return random.Random(seed).randbytes(size)


def text_bytes() -> bytes:
    """A plain-text file, the kind users upload by mistake."""
    return ("Track list\n1. Nocturne\n2. Ballad\n" * 200).encode()


def _tone_frame(
    samples: int, start: int, rate: int, channels: int, *, silent: bool = False
) -> av.AudioFrame:
    """A planar float frame of a 440 Hz tone (or silence) starting at sample ``start``."""
    layout = "mono" if channels == 1 else "stereo"
    frame = av.AudioFrame(format="fltp", layout=layout, samples=samples)
    step = 2 * math.pi * 440.0 / rate
    level = 0.0 if silent else 0.3
    plane = array.array("f", (level * math.sin(step * (start + n)) for n in range(samples)))
    for index in range(channels):
        frame.planes[index].update(plane.tobytes())
    frame.sample_rate = rate
    frame.pts = start
    frame.time_base = Fraction(1, rate)
    return frame


def _encode_tone(
    out: av.container.OutputContainer,
    streams: list[av.AudioStream],
    seconds: float,
    rate: int,
    channels: int,
    silent_seconds: float = 0.0,
) -> None:
    """Feed ``seconds`` of tone (after ``silent_seconds`` of silence) to every stream."""
    total = round(seconds * rate)
    silent_until = round(silent_seconds * rate)
    done = 0
    while done < total:
        count = min(1152, total - done)
        for stream in streams:
            frame = _tone_frame(count, done, rate, channels, silent=done < silent_until)
            for packet in stream.encode(frame):
                out.mux(packet)
        done += count
    for stream in streams:
        for packet in stream.encode(None):
            out.mux(packet)


def _audio_stream(
    out: av.container.OutputContainer,
    codec: str,
    rate: int,
    layout: str,
    options: dict[str, str] | None = None,
) -> av.AudioStream:
    stream = out.add_stream(codec, rate=rate, layout=layout, options=options or {})
    assert isinstance(stream, av.AudioStream)
    return stream


def encoded_audio(
    container: str,
    codec: str,
    seconds: float = 1.0,
    rate: int = 48000,
    channels: int = 2,
    *,
    container_options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
    tracks: int = 1,
) -> bytes:
    """A PyAV-encoded tone, as in ``("flac", "flac")`` or ``("ogg", "libopus")``."""
    with tempfile.TemporaryDirectory() as scratch:
        # A real file, not BytesIO: MP4's faststart rewrites the file in a second pass.
        path = Path(scratch) / "audio"
        options = container_options or {}
        with av.open(str(path), "w", format=container, container_options=options) as out:
            layout = "mono" if channels == 1 else "stereo"
            streams = [
                _audio_stream(out, codec, rate, layout, codec_options) for _ in range(tracks)
            ]
            _encode_tone(out, streams, seconds, rate, channels)
        return path.read_bytes()


def vbr_mp3_without_length(seconds: float = 6.0) -> bytes:
    """A VBR MP3 with no Xing/Info header whose first third is silence.

    FFmpeg guesses its length from the first frames' bitrate and gets it
    wrong; the file is honest, so the probe must measure, not refuse.
    """
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "audio.mp3"
        with av.open(str(path), "w", format="mp3", container_options={"write_xing": "0"}) as out:
            stream = _audio_stream(out, "libmp3lame", 44100, "stereo")
            stream.codec_context.qscale = True  # quality-based VBR (global_quality 0: V0)
            _encode_tone(out, [stream], seconds, 44100, 2, silent_seconds=seconds / 3)
        return path.read_bytes()


def video_mp4(frames: int = 10, *, with_audio: bool = False) -> bytes:
    """An MP4 with a short MPEG-4 video stream, and optionally an AAC track beside it."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width = 32
        video.height = 32
        video.pix_fmt = "yuv420p"
        audio = _audio_stream(out, "aac", 48000, "stereo") if with_audio else None
        for index in range(frames):
            image = av.VideoFrame(32, 32, "yuv420p")
            for plane in image.planes:
                plane.update(bytes([(index * 20) % 256]) * plane.buffer_size)
            image.pts = index
            for packet in video.encode(image):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if audio is not None:
            _encode_tone(out, [audio], frames / 10, 48000, 2)
    return buffer.getvalue()
