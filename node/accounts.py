"""Accounts: users with roles, password checks, browser sessions and API tokens.

Everything lives in the node's SQLite database.  Passwords are argon2id
(libsodium via PyNaCl) at or above OWASP's minimum; a stored hash made with
weaker parameters is replaced at the next successful login.  Session ids
and API tokens are random 256-bit strings shown once and stored only as
SHA-256 digests, so reading the database does not sign anyone in.

Timing: a login for an unknown user verifies the password against a dummy
hash made with the current parameters, so it costs the same as a login for a
known user and does not reveal which names exist.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.pwhash

from node.errors import TalasError
from node.identity import Identity
from node.roles import Role, parse_role
from node.store import Store

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
SESSION_IDLE_MS = 7 * 24 * 3600 * 1000
SESSION_MAX_MS = 30 * 24 * 3600 * 1000
SESSION_SEEN_GRANULARITY_MS = 60_000
TOKEN_PREFIX = "talas_"  # noqa: S105 - a prefix, not a secret


class AccountError(TalasError, ValueError):
    """A request about accounts that cannot be honoured (bad name, weak password...)."""


class UnknownUser(AccountError):
    pass


class UserExists(AccountError):
    pass


@dataclass(frozen=True)
class PasswordPolicy:
    """argon2id cost.  OWASP's minimum is m=19 MiB, t=2, p=1 (libsodium fixes p=1)."""

    opslimit: int = 3
    memlimit: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.opslimit < OWASP_OPSLIMIT or self.memlimit < OWASP_MEMLIMIT:
            raise ValueError("password hashing below OWASP's argon2id minimum (m=19 MiB, t=2)")


OWASP_OPSLIMIT = 2
OWASP_MEMLIMIT = 19 * 1024 * 1024

_PARAMS_RE = re.compile(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")


def hash_password(password: str, policy: PasswordPolicy) -> str:
    data = password.encode()
    return nacl.pwhash.argon2id.str(
        data, opslimit=policy.opslimit, memlimit=policy.memlimit
    ).decode()


def verify_password(stored: str, password: str) -> bool:
    try:
        return bool(nacl.pwhash.argon2id.verify(stored.encode(), password.encode()))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False


def needs_rehash(stored: str, policy: PasswordPolicy) -> bool:
    """True when ``stored`` was made with less memory or fewer passes than ``policy``."""
    match = _PARAMS_RE.match(stored)
    if match is None:
        return True
    memory_kib, passes = int(match.group(1)), int(match.group(2))
    return memory_kib * 1024 < policy.memlimit or passes < policy.opslimit


def check_username(name: object) -> str:
    if not isinstance(name, str) or USERNAME_RE.match(name) is None:
        raise AccountError(
            "user names are 1-32 characters: lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"passwords are {MIN_PASSWORD} to {MAX_PASSWORD} characters long")
    return password


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    author: str
    author_key: str
    created: int

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.value,
            "author": self.author,
            "created": self.created,
        }


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    stale: bool = False
    """Last seen more than a minute ago: the caller should :meth:`Accounts.touch_session`."""


_USER_COLUMNS = "name, role, password, author, author_key, created"
_JOINED_USER_COLUMNS = "u.name, u.role, u.password, u.author, u.author_key, u.created"


def _user(row: tuple[object, ...]) -> tuple[User, str]:
    name, role, password, author, author_key, created = row
    user = User(str(name), Role(str(role)), str(author), str(author_key), int(str(created)))
    return user, str(password)


class Accounts:
    """Users, sessions and tokens over a :class:`Store`; blocking: call from a thread."""

    def __init__(self, store: Store, policy: PasswordPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or PasswordPolicy()
        self._dummy: str | None = None

    # -- users --------------------------------------------------------------

    def count(self) -> int:
        return int(str(self.store.query("SELECT count(*) FROM users")[0][0]))

    def get(self, name: str) -> User | None:
        rows = self.store.query(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))  # noqa: S608
        return _user(rows[0])[0] if rows else None

    def by_author(self, author: str) -> User | None:
        rows = self.store.query(f"SELECT {_USER_COLUMNS} FROM users WHERE author = ?", (author,))  # noqa: S608
        return _user(rows[0])[0] if rows else None

    def list_users(self) -> list[User]:
        rows = self.store.query(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")  # noqa: S608
        return [_user(row)[0] for row in rows]

    def add(
        self, name: str, role: Role | str, password: str, *, author: str, author_key: str, now: int
    ) -> User:
        """Store a new user whose author key (``author_key`` names it) already exists."""
        check_username(name)
        check_password(password)
        role = parse_role(role)
        hashed = hash_password(password, self.policy)
        with self.store.transaction() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise UserExists(f"a user named {name!r} already exists")
            conn.execute(
                f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
                (name, role.value, hashed, author, author_key, now),
            )
        return User(name, role, author, author_key, now)

    def set_role(self, name: str, role: Role | str) -> User:
        role = parse_role(role)
        with self.store.transaction() as conn:
            changed = conn.execute(
                "UPDATE users SET role = ? WHERE name = ?", (role.value, name)
            ).rowcount
            if not changed:
                raise UnknownUser(f"no user named {name!r}")
            self._guard_last_owner(conn)
        user = self.get(name)
        assert user is not None
        return user

    def set_password(self, name: str, password: str) -> None:
        """Replace the password and sign the user out everywhere."""
        check_password(password)
        hashed = hash_password(password, self.policy)
        with self.store.transaction() as conn:
            if not conn.execute(
                "UPDATE users SET password = ? WHERE name = ?", (hashed, name)
            ).rowcount:
                raise UnknownUser(f"no user named {name!r}")
            conn.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def remove(self, name: str) -> User:
        """Remove a user, their sessions and tokens.  Their signed events stay."""
        user = self.get(name)
        if user is None:
            raise UnknownUser(f"no user named {name!r}")
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM users WHERE name = ?", (name,))
            conn.execute("DELETE FROM sessions WHERE user = ?", (name,))
            conn.execute("DELETE FROM tokens WHERE user = ?", (name,))
            self._guard_last_owner(conn)
        return user

    @staticmethod
    def _guard_last_owner(conn: Any) -> None:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        owners = conn.execute("SELECT count(*) FROM users WHERE role = 'owner'").fetchone()[0]
        if users and not owners:
            raise AccountError("a node keeps at least one owner")

    # -- passwords ----------------------------------------------------------

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = hash_password(secrets.token_urlsafe(16), self.policy)
        return self._dummy

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs; None otherwise, in the same time either way."""
        rows = []
        if isinstance(name, str) and USERNAME_RE.match(name):
            rows = self.store.query(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))  # noqa: S608
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            password = ""
        if not rows:
            verify_password(self._dummy_hash(), password)
            return None
        user, stored = _user(rows[0])
        if not verify_password(stored, password):
            return None
        if needs_rehash(stored, self.policy):
            fresh = hash_password(password, self.policy)
            with self.store.transaction() as conn:
                conn.execute(
                    "UPDATE users SET password = ? WHERE name = ? AND password = ?",
                    (fresh, name, stored),
                )
        return user

    # -- sessions -----------------------------------------------------------

    def open_session(self, user: User, now: int) -> tuple[str, str]:
        """A new (session id, CSRF token) for ``user``; only the id's digest is kept."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.store.transaction() as conn:
            conn.execute(
                "DELETE FROM sessions WHERE expires <= ? OR created <= ?",
                (now, now - SESSION_MAX_MS),
            )
            conn.execute(
                "INSERT INTO sessions (digest, user, csrf, created, expires, seen)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (_digest(session_id), user.name, csrf, now, now + SESSION_IDLE_MS, now),
            )
        return session_id, csrf

    def session(self, session_id: str, now: int) -> Session | None:
        """The live session for ``session_id`` (a read only; see :meth:`touch_session`).

        Sessions expire after a week idle and a month in all.  An expired
        session reads as None and is deleted at the next login.
        """
        if not session_id or len(session_id) > 100:
            return None
        rows = self.store.query(
            f"SELECT s.csrf, s.created, s.expires, s.seen, {_JOINED_USER_COLUMNS}"  # noqa: S608
            " FROM sessions s JOIN users u ON u.name = s.user WHERE s.digest = ?",
            (_digest(session_id),),
        )
        if not rows:
            return None
        csrf, created, expires, seen, *rest = rows[0]
        if now >= int(str(expires)) or now >= int(str(created)) + SESSION_MAX_MS:
            return None
        stale = now - int(str(seen)) >= SESSION_SEEN_GRANULARITY_MS
        return Session(_user(tuple(rest))[0], str(csrf), stale)

    def touch_session(self, session_id: str, now: int) -> None:
        """Slide the idle expiry of a session in use (callers do it at most once a minute)."""
        with self.store.transaction(durable=False) as conn:
            conn.execute(
                "UPDATE sessions SET seen = ?, expires = ? WHERE digest = ?",
                (now, now + SESSION_IDLE_MS, _digest(session_id)),
            )

    def close_session(self, session_id: str) -> bool:
        with self.store.transaction() as conn:
            cursor = conn.execute("DELETE FROM sessions WHERE digest = ?", (_digest(session_id),))
            return bool(cursor.rowcount)

    # -- API tokens ---------------------------------------------------------

    def create_token(self, name: str, label: str, now: int) -> str:
        """A new bearer token for user ``name``; printed once, stored as a digest."""
        if self.get(name) is None:
            raise UnknownUser(f"no user named {name!r}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (digest, user, label, created) VALUES (?, ?, ?, ?)",
                (_digest(token), name, label[:100], now),
            )
        return token

    def token_user(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        rows = self.store.query(
            f"SELECT {_JOINED_USER_COLUMNS}"  # noqa: S608
            " FROM tokens t JOIN users u ON u.name = t.user WHERE t.digest = ?",
            (_digest(token),),
        )
        return _user(rows[0])[0] if rows else None

    def revoke_token(self, token: str) -> bool:
        """Revoke by the token itself or by the 12-character prefix of its digest."""
        with self.store.transaction() as conn:
            if token.startswith(TOKEN_PREFIX):
                cursor = conn.execute("DELETE FROM tokens WHERE digest = ?", (_digest(token),))
            elif re.fullmatch(r"[0-9a-f]{12}", token):
                cursor = conn.execute(
                    "DELETE FROM tokens WHERE substr(digest, 1, 12) = ?", (token,)
                )
            else:
                raise AccountError("give the token itself or its 12-character id")
            return bool(cursor.rowcount)

    def tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT substr(digest, 1, 12), user, label, created FROM tokens"
        rows = self.store.query(sql + " WHERE user = ?", (name,)) if name else self.store.query(sql)
        return [
            {"id": str(i), "user": str(u), "label": str(label), "created": int(str(c))}
            for i, u, label, c in rows
        ]


def member_key_name(user: str) -> str:
    """The author key file name of user ``user`` (apart from the collective's ``default``)."""
    return f"member-{user}"


def add_member(
    identity: Identity,
    accounts: Accounts,
    name: str,
    role: Role | str,
    password: str,
    *,
    now: int,
    passphrase: bytes | None = None,
) -> User:
    """Create user ``name`` with an author key of their own."""
    check_username(name)
    check_password(password)
    parse_role(role)
    if accounts.get(name) is not None:
        raise UserExists(f"a user named {name!r} already exists")
    key_name = member_key_name(name)
    if os.path.lexists(identity.author_key_path(key_name)):
        raise UserExists(
            f"an author key for {name!r} remains from an earlier user "
            f"({identity.author_key_path(key_name)}): choose another name or move the key away"
        )
    key = identity.add_author(key_name, label=name, passphrase=passphrase)
    return accounts.add(name, role, password, author=key.id, author_key=key_name, now=now)
