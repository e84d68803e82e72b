"""One WebRTC data channel per peer node, negotiated with signed signals over the peer link.

Theory of operation
-------------------
The node is itself the WebRTC endpoint (aiortc on the :mod:`node.rtc_bridge`
asyncio thread).  To reach peer node P it makes an RTCPeerConnection with
one data channel, strips the offer to its sha-256 fingerprint
(``sha256_fingerprints_only``), signs it (``specs/live.md`` §4) and sends it
on the authenticated peer link (:meth:`Federation.send_signal`, the ``signal``
message).  P verifies the envelope against the node id its link handshake
proved and the replay cache it keeps for us across reconnects
(:meth:`PeerChannels.receive_signal`, §6-§7), runs it through the call's
state machine (``CallSignalling``, §8), answers the same way, and both sides
wait for the channel to open.  aiortc refuses a DTLS peer whose certificate
does not match the fingerprint of the description it was given, so a
fingerprint swapped in transit fails the signature and is refused, and one
swapped before signing fails DTLS; on top of that each side compares the
certificate its DTLS peer presented with the fingerprint the peer signed
(§11) and closes the channel on a mismatch.

Candidates are gathered before the offer (aiortc does not trickle), so a
call is one offer and one answer, and a ``bye`` when one side gives up on
it (a timeout, a failed DTLS handshake, a refused frame), so the other side
does not wait out its own timeout.  Glare (both nodes offer at once) is
settled by node id: the smaller id's offer wins, the other side drops its
own.  A new offer for a peer whose channel is open replaces it (the peer
lost its side, e.g. it restarted).

A supervisor keeps a channel to every node the handler (chat) shares a room
with, as long as a peer link to that node exists, retrying failed attempts
with exponential backoff.  Frames received on a channel queue (bounded) for
one trio task per channel, which hands them to the handler in order; a peer
that overruns the queue loses its channel (the handler resynchronises when it
reopens).  The RtcLoop, and aiortc with it, is started on the first attempt,
so a node that never chats never loads aiortc.
"""

from __future__ import annotations

import enum
import logging
import random
import secrets
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import trio

from node.errors import LinkError, TalasError
from node.rtc_bridge import RtcLoop, RtcLoopClosed, open_rtc_loop
from protocol.signalling import (
    CallSignalling,
    CallState,
    Close,
    Deliver,
    Local,
    NonceCache,
    Refuse,
    Remote,
    Signal,
    SignalKind,
    Transmit,
    certificate_fingerprint,
    sha256_fingerprints_only,
    sign_signal,
    verify_signal,
)

if TYPE_CHECKING:
    from aiortc import RTCDataChannel, RTCPeerConnection

    from node.federation import Federation

log = logging.getLogger(__name__)

CHANNEL_LABEL = "talas-chat/1"
RING_TIMEOUT = 10.0
"""How long an offer waits for its answer."""
OPEN_TIMEOUT = 15.0
"""How long an answered call may take to open its data channel (ICE, DTLS, SCTP)."""
SUPERVISE_INTERVAL = 0.5
INBOX_FRAMES = 1024
"""Frames received and not yet handled, per channel; more closes the channel."""
MAX_BUFFERED_BYTES = 8 * 1024 * 1024
"""Bytes queued for sending on a channel; more means the peer is not reading: close."""
SIGNAL_QUEUE = 64
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
"""Longest wait between attempts; also the wait after closing a channel for cause."""
NONCE_KEEP_S = 70.0
"""A peer's replay cache outlives its last signal by this long (lifetime + skew, §7)."""
CLOSE_TIMEOUT = 5.0


class ChannelFailed(TalasError):
    """A data channel could not be set up, or was closed for cause."""


class ChannelState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


class ChannelHandler(Protocol):
    """What rides the channels (the chat service)."""

    def wanted_peers(self) -> set[str]:
        """Nodes to keep a channel to (those reachable over a peer link get one)."""

    async def on_open(self, peer: str) -> None: ...

    async def on_frame(self, peer: str, text: str) -> None:
        """Handle one received frame; raising a TalasError closes the channel."""

    def on_close(self, peer: str) -> None: ...


class SignalRouter(Protocol):
    """Media calls (jams, streams): takes the signals that belong to them."""

    def route(self, peer: str, signal: Signal) -> bool:
        """Handle ``signal`` if it belongs to a media call; False leaves it to the chat channel."""


@dataclass
class ChannelStats:
    offers_sent: int = 0
    answers_sent: int = 0
    offers_received: int = 0
    opened: int = 0
    failed: int = 0
    fingerprint_mismatches: int = 0
    dropped_signals: int = 0


class _Channel:
    """One call to one peer and its data channel.  ``pc``/``dc`` belong to the asyncio loop."""

    def __init__(self, peer: str, me: str, session: str, *, offerer: bool) -> None:
        self.peer = peer
        self.offerer = offerer
        self.call = CallSignalling(session=session, me=me, peer=peer)
        self.state = ChannelState.CONNECTING
        self.scope = trio.CancelScope()
        self.answer: Signal | None = None
        self.answered = trio.Event()
        self.opened = trio.Event()
        self.reason = ""
        self.pc: RTCPeerConnection | None = None
        self.dc: RTCDataChannel | None = None
        self.inbox_send, self.inbox = trio.open_memory_channel[str](INBOX_FRAMES)

    def close(self, reason: str) -> None:  # trio thread
        if not self.reason:
            self.reason = reason
        self.scope.cancel()

    def deliver(self, text: str) -> None:  # trio thread
        try:
            self.inbox_send.send_nowait(text)
        except trio.WouldBlock:
            self.close(f"more than {INBOX_FRAMES} frames waiting")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


class PeerChannels:
    """The data channels of one node, one per peer node; see the module docstring."""

    def __init__(
        self,
        federation: Federation,
        *,
        ring_timeout: float = RING_TIMEOUT,
        open_timeout: float = OPEN_TIMEOUT,
        ice_servers: list[str] | None = None,
    ) -> None:
        self.federation = federation
        self.me = federation.node.node_id
        self.handler: ChannelHandler | None = None
        self.ring_timeout = ring_timeout
        self.open_timeout = open_timeout
        self.ice_servers = list(ice_servers or [])
        self.ice_addresses: list[str] | None = None
        """Host addresses WebRTC may gather (None: aioice's default, which skips loopback)."""
        self.stats = ChannelStats()
        self.sdp_hook: Callable[[str], str] | None = None
        """Test hook: rewrites this node's SDP before it is signed."""
        self.media: SignalRouter | None = None
        """Takes the signals of media calls (offers with a call purpose) before chat sees them."""
        self.wire_hook: Callable[[bytes], bytes | None] | None = None
        """Test hook: rewrites (None: drops) each signed envelope on its way out."""
        self._channels: dict[str, _Channel] = {}
        self._nonces: dict[str, tuple[NonceCache, float]] = {}
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._rtc: RtcLoop | None = None
        self._rtc_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._wake = trio.Event()
        self._signals_send, self._signals = trio.open_memory_channel[tuple[str, Signal]](
            SIGNAL_QUEUE
        )

    @property
    def rtc(self) -> RtcLoop | None:
        """The RtcLoop once started (see :meth:`ensure_rtc`)."""
        return self._rtc

    @property
    def rtc_started(self) -> bool:
        """Whether the RtcLoop (and so aiortc) was started."""
        return self._rtc is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            nursery.start_soon(self._handle_signals)
            nursery.start_soon(self._supervise)
            task_status.started()

    # -- for the handler and the API --------------------------------------------------

    def is_open(self, peer: str) -> bool:
        channel = self._channels.get(peer)
        return channel is not None and channel.state is ChannelState.OPEN

    def open_peers(self) -> list[str]:
        return sorted(p for p, c in self._channels.items() if c.state is ChannelState.OPEN)

    def send(self, peer: str, text: str) -> bool:
        """Queue ``text`` on the open channel to ``peer``; False when none is open."""
        channel = self._channels.get(peer)
        rtc = self._rtc
        if channel is None or channel.state is not ChannelState.OPEN or rtc is None:
            return False
        try:
            rtc.call_soon(self._send_on_loop, channel, text)
        except (RtcLoopClosed, RuntimeError):
            return False
        return True

    def wake(self) -> None:
        """Look at the wanted peers now rather than at the next tick."""
        self._wake.set()

    def connect(self, peer: str) -> None:
        """Start a channel to ``peer`` now (no-op if one exists or no link reaches it)."""
        self._retry_at.pop(peer, None)
        self._maybe_connect(peer)

    def disconnect(self, peer: str, reason: str = "closed here") -> None:
        channel = self._channels.get(peer)
        if channel is not None:
            channel.close(reason)

    # -- signals in ------------------------------------------------------------------

    def receive_signal(self, peer: str, envelope: bytes) -> None:
        """Verify a signal received on the link authenticated as ``peer`` and queue it.

        Raises the ``SignallingError`` of a refused signal (specs/live.md §6);
        the link decides what a refusal costs the peer (§9).
        """
        from node.daemon import now_ms

        signal = verify_signal(
            envelope, expected_from=peer, me=self.me, now_ms=now_ms(), seen=self._nonce_cache(peer)
        )
        try:
            self._signals_send.send_nowait((peer, signal))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.stats.dropped_signals += 1

    def _nonce_cache(self, peer: str) -> NonceCache:
        """One replay cache per peer node, kept across links (specs/live.md §7)."""
        cache, _ = self._nonces.get(peer) or (NonceCache(), 0.0)
        self._nonces[peer] = (cache, trio.current_time())
        return cache

    def _prune_nonces(self) -> None:
        """Forget the caches of peers silent for NONCE_KEEP_S whose entries all expired."""
        from node.daemon import now_ms

        now, quiet = now_ms(), trio.current_time() - NONCE_KEEP_S
        for peer, (cache, used) in list(self._nonces.items()):
            cache.purge(now)
            if used < quiet and not len(cache):  # the floor is in the past too
                del self._nonces[peer]

    async def _handle_signals(self) -> None:
        async for peer, signal in self._signals:
            self._on_signal(peer, signal)

    def _on_signal(self, peer: str, signal: Signal) -> None:
        router = self.media
        if router is not None and router.route(peer, signal):
            return  # a media call's signal (specs/live.md §5.4)
        current = self._channels.get(peer)
        if signal.kind is SignalKind.OFFER:
            self.stats.offers_received += 1
            if current is not None:
                if current.call.session == signal.session:
                    return  # a duplicate offer for this call (refused by §8 anyway)
                if current.offerer and current.state is ChannelState.CONNECTING:
                    if self.me < peer:
                        log.debug("glare with %s: our offer wins", peer[:16])
                        return
                    current.close("glare: the peer's offer wins")
                else:
                    current.close("replaced by the peer's new call")
            self._start(peer, offer=signal)
            return
        if current is None or current.call.session != signal.session:
            return  # for an unknown call: dropped (§8)
        for action in current.call.handle(Remote(signal)):
            if isinstance(action, Deliver) and action.signal.kind is SignalKind.ANSWER:
                current.answer = action.signal
                current.answered.set()
            elif isinstance(action, Close):
                current.close(action.reason)
            elif isinstance(action, Refuse):
                log.info("signal from %s refused: %s", peer[:16], action.reason)
            # Candidates: aiortc gathers before the offer, so none are expected.

    # -- the supervisor ------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            with trio.move_on_after(SUPERVISE_INTERVAL):
                await self._wake.wait()
            self._wake = trio.Event()
            if self.handler is not None:
                for peer in sorted(self.handler.wanted_peers()):
                    self._maybe_connect(peer)
            self._prune_nonces()

    def _maybe_connect(self, peer: str) -> None:
        if peer == self.me or peer in self._channels or self._nursery is None:
            return
        if peer not in self.federation.sessions:
            return  # signalling needs a peer link
        if trio.current_time() < self._retry_at.get(peer, 0.0):
            return
        self._start(peer, offer=None)

    def _start(self, peer: str, *, offer: Signal | None) -> None:
        assert self._nursery is not None
        session = offer.session if offer is not None else secrets.token_hex(16)
        channel = _Channel(peer, self.me, session, offerer=offer is None)
        self._channels[peer] = channel
        self._nursery.start_soon(self._run_channel, channel, offer)

    def _backoff(self, peer: str) -> None:
        failures = self._failures[peer] = self._failures.get(peer, 0) + 1
        delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (failures - 1))
        self._retry_at[peer] = trio.current_time() + delay * random.uniform(0.8, 1.2)  # noqa: S311

    # -- one channel ----------------------------------------------------------------------

    async def ensure_rtc(self) -> RtcLoop:
        async with self._rtc_lock:
            if self._rtc is None:
                if self._nursery is None:
                    raise ChannelFailed("the live layer is not running")
                self._rtc = await self._nursery.start(self._host_rtc)
            return self._rtc

    async def _host_rtc(self, *, task_status: trio.TaskStatus[RtcLoop]) -> None:
        try:
            async with open_rtc_loop() as rtc:
                # On the loop thread: the trio thread never waits for the import.
                await rtc.run(_import_aiortc)
                if self.ice_addresses:
                    _pin_host_addresses(self.ice_addresses)
                task_status.started(rtc)
                await trio.sleep_forever()
        finally:
            self._rtc = None

    async def _run_channel(self, channel: _Channel, offer: Signal | None) -> None:
        peer = channel.peer
        handler = self.handler
        for_cause = False
        try:
            with channel.scope:
                rtc = await self.ensure_rtc()
                await self._negotiate(rtc, channel, offer)
                with trio.fail_after(self.open_timeout):
                    await channel.opened.wait()
                await self._check_binding(rtc, channel)
                channel.state = ChannelState.OPEN
                self.stats.opened += 1
                self._failures.pop(peer, None)
                log.info("data channel to %s open", peer[:16])
                if handler is not None:
                    await handler.on_open(peer)
                async for text in channel.inbox:
                    if handler is not None:
                        await handler.on_frame(peer, text)
                channel.close("the data channel closed")
        except trio.TooSlowError:
            channel.close("timed out")
        except (ChannelFailed, LinkError, RtcLoopClosed) as exc:
            channel.close(str(exc) or type(exc).__name__)
        except TalasError as exc:  # the handler refused the peer's frames
            channel.close(f"{type(exc).__name__}: {exc}")
            for_cause = True
        except Exception as exc:  # one bad channel must never stop the node
            log.exception("data channel to %s failed", peer[:16])
            channel.close(repr(exc))
            for_cause = True
        finally:
            opened = channel.state is ChannelState.OPEN
            channel.state = ChannelState.CLOSED
            if self._channels.get(peer) is channel:
                del self._channels[peer]
            if opened and handler is not None:
                handler.on_close(peer)
            if for_cause:  # the peer (or we) misbehaved: not again soon
                self.stats.failed += 1
                self._retry_at[peer] = trio.current_time() + BACKOFF_MAX
            elif opened:
                self._retry_at[peer] = trio.current_time() + BACKOFF_INITIAL
            else:
                self.stats.failed += 1
                self._backoff(peer)  # grows until a channel to this peer opens again
            log.info("data channel to %s closed: %s", peer[:16], channel.reason)
            await self._close_on_loop(channel)
            if channel.reason:  # ended here, not by shutdown: tell the peer (§8 local bye)
                self._hang_up(channel)

    async def _negotiate(self, rtc: RtcLoop, channel: _Channel, offer: Signal | None) -> None:
        if offer is None:
            sdp = await rtc.run(partial(self._offer_on_loop, rtc, channel))
            self.transmit(channel.call, Local(SignalKind.OFFER, self.local_sdp(sdp)))
            self.stats.offers_sent += 1
            with trio.fail_after(self.ring_timeout):
                await channel.answered.wait()
            assert channel.answer is not None
            await rtc.run(partial(self._accept_on_loop, channel, channel.answer.sdp))
            return
        actions = channel.call.handle(Remote(offer))
        if not any(isinstance(action, Deliver) for action in actions):
            raise ChannelFailed(f"offer refused: {actions}")
        sdp = await rtc.run(partial(self._answer_on_loop, rtc, channel, offer.sdp))
        self.transmit(channel.call, Local(SignalKind.ANSWER, self.local_sdp(sdp)))
        self.stats.answers_sent += 1

    def local_sdp(self, sdp: str) -> str:
        sdp = sha256_fingerprints_only(sdp)
        return self.sdp_hook(sdp) if self.sdp_hook is not None else sdp

    def transmit(self, call: CallSignalling, event: Local) -> None:
        """Run a local event through ``call``'s state machine; sign and send what it says.

        Raises ChannelFailed if the machine refuses it, LinkError without a link.
        """
        from node.daemon import now_ms

        for action in call.handle(event):
            if isinstance(action, Refuse):
                raise ChannelFailed(f"our own {event.kind.value} refused: {action.reason}")
            if isinstance(action, Transmit):
                signal = sign_signal(
                    self.federation.node.node_key,
                    kind=action.kind,
                    session=action.session,
                    to=action.to,
                    sdp=action.sdp,
                    nonce=secrets.token_hex(16),
                    now_ms=now_ms(),
                )
                wire = signal.wire_bytes()
                hooked = self.wire_hook(wire) if self.wire_hook is not None else wire
                if hooked is not None:
                    self.federation.send_signal(action.to, hooked)  # queued: never blocks

    def _hang_up(self, channel: _Channel) -> None:
        if channel.call.state in (CallState.IDLE, CallState.CLOSED):
            return
        try:
            with suppress(ChannelFailed, LinkError):
                self.transmit(channel.call, Local(SignalKind.BYE))
        except Exception:  # best effort: never let a hang-up stop the node
            log.exception("hanging up on %s failed", channel.peer[:16])

    async def _check_binding(self, rtc: RtcLoop, channel: _Channel) -> None:
        """The DTLS peer's certificate must be the one the peer signed (§11)."""
        pc = channel.pc
        assert pc is not None

        async def presented() -> str | None:
            return peer_certificate_fingerprint(pc)

        self.check_fingerprint(await rtc.run(presented), channel.call)

    def check_fingerprint(self, presented: str | None, call: CallSignalling) -> None:
        """Raise ChannelFailed unless ``presented`` is the DTLS fingerprint the peer signed."""
        if presented is None or presented != call.peer_fingerprint:
            self.stats.fingerprint_mismatches += 1
            raise ChannelFailed(
                f"DTLS certificate {presented} is not the signed {call.peer_fingerprint}"
            )

    async def _close_on_loop(self, channel: _Channel) -> None:
        pc, rtc = channel.pc, self._rtc
        channel.inbox_send.close()
        if pc is None or rtc is None:
            return
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(CLOSE_TIMEOUT),
            suppress(RtcLoopClosed),
        ):
            await rtc.run(pc.close)

    # -- the asyncio side ------------------------------------------------------------------

    def post(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the trio thread (from the asyncio thread); never drops."""
        assert self._token is not None
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    def _watch(self, channel: _Channel, pc: RTCPeerConnection) -> None:
        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.post(channel.close, f"peer connection {pc.connectionState}")

    def _wire(self, channel: _Channel, dc: RTCDataChannel) -> None:
        if channel.dc is not None:
            return  # one channel per call: the peer's extra ones are ignored
        channel.dc = dc

        @dc.on("open")
        def on_open() -> None:
            self.post(channel.opened.set)

        @dc.on("message")
        def on_message(message: str | bytes) -> None:
            if isinstance(message, str):
                self.post(channel.deliver, message)
            else:
                self.post(channel.close, "binary frame on the chat channel")

        @dc.on("close")
        def on_close() -> None:
            self.post(channel.inbox_send.close)

        if dc.readyState == "open":
            self.post(channel.opened.set)

    async def _offer_on_loop(self, rtc: RtcLoop, channel: _Channel) -> str:
        pc = channel.pc = await rtc.create_peer_connection(self.ice_servers)
        self._watch(channel, pc)
        self._wire(channel, pc.createDataChannel(CHANNEL_LABEL))
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def _answer_on_loop(self, rtc: RtcLoop, channel: _Channel, offer_sdp: str) -> str:
        from aiortc import RTCSessionDescription

        pc = channel.pc = await rtc.create_peer_connection(self.ice_servers)
        self._watch(channel, pc)

        @pc.on("datachannel")
        def on_datachannel(dc: RTCDataChannel) -> None:
            if dc.label == CHANNEL_LABEL:
                self._wire(channel, dc)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def _accept_on_loop(self, channel: _Channel, answer_sdp: str) -> None:
        from aiortc import RTCSessionDescription

        assert channel.pc is not None
        await channel.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    def _send_on_loop(self, channel: _Channel, text: str) -> None:
        dc = channel.dc
        if dc is None or dc.readyState != "open":
            return  # the store is the outbox: the peer asks again when a channel reopens
        if dc.bufferedAmount > MAX_BUFFERED_BYTES:
            self.post(channel.close, "the peer is not reading")
            return
        dc.send(text)


def _pin_host_addresses(addresses: list[str]) -> None:
    """Make aioice gather only ``addresses`` (process-wide: one node per process)."""
    import aioice.ice

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return list(addresses)

    aioice.ice.get_host_addresses = host_addresses


async def _import_aiortc() -> None:
    import aiortc  # noqa: F401 - ~34 MB with PyAV, loaded on the first live use only


def peer_certificate_fingerprint(pc: RTCPeerConnection) -> str | None:
    """sha-256 fingerprint of the certificate the DTLS peer presented (asyncio side)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    sctp = pc.sctp
    transport = sctp.transport if sctp is not None else None
    if transport is None:
        transceivers = pc.getTransceivers()
        transport = transceivers[0].receiver.transport if transceivers else None
    ssl = getattr(transport, "_ssl", None)
    certificate = ssl.get_peer_certificate(as_cryptography=True) if ssl is not None else None
    if certificate is None:
        return None
    return certificate_fingerprint(certificate.public_bytes(Encoding.DER))
