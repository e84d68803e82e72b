"""Federation records in the node's database: peers, follows, blocks, scopes.

The command line writes these rows while the node may be running; the
running node re-reads them (cheap queries) on a short interval, so
``talas peer add`` or ``talas follow`` take effect without a restart.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from node.store import Store
from protocol.event import is_hex32

ADDRESS_PATTERN = re.compile(r"ws://[^/\s#?]+(?::\d+)?/?\Z")  # no TLS: Noise encrypts
P2P_PATH = "/talas/p2p/1"
MAX_REMEMBERED_SCOPES = 1000
SCOPES_PER_PEER = 4  # its scope and interest, and one change of each in flight


@dataclass(frozen=True)
class PeerRecord:
    address: str
    pinned_id: str | None
    node_id: str | None
    state: str
    last_seen: int | None
    last_error: str | None
    lag: int | None

    def as_json(self) -> dict[str, object]:
        return {
            "address": self.address,
            "pinned_id": self.pinned_id,
            "node_id": self.node_id,
            "state": self.state,
            "last_seen_ms": self.last_seen,
            "last_error": self.last_error,
            "lag": self.lag,
        }


def parse_address(text: str, pinned: str | None = None) -> tuple[str, str | None]:
    """Normalise ``ws://host:port[#NODEID]``; return (address, pinned node id)."""
    base, _, fragment = text.strip().partition("#")
    if fragment:
        if pinned and pinned != fragment:
            raise ValueError("two different node ids given for one address")
        pinned = fragment
    if not ADDRESS_PATTERN.match(base):
        raise ValueError(f"peer address must look like ws://HOST:PORT, got {text!r}")
    parts = urlsplit(base)
    if parts.port is None:
        raise ValueError(f"peer address needs a port: {text!r}")
    if pinned is not None and not is_hex32(pinned):
        raise ValueError("a pinned node id is 64 lowercase hex characters")
    return f"{parts.scheme}://{parts.netloc}", pinned


def add_peer(store: Store, address: str, pinned_id: str | None, now_ms: int) -> PeerRecord:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO peers (address, pinned_id, state, added) VALUES (?, ?, 'new', ?)"
            " ON CONFLICT(address) DO UPDATE SET pinned_id = excluded.pinned_id,"
            " state = 'new', last_error = NULL",
            (address, pinned_id, now_ms),
        )
    found = get_peer(store, address)
    assert found is not None
    return found


def remove_peer(store: Store, address: str) -> bool:
    with store.transaction() as conn:
        return conn.execute("DELETE FROM peers WHERE address = ?", (address,)).rowcount > 0


def _peer(row: tuple[object, ...]) -> PeerRecord:
    address, pinned, node_id, state, last_seen, error, lag = row
    return PeerRecord(
        str(address),
        None if pinned is None else str(pinned),
        None if node_id is None else str(node_id),
        str(state),
        None if last_seen is None else int(str(last_seen)),
        None if error is None else str(error),
        None if lag is None else int(str(lag)),
    )


_PEER_COLUMNS = "address, pinned_id, node_id, state, last_seen, last_error, lag"


def get_peer(store: Store, address: str) -> PeerRecord | None:
    rows = store.query(f"SELECT {_PEER_COLUMNS} FROM peers WHERE address = ?", (address,))  # noqa: S608
    return _peer(rows[0]) if rows else None


def list_peers(store: Store) -> list[PeerRecord]:
    return [_peer(r) for r in store.query(f"SELECT {_PEER_COLUMNS} FROM peers ORDER BY address")]  # noqa: S608


def record_peer_state(
    store: Store,
    address: str,
    *,
    state: str,
    now_ms: int,
    node_id: str | None = None,
    error: str | None = None,
    lag: int | None = None,
) -> None:
    """Written by the running node so ``talas peer list`` can show live state."""
    with store.transaction(durable=False) as conn:  # live state, rewritten often
        conn.execute(
            "UPDATE peers SET state = ?, node_id = coalesce(?, node_id), last_error = ?,"
            " lag = coalesce(?, lag), last_seen = CASE WHEN ? = 'connected' THEN ?"
            " ELSE last_seen END WHERE address = ?",
            (state, node_id, error, lag, state, now_ms, address),
        )


def follows(store: Store) -> list[str]:
    return [str(r[0]) for r in store.query("SELECT author FROM follows ORDER BY author")]


def set_follow(store: Store, author: str, following: bool, now_ms: int) -> bool:
    """Follow or unfollow; True when that changed anything."""
    with store.transaction() as conn:
        if following:
            cur = conn.execute(
                "INSERT OR IGNORE INTO follows (author, since) VALUES (?, ?)", (author, now_ms)
            )
        else:
            cur = conn.execute("DELETE FROM follows WHERE author = ?", (author,))
        return cur.rowcount > 0


def blocked(store: Store) -> dict[str, str]:
    """target id -> 'author' or 'node'."""
    return {str(t): str(w) for t, w in store.query("SELECT target, what FROM blocks")}


def block(store: Store, target: str, what: str, now_ms: int) -> None:
    if what not in ("author", "node"):
        raise ValueError(what)
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO blocks (target, what, since) VALUES (?, ?, ?)",
            (target, what, now_ms),
        )
        if what == "author":
            conn.execute("DELETE FROM follows WHERE author = ?", (target,))


def unblock(store: Store, target: str) -> bool:
    with store.transaction() as conn:
        return conn.execute("DELETE FROM blocks WHERE target = ?", (target,)).rowcount > 0


def scope_hash(authors: list[str] | frozenset[str] | set[str]) -> str:
    """Digest of a set of author ids, the same on every node."""
    return hashlib.sha256("\n".join(sorted(authors)).encode()).hexdigest()


def remember_scope(store: Store, authors: list[str], now_ms: int, peer: str) -> str:
    """Cache an author list by digest, so the next link announcing it costs nothing.

    Bounded twice: the newest few lists per peer (a peer cannot fill the
    disk by announcing ever new lists) and the newest MAX_REMEMBERED_SCOPES.
    """
    digest = scope_hash(authors)
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO scopes (hash, authors, seen, peer) VALUES (?, ?, ?, ?)",
            (digest, json.dumps(sorted(authors)), now_ms, peer),
        )
        conn.execute(
            "DELETE FROM scopes WHERE peer = ? AND hash NOT IN"
            " (SELECT hash FROM scopes WHERE peer = ? ORDER BY seen DESC LIMIT ?)",
            (peer, peer, SCOPES_PER_PEER),
        )
        conn.execute(
            "DELETE FROM scopes WHERE hash NOT IN"
            " (SELECT hash FROM scopes ORDER BY seen DESC LIMIT ?)",
            (MAX_REMEMBERED_SCOPES,),
        )
    return digest


def recall_scope(store: Store, digest: str) -> list[str] | None:
    rows = store.query("SELECT authors FROM scopes WHERE hash = ?", (digest,))
    if not rows:
        return None
    authors = json.loads(str(rows[0][0]))
    return [str(a) for a in authors] if isinstance(authors, list) else None
