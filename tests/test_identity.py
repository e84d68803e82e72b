"""Key files on disk: permissions, atomic writes, and refusal of any damage."""

from __future__ import annotations

import json
import os
import random
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest

from node.errors import InsecureKeyFile, KeyFileError, NodeExists, WrongPassphrase
from node.identity import (
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    Identity,
    InvalidAuthorName,
    KeyFile,
    check_private_file,
    new_signing_key,
    read_key,
    read_key_info,
    write_key,
)
from protocol.keys import SigningKey

OPS: int = argon2id.OPSLIMIT_MIN
MEM: int = argon2id.MEMLIMIT_MIN
PASS = b"correct horse battery staple"
LABEL = "my band"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    return d


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    return Identity(tmp_path / "data", kdf_opslimit=OPS, kdf_memlimit=MEM)


def write(path: Path, key: SigningKey, passphrase: bytes | None = None, **kw: Any) -> None:
    write_key(path, key, label=LABEL, passphrase=passphrase, opslimit=OPS, memlimit=MEM, **kw)


def overwrite_raw(path: Path, data: bytes) -> None:
    """Replace a key file's bytes, keeping it private so only content is tested."""
    path.write_bytes(data)
    path.chmod(0o600)


# --- round trips ---------------------------------------------------------------------------


def test_round_trip_plain(keydir: Path) -> None:
    key = new_signing_key()
    path = keydir / "node.key"
    write(path, key)
    assert read_key(path).seed == key.seed
    assert read_key_info(path) == KeyFile(path, key.public, LABEL, encrypted=False)
    doc = json.loads(path.read_text())
    assert doc == {
        "format": "talas-key",
        "version": 1,
        "type": "ed25519",
        "public": key.public.hex(),
        "seed": key.seed.hex(),
        "label": LABEL,
    }


def test_round_trip_encrypted(keydir: Path) -> None:
    key = new_signing_key()
    path = keydir / "node.key"
    write(path, key, PASS)
    assert read_key(path, passphrase=PASS).seed == key.seed
    assert read_key_info(path) == KeyFile(path, key.public, LABEL, encrypted=True)
    text = path.read_text()
    assert key.seed.hex() not in text
    doc = json.loads(text)
    assert doc["kdf"]["name"] == "argon2id"
    assert (doc["kdf"]["opslimit"], doc["kdf"]["memlimit"]) == (OPS, MEM)


def test_default_kdf_limits_meet_owasp(keydir: Path) -> None:
    assert (DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT) == (2, 64 * 1024 * 1024)
    path = keydir / "k.key"
    write_key(path, new_signing_key(), label="x", passphrase=PASS)
    kdf = json.loads(path.read_text())["kdf"]
    assert (kdf["opslimit"], kdf["memlimit"]) == (DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT)


def test_passphrase_must_match_file_kind(keydir: Path) -> None:
    plain, sealed = keydir / "plain.key", keydir / "sealed.key"
    write(plain, new_signing_key())
    write(sealed, new_signing_key(), PASS)
    with pytest.raises(KeyFileError, match="not encrypted") as info:
        read_key(plain, passphrase=PASS)
    assert str(plain) in str(info.value)
    with pytest.raises(KeyFileError, match="passphrase is needed") as info:
        read_key(sealed)
    assert str(sealed) in str(info.value)


def test_wrong_passphrase(keydir: Path) -> None:
    path = keydir / "k.key"
    write(path, new_signing_key(), PASS)
    for wrong in (b"nope", PASS + b" ", PASS[:-1]):
        with pytest.raises(WrongPassphrase) as info:
            read_key(path, passphrase=wrong)
        assert str(info.value) == f"wrong passphrase or corrupted key file {path}"


def test_empty_passphrase_and_bad_limits_refused(keydir: Path) -> None:
    with pytest.raises(KeyFileError, match="empty passphrase"):
        write(keydir / "k.key", new_signing_key(), b"")
    with pytest.raises(ValueError, match="kdf limits"):
        write_key(keydir / "k.key", new_signing_key(), label="x", passphrase=PASS, opslimit=0)
    assert os.listdir(keydir) == []


# --- permissions ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_created_modes_ignore_umask(identity: Identity, umask: int) -> None:
    old = os.umask(umask)
    try:
        identity.create(name="x")
        identity.add_author("solo")
    finally:
        os.umask(old)
    assert mode(identity.keys_dir) == 0o700
    assert mode(identity.authors_dir) == 0o700
    for path in (identity.node_key_path, *identity.authors_dir.iterdir()):
        assert stat.S_ISREG(os.lstat(path).st_mode)
        assert mode(path) == 0o600
    identity.check_permissions()


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o601])
def test_insecure_file_refused(keydir: Path, bad_mode: int) -> None:
    path = keydir / "node.key"
    write(path, new_signing_key())
    path.chmod(bad_mode)
    for call in (lambda: read_key(path), lambda: read_key_info(path)):
        with pytest.raises(InsecureKeyFile) as info:
            call()
        msg = str(info.value)
        assert str(path) in msg
        assert f"(mode {bad_mode:04o})" in msg
        assert f"fix with: chmod 600 {path}" in msg


@pytest.mark.parametrize("bad_mode", [0o755, 0o750, 0o701, 0o710, 0o770])
def test_insecure_dir_refused(keydir: Path, bad_mode: int) -> None:
    path = keydir / "node.key"
    write(path, new_signing_key())
    keydir.chmod(bad_mode)
    with pytest.raises(InsecureKeyFile) as info:
        read_key(path)
    msg = str(info.value)
    assert f"key directory {keydir} " in msg
    assert f"fix with: chmod 700 {keydir}" in msg
    with pytest.raises(InsecureKeyFile):
        write(keydir / "other.key", new_signing_key())
    assert not (keydir / "other.key").exists()


def test_check_private_file_needs_regular_file(keydir: Path) -> None:
    target = keydir / "real.key"
    write(target, new_signing_key())
    link = keydir / "link.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileError, match="not a regular file"):
        check_private_file(link)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_key(link)
    with pytest.raises(KeyFileError, match="does not exist") as info:
        read_key(keydir / "missing.key")
    assert str(keydir / "missing.key") in str(info.value)


def test_check_permissions_covers_every_key(identity: Identity) -> None:
    identity.create(name="x")
    identity.add_author("b")
    identity.check_permissions()
    (identity.authors_dir / "b.key").chmod(0o640)
    with pytest.raises(InsecureKeyFile, match=r"b\.key"):
        identity.check_permissions()
    (identity.authors_dir / "b.key").chmod(0o600)
    identity.authors_dir.chmod(0o755)
    with pytest.raises(InsecureKeyFile, match="chmod 700"):
        identity.check_permissions()
    identity.authors_dir.chmod(0o700)
    identity.keys_dir.chmod(0o711)
    with pytest.raises(InsecureKeyFile):
        identity.check_permissions()


# --- damaged files -------------------------------------------------------------------------


def label_span(data: bytes) -> range:
    start = data.index(b'"label": "') + len(b'"label": "')
    return range(start, data.index(b'"', start))


def assert_flips_detected(path: Path, read: Callable[[], SigningKey]) -> None:
    """Every single-byte change is an error, except inside the (unprotected) label."""
    original = path.read_bytes()
    expected = read().seed
    labels = label_span(original)
    for pos in range(len(original)):
        for mask in (0x01, 0x02, 0x10, 0x20, 0x80):
            damaged = bytearray(original)
            damaged[pos] ^= mask
            overwrite_raw(path, bytes(damaged))
            try:
                key = read()
            except KeyFileError as exc:
                assert str(path) in str(exc)
                continue
            assert key.seed == expected, f"different key after flipping byte {pos}"
            assert pos in labels, f"flip at {pos} ({chr(original[pos])!r}) went unnoticed"


def test_byte_flips_plain(keydir: Path) -> None:
    path = keydir / "k.key"
    write(path, new_signing_key())
    assert_flips_detected(path, lambda: read_key(path))


def test_byte_flips_encrypted(keydir: Path) -> None:
    path = keydir / "k.key"
    write(path, new_signing_key(), PASS)
    assert_flips_detected(path, lambda: read_key(path, passphrase=PASS))


@pytest.mark.parametrize("passphrase", [None, PASS])
def test_truncated(keydir: Path, passphrase: bytes | None) -> None:
    path = keydir / "k.key"
    write(path, new_signing_key(), passphrase)
    data = path.read_bytes()
    for size in range(len(data) - 1):  # the final newline is optional
        overwrite_raw(path, data[:size])
        with pytest.raises(KeyFileError, match="corrupted key file"):
            read_key(path, passphrase=passphrase)


def test_garbage(keydir: Path) -> None:
    path = keydir / "k.key"
    rng = random.Random(1234)
    samples = [
        b"",
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b'"talas-key"',
        b"[" * 50_000 + b"]" * 10_000,
        b'{"format": NaN}',
        b"{" + b" " * (70 * 1024) + b"}",
        *(rng.randbytes(rng.randrange(1, 300)) for _ in range(200)),
    ]
    for data in samples:
        overwrite_raw(path, data)
        with pytest.raises(KeyFileError) as info:
            read_key(path)
        assert str(path) in str(info.value)
        with pytest.raises(KeyFileError):
            read_key_info(path)


Mutation = Callable[[dict[str, Any], SigningKey], None]


def _set(name: str, value: Any) -> Mutation:
    return lambda d, _: d.__setitem__(name, value)


def _set_kdf(name: str, value: Any) -> Mutation:
    return lambda d, _: d["kdf"].__setitem__(name, value)


COMMON: list[Mutation] = [
    _set("version", True),
    _set("version", 2),
    _set("version", "1"),
    _set("version", 1.0),
    _set("format", "talas-keys"),
    _set("type", "x25519"),
    _set("label", 7),
    _set("label", "x" * 1000),
    _set("comment", "hi"),
    lambda d, _: d.pop("label"),
    lambda d, _: d.__setitem__("public", d["public"][:-2]),
    lambda d, _: d.__setitem__("public", d["public"] + "00"),
    lambda d, _: d.__setitem__("public", d["public"].upper()),
    lambda d, _: d.__setitem__("public", d["public"][:62] + " 0"),
    lambda d, other: d.__setitem__("public", other.public.hex()),
    lambda d, other: d.__setitem__("public", list(other.public)),
]
PLAIN_ONLY: list[Mutation] = [
    _set("seed", "00" * 31),
    _set("seed", "zz" * 32),
    _set("seed", None),
    lambda d, other: d.__setitem__("seed", other.seed.hex()),
]
SEALED_ONLY: list[Mutation] = [
    _set_kdf("name", "scrypt"),
    _set_kdf("memlimit", 2**40),  # must be refused before argon2 tries to allocate it
    _set_kdf("memlimit", MEM + 1),
    _set_kdf("opslimit", 0),
    _set_kdf("opslimit", 2**32),
    _set_kdf("salt", "00" * 8),
    _set_kdf("extra", 1),
    _set("kdf", []),
    _set("nonce", "00" * 23),
    _set("ciphertext", "00" * 47),
    lambda d, other: d.__setitem__("seed", other.seed.hex()),
]


@pytest.mark.parametrize(
    ("passphrase", "mutations"), [(None, COMMON + PLAIN_ONLY), (PASS, COMMON + SEALED_ONLY)]
)
def test_bad_fields(keydir: Path, passphrase: bytes | None, mutations: list[Mutation]) -> None:
    path = keydir / "k.key"
    write(path, new_signing_key(), passphrase)
    original = path.read_text()
    for i, mutate in enumerate(mutations):
        doc = json.loads(original)
        mutate(doc, new_signing_key())
        overwrite_raw(path, json.dumps(doc).encode())
        with pytest.raises(KeyFileError) as info:
            read_key(path, passphrase=passphrase)
        assert str(path) in str(info.value), i


def test_swapped_public_in_sealed_file_is_corruption(keydir: Path) -> None:
    path = keydir / "k.key"
    write(path, new_signing_key(), PASS)
    doc = json.loads(path.read_text())
    doc["public"] = new_signing_key().public.hex()
    overwrite_raw(path, json.dumps(doc).encode())
    with pytest.raises(KeyFileError, match="does not match"):
        read_key(path, passphrase=PASS)


# --- atomic writes -------------------------------------------------------------------------


def test_refuses_overwrite_unless_asked(keydir: Path) -> None:
    path = keydir / "k.key"
    first, second = new_signing_key(), new_signing_key()
    write(path, first)
    with pytest.raises(KeyFileError, match="already exists"):
        write(path, second)
    assert read_key(path).seed == first.seed
    write(path, second, overwrite=True)
    assert read_key(path).seed == second.seed
    assert sorted(os.listdir(keydir)) == ["k.key"]


def test_no_temp_files_left(identity: Identity) -> None:
    identity.create(name="x", passphrase=PASS)
    identity.add_author("a")
    assert sorted(os.listdir(identity.keys_dir)) == ["authors", "node.key"]
    assert sorted(os.listdir(identity.authors_dir)) == ["a.key", "default.key"]


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
@pytest.mark.parametrize("error", [OSError(5, "I/O error"), KeyboardInterrupt()])
def test_crash_during_write_keeps_old_key(
    keydir: Path, monkeypatch: pytest.MonkeyPatch, failing: str, error: BaseException
) -> None:
    path = keydir / "k.key"
    old = new_signing_key()
    write(path, old)

    def boom(*args: object, **kwargs: object) -> Any:
        raise error

    monkeypatch.setattr(os, failing, boom)
    expected = KeyFileError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        write(path, new_signing_key(), PASS, overwrite=True)
    with pytest.raises(expected):
        write(keydir / "fresh.key", new_signing_key())
    monkeypatch.undo()
    assert read_key(path).seed == old.seed
    assert os.listdir(keydir) == ["k.key"]


# --- Identity ------------------------------------------------------------------------------


def test_create_and_load(identity: Identity) -> None:
    assert not identity.exists()
    identity.create(name="Les Ondes")
    assert identity.exists()
    node, author = identity.node_key(), identity.author_key()
    assert node.public != author.public
    assert identity.node_info() == KeyFile(
        identity.node_key_path, node.public, "Les Ondes", encrypted=False
    )
    assert identity.author_info().label == "Les Ondes"
    assert identity.author_names() == ["default"]
    assert identity.keys_dir == identity.data_dir / "keys"
    with pytest.raises(NodeExists):
        identity.create(name="again")
    assert identity.node_key().seed == node.seed


def test_create_with_passphrase_encrypts_everything(identity: Identity) -> None:
    identity.create(name="x", passphrase=PASS)
    assert identity.node_info().encrypted and identity.author_info().encrypted
    assert identity.node_key(PASS).public == identity.node_info().public
    assert identity.author_key(passphrase=PASS).public == identity.author_info().public
    with pytest.raises(WrongPassphrase):
        identity.node_key(b"wrong")
    with pytest.raises(KeyFileError):
        identity.node_key()


def test_authors(identity: Identity) -> None:
    with pytest.raises(KeyFileError, match="create it first"):
        identity.add_author("early")
    identity.create(name="collective")
    zed = identity.add_author("zed", label="Zed Z.")
    amy = identity.add_author("amy", passphrase=PASS)
    (identity.authors_dir / "notes.txt").write_text("ignored")
    assert identity.author_names() == ["amy", "default", "zed"]
    assert identity.author_key("zed").seed == zed.seed
    assert identity.author_info("zed").label == "Zed Z."
    assert identity.author_key("amy", PASS).seed == amy.seed
    assert identity.author_info("amy").label == "amy"
    with pytest.raises(KeyFileError, match="already exists"):
        identity.add_author("zed")
    assert identity.author_key("zed").seed == zed.seed


def test_interrupted_create_is_not_clobbered(identity: Identity) -> None:
    identity.create(name="x")
    author = identity.author_key()
    identity.node_key_path.unlink()
    with pytest.raises(KeyFileError, match="interrupted"):
        identity.create(name="x")
    assert identity.author_key().seed == author.seed


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        ".",
        "../x",
        "a/b",
        "/etc/passwd",
        "a\\b",
        "A",
        "-a",
        "_a",
        "a.key",
        ".hidden",
        "a b",
        "é",
        "default\n",
        "a\x00",
        "a" * 64,
    ],
)
def test_bad_author_names_refused(identity: Identity, name: str) -> None:
    identity.create(name="x")
    before = sorted(p.name for p in identity.data_dir.rglob("*"))
    for call in (
        lambda: identity.add_author(name),
        lambda: identity.author_key(name),
        lambda: identity.author_info(name),
    ):
        with pytest.raises(InvalidAuthorName, match="invalid author name"):
            call()
    assert sorted(p.name for p in identity.data_dir.rglob("*")) == before


@pytest.mark.parametrize("name", ["a", "0", "a-b_c", "z" * 63, "9lives"])
def test_good_author_names(identity: Identity, name: str) -> None:
    identity.create(name="x")
    identity.add_author(name)
    assert name in identity.author_names()
