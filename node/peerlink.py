"""An authenticated, encrypted message link to one peer, over a swappable transport.

The transport seam (:class:`MessageTransport`) carries opaque binary
messages: WebSockets between real nodes, length-prefixed frames over any
trio stream (``trio.testing.memory_stream_pair``) in tests and simulations.
:func:`establish` runs the sans-IO handshake of :mod:`protocol.handshake`
over it; :class:`PeerLink` then seals and chunks every replication message.
Foreign exceptions (trio, trio-websocket, noise) are translated here into
:class:`LinkClosed`, :class:`LinkBroken` and :class:`PeerMisbehaved`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol
from urllib.parse import urlsplit

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from node.errors import LinkBroken, LinkClosed, PeerMisbehaved
from protocol.errors import ProtocolError
from protocol.handshake import MAX_NOISE_MESSAGE, Handshake, Session
from protocol.keys import SigningKey
from protocol.messages import Message, Reassembler, chunks, decode, encode

HANDSHAKE_TIMEOUT = 10.0
WEBSOCKET_MAX_MESSAGE = MAX_NOISE_MESSAGE + 64


class MessageTransport(Protocol):
    """Whole binary messages in both directions; one reader, senders serialised by the link."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes: ...

    async def aclose(self) -> None: ...


class WebSocketTransport:
    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send_message(data)
        except ConnectionClosed as exc:
            raise LinkClosed(f"websocket closed: {exc.reason}") from exc
        except trio.BrokenResourceError as exc:
            raise LinkBroken(f"websocket broken: {exc}") from exc

    async def receive(self) -> bytes:
        try:
            message = await self._ws.get_message()
        except ConnectionClosed as exc:
            raise LinkClosed(f"websocket closed: {exc.reason}") from exc
        except trio.BrokenResourceError as exc:
            raise LinkBroken(f"websocket broken: {exc}") from exc
        if not isinstance(message, bytes):
            raise PeerMisbehaved("text message on a binary link")
        return message

    async def aclose(self) -> None:
        await self._ws.aclose()


@asynccontextmanager
async def _unwrapping_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery that re-raises a lone exception bare rather than in a group.

    The nursery only runs the websocket's reader task, so a single error is
    the caller's own (or the reader's), and callers match on its type.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@asynccontextmanager
async def open_websocket_client(
    url: str, *, connect_seconds: float = 5.0
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket whose TCP stream is closed on every path.

    ``trio_websocket.open_websocket_url`` leaks the socket when it is
    cancelled during the opening handshake (the connection object is never
    returned, so nobody closes its stream).  Here we own the stream.
    """
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None or parts.port is None:
        raise LinkBroken(f"not a ws://HOST:PORT/PATH url: {url}")
    host_header = parts.netloc
    try:
        with trio.fail_after(connect_seconds):
            stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    except (OSError, trio.TooSlowError) as exc:
        raise LinkBroken(f"cannot connect to {parts.netloc}: {exc}") from exc
    try:
        async with _unwrapping_nursery() as nursery:
            try:
                with trio.fail_after(connect_seconds):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        parts.path or "/",
                        max_message_size=WEBSOCKET_MAX_MESSAGE,
                    )
            except (trio_websocket.HandshakeError, trio.TooSlowError) as exc:
                raise LinkBroken(f"websocket handshake with {parts.netloc} failed: {exc}") from exc
            try:
                yield ws
            finally:
                with trio.move_on_after(2) as cleanup:
                    cleanup.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except trio_websocket.HandshakeError as exc:  # e.g. rejected by the reader task
        raise LinkBroken(f"websocket handshake with {parts.netloc} failed: {exc!r}") from exc
    finally:
        await trio.aclose_forcefully(stream)


class StreamTransport:
    """Messages as 4-byte length + bytes over a byte stream (tests, simulations)."""

    _LEN = struct.Struct(">I")

    def __init__(
        self, stream: trio.abc.Stream, *, max_message: int = WEBSOCKET_MAX_MESSAGE
    ) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._max = max_message

    async def send(self, data: bytes) -> None:
        try:
            await self._stream.send_all(self._LEN.pack(len(data)) + data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LinkBroken(f"stream broken: {exc}") from exc

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            try:
                chunk = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise LinkBroken(f"stream broken: {exc}") from exc
            if not chunk:
                raise LinkClosed("stream closed by peer")
            self._buffer += chunk

    async def receive(self) -> bytes:
        await self._fill(4)
        (size,) = self._LEN.unpack_from(self._buffer)
        if size > self._max:
            raise PeerMisbehaved(f"frame of {size} bytes exceeds {self._max}")
        await self._fill(4 + size)
        message = bytes(self._buffer[4 : 4 + size])
        del self._buffer[: 4 + size]
        return message

    async def aclose(self) -> None:
        await self._stream.aclose()


class PeerLink:
    """A finished handshake: send and receive replication messages.

    One task reads (``receive``); any number of tasks may send, serialised
    by a lock so chunks of two messages never interleave.
    """

    def __init__(self, transport: MessageTransport, session: Session, peer_id: str) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self._session = session
        self._send_lock = trio.Lock()
        self._cut = False
        self._reassembler = Reassembler()

    async def send(self, message: Message) -> None:
        """Send one message (raises LinkError).

        Sealing a chunk advances the Noise nonce, so a send interrupted after
        the first seal (cancelled, or the transport failing) leaves the two
        sides out of step: the link is then broken for good, and every later
        send says so instead of sending what the peer cannot open.
        """
        payload = encode(message)
        async with self._send_lock:
            if self._cut:
                raise LinkBroken("an earlier send was cut off mid-message")
            self.messages_sent += 1
            sealed_any = False
            try:
                for chunk in chunks(payload):
                    sealed = self._session.seal(chunk)
                    sealed_any = True
                    self.bytes_sent += len(sealed)
                    await self.transport.send(sealed)
            except BaseException:
                self._cut = self._cut or sealed_any
                raise

    async def receive(self) -> Message:
        while True:
            sealed = await self.transport.receive()
            self.bytes_received += len(sealed)
            try:
                whole = self._reassembler.feed(self._session.open(sealed))
                if whole is not None:
                    return decode(whole)
            except ProtocolError as exc:
                raise PeerMisbehaved(str(exc)) from exc

    async def aclose(self) -> None:
        await self.transport.aclose()


async def establish(
    transport: MessageTransport,
    *,
    initiator: bool,
    node_key: SigningKey,
    expected_peer: str | None = None,
    handshake_seconds: float = HANDSHAKE_TIMEOUT,
) -> PeerLink:
    """Run the handshake over ``transport``; raise PeerMisbehaved if it fails."""
    handshake = Handshake(
        initiator=initiator,
        node_key=node_key,
        static_private=os.urandom(32),
        expected_peer=expected_peer,
    )
    sent = received = 0
    try:
        with trio.fail_after(handshake_seconds):
            if initiator:
                first = handshake.start()
                sent += len(first)
                await transport.send(first)
            while not handshake.done:
                incoming = await transport.receive()
                received += len(incoming)
                reply = handshake.receive(incoming)
                if reply is not None:
                    sent += len(reply)
                    await transport.send(reply)
    except trio.TooSlowError as exc:
        raise LinkBroken(f"handshake timed out after {handshake_seconds}s") from exc
    except ProtocolError as exc:
        raise PeerMisbehaved(str(exc)) from exc
    result = handshake.established()
    link = PeerLink(transport, result.session, result.peer_id)
    link.bytes_sent, link.bytes_received = sent, received
    return link
