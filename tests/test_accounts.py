"""Accounts: password hashing, roles, sessions and tokens over a real SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from node.accounts import (
    SESSION_IDLE_MS,
    SESSION_MAX_MS,
    AccountError,
    Accounts,
    PasswordPolicy,
    UnknownUser,
    UserExists,
    add_member,
    hash_password,
    member_key_name,
    needs_rehash,
    verify_password,
)
from node.identity import Identity
from node.roles import Permission, Role, allowed, may_manage, parse_role, permissions_of
from node.store import Store

FAST = PasswordPolicy(opslimit=2, memlimit=19 * 1024 * 1024)  # OWASP's minimum
NOW = 1_800_000_000_000


@pytest.fixture
def accounts(store: Store) -> Accounts:
    return Accounts(store, FAST)


def _add(accounts: Accounts, name: str, role: str = "member", pw: str = "correct horse") -> None:
    accounts.add(name, role, pw, author="a" * 64, author_key=member_key_name(name), now=NOW)


def test_policy_refuses_parameters_below_owasp_minimum() -> None:
    with pytest.raises(ValueError, match="OWASP"):
        PasswordPolicy(opslimit=1, memlimit=64 * 1024 * 1024)
    with pytest.raises(ValueError, match="OWASP"):
        PasswordPolicy(opslimit=3, memlimit=8 * 1024 * 1024)
    default = PasswordPolicy()
    assert default.memlimit >= 19 * 1024 * 1024 and default.opslimit >= 2


def test_hash_is_argon2id_and_verifies_only_the_right_password() -> None:
    stored = hash_password("correct horse", FAST)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsE")
    assert not verify_password("garbage", "correct horse")


def test_needs_rehash_when_parameters_rise() -> None:
    weak = hash_password("pw-pw-pw-pw", FAST)
    assert not needs_rehash(weak, FAST)
    assert needs_rehash(weak, PasswordPolicy())
    assert needs_rehash("$2b$12$notargon", FAST)


def test_login_rehashes_an_old_hash_with_the_current_parameters(store: Store) -> None:
    _add(Accounts(store, FAST), "alice")
    stronger = Accounts(store, PasswordPolicy(opslimit=3, memlimit=32 * 1024 * 1024))
    assert stronger.authenticate("alice", "correct horse") is not None
    stored = str(store.query("SELECT password FROM users WHERE name = 'alice'")[0][0])
    assert "m=32768,t=3" in stored
    assert stronger.authenticate("alice", "correct horse") is not None
    assert stronger.authenticate("alice", "wrong password") is None


def test_unknown_user_login_costs_as_much_as_a_known_one(accounts: Accounts) -> None:
    _add(accounts, "alice")
    accounts.authenticate("nobody", "x" * 12)  # makes the dummy hash once

    def timed(name: str) -> float:
        start = time.perf_counter()
        for _ in range(5):
            assert accounts.authenticate(name, "wrong password") is None
        return time.perf_counter() - start

    known, unknown = timed("alice"), timed("nobody")
    # Both run one argon2id verification per attempt; without the dummy hash
    # the unknown name would return in microseconds (a ratio near 0).
    assert unknown / known > 0.5


def test_add_validates_names_passwords_and_roles(accounts: Accounts) -> None:
    with pytest.raises(AccountError, match="user names"):
        _add(accounts, "../etc")
    with pytest.raises(AccountError, match="user names"):
        _add(accounts, "Alice")
    with pytest.raises(AccountError, match="passwords are"):
        _add(accounts, "bob", pw="short")
    with pytest.raises(ValueError, match="unknown role"):
        _add(accounts, "bob", role="root")
    _add(accounts, "bob", role="owner")
    with pytest.raises(UserExists):
        _add(accounts, "bob")
    assert [u.name for u in accounts.list_users()] == ["bob"]


def test_last_owner_cannot_be_removed_or_demoted(accounts: Accounts) -> None:
    _add(accounts, "owner1", role="owner")
    _add(accounts, "m", role="member")
    with pytest.raises(AccountError, match="at least one owner"):
        accounts.set_role("owner1", "admin")
    with pytest.raises(AccountError, match="at least one owner"):
        accounts.remove("owner1")
    assert accounts.get("owner1") is not None and accounts.get("owner1").role is Role.OWNER  # type: ignore[union-attr]
    accounts.remove("m")
    with pytest.raises(UnknownUser):
        accounts.remove("m")


def test_sessions_store_only_digests_and_expire(accounts: Accounts, store: Store) -> None:
    _add(accounts, "alice", role="owner")
    user = accounts.get("alice")
    assert user is not None
    session_id, csrf = accounts.open_session(user, NOW)
    assert not store.query("SELECT 1 FROM sessions WHERE digest = ?", (session_id,))
    found = accounts.session(session_id, NOW + 1000)
    assert found is not None and found.user.name == "alice" and found.csrf == csrf
    assert accounts.session(session_id + "x", NOW) is None
    # Idle expiry slides with use; the absolute maximum does not.
    assert accounts.session(session_id, NOW + SESSION_IDLE_MS) is None  # idle a week
    later = NOW + SESSION_IDLE_MS - 1
    used = accounts.session(session_id, later)
    assert used is not None and used.stale
    accounts.touch_session(session_id, later)
    assert accounts.session(session_id, later + SESSION_IDLE_MS - 1) is not None
    assert accounts.session(session_id, NOW + SESSION_MAX_MS) is None  # a month in all
    # Expired sessions are purged at the next login.
    accounts.open_session(user, NOW + SESSION_MAX_MS)
    assert store.query("SELECT count(*) FROM sessions")[0][0] == 1


def test_logout_and_password_change_revoke_sessions(accounts: Accounts) -> None:
    _add(accounts, "alice", role="owner")
    user = accounts.get("alice")
    assert user is not None
    first, _ = accounts.open_session(user, NOW)
    second, _ = accounts.open_session(user, NOW)
    assert accounts.close_session(first)
    assert accounts.session(first, NOW) is None
    assert accounts.session(second, NOW) is not None
    accounts.set_password("alice", "a new password")
    assert accounts.session(second, NOW) is None
    assert accounts.authenticate("alice", "a new password") is not None


def test_tokens_work_until_revoked_and_die_with_the_user(accounts: Accounts, store: Store) -> None:
    _add(accounts, "owner1", role="owner")
    _add(accounts, "bot", role="member")
    token = accounts.create_token("bot", "ci", NOW)
    assert token.startswith("talas_")
    assert not store.query("SELECT 1 FROM tokens WHERE digest = ?", (token,))
    user = accounts.token_user(token)
    assert user is not None and user.name == "bot"
    assert accounts.token_user(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    listed = accounts.tokens("bot")
    assert len(listed) == 1 and listed[0]["label"] == "ci"
    assert accounts.revoke_token(listed[0]["id"])
    assert accounts.token_user(token) is None
    second = accounts.create_token("bot", "ci", NOW)
    accounts.remove("bot")
    assert accounts.token_user(second) is None
    with pytest.raises(UnknownUser):
        accounts.create_token("bot", "x", NOW)
    with pytest.raises(AccountError):
        accounts.revoke_token("not a token")


def test_add_member_gives_each_user_an_author_key(tmp_path: Path) -> None:
    identity = Identity(tmp_path / "node", kdf_opslimit=None)
    identity.create(name="collective")
    store = Store(tmp_path / "node" / "talas.db")
    try:
        accounts = Accounts(store, FAST)
        alice = add_member(identity, accounts, "alice", "owner", "correct horse", now=NOW)
        bob = add_member(identity, accounts, "bob", "member", "correct horse", now=NOW)
        assert alice.author != bob.author
        assert identity.author_key(member_key_name("alice")).id == alice.author
        assert alice.author != identity.author_key("default").id
        accounts.remove("bob")
        with pytest.raises(UserExists, match="remains from an earlier user"):
            add_member(identity, accounts, "bob", "member", "correct horse", now=NOW)
    finally:
        store.close()


def test_role_table() -> None:
    assert allowed(Role.GUEST, Permission.READ)
    assert not allowed(Role.GUEST, Permission.POST)
    assert not allowed(Role.MEMBER, Permission.POST_AS_COLLECTIVE)
    assert not allowed(Role.MEMBER, Permission.MANAGE_USERS)
    assert allowed(Role.ADMIN, Permission.MANAGE_PEERS)
    assert permissions_of(Role.OWNER) == sorted(p.value for p in Permission)
    assert may_manage(Role.OWNER, Role.OWNER, Role.ADMIN)
    assert may_manage(Role.ADMIN, Role.MEMBER, Role.ADMIN)
    assert not may_manage(Role.ADMIN, Role.OWNER)
    assert not may_manage(Role.ADMIN, Role.MEMBER, Role.OWNER)
    assert not may_manage(Role.MEMBER, Role.GUEST)
    assert parse_role("guest") is Role.GUEST
    with pytest.raises(ValueError, match="owner, admin, member, guest"):
        parse_role("superuser")
