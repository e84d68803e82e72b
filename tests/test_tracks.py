"""Upload checks (node.tracks): what audio is accepted, what is refused, and how fast."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import tracks
from node.errors import RemoteError
from node.tracks import (
    MAX_TRACK_BYTES,
    AudioInfo,
    BadMedia,
    probe_audio,
    sanitise_filename,
)
from tests.audio_files import (
    aiff_bytes,
    encoded_audio,
    lying_wav,
    png_bytes,
    random_bytes,
    rf64_wav,
    text_bytes,
    vbr_mp3_without_length,
    video_mp4,
    wav_bytes,
    wav_header,
    wav_with_format,
    with_id3_cover,
)

REFUSE_WITHIN_S = 2.0
"""The issue's bound: hostile uploads are refused in well under two seconds."""


def write(directory: Path, data: bytes, name: str = "upload.bin") -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def sparse(directory: Path, head: bytes, size: int = MAX_TRACK_BYTES) -> Path:
    """A ``size``-byte file: ``head`` then zeros, without writing the zeros to disk."""
    path = directory / "big.bin"
    with path.open("wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


@functools.cache
def encoded(container: str, codec: str, seconds: float = 2.0, faststart: bool = False) -> bytes:
    """Encoded media, made once per session (the encoders are the slow part)."""
    container_options = {"movflags": "faststart"} if faststart else None
    codec_options = {"strict": "experimental"} if codec == "vorbis" else None
    return encoded_audio(
        container,
        codec,
        seconds,
        container_options=container_options,
        codec_options=codec_options,
    )


def cut(data: bytes, fraction: float = 0.5) -> bytes:
    return data[: int(len(data) * fraction)]


# --- accepted ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "rate", "channels"),
    [(1.0, 48000, 1), (1.0, 48000, 2), (1.5, 44100, 1), (1.5, 44100, 2)],
)
def test_good_wav(tmp_path: Path, seconds: float, rate: int, channels: int) -> None:
    info = probe_audio(write(tmp_path, wav_bytes(seconds, rate, channels)))
    assert info == AudioInfo(
        mime="audio/wav",
        container="wav",
        codec="pcm_s16le",
        duration_ms=int(seconds * 1000),
        sample_rate=rate,
        channels=channels,
    )


@pytest.mark.parametrize(("bits", "codec"), [(8, "pcm_u8"), (24, "pcm_s24le"), (32, "pcm_s32le")])
def test_wav_bit_depths(tmp_path: Path, bits: int, codec: str) -> None:
    info = probe_audio(write(tmp_path, wav_bytes(0.5, 22050, 2, bits=bits)))
    assert (info.codec, info.duration_ms, info.sample_rate, info.channels) == (codec, 500, 22050, 2)


def test_flac(tmp_path: Path) -> None:
    info = probe_audio(write(tmp_path, encoded("flac", "flac")))
    assert info == AudioInfo("audio/flac", "flac", "flac", 2000, 48000, 2)


@pytest.mark.parametrize(
    ("container", "codec", "mime", "short", "codec_name"),
    [
        ("ogg", "libopus", "audio/ogg", "ogg", "opus"),
        ("ogg", "vorbis", "audio/ogg", "ogg", "vorbis"),
        ("mp3", "libmp3lame", "audio/mpeg", "mp3", "mp3"),
        ("ipod", "aac", "audio/mp4", "mp4", "aac"),
        ("ipod", "alac", "audio/mp4", "mp4", "alac"),
    ],
)
def test_other_allowed_formats(
    tmp_path: Path, container: str, codec: str, mime: str, short: str, codec_name: str
) -> None:
    info = probe_audio(write(tmp_path, encoded(container, codec)))
    assert (info.mime, info.container, info.codec) == (mime, short, codec_name)
    assert (info.sample_rate, info.channels) == (48000, 2)
    # Encoder padding (MP3) and priming (AAC, Opus pre-skip) are not counted.
    assert abs(info.duration_ms - 2000) <= 30


def test_aiff(tmp_path: Path) -> None:
    info = probe_audio(write(tmp_path, aiff_bytes(1.0, 44100, 2)))
    assert info == AudioInfo("audio/aiff", "aiff", "pcm_s16be", 1000, 44100, 2)


def test_rf64_wav(tmp_path: Path) -> None:
    info = probe_audio(write(tmp_path, rf64_wav(1.0)))
    assert (info.mime, info.duration_ms, info.channels) == ("audio/wav", 1000, 2)


def test_mp3_with_large_cover_art(tmp_path: Path) -> None:
    """Cover art (an "attached picture" stream) is not video, even when it is megabytes."""
    data = with_id3_cover(encoded("mp3", "libmp3lame"), 3 * 1024 * 1024)
    info = probe_audio(write(tmp_path, data))
    assert (info.mime, info.duration_ms) == ("audio/mpeg", 2000)


def test_vbr_mp3_without_length_header_is_measured_not_refused(tmp_path: Path) -> None:
    # FFmpeg's bitrate guess says ~8 s; no header claims anything, so this is no lie.
    info = probe_audio(write(tmp_path, vbr_mp3_without_length(6.0)))
    assert abs(info.duration_ms - 6000) <= 60


def test_limits_are_inclusive(tmp_path: Path) -> None:
    info = probe_audio(write(tmp_path, wav_with_format(768_000, 64, data_bytes=64 * 2 * 768)))
    assert (info.sample_rate, info.channels) == (768_000, 64)


def test_honest_wav_at_the_size_cap_is_accepted_quickly(tmp_path: Path) -> None:
    data_size = MAX_TRACK_BYTES - 44
    path = sparse(tmp_path, wav_header(rate=48000, channels=2, bits=16, data_size=data_size))
    started = time.monotonic()
    info = probe_audio(path)
    assert time.monotonic() - started < REFUSE_WITHIN_S
    assert info.duration_ms == data_size // 4 * 1000 // 48000


def test_long_files_are_checked_at_their_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the scan cap, the claimed end is found by seeking; a cut-off file still fails."""
    monkeypatch.setattr(tracks, "_SCAN_PACKETS", 4)
    flac = encoded("flac", "flac")
    assert probe_audio(write(tmp_path, flac)).duration_ms == 2000
    with pytest.raises(BadMedia, match="truncated"):
        probe_audio(write(tmp_path, cut(flac, 0.6)))


def test_audio_info_is_frozen() -> None:
    info = AudioInfo("audio/wav", "wav", "pcm_s16le", 1000, 48000, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.duration_ms = 5  # type: ignore[misc]


# --- refused ----------------------------------------------------------------


def _fifo(directory: Path) -> Path:
    path = directory / "fifo"
    os.mkfifo(path)
    return path


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty": (lambda d: write(d, b""), "empty"),
    "text": (lambda d: write(d, text_bytes()), "not an audio file"),
    "png": (lambda d: write(d, png_bytes()), "not an audio file"),
    "random bytes": (lambda d: write(d, random_bytes()), "not an audio file"),
    "zeros up to the cap": (lambda d: sparse(d, b""), "not an audio file"),
    "over the cap": (lambda d: sparse(d, b"", MAX_TRACK_BYTES + 1), "larger than"),
    "a directory": (lambda d: d, "not a regular file"),
    "a fifo": (_fifo, "not a regular file"),
    "video only": (lambda d: write(d, video_mp4()), "video but no audio"),
    "video with audio": (lambda d: write(d, video_mp4(with_audio=True)), "video"),
    "two audio tracks": (
        lambda d: write(d, encoded_audio("ipod", "aac", 0.5, tracks=2)),
        "2 audio tracks",
    ),
    "mp3 inside mp4": (lambda d: write(d, encoded("mp4", "libmp3lame")), "mp3 codec"),
    "matroska": (lambda d: write(d, encoded("matroska", "libopus")), "not an audio file"),
    "wav claiming 4 GB": (lambda d: write(d, lying_wav()), "4.0 GiB"),
    "wav claiming 1 GB": (lambda d: write(d, lying_wav(1024**3)), "1.0 GiB"),
    "wav claiming 4 GB, padded to the cap": (
        lambda d: sparse(d, lying_wav(), MAX_TRACK_BYTES),
        "4.0 GiB",
    ),
    "rf64 claiming 4 GB": (lambda d: write(d, rf64_wav(0.5, claimed_bytes=4 * 1024**3)), "4.0 GiB"),
    "truncated wav": (lambda d: write(d, cut(wav_bytes())), "truncated"),
    "wav header cut short": (lambda d: write(d, wav_bytes()[:30]), "truncated"),
    "truncated flac": (lambda d: write(d, cut(encoded("flac", "flac"))), "truncated"),
    "truncated mp3": (lambda d: write(d, cut(encoded("mp3", "libmp3lame"))), "truncated"),
    "truncated opus": (lambda d: write(d, cut(encoded("ogg", "libopus"))), "truncated"),
    "truncated m4a": (lambda d: write(d, cut(encoded("ipod", "aac"))), "not an audio file"),
    "truncated m4a (index first)": (
        lambda d: write(d, cut(encoded("mp4", "aac", faststart=True))),
        "truncated",
    ),
    "aiff claiming hours": (
        lambda d: write(d, aiff_bytes(0.5, claimed_frames=10**9)),
        "truncated",
    ),
    "truncated aiff": (lambda d: write(d, cut(aiff_bytes())), "truncated"),
    "sample rate 0": (lambda d: write(d, wav_with_format(0, 1)), "sample rate"),
    "sample rate too high": (lambda d: write(d, wav_with_format(768_001, 1)), "sample rate"),
    "sample rate absurd": (lambda d: write(d, wav_with_format(0xFFFFFFFF, 1)), "sample rate"),
    "no channels": (lambda d: write(d, wav_with_format(48000, 0)), "0 audio channels"),
    "65 channels": (
        lambda d: write(d, wav_with_format(48000, 65, data_bytes=65 * 2 * 10)),
        "65 audio channels",
    ),
    "duration 0": (lambda d: write(d, wav_with_format(48000, 2, data_bytes=0)), "no audio"),
    "mp3 then 200 MB of zeros": (
        lambda d: sparse(d, encoded("mp3", "libmp3lame")),
        "not audio",
    ),
    "flac then 200 MB of zeros": (lambda d: sparse(d, encoded("flac", "flac")), "not audio"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_refused_quickly(tmp_path: Path, case: str) -> None:
    make, words = HOSTILE[case]
    path = make(tmp_path)
    started = time.monotonic()
    with pytest.raises(BadMedia) as refused:
        probe_audio(path)
    assert time.monotonic() - started < REFUSE_WITHIN_S
    message = str(refused.value)
    assert words in message
    assert str(tmp_path) not in message and "Errno" not in message


def test_bad_media_is_a_remote_error_and_a_value_error() -> None:
    assert issubclass(BadMedia, RemoteError)
    assert issubclass(BadMedia, ValueError)


def test_missing_file_is_bad_media(tmp_path: Path) -> None:
    with pytest.raises(BadMedia) as refused:
        probe_audio(tmp_path / "nope.wav")
    assert isinstance(refused.value.__cause__, OSError)


def test_running_out_of_time_is_refused_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline fires inside FFmpeg's reads; the next probe in this thread is unaffected."""
    path = write(tmp_path, encoded("flac", "flac"))
    with monkeypatch.context() as patch:
        patch.setattr(tracks, "PROBE_SECONDS", 0.0)
        with pytest.raises(BadMedia, match="too long"):
            probe_audio(path)
    assert probe_audio(path).duration_ms == 2000


# --- file names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("song.wav", "song.wav"),
        ("../../x", "x"),
        ("..\\..\\x.wav", "x.wav"),
        ("/etc/passwd", "passwd"),
        ("C:\\Users\\me\\Music\\take 3.flac", "take 3.flac"),
        ("dir/", "upload"),
        ("", "upload"),
        ("...", "upload"),
        (" . ", "upload"),
        (".bashrc", "bashrc"),
        ("..hidden.wav", "hidden.wav"),
        ("a\x00b.wav", "ab.wav"),
        ("a\x1b[31mred.wav", "a[31mred.wav"),
        ("tab\there\nnewline.mp3", "tab here newline.mp3"),
        ("  lots   of   space  .wav", "lots of space.wav"),
        ("evil\u202egpj.exe", "evilgpj.exe"),
        ('what?: "a" <b>|*.wav', "what__ _a_ _b___.wav"),
        ("CON.wav", "_CON.wav"),
        ("lpt1", "_lpt1"),
        ("Cafe\u0301.wav", "Caf\u00e9.wav"),
        ("name.", "name"),
        ("archive.tar.gz", "archive.tar.gz"),
        ("weird.ext-with-dash", "weird.ext-with-dash"),
    ],
)
def test_sanitise_filename(name: str, expected: str) -> None:
    assert sanitise_filename(name) == expected


def test_sanitise_filename_keeps_the_extension_when_cutting() -> None:
    result = sanitise_filename("x" * 300 + ".flac")
    assert len(result) == 120
    assert result.endswith("xx.flac")
    assert len(sanitise_filename("y" * 300)) == 120


def test_sanitise_filename_bounds_bytes_too() -> None:
    result = sanitise_filename("名前" * 100 + ".wav")
    assert result.endswith(".wav")
    assert len(result.encode()) <= 240


NAME_CHARS = st.one_of(st.characters(), st.sampled_from("/\\.\x00 \t\n\u202e:*?\u0301"))


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(NAME_CHARS, max_size=400))
def test_sanitise_filename_property(name: str) -> None:
    result = sanitise_filename(name)
    assert result
    assert len(result) <= 120
    assert len(result.encode()) <= 240
    assert not any(char in result for char in "/\\\x00")
    assert not result.startswith(".")
    assert result == result.strip()
    assert not any(unicodedata.category(char).startswith("C") for char in result)
    assert sanitise_filename(result) == result
