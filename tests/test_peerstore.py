"""Federation records: addresses, the scope cache and its bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import peerstore
from node.store import Store


def test_parse_address_normalises_and_pins() -> None:
    node_id = "ab" * 32
    assert peerstore.parse_address("ws://127.0.0.1:9000/") == ("ws://127.0.0.1:9000", None)
    assert peerstore.parse_address(f"ws://host:1#{node_id}") == ("ws://host:1", node_id)
    assert peerstore.parse_address("ws://[::1]:9000", node_id) == ("ws://[::1]:9000", node_id)
    for bad in ("wss://host:1", "http://host:1", "ws://host", "ws://host:1/path", "host:1"):
        with pytest.raises(ValueError):
            peerstore.parse_address(bad)
    with pytest.raises(ValueError, match="pinned"):
        peerstore.parse_address("ws://host:1#XYZ")
    with pytest.raises(ValueError, match="two different"):
        peerstore.parse_address(f"ws://host:1#{node_id}", "cd" * 32)


def test_scope_cache_is_bounded_per_peer(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        lists = [[f"{i:064x}"] for i in range(10)]
        for at, authors in enumerate(lists):
            peerstore.remember_scope(store, authors, at, peer="noisy")
        kept = peerstore.remember_scope(store, ["ee" * 32], 0, peer="quiet")
        noisy = [
            authors for authors in lists
            if peerstore.recall_scope(store, peerstore.scope_hash(authors)) is not None
        ]  # fmt: skip
        assert noisy == lists[-peerstore.SCOPES_PER_PEER :]
        assert peerstore.recall_scope(store, kept) == ["ee" * 32]
        assert peerstore.scope_hash(["b" * 64, "a" * 64]) == peerstore.scope_hash(
            ["a" * 64, "b" * 64]
        )
    finally:
        store.close()
