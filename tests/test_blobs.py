"""Tests for the content-addressed blob store (node.blobs)."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.blobs import (
    AsyncBlobWriter,
    BlobHashMismatch,
    BlobInfo,
    BlobStore,
    InvalidBlobHash,
    put_async_stream,
)
from node.errors import BlobCorrupted, BlobError, BlobNotFound, BlobTooLarge, RemoteError

REPO_ROOT = Path(__file__).resolve().parents[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_path(root: Path, h: str) -> Path:
    return root / "sha256" / h[:2] / h


def tmp_files(root: Path) -> list[Path]:
    tmp = root / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def stored_files(root: Path) -> list[Path]:
    base = root / "sha256"
    return sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def store(root: Path) -> BlobStore:
    return BlobStore(root)


def test_round_trip(store: BlobStore, root: Path) -> None:
    data = b"a song in D minor" * 1000
    info = store.put_bytes(data)
    assert info == BlobInfo(sha(data), len(data))
    assert blob_path(root, info.hash).read_bytes() == data
    assert store.has(info.hash)
    assert store.size(info.hash) == len(data)
    assert store.read_bytes(info.hash) == data
    store.verify(info.hash)
    with store.open_blob(info.hash) as r:
        assert r.size == len(data)
        assert b"".join(r.iter_chunks(4096)) == data
    assert list(store.iter_hashes()) == [info.hash]
    assert tmp_files(root) == []


def test_empty_blob(store: BlobStore) -> None:
    info = store.put_bytes(b"")
    assert info == BlobInfo(sha(b""), 0)
    assert store.read_bytes(info.hash) == b""
    store.verify(info.hash)


def test_put_stream_and_file(store: BlobStore, tmp_path: Path) -> None:
    chunks = [os.urandom(1000) for _ in range(50)]
    data = b"".join(chunks)
    assert store.put_stream(iter(chunks)).hash == sha(data)
    src = tmp_path / "track.flac"
    src.write_bytes(data + b"!")
    info = store.put_file(src)
    assert info == BlobInfo(sha(data + b"!"), len(data) + 1)
    assert store.read_bytes(info.hash) == data + b"!"
    with pytest.raises(BlobError, match="cannot read"):
        store.put_file(tmp_path / "missing.wav")


def test_put_file_too_large_refused_up_front(store: BlobStore, root: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.wav"
    src.write_bytes(b"x" * 100)
    with pytest.raises(BlobTooLarge):
        store.put_file(src, max_size=99)
    assert stored_files(root) == [] and tmp_files(root) == []


def test_same_content_stored_once(store: BlobStore, root: Path) -> None:
    a = store.put_bytes(b"same")
    b = store.put_stream([b"sa", b"me"])
    assert a == b
    assert stored_files(root) == [blob_path(root, a.hash)]
    assert tmp_files(root) == []


def test_truncated_existing_copy_is_healed(store: BlobStore, root: Path) -> None:
    info = store.put_bytes(b"0123456789")
    blob_path(root, info.hash).write_bytes(b"01234")
    assert store.put_bytes(b"0123456789") == info
    assert store.read_bytes(info.hash) == b"0123456789"


def test_expected_hash_match_and_mismatch(store: BlobStore, root: Path) -> None:
    data = b"announced"
    assert store.put_bytes(data, expected_hash=sha(data)).hash == sha(data)
    other = sha(b"something else")
    with pytest.raises(BlobHashMismatch, match="content hash mismatch: expected") as ei:
        store.put_bytes(b"tampered", expected_hash=other)
    assert isinstance(ei.value, BlobError) and isinstance(ei.value, RemoteError)
    assert not store.has(other) and not store.has(sha(b"tampered"))
    assert stored_files(root) == [blob_path(root, sha(data))]
    assert tmp_files(root) == []


def test_max_size_exceeded_stores_nothing(store: BlobStore, root: Path) -> None:
    consumed: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(10):
            consumed.append(i)
            yield b"x" * 100

    with pytest.raises(BlobTooLarge):
        store.put_stream(chunks(), max_size=250)
    assert consumed == [0, 1, 2]  # refused as soon as the cap was passed
    with pytest.raises(BlobTooLarge):
        store.put_bytes(b"x" * 11, max_size=10)
    assert store.put_bytes(b"x" * 10, max_size=10).size == 10  # the cap itself is allowed
    assert stored_files(root) == [blob_path(root, sha(b"x" * 10))]
    assert tmp_files(root) == []


def test_failing_source_stores_nothing(store: BlobStore, root: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(chunks())
    assert stored_files(root) == [] and tmp_files(root) == []


def _corrupt(store: BlobStore, root: Path, data: bytes) -> str:
    h = store.put_bytes(data).hash
    path = blob_path(root, h)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    return h


def test_corrupted_blob_detected(store: BlobStore, root: Path) -> None:
    data = os.urandom(300_000)
    h = _corrupt(store, root, data)
    with pytest.raises(BlobCorrupted):
        store.read_bytes(h)
    with pytest.raises(BlobCorrupted):
        store.verify(h)
    with store.open_blob(h) as r, pytest.raises(BlobCorrupted):
        for _ in r.iter_chunks(65536):
            pass
    # Range reads are documented as unverified: they still serve bytes.
    assert len(store.read_range(h, 0, 10)) == 10


def test_open_blob_raises_before_last_chunk(store: BlobStore, root: Path) -> None:
    h = _corrupt(store, root, b"y" * 1000)
    got: list[bytes] = []
    with store.open_blob(h) as r, pytest.raises(BlobCorrupted):
        while chunk := r.read(300):
            got.append(chunk)
    assert sum(map(len, got)) == 900  # the final chunk was withheld


def test_truncated_blob_detected(store: BlobStore, root: Path) -> None:
    h = store.put_bytes(b"z" * 1000).hash
    reader = store.open_blob(h)
    with open(blob_path(root, h), "r+b") as f:
        f.truncate(500)  # shrinks under an open reader
    with reader, pytest.raises(BlobCorrupted):
        reader.read()


def test_missing_blob(store: BlobStore) -> None:
    h = sha(b"never stored")
    assert not store.has(h)
    for call in (store.size, store.read_bytes, store.open_blob, store.verify):
        with pytest.raises(BlobNotFound):
            call(h)
    with pytest.raises(BlobNotFound):
        store.read_range(h, 0, 1)
    assert store.delete(h) is False
    assert list(store.iter_hashes()) == []


def test_read_range(store: BlobStore) -> None:
    data = bytes(range(256)) * 10
    h = store.put_bytes(data).hash
    assert store.read_range(h, 0, 5) == data[:5]
    assert store.read_range(h, 100, 300) == data[100:400]
    assert store.read_range(h, 2550, 100) == data[2550:]
    assert store.read_range(h, 5000, 10) == b""
    assert store.read_range(h, 0, 10**12) == data  # no giant allocation
    with pytest.raises(BlobError):
        store.read_range(h, -1, 5)
    with pytest.raises(BlobError):
        store.read_range(h, 0, -5)


def test_delete(store: BlobStore, root: Path) -> None:
    h = store.put_bytes(b"bye").hash
    assert store.delete(h) is True
    assert not store.has(h) and not blob_path(root, h).exists()
    assert store.delete(h) is False


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "A" * 64,
        sha(b"x").upper(),
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "a" * 64 + "\n",
        "",
        "../" + "a" * 61,
    ],
)
def test_invalid_hash_refused(store: BlobStore, root: Path, bad: str) -> None:
    calls = (
        store.has,
        store.size,
        store.read_bytes,
        store.open_blob,
        store.verify,
        store.delete,
        lambda h: store.read_range(h, 0, 1),
        lambda h: store.put_bytes(b"x", expected_hash=h),
    )
    for call in calls:
        with pytest.raises(InvalidBlobHash, match="invalid blob hash"):
            call(bad)
    assert issubclass(InvalidBlobHash, BlobError) and issubclass(InvalidBlobHash, ValueError)
    assert tmp_files(root) == []


def test_non_string_hash_refused(store: BlobStore) -> None:
    with pytest.raises(InvalidBlobHash):
        store.has(b"a" * 64)  # type: ignore[arg-type]


def test_permissions(store: BlobStore, root: Path) -> None:
    assert not root.exists()  # created on first use
    old = os.umask(0o022)
    try:
        h = store.put_bytes(b"private").hash
    finally:
        os.umask(old)
    for d in (root, root / "sha256", root / "sha256" / h[:2], root / "tmp"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert stat.S_IMODE(blob_path(root, h).stat().st_mode) == 0o600


def test_concurrent_puts(store: BlobStore, root: Path) -> None:
    payloads = [os.urandom(20_000) for _ in range(8)] * 4  # each content written 4 times

    def put(data: bytes) -> BlobInfo:
        return store.put_stream(data[i : i + 4096] for i in range(0, len(data), 4096))

    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(put, payloads))
    assert [i.hash for i in infos] == [sha(p) for p in payloads]
    assert sorted(store.iter_hashes()) == sorted({sha(p) for p in payloads})
    for p in payloads[:8]:
        assert store.read_bytes(sha(p)) == p
    assert tmp_files(root) == []


def test_cleanup_removes_temp_files(store: BlobStore, root: Path) -> None:
    assert store.cleanup() == 0  # no tmp dir yet
    h = store.put_bytes(b"keep me").hash
    (root / "tmp" / "dead1.tmp").write_bytes(b"half")
    (root / "tmp" / "dead2.tmp").write_bytes(b"")
    w = store.writer()
    w.write(b"abandoned")  # a writer never committed, e.g. a crashed thread
    assert len(tmp_files(root)) == 3
    assert store.cleanup() == 3
    assert tmp_files(root) == []
    assert store.read_bytes(h) == b"keep me"
    w.abort()  # tolerates its temp file having been removed


def test_iter_hashes_ignores_strays(store: BlobStore, root: Path) -> None:
    h = store.put_bytes(b"real").hash
    (root / "sha256" / h[:2] / "notes.txt").write_text("stray")
    (root / "sha256" / "zz").mkdir()
    (root / "sha256" / "ab").write_text("not a dir")
    wrong_fan = "00" if h[:2] != "00" else "01"
    (root / "sha256" / wrong_fan).mkdir(exist_ok=True)
    (root / "sha256" / wrong_fan / h).write_bytes(b"misplaced")
    assert list(store.iter_hashes()) == [h]


def test_writer_single_use(store: BlobStore) -> None:
    with store.writer() as w:
        w.write(b"once")
        info = w.commit()
    assert info.hash == sha(b"once")
    with pytest.raises(BlobError):
        w.write(b"again")
    with pytest.raises(BlobError):
        w.commit()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_chunking_does_not_change_hash(chunks: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = BlobStore(Path(d) / "blobs")
        data = b"".join(chunks)
        info = store.put_stream(chunks)
        assert info == BlobInfo(sha(data), len(data))
        assert store.read_bytes(info.hash) == data


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from node.blobs import BlobStore

    def chunks():
        for i in range(200):
            yield bytes([i]) * 65536
            if i == 0:
                print("started", flush=True)  # first chunk is now on its way to disk
            time.sleep(0.02)

    BlobStore(Path(sys.argv[1])).put_stream(chunks())
    print("finished", flush=True)
    """
)


def test_crash_mid_write_leaves_no_partial_blob(store: BlobStore, root: Path) -> None:
    full = b"".join(bytes([i]) * 65536 for i in range(200))
    final = blob_path(root, sha(full))
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(root)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "child never started writing"
        assert proc.stdout.readline() == b"started\n"
        time.sleep(0.15)  # let a few more chunks land
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()

    assert not final.exists()
    assert stored_files(root) == []
    leftovers = tmp_files(root)
    assert len(leftovers) == 1
    assert 0 < leftovers[0].stat().st_size < len(full)

    assert store.cleanup() == 1
    assert tmp_files(root) == []
    assert stored_files(root) == []
    assert not store.has(sha(full))
    assert list(store.iter_hashes()) == []
    # The store still works after the crash.
    assert store.put_bytes(full).hash == sha(full)
    assert final.exists()


async def _agen(chunks: list[bytes]) -> AsyncGenerator[bytes, None]:
    for c in chunks:
        await trio.lowlevel.checkpoint()
        yield c


async def test_put_async_stream(store: BlobStore, root: Path) -> None:
    chunks = [os.urandom(5000) for _ in range(10)]
    data = b"".join(chunks)
    info = await put_async_stream(store, _agen(chunks), expected_hash=sha(data))
    assert info == BlobInfo(sha(data), len(data))
    assert store.read_bytes(info.hash) == data
    assert tmp_files(root) == []


async def test_put_async_stream_errors_store_nothing(store: BlobStore, root: Path) -> None:
    async with aclosing(_agen([b"x" * 600] * 3)) as chunks:
        with pytest.raises(BlobTooLarge):
            await put_async_stream(store, chunks, max_size=1000)
    async with aclosing(_agen([b"x"])) as chunks:
        with pytest.raises(BlobHashMismatch):
            await put_async_stream(store, chunks, expected_hash=sha(b"y"))
    assert stored_files(root) == [] and tmp_files(root) == []


async def test_async_writer_cancelled_mid_stream(store: BlobStore, root: Path) -> None:
    with trio.move_on_after(0.05) as scope:
        async with AsyncBlobWriter(store) as w:
            await w.write(b"first")
            assert len(tmp_files(root)) == 1
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert stored_files(root) == [] and tmp_files(root) == []


async def test_async_writer_outside_context(store: BlobStore) -> None:
    with pytest.raises(BlobError, match="outside"):
        await AsyncBlobWriter(store).write(b"x")
