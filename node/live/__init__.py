"""Live features between nodes: chat rooms over WebRTC data channels, jams and streams.

:func:`serve_live` runs a :class:`LiveManager` in the node's nursery (started
by ``serve_node`` when the node federates) and hangs it on the federation,
which hands it the signals peers send (``specs/live.md`` §9).  The manager
composes :class:`node.live.channels.PeerChannels` (one data channel per peer
node, signed offers and answers over the peer link) and
:class:`node.live.chat.ChatService` (rooms, history, the chat protocol),
:class:`node.live.media_call.MediaCalls` (audio calls between nodes) and
:class:`node.live.jam.JamService` (jam sessions and streamed tracks).

Nothing here imports aiortc at module level: the asyncio loop thread and
aiortc start with the first channel (a room with another node, or a peer's
offer), so an idle node stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from node.live.channels import OPEN_TIMEOUT, RING_TIMEOUT, PeerChannels
from node.live.chat import ChatService
from node.live.jam import JamService
from node.live.media_call import MediaCalls

if TYPE_CHECKING:
    from node.federation import Federation

__all__ = ["LiveManager", "serve_live"]


class LiveManager:
    """The live layer of one node: its data channels and its chat."""

    def __init__(
        self,
        federation: Federation,
        *,
        ring_timeout: float = RING_TIMEOUT,
        open_timeout: float = OPEN_TIMEOUT,
    ) -> None:
        self.channels = PeerChannels(
            federation, ring_timeout=ring_timeout, open_timeout=open_timeout
        )
        self.chat = ChatService(federation.node.store, federation.node.node_id, self.channels)
        self.channels.handler = self.chat
        self.calls = MediaCalls(self.channels)
        self.jams = JamService(federation.node, self.channels, self.calls)

    def receive_signal(self, peer: str, envelope: bytes) -> None:
        """A signal from the link authenticated as ``peer``; raises SignallingError if refused."""
        self.channels.receive_signal(peer, envelope)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.chat.load()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.channels.run)
            await nursery.start(self.calls.run)
            await nursery.start(self.jams.run)
            task_status.started()


async def serve_live(
    federation: Federation,
    *,
    ice_addresses: Sequence[str] | None = None,
    task_status: trio.TaskStatus[LiveManager] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the live layer of ``federation``'s node until cancelled."""
    manager = LiveManager(federation)
    manager.channels.ice_addresses = list(ice_addresses) if ice_addresses else None
    federation.live = manager
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            task_status.started(manager)
    finally:
        if federation.live is manager:
            federation.live = None
