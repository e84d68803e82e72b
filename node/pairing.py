"""Pairing with a nearby node: prove its key, show a code to compare, then pin it.

An mDNS advertisement is an unauthenticated hint: anyone on the LAN can
claim any node id at any address.  Pairing therefore dials the advertised
address and runs the federation handshake with the advertised id pinned
(``expected_peer``).  The Noise XX handshake proves the responder's node key
in message 2, before we reveal who we are in message 3, so a spoofed
advertisement fails there and never receives data from us.  Only then is the
short code shown; it is derived from both proven node ids, so the two people
comparing codes on their screens confirm there is no one in between, and
only after they confirm is the peer stored with its key pinned.

Known limit: the code covers only the two (public) node ids, so an attacker
on the LAN who advertises a look-alike name can grind keys (about 10^6, half
a minute of one core) until the code over its own id matches the code the
other person sees.  A commit-then-reveal exchange of random values over the
link, fed to ``pairing_code(binding=...)``, would make that search useless;
it needs both nodes to pair at the same moment and is not built yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import trio

from node import peerstore
from node.daemon import Node, now_ms
from node.discovery import pairing_code
from node.peerlink import WebSocketTransport, establish, open_websocket_client

PAIR_TIMEOUT = 10.0


@dataclass(frozen=True)
class PairingCheck:
    node_id: str
    address: str
    code: str


async def check_nearby(node: Node, address: str, claimed_id: str) -> PairingCheck:
    """Handshake with ``address`` expecting ``claimed_id``; the code to compare.

    Raises :class:`node.errors.PeerMisbehaved` when the node there does not
    hold ``claimed_id``'s key, :class:`node.errors.LinkBroken` when it cannot
    be reached.
    """
    address, _ = peerstore.parse_address(address, claimed_id)
    async with open_websocket_client(address + peerstore.P2P_PATH) as ws:
        link = await establish(
            WebSocketTransport(ws),
            initiator=True,
            node_key=node.node_key,
            expected_peer=claimed_id,
            handshake_seconds=PAIR_TIMEOUT,
        )
        await link.aclose()
    return PairingCheck(link.peer_id, address, pairing_code(node.node_id, link.peer_id))


async def confirm_pairing(node: Node, check: PairingCheck) -> peerstore.PeerRecord:
    """Store the proven node as a peer with its key pinned (federation dials it)."""
    return await trio.to_thread.run_sync(
        partial(peerstore.add_peer, node.store, check.address, check.node_id, now_ms())
    )
