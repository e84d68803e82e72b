"""Content-addressed blob store for audio and other files.

Blobs live at ``<root>/sha256/ab/abcdef...`` (two-hex fan-out keeps directories
small) and are written atomically: bytes stream into ``<root>/tmp/`` while being
hashed, are fsynced, then renamed into place, so a crash leaves either nothing
or the complete blob, never a partial one.  Leftover temp files are removed by
:meth:`BlobStore.cleanup` at start-up.  Everything is owner-only (0700 dirs,
0600 files) because the store is a private library.

The API is synchronous and thread-safe (every call uses its own file
descriptors and publishing is a single atomic rename); trio code calls it via
``trio.to_thread.run_sync`` or uses :class:`AsyncBlobWriter`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Self

import trio

from node.errors import (
    BlobCorrupted,
    BlobError,
    BlobNotFound,
    BlobTooLarge,
    RemoteError,
    StoreError,
)

DEFAULT_MAX_BLOB_BYTES = 2 * 1024**3
CHUNK_SIZE = 64 * 1024
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_FAN_RE = re.compile(r"[0-9a-f]{2}")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class InvalidBlobHash(BlobError, ValueError):
    """A string that is not 64 lowercase hex chars was used as a blob hash."""


class BlobHashMismatch(BlobError, RemoteError):
    """Written bytes do not hash to what the sender announced; nothing stored."""


def validate_hash(value: object) -> str:
    """Return ``value`` if it is a well-formed hash; paths are only built from these."""
    if not isinstance(value, str) or _HASH_RE.fullmatch(value) is None:
        raise InvalidBlobHash(f"invalid blob hash {value!r}: need 64 lowercase hex chars")
    return value


@dataclass(frozen=True)
class BlobInfo:
    hash: str
    size: int


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Translate OSError at the module boundary, as node.errors asks."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"{what}: {exc}") from exc


def _fsync_dir(path: Path) -> None:
    """Make a rename/unlink in ``path`` durable (the entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """One atomic write; obtain via :meth:`BlobStore.writer`, use from one thread at a time."""

    def __init__(self, store: BlobStore, expected_hash: str | None, max_size: int) -> None:
        self._store = store
        self._expected = None if expected_hash is None else validate_hash(expected_hash)
        if max_size < 0:
            raise BlobError(f"max_size must be >= 0, got {max_size}")
        self._max = max_size
        self._hasher = hashlib.sha256()
        self._size = 0
        self._done = False
        with _store_errors("cannot create blob temp file"):
            self._tmp = store._ensure_dirs(store.root / "tmp") / f"{secrets.token_hex(16)}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
            fd = os.open(self._tmp, flags, 0o600)  # random name + O_EXCL: no clashes
            self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; on any failure (including the size cap) the temp is removed."""
        if self._done:
            raise BlobError("blob writer already finished")
        try:
            n = memoryview(chunk).nbytes
            if self._size + n > self._max:
                raise BlobTooLarge(f"blob exceeds the {self._max}-byte limit")
            with _store_errors("cannot write blob temp file"):
                self._file.write(chunk)
            self._hasher.update(chunk)
            self._size += n
        except BaseException:
            self.abort()
            raise

    def commit(self) -> BlobInfo:
        """Fsync, check the hash, and publish under the final name."""
        if self._done:
            raise BlobError("blob writer already finished")
        try:
            digest = self._hasher.hexdigest()
            with _store_errors("cannot flush blob temp file"):
                self._file.flush()
                os.fsync(self._file.fileno())  # data on disk before the name exists
                self._file.close()
            if self._expected is not None and digest != self._expected:
                raise BlobHashMismatch(
                    f"content hash mismatch: expected {self._expected} got {digest}"
                )
            final = self._store._path(digest)
            with _store_errors(f"cannot publish blob {digest}"):
                self._store._ensure_dirs(final.parent)
                if final.exists() and final.stat().st_size == self._size:
                    os.unlink(self._tmp)  # same hash, same bytes: keep the stored copy
                else:  # new, or a truncated old copy we can heal
                    os.replace(self._tmp, final)
                    _fsync_dir(final.parent)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return BlobInfo(digest, self._size)

    def abort(self) -> None:
        """Discard the temp file; idempotent and never raises OSError."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # no-op after commit


class BlobReader:
    """Streams a blob and checks its hash as it goes.

    :class:`BlobCorrupted` is raised by the read that reaches the expected size
    (before that last chunk is handed out) or hits EOF early.  Bytes returned by
    earlier reads are unverified until then; closing before EOF skips the check.
    """

    def __init__(self, hash: str, fd: int, size: int) -> None:
        self.hash = hash
        self.size = size
        self._file = os.fdopen(fd, "rb")
        self._hasher = hashlib.sha256()
        self._pos = 0
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        with _store_errors(f"cannot read blob {self.hash}"):
            data = self._file.read(n)
        if self._checked:
            if data:
                raise BlobCorrupted(f"blob {self.hash} grew while being read")
            return data
        self._hasher.update(data)
        self._pos += len(data)
        if self._pos >= self.size or n < 0 or len(data) < n:  # short read means EOF
            self._checked = True
            got = self._hasher.hexdigest()
            if got != self.hash or self._pos != self.size:
                raise BlobCorrupted(f"blob {self.hash} is corrupted (content hashes to {got})")
        return data

    def iter_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        while data := self.read(chunk_size):
            yield data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStore:
    """Content-addressed, owner-only blob store rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, hash: str) -> Path:
        h = validate_hash(hash)
        return self.root / "sha256" / h[:2] / h

    def _ensure_dirs(self, path: Path) -> Path:
        """Create ``path`` and its parents up to the root, owner-only; racing is fine."""
        current = self.root
        for part in ("", *path.relative_to(self.root).parts):
            current = current / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(current, 0o700)
                os.chmod(current, 0o700)  # umask may have stripped more than intended
        return path

    def _open(self, hash: str) -> tuple[int, int]:
        path = self._path(hash)
        with _store_errors(f"cannot open blob {hash}"):
            try:
                fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
            except FileNotFoundError as exc:
                raise BlobNotFound(f"no blob {hash}") from exc
            try:
                return fd, os.fstat(fd).st_size
            except OSError:
                os.close(fd)
                raise

    def writer(
        self, *, expected_hash: str | None = None, max_size: int = DEFAULT_MAX_BLOB_BYTES
    ) -> BlobWriter:
        """Incremental writer for callers that produce chunks themselves."""
        return BlobWriter(self, expected_hash, max_size)

    def put_bytes(
        self,
        data: bytes,
        *,
        expected_hash: str | None = None,
        max_size: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> BlobInfo:
        if len(data) > max_size:  # refuse before touching the disk
            raise BlobTooLarge(f"blob exceeds the {max_size}-byte limit")
        return self.put_stream([data], expected_hash=expected_hash, max_size=max_size)

    def put_stream(
        self,
        chunks: Iterable[bytes],
        *,
        expected_hash: str | None = None,
        max_size: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> BlobInfo:
        """Store chunks atomically; an exception from ``chunks`` stores nothing."""
        with self.writer(expected_hash=expected_hash, max_size=max_size) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def put_file(self, path: Path, *, max_size: int = DEFAULT_MAX_BLOB_BYTES) -> BlobInfo:
        """Import a file; problems reading the source raise :class:`BlobError`."""
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > max_size:
                    raise BlobTooLarge(f"{path} exceeds the {max_size}-byte limit")
                read: Callable[[], bytes] = partial(f.read, CHUNK_SIZE)
                return self.put_stream(iter(read, b""), max_size=max_size)
        except OSError as exc:
            raise BlobError(f"cannot read {path}: {exc}") from exc

    def local_path(self, hash: str) -> Path:
        """Where blob ``hash`` lives, for readers that need a path (PyAV); raises BlobNotFound."""
        path = self._path(hash)
        if not path.is_file():
            raise BlobNotFound(f"no blob {hash}")
        return path

    def has(self, hash: str) -> bool:
        return self._path(hash).is_file()

    def size(self, hash: str) -> int:
        fd, size = self._open(hash)
        os.close(fd)
        return size

    def open_blob(self, hash: str) -> BlobReader:
        """Open for streaming; the reader verifies the hash by EOF."""
        fd, size = self._open(hash)
        return BlobReader(hash, fd, size)

    def read_bytes(self, hash: str) -> bytes:
        """Whole blob, verified before it is returned."""
        with self.open_blob(hash) as r:
            return r.read()

    def read_range(self, hash: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start`` (short at EOF), for HTTP Range.

        NOT verified: hashing the whole file per range request is too costly.
        Callers needing integrity should run :meth:`verify` (e.g. periodically).
        """
        if start < 0 or length < 0:
            raise BlobError(f"invalid range start={start} length={length}")
        fd, size = self._open(hash)
        parts: list[bytes] = []
        remaining = max(0, min(length, size - start))  # never allocate past EOF
        with _store_errors(f"cannot read blob {hash}"):
            try:
                while remaining > 0 and (data := os.pread(fd, remaining, start)):
                    parts.append(data)
                    start += len(data)
                    remaining -= len(data)
            finally:
                os.close(fd)
        return b"".join(parts)

    def verify(self, hash: str) -> None:
        """Raise :class:`BlobCorrupted` unless the whole file matches its hash."""
        with self.open_blob(hash) as r:
            for _ in r.iter_chunks():
                pass

    def delete(self, hash: str) -> bool:
        """Remove a blob; False if it was not there."""
        path = self._path(hash)
        with _store_errors(f"cannot delete blob {hash}"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            _fsync_dir(path.parent)
        return True

    def cleanup(self) -> int:
        """Remove leftover temp files; call at start-up, before any writer exists."""
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return 0
        removed = 0
        with _store_errors("cannot clean blob temp dir"), os.scandir(tmp) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def iter_hashes(self) -> Iterator[str]:
        """Stored hashes in sorted order; stray names are ignored."""
        base = self.root / "sha256"
        if not base.is_dir():
            return
        with _store_errors("cannot list blob store"):
            for fan in sorted(f for f in os.listdir(base) if _FAN_RE.fullmatch(f)):
                names = sorted(os.listdir(base / fan)) if (base / fan).is_dir() else []
                yield from (n for n in names if _HASH_RE.fullmatch(n) and n[:2] == fan)


class AsyncBlobWriter:
    """Trio wrapper: each chunk is hashed and written in a worker thread.

    ``async with AsyncBlobWriter(store) as w: await w.write(c); info = await w.commit()``;
    leaving the block without commit (error, cancellation) discards the temp file.
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        expected_hash: str | None = None,
        max_size: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> None:
        self._store = store
        self._expected = expected_hash
        self._max = max_size
        self._writer: BlobWriter | None = None

    def _w(self) -> BlobWriter:
        if self._writer is None:
            raise BlobError("AsyncBlobWriter used outside 'async with'")
        return self._writer

    async def __aenter__(self) -> Self:
        make = partial(self._store.writer, expected_hash=self._expected, max_size=self._max)
        self._writer = await trio.to_thread.run_sync(make)
        return self

    async def write(self, chunk: bytes) -> None:
        await trio.to_thread.run_sync(self._w().write, chunk)

    async def commit(self) -> BlobInfo:
        return await trio.to_thread.run_sync(self._w().commit)

    async def __aexit__(self, *exc: object) -> None:
        # Synchronous on purpose: an unlink is quick and must happen even when cancelled.
        if self._writer is not None:
            self._writer.abort()


async def put_async_stream(
    store: BlobStore,
    chunks: AsyncIterable[bytes],
    *,
    expected_hash: str | None = None,
    max_size: int = DEFAULT_MAX_BLOB_BYTES,
) -> BlobInfo:
    """Store chunks arriving from the network without blocking the trio loop."""
    async with AsyncBlobWriter(store, expected_hash=expected_hash, max_size=max_size) as w:
        async for chunk in chunks:
            await w.write(chunk)
        return await w.commit()
