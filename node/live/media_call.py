"""Media calls between nodes: audio transceivers plus a control channel, signed like chat calls.

A media call is a WebRTC call between two nodes for one purpose, declared
in the offer by the session-level attribute ``a=x-talas-call:<purpose> <id>``
(``specs/live.md`` §5.4): ``jam <jam id>`` (a member node joins a jam its
peer hosts) or ``stream <track event id>`` (a node asks a peer to play one
of its tracks).  The attribute is part of the signed SDP, so a relay cannot
turn one kind of call into another.

Negotiation is the chat channel's (:mod:`node.live.channels`): the offer and
answer are stripped to one sha-256 fingerprint, signed, sent over the peer
link, verified against the peer's replay cache and run through the call's
``CallSignalling``; once the control data channel opens, the certificate the
DTLS peer presented is checked against the fingerprint it signed.  The
control channel carries JSON objects (at most :data:`MAX_CONTROL_BYTES`
each) in order; what they say is the owner's business (the jam roster).

:class:`MediaCalls` routes the signals of media calls by (peer, session) and
hands offers to the handler registered for their purpose.
:func:`open_media_call` owns one call for its caller: it negotiates, yields
an open :class:`MediaCall`, and hangs up and closes the peer connection on
exit, whatever ended it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from node.errors import LinkError
from node.live.channels import ChannelFailed, PeerChannels, peer_certificate_fingerprint
from node.ratelimit import RateLimiter
from node.rtc_bridge import RtcLoop, RtcLoopClosed
from protocol.signalling import (
    CallSignalling,
    CallState,
    Close,
    Deliver,
    Local,
    Refuse,
    Remote,
    Signal,
    SignalKind,
    call_purpose,
    with_call_purpose,
)

if TYPE_CHECKING:
    from aiortc import RTCDataChannel, RTCPeerConnection

log = logging.getLogger(__name__)

CONTROL_LABEL = "talas-media/1"
MAX_CONTROL_BYTES = 64 * 1024
CONTROL_QUEUE = 256
CONTROL_PER_S = 20.0
"""Control messages per second a peer may send, sustained (one per roster change); more: hang up."""
CONTROL_BURST = 60
MAX_CALLS_PER_PEER = 8
HEARTBEAT_S = 2.0
SILENT_S = 8.0
"""A call whose peer sent nothing (not even a ping) for this long is hung up."""
CLOSE_TIMEOUT = 5.0

Setup = Callable[["RTCPeerConnection"], Awaitable[None]]
"""Adds the call's transceivers and tracks to a new peer connection (asyncio side)."""
OfferHandler = Callable[[str, str, Signal], Awaitable[None]]
"""``handler(peer, argument, offer)``: answer with :func:`open_media_call` or return to refuse."""


class MediaCall:
    """One media call to one peer; ``pc`` and ``dc`` belong to the asyncio loop."""

    def __init__(self, calls: MediaCalls, peer: str, session: str) -> None:
        self.calls = calls
        self.peer = peer
        self.call = CallSignalling(session=session, me=calls.channels.me, peer=peer)
        self.pc: RTCPeerConnection | None = None
        self.dc: RTCDataChannel | None = None
        self.answer: Signal | None = None
        self.answered = trio.Event()
        self.opened = trio.Event()
        self.closed = trio.Event()
        self.reason = ""
        self._inbox_send, self.messages = trio.open_memory_channel[dict[str, Any]](CONTROL_QUEUE)
        self._rate = RateLimiter(rate=CONTROL_PER_S, burst=CONTROL_BURST)
        self.heard_at = trio.current_time()
        """When the peer last sent a control message (pings included)."""

    def close(self, reason: str) -> None:  # trio thread
        if not self.reason:
            self.reason = reason
        self.closed.set()
        self.answered.set()  # whoever waits for these looks at `closed` next
        self.opened.set()
        self._inbox_send.close()

    def send(self, message: dict[str, Any]) -> None:
        """Queue one control message for the peer (dropped once the call is closed)."""
        rtc = self.calls.channels.rtc
        if rtc is None or self.closed.is_set():
            return
        text = json.dumps(message, separators=(",", ":"))
        with suppress(RtcLoopClosed, RuntimeError):
            rtc.call_soon(self._send_on_loop, text)

    def _send_on_loop(self, text: str) -> None:
        if self.dc is not None and self.dc.readyState == "open":
            self.dc.send(text)

    def _deliver(self, text: str) -> None:  # trio thread
        if not self._rate.allow("peer", trio.current_time()):
            self.close(f"more than {CONTROL_PER_S:.0f} control messages per second")
            return
        if len(text) > MAX_CONTROL_BYTES:
            self.close("control message too large")
            return
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.close("control message is not a JSON object")
            return
        self.heard_at = trio.current_time()
        if message.get("t") == "ping":
            return  # the heartbeat: proof of life, nothing for the owner
        try:
            self._inbox_send.send_nowait(message)
        except trio.WouldBlock:
            self.close(f"more than {CONTROL_QUEUE} control messages waiting")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


class MediaCalls:
    """Routes media call signals (a :class:`node.live.channels.SignalRouter`)."""

    def __init__(self, channels: PeerChannels) -> None:
        self.channels = channels
        self.handlers: dict[str, OfferHandler] = {}
        self._calls: dict[tuple[str, str], MediaCall] = {}
        self._nursery: trio.Nursery | None = None
        channels.media = self

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def count(self, peer: str) -> int:
        return sum(1 for p, _ in self._calls if p == peer)

    def route(self, peer: str, signal: Signal) -> bool:
        call = self._calls.get((peer, signal.session))
        if call is not None:
            self._remote(call, signal)
            return True
        if signal.kind is not SignalKind.OFFER:
            return False  # chat's, or for a call already gone (dropped either way)
        try:
            purpose = call_purpose(signal.sdp)
        except ValueError as exc:
            log.info("offer from %s refused: %s", peer[:16], exc)
            return True
        if purpose is None:
            return False
        handler = self.handlers.get(purpose[0])
        if handler is None or self._nursery is None or self.count(peer) >= MAX_CALLS_PER_PEER:
            self._refuse(peer, signal)
            return True
        self._nursery.start_soon(self._answer, handler, peer, purpose[1], signal)
        return True

    async def _answer(self, handler: OfferHandler, peer: str, argument: str, offer: Signal) -> None:
        try:
            await handler(peer, argument, offer)
        except Exception:  # one bad call must never stop the node
            log.exception("media call from %s failed", peer[:16])

    def _refuse(self, peer: str, offer: Signal) -> None:
        """Answer an offer nobody takes with a bye, so the caller need not wait out its ring."""
        call = CallSignalling(session=offer.session, me=self.channels.me, peer=peer)
        call.handle(Remote(offer))
        with suppress(ChannelFailed, LinkError):
            self.channels.transmit(call, Local(SignalKind.BYE))

    def _remote(self, call: MediaCall, signal: Signal) -> None:
        for action in call.call.handle(Remote(signal)):
            if isinstance(action, Deliver) and action.signal.kind is SignalKind.ANSWER:
                call.answer = action.signal
                call.answered.set()
            elif isinstance(action, Close):
                call.close(action.reason)
            elif isinstance(action, Refuse):
                log.info("signal from %s refused: %s", call.peer[:16], action.reason)

    def refuse(self, peer: str, offer: Signal) -> None:
        """A handler's way to turn an offer down (unknown jam, no such track)."""
        self._refuse(peer, offer)


@asynccontextmanager
async def open_media_call(
    calls: MediaCalls,
    peer: str,
    setup: Setup,
    *,
    offer: Signal | None = None,
    purpose: tuple[str, str] | None = None,
) -> AsyncIterator[MediaCall]:
    """Call ``peer`` (with ``purpose``) or answer its ``offer``; yield the open call.

    Raises ChannelFailed (refused, timed out, bad DTLS binding), LinkError
    (no link to the peer) or RtcLoopClosed.  On exit the call is hung up
    (a ``bye`` unless the peer hung up first) and its peer connection closed.
    """
    channels = calls.channels
    session = offer.session if offer is not None else secrets.token_hex(16)
    if (peer, session) in calls._calls:
        raise ChannelFailed("a call with this session exists")
    call = MediaCall(calls, peer, session)
    calls._calls[(peer, session)] = call
    try:
        rtc = await channels.ensure_rtc()
        try:
            with trio.fail_after(channels.ring_timeout):
                await _negotiate(channels, rtc, call, setup, offer, purpose)
        except trio.TooSlowError as exc:
            raise ChannelFailed("no answer") from exc
        try:
            with trio.fail_after(channels.open_timeout):
                await call.opened.wait()
        except trio.TooSlowError as exc:
            raise ChannelFailed("the call did not connect") from exc
        if call.closed.is_set():
            raise ChannelFailed(f"the call closed: {call.reason}")

        async def presented() -> str | None:
            assert call.pc is not None
            return peer_certificate_fingerprint(call.pc)

        channels.check_fingerprint(await rtc.run(presented), call.call)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_heartbeat, call)
            yield call
            nursery.cancel_scope.cancel()
    finally:
        calls._calls.pop((peer, session), None)
        call.close(call.reason or "closed here")
        await _close(channels, call)


async def _heartbeat(call: MediaCall) -> None:
    """Ping every HEARTBEAT_S; hang up on a peer silent for SILENT_S.

    A peer that vanished without a ``bye`` (killed, unplugged) would otherwise
    look connected until ICE consent gives up, about 30 s later, with its
    participants frozen in everyone's roster.
    """
    call.heard_at = trio.current_time()
    while not call.closed.is_set():
        await trio.sleep(HEARTBEAT_S)
        call.send({"t": "ping"})
        if trio.current_time() - call.heard_at > SILENT_S:
            call.close(f"the peer was silent for {SILENT_S:.0f} s")


async def _negotiate(
    channels: PeerChannels,
    rtc: RtcLoop,
    call: MediaCall,
    setup: Setup,
    offer: Signal | None,
    purpose: tuple[str, str] | None,
) -> None:
    if offer is None:
        sdp = await rtc.run(partial(_offer_on_loop, channels, rtc, call, setup))
        sdp = channels.local_sdp(sdp)
        if purpose is not None:
            sdp = with_call_purpose(sdp, *purpose)
        channels.transmit(call.call, Local(SignalKind.OFFER, sdp))
        await call.answered.wait()
        if call.answer is None:
            raise ChannelFailed(f"the call closed: {call.reason}")
        await rtc.run(partial(_accept_on_loop, call, call.answer.sdp))
        return
    actions = call.call.handle(Remote(offer))
    if not any(isinstance(action, Deliver) for action in actions):
        raise ChannelFailed(f"offer refused: {actions}")
    sdp = await rtc.run(partial(_answer_on_loop, channels, rtc, call, setup, offer.sdp))
    channels.transmit(call.call, Local(SignalKind.ANSWER, channels.local_sdp(sdp)))


async def _close(channels: PeerChannels, call: MediaCall) -> None:
    with trio.CancelScope(shield=True):
        if call.call.state not in (CallState.IDLE, CallState.CLOSED):
            with suppress(ChannelFailed, LinkError):
                channels.transmit(call.call, Local(SignalKind.BYE))
        rtc, pc = channels.rtc, call.pc
        if rtc is not None and pc is not None:
            with trio.move_on_after(CLOSE_TIMEOUT), suppress(RtcLoopClosed):
                await rtc.run(pc.close)


# -- the asyncio side ----------------------------------------------------------------


def _watch(channels: PeerChannels, call: MediaCall, pc: RTCPeerConnection) -> None:
    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            channels.post(call.close, f"peer connection {pc.connectionState}")


def _wire(channels: PeerChannels, call: MediaCall, dc: RTCDataChannel) -> None:
    if call.dc is not None:
        return
    call.dc = dc

    @dc.on("open")
    def on_open() -> None:
        channels.post(call.opened.set)

    @dc.on("message")
    def on_message(message: str | bytes) -> None:
        if isinstance(message, str):
            channels.post(call._deliver, message)
        else:
            channels.post(call.close, "binary frame on the control channel")

    @dc.on("close")
    def on_close() -> None:
        channels.post(call.close, "the control channel closed")

    if dc.readyState == "open":
        channels.post(call.opened.set)


async def _offer_on_loop(
    channels: PeerChannels, rtc: RtcLoop, call: MediaCall, setup: Setup
) -> str:
    pc = call.pc = await rtc.create_peer_connection(channels.ice_servers)
    _watch(channels, call, pc)
    await setup(pc)
    _wire(channels, call, pc.createDataChannel(CONTROL_LABEL))
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def _answer_on_loop(
    channels: PeerChannels, rtc: RtcLoop, call: MediaCall, setup: Setup, offer_sdp: str
) -> str:
    from aiortc import RTCSessionDescription

    pc = call.pc = await rtc.create_peer_connection(channels.ice_servers)
    _watch(channels, call, pc)

    @pc.on("datachannel")
    def on_datachannel(dc: RTCDataChannel) -> None:
        if dc.label == CONTROL_LABEL:
            _wire(channels, call, dc)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    await setup(pc)
    await pc.setLocalDescription(await pc.createAnswer())
    return str(pc.localDescription.sdp)


async def _accept_on_loop(call: MediaCall, answer_sdp: str) -> None:
    from aiortc import RTCSessionDescription

    assert call.pc is not None
    await call.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
