"""The node's keys on disk: one node key and any number of author keys.

Layout: ``<data_dir>/keys/node.key`` and ``<data_dir>/keys/authors/<name>.key``.
A key file is one JSON object holding an Ed25519 seed, either in clear or
sealed with a passphrase (Argon2id + XSalsa20-Poly1305); the public key is
always in clear so the node id can be shown without the passphrase.

Files are 0600 in 0700 directories and are written atomically, so a crash
never leaves a half-written key at its final name.  Reading refuses loose
permissions and checks the seed against the stored public key, so a damaged
file or a wrong passphrase is an error, never a different key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret

from node.errors import InsecureKeyFile, KeyFileError, NodeExists, WrongPassphrase
from protocol.keys import PUBLIC_KEY_BYTES, SEED_BYTES, SigningKey

FORMAT = "talas-key"
VERSION = 1
KEY_TYPE = "ed25519"
KDF_NAME = "argon2id"
# OWASP-compliant and still quick enough for an interactive unlock.
DEFAULT_OPSLIMIT: int = argon2id.OPSLIMIT_INTERACTIVE
DEFAULT_MEMLIMIT: int = argon2id.MEMLIMIT_INTERACTIVE
# Bounds on limits read from a file: a damaged file must not make us hang or
# allocate gigabytes before it is rejected.
MIN_OPSLIMIT: int = argon2id.OPSLIMIT_MIN
MAX_OPSLIMIT = 32
MIN_MEMLIMIT: int = argon2id.MEMLIMIT_MIN
MAX_MEMLIMIT: int = argon2id.MEMLIMIT_SENSITIVE
MAX_FILE_BYTES = 64 * 1024
MAX_LABEL_CHARS = 256
AUTHOR_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DEFAULT_AUTHOR = "default"

_PLAIN_FIELDS = frozenset({"format", "version", "type", "public", "seed", "label"})
_SEALED_FIELDS = frozenset(
    {"format", "version", "type", "public", "label", "kdf", "nonce", "ciphertext"}
)
_KDF_FIELDS = frozenset({"name", "opslimit", "memlimit", "salt"})
_HEX_RE = re.compile(r"[0-9a-f]*")


class InvalidAuthorName(KeyFileError, ValueError):
    """An author name that could not safely be used as a file name."""


@dataclass(frozen=True)
class KeyFile:
    """What a key file says about itself, readable without the passphrase."""

    path: Path
    public: bytes
    label: str
    encrypted: bool


class _Sealed(NamedTuple):
    opslimit: int
    memlimit: int
    salt: bytes
    nonce: bytes
    ciphertext: bytes


def new_signing_key() -> SigningKey:
    """A fresh key from the OS random source."""
    return SigningKey(os.urandom(SEED_BYTES))


def validate_author_name(name: str) -> str:
    """Return ``name`` if it is a safe author name; names become file names."""
    if not isinstance(name, str) or AUTHOR_NAME_RE.fullmatch(name) is None:
        raise InvalidAuthorName(
            f"invalid author name {name!r}: use 1-63 characters from a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def _insecure(kind: str, path: Path, mode: int, fix: str) -> InsecureKeyFile:
    return InsecureKeyFile(
        f"{kind} {path} is readable or writable by group or others (mode {mode:04o}); "
        f"fix with: chmod {fix} {shlex.quote(str(path))}"
    )


def _check_private_dir(path: Path) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KeyFileError(f"cannot access key directory {path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise KeyFileError(f"key directory {path} is not a directory")
    if st.st_mode & 0o077:
        raise _insecure("key directory", path, stat.S_IMODE(st.st_mode), "700")


def check_private_file(path: Path) -> None:
    """Raise unless ``path`` is a regular file private to its owner, in a private dir."""
    _check_private_dir(path.parent)
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot access key file {path}: {exc.strerror}") from exc
    # Symlinks are refused: the permissions of the target's directory are unchecked.
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise _insecure("key file", path, stat.S_IMODE(st.st_mode), "600")


def _make_private_dir(path: Path) -> None:
    """Create ``path`` as 0700 (whatever the umask), or check an existing one."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        _check_private_dir(path)
        return
    except OSError as exc:
        raise KeyFileError(f"cannot create key directory {path}: {exc.strerror}") from exc
    os.chmod(path, 0o700)


def _limits_ok(opslimit: int, memlimit: int) -> bool:
    """Bounded, and memlimit in whole KiB: libsodium rounds it down, so other values
    would let a damaged file decrypt with a key it does not say it uses."""
    return (
        MIN_OPSLIMIT <= opslimit <= MAX_OPSLIMIT
        and MIN_MEMLIMIT <= memlimit <= MAX_MEMLIMIT
        and memlimit % 1024 == 0
    )


def _kdf(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    key: bytes = argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )
    return key


def _encode(
    key: SigningKey, label: str, passphrase: bytes | None, opslimit: int, memlimit: int
) -> bytes:
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "type": KEY_TYPE,
        "public": key.public.hex(),
    }
    if passphrase is None:
        record |= {"seed": key.seed.hex(), "label": label}
    else:
        salt = os.urandom(argon2id.SALTBYTES)
        nonce = os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
        box = nacl.secret.SecretBox(_kdf(passphrase, salt, opslimit, memlimit))
        sealed = box.encrypt(key.seed, nonce).ciphertext
        kdf = {"name": KDF_NAME, "opslimit": opslimit, "memlimit": memlimit, "salt": salt.hex()}
        record |= {"label": label, "kdf": kdf, "nonce": nonce.hex(), "ciphertext": sealed.hex()}
    return (json.dumps(record, indent=2) + "\n").encode("ascii")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a private temp file in the same dir, fsync, rename, fsync the dir."""
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have narrowed it further
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_key(
    path: Path,
    key: SigningKey,
    *,
    label: str,
    passphrase: bytes | None = None,
    overwrite: bool = False,
    opslimit: int | None = None,
    memlimit: int | None = None,
) -> None:
    """Store ``key`` at ``path`` (whose directory must exist and be private)."""
    ops = DEFAULT_OPSLIMIT if opslimit is None else opslimit
    mem = DEFAULT_MEMLIMIT if memlimit is None else memlimit
    if not _limits_ok(ops, mem):
        raise ValueError(f"kdf limits out of range: opslimit={ops}, memlimit={mem}")
    if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"label must be a string of at most {MAX_LABEL_CHARS} characters")
    if passphrase is not None and not passphrase:
        raise KeyFileError(f"empty passphrase for key file {path}; give none for a plain file")
    _check_private_dir(path.parent)
    if not overwrite and os.path.lexists(path):
        raise KeyFileError(f"key file {path} already exists; refusing to overwrite it")
    data = _encode(key, label, passphrase, ops, mem)
    try:
        _atomic_write(path, data)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror or exc}") from exc


def _read_bytes(path: Path) -> bytes:
    check_private_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"corrupted key file {path}: larger than {MAX_FILE_BYTES} bytes")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _parse(path: Path, data: bytes) -> tuple[KeyFile, bytes | _Sealed]:
    """Validate every field strictly, so any damage is reported, not guessed around."""

    def bad(what: str) -> KeyFileError:
        return KeyFileError(f"corrupted key file {path}: {what}")

    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise bad("not valid JSON") from exc

    def field(o: dict[str, Any], name: str, kind: type) -> Any:
        value = o[name]
        if type(value) is not kind:  # exact: rejects True where 1 is expected
            raise bad(f"{name!r} must be a {kind.__name__}")
        return value

    def hexfield(o: dict[str, Any], name: str, size: int) -> bytes:
        value = field(o, name, str)
        if len(value) != 2 * size or _HEX_RE.fullmatch(value) is None:
            raise bad(f"{name!r} must be {size} bytes as lowercase hex")
        return bytes.fromhex(value)

    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise bad(f"not a {FORMAT} file")
    if set(obj) not in (_PLAIN_FIELDS, _SEALED_FIELDS):
        raise bad(f"unexpected fields {sorted(obj)}")
    if field(obj, "version", int) != VERSION:
        raise bad(f"unsupported version {obj['version']}")
    if field(obj, "type", str) != KEY_TYPE:
        raise bad(f"unsupported key type {obj['type']!r}")
    public = hexfield(obj, "public", PUBLIC_KEY_BYTES)
    label = field(obj, "label", str)
    if len(label) > MAX_LABEL_CHARS:
        raise bad("label too long")
    if "seed" in obj:
        seed = hexfield(obj, "seed", SEED_BYTES)
        if SigningKey(seed).public != public:
            raise bad("public key does not match the seed")
        return KeyFile(path, public, label, encrypted=False), seed
    kdf = field(obj, "kdf", dict)
    if set(kdf) != _KDF_FIELDS or field(kdf, "name", str) != KDF_NAME:
        raise bad(f"unsupported kdf {kdf.get('name')!r}")
    opslimit = field(kdf, "opslimit", int)
    memlimit = field(kdf, "memlimit", int)
    if not _limits_ok(opslimit, memlimit):
        raise bad("kdf limits out of range")
    return KeyFile(path, public, label, encrypted=True), _Sealed(
        opslimit,
        memlimit,
        hexfield(kdf, "salt", argon2id.SALTBYTES),
        hexfield(obj, "nonce", nacl.secret.SecretBox.NONCE_SIZE),
        hexfield(obj, "ciphertext", SEED_BYTES + nacl.secret.SecretBox.MACBYTES),
    )


def read_key_info(path: Path) -> KeyFile:
    """Public metadata of a key file; checks permissions and format, needs no passphrase."""
    return _parse(path, _read_bytes(path))[0]


def read_key(path: Path, *, passphrase: bytes | None = None) -> SigningKey:
    """Load the key at ``path``; the result always matches the stored public key."""
    info, secret = _parse(path, _read_bytes(path))
    if isinstance(secret, bytes):
        if passphrase is not None:
            raise KeyFileError(f"key file {path} is not encrypted but a passphrase was given")
        return SigningKey(secret)
    if passphrase is None:
        raise KeyFileError(f"key file {path} is encrypted; a passphrase is needed")
    try:
        box = nacl.secret.SecretBox(_kdf(passphrase, secret.salt, secret.opslimit, secret.memlimit))
        seed = box.decrypt(secret.ciphertext, secret.nonce)
    except (nacl.exceptions.CryptoError, MemoryError) as exc:
        raise WrongPassphrase(f"wrong passphrase or corrupted key file {path}") from exc
    key = SigningKey(seed)
    if key.public != info.public:
        raise KeyFileError(f"corrupted key file {path}: public key does not match the seed")
    return key


class Identity:
    """The keys of one node: node key plus author keys, in <data_dir>/keys."""

    def __init__(
        self,
        data_dir: Path,
        *,
        kdf_opslimit: int | None = None,
        kdf_memlimit: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._opslimit = kdf_opslimit
        self._memlimit = kdf_memlimit

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def authors_dir(self) -> Path:
        return self.keys_dir / "authors"

    @property
    def node_key_path(self) -> Path:
        return self.keys_dir / "node.key"

    def author_key_path(self, name: str) -> Path:
        return self.authors_dir / f"{validate_author_name(name)}.key"

    def exists(self) -> bool:
        return os.path.lexists(self.node_key_path)

    def _write(self, path: Path, key: SigningKey, label: str, passphrase: bytes | None) -> None:
        ops, mem = self._opslimit, self._memlimit
        write_key(path, key, label=label, passphrase=passphrase, opslimit=ops, memlimit=mem)

    def create(self, *, name: str, passphrase: bytes | None = None) -> None:
        """Make the node key and the "default" author key (labelled ``name``)."""
        if self.exists():
            raise NodeExists(f"a node already exists in {self.data_dir} ({self.node_key_path})")
        try:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            if not self.data_dir.is_dir():
                self.data_dir.mkdir(mode=0o700)
                os.chmod(self.data_dir, 0o700)  # a strict umask may have taken owner bits
        except OSError as exc:
            raise KeyFileError(f"cannot create {self.data_dir}: {exc.strerror}") from exc
        _make_private_dir(self.keys_dir)
        _make_private_dir(self.authors_dir)
        author_path = self.author_key_path(DEFAULT_AUTHOR)
        if os.path.lexists(author_path):
            raise KeyFileError(
                f"{author_path} exists but {self.node_key_path} does not (an earlier init was "
                f"interrupted?); move {author_path} away and retry"
            )
        # node.key last: its presence means the node is complete.
        self._write(author_path, new_signing_key(), name, passphrase)
        self._write(self.node_key_path, new_signing_key(), name, passphrase)

    def node_key(self, passphrase: bytes | None = None) -> SigningKey:
        return read_key(self.node_key_path, passphrase=passphrase)

    def node_info(self) -> KeyFile:
        return read_key_info(self.node_key_path)

    def add_author(
        self, name: str, *, label: str | None = None, passphrase: bytes | None = None
    ) -> SigningKey:
        """Create and store a new author key; refuses to replace an existing one."""
        path = self.author_key_path(name)
        if not self.exists():
            raise KeyFileError(f"no node in {self.data_dir}: create it first")
        key = new_signing_key()
        self._write(path, key, name if label is None else label, passphrase)
        return key

    def author_names(self) -> list[str]:
        """Names of the stored author keys, sorted; files with other names are ignored."""
        try:
            entries = os.listdir(self.authors_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KeyFileError(f"cannot list {self.authors_dir}: {exc.strerror}") from exc
        names = (e.removesuffix(".key") for e in entries if e.endswith(".key"))
        return sorted(n for n in names if AUTHOR_NAME_RE.fullmatch(n))

    def author_key(self, name: str = DEFAULT_AUTHOR, passphrase: bytes | None = None) -> SigningKey:
        return read_key(self.author_key_path(name), passphrase=passphrase)

    def author_info(self, name: str = DEFAULT_AUTHOR) -> KeyFile:
        return read_key_info(self.author_key_path(name))

    def check_permissions(self) -> None:
        """Refuse to run with any key readable by others; the daemon calls this at start."""
        _check_private_dir(self.keys_dir)
        _check_private_dir(self.authors_dir)
        check_private_file(self.node_key_path)
        try:
            entries = sorted(os.listdir(self.authors_dir))
        except OSError as exc:
            raise KeyFileError(f"cannot list {self.authors_dir}: {exc.strerror}") from exc
        for entry in entries:
            if entry.endswith(".key"):
                check_private_file(self.authors_dir / entry)
