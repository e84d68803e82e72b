"""Jam sessions: a node hosts, browsers and other nodes join, everyone hears everyone else.

Theory of operation
-------------------
A jam is a star.  The **host** node holds the session; a **member** node
joins it with one media call (``jam <id>``, :mod:`node.live.media_call`) and
keeps a mirror of it for its own users.  Every node in a jam (host or
member) runs the same forwarding unit over its **links**:

* a browser link: a user's browser, connected to its own node over WebRTC
  (SDP over the web UI WebSocket, ``webui/jam_api.py``); it sends one
  microphone and receives up to :data:`SLOTS` others;
* a node link: the member's call to the host (on the member) or one call per
  member (on the host), :data:`SLOTS` audio transceivers each way plus a
  control channel;
* a stream link: a call to a peer that plays one of its library tracks into
  the jam (``stream <track id>``), one slot in.

Each **participant** (a microphone or a streamed track) enters on one link
and is heard on every other: for each link the node puts the participants
that did not come from it on that link's outgoing slots (:func:`assign_slots`
keeps a participant on its slot while it stays) and tells the far side which
slot carries whom in a **roster** (the control channel for nodes, the
WebSocket for browsers).  A member node's roster to the host lists its own
users; the host's roster to each member lists everyone else, members of
other nodes included; the member passes them on to its browsers.  Audio is
forwarded as Opus packets, never decoded or encoded again on the way
(:mod:`node.live.media`).

A link that closes takes its participants with it and the rosters of the
others shrink; nothing else changes, so one participant or node leaving
never disturbs the rest.  A member whose call to the host drops calls again
with backoff until the host says the jam ended or refuses it repeatedly.

Recording (on the node whose users ask for it, usually the host) decodes
each participant into its own WAV file from the moment it started, and
hands the files to the caller to publish as library tracks.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.errors import LinkError, TalasError
from node.live.channels import ChannelFailed, PeerChannels
from node.live.media_call import MediaCalls, open_media_call
from node.live.roster import (
    HEX16,
    HEX32,
    MAX_JAMS,
    MAX_NAME,
    MAX_PARTICIPANTS,
    SLOTS,
    BadRoster,
    Jam,
    JamError,
    JamFull,
    Link,
    NoSuchJam,
    Notify,
    Participant,
    Recorded,
    Recording,
    assign_slots,
    check_chat_text,
    check_title,
    parse_chat,
    parse_roster,
)
from node.rtc_bridge import RtcLoop, RtcLoopClosed
from protocol.signalling import Signal

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from node.daemon import Node
    from node.live.media import InSlot, SlotTrack, Source

__all__ = [
    "SLOTS",
    "BadRoster",
    "JamError",
    "JamService",
    "NoSuchJam",
    "assign_slots",
    "check_title",
    "parse_roster",
]

log = logging.getLogger(__name__)

MEMBER_RETRIES = 5
"""Failed calls in a row after which a member node gives up on a jam's host."""
RETRY_INITIAL = 1.0
RETRY_MAX = 15.0
ENDED_GRACE = 0.3


class JamService:
    """The jams of one node; runs in the live layer's nursery."""

    def __init__(self, node: Node, channels: PeerChannels, calls: MediaCalls) -> None:
        self.node = node
        self.me = node.node_id
        self.channels = channels
        self.calls = calls
        self.jams: dict[str, Jam] = {}
        self.recordings_dir = node.data.root / "recordings"
        self._nursery: trio.Nursery | None = None
        calls.handlers["jam"] = self._on_jam_offer
        calls.handlers["stream"] = self._on_stream_offer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- jams ------------------------------------------------------------------------------

    def get(self, jam_id: str) -> Jam:
        jam = self.jams.get(jam_id)
        if jam is None:
            raise NoSuchJam(f"no jam {jam_id[:32]!r} on this node")
        return jam

    def _room_for_one_more(self) -> None:
        if len(self.jams) >= MAX_JAMS:
            raise JamFull(f"a node keeps at most {MAX_JAMS} jams")

    def create(self, title: str, now_ms: int) -> Jam:
        self._room_for_one_more()
        jam = Jam(secrets.token_hex(16), check_title(title), self.me, now_ms)
        self.jams[jam.id] = jam
        return jam

    def join_remote(self, host: str, jam_id: str, now_ms: int) -> Jam:
        """Mirror ``host``'s jam here and call the host (retrying in the background)."""
        if not HEX32.fullmatch(host) or not HEX16.fullmatch(jam_id):
            raise ValueError("a jam code is <host node id>/<jam id>")
        if host == self.me:
            return self.get(jam_id)
        if jam_id in self.jams:
            return self.jams[jam_id]
        if host not in self.channels.federation.sessions:
            raise ChannelFailed("no peer link to the jam's host: pair or follow it first")
        self._room_for_one_more()
        jam = Jam(jam_id, "…", host, now_ms, connected=False)
        self.jams[jam_id] = jam
        assert self._nursery is not None
        self._nursery.start_soon(self._member, jam)
        return jam

    async def end(self, jam_id: str, reason: str = "ended by its host") -> None:
        """End a jam here: the host ends it for everyone, a member leaves it."""
        jam = self.get(jam_id)
        if jam.recording is not None:  # the API publishes before ending; here, keep the files
            kept = await self.stop_recording(jam_id)
            if kept:
                log.warning(
                    "jam %s ended while recording: %d take(s) kept unpublished in %s",
                    jam.id[:8], len(kept), kept[0].path.parent,
                )  # fmt: skip
        jam.end_reason = reason
        jam.ended.set()
        self.jams.pop(jam_id, None)
        links = list(jam.links.values())
        for link in links:
            link.notify(
                {"t": "ended"}
                if link.kind == "node"
                else {"t": "jam-ended", "jam": jam.id, "reason": reason}
            )
        if jam.host == self.me and any(link.kind == "node" for link in links):
            await trio.sleep(ENDED_GRACE)  # let "ended" reach the members before the calls close
        for link in links:
            link.scope.cancel()
            if link.kind == "browser":
                self._on_loop(_close_link_pc, link)

    # -- the forwarding unit ---------------------------------------------------------------

    def _add(self, jam: Jam, participant: Participant) -> None:
        from node.live.media import Source

        participant.source = Source(participant.id)
        jam.participants[participant.id] = participant
        if jam.recording is not None:
            self._record(jam, participant)

    def _remove_link(self, jam: Jam, link_id: str) -> None:
        link = jam.links.pop(link_id, None)
        gone = [p for p in jam.participants.values() if p.link == link_id]
        for participant in gone:
            del jam.participants[participant.id]
            self._on_loop(_detach, participant.source)
        if link is not None:
            self._on_loop(_assign, link.out, [None] * len(link.out))
        if gone or link is not None:
            self._refresh(jam)

    def _refresh(self, jam: Jam) -> None:
        """Put everyone on every other link's slots and tell each link who is where."""
        for link in list(jam.links.values()):
            wanted = [p.id for p in jam.participants.values() if p.link != link.id]
            link.slot_map = assign_slots(link.slot_map, wanted, len(link.out))
            sources = [
                jam.participants[pid].source if pid is not None else None for pid in link.slot_map
            ]
            self._on_loop(_assign, link.out, sources)
            roster = self._roster(jam, link)
            if roster != link.last_roster:
                link.last_roster = roster
                link.notify(roster)

    def _roster(self, jam: Jam, link: Link) -> dict[str, Any]:
        slot_of = {pid: i for i, pid in enumerate(link.slot_map) if pid is not None}
        if link.kind == "browser":
            return {
                "t": "jam-roster",
                "jam": jam.public(self.me),
                "you": link.id,
                "slots": list(link.slot_map),
                "participants": [
                    {**p.public(), "slot": slot_of.get(p.id), "self": p.id == link.id}
                    for p in jam.participants.values()
                ],
            }
        return {
            "t": "roster",
            "title": jam.title,
            "recording": jam.recorded(but=link.id),
            "participants": [
                {**jam.participants[pid].public(), "slot": slot} for pid, slot in slot_of.items()
            ],
        }

    def _on_control(self, jam: Jam, link: Link, message: dict[str, Any]) -> None:
        """A node link's control message (the peer's roster, or the host ending the jam)."""
        kind = message.get("t")
        if kind == "ended" and link.id == jam.host:
            jam.end_reason = "ended by its host"
            jam.ended.set()
            link.scope.cancel()
            return
        if kind == "chat":
            self._chat(jam, parse_chat(message), source=link.id)
            return
        if kind != "roster":
            return  # unknown control messages are ignored (forward compatibility)
        entries = parse_roster(message, len(link.ins))
        link.recording = message.get("recording") is True
        title = message.get("title")
        if link.id == jam.host and isinstance(title, str):
            with suppress(ValueError):
                jam.title = check_title(title)
        listed = {p.id for _, p in entries}
        for participant in [p for p in jam.participants.values() if p.link == link.id]:
            if participant.id not in listed:
                del jam.participants[participant.id]
                self._on_loop(_detach, participant.source)
        routes: list[Source | None] = [None] * len(link.ins)
        for slot, entry in entries:
            known = jam.participants.get(entry.id)
            if known is not None and known.link != link.id:
                continue  # an id another link already brought: not this peer's to claim
            if known is None:
                if len(jam.participants) >= MAX_PARTICIPANTS:
                    continue
                entry.link = link.id
                self._add(jam, entry)
                known = entry
            known.name, known.muted = entry.name, entry.muted
            routes[slot] = known.source
        self._on_loop(_route, link.ins, routes)
        self._refresh(jam)

    def _on_loop(self, fn: Callable[..., object], *args: object) -> None:
        rtc = self.channels.rtc
        if rtc is not None:
            with suppress(RtcLoopClosed, RuntimeError):
                rtc.call_soon(fn, *args)

    # -- browsers --------------------------------------------------------------------------

    async def join_browser(
        self, jam_id: str, name: str, offer_sdp: str, notify: Notify
    ) -> tuple[str, str]:
        """A local user's browser joins with its offer; returns (participant id, answer SDP).

        The participant stays until :meth:`leave` or until its peer connection fails.
        """
        jam = self.get(jam_id)
        if len(jam.participants) >= MAX_PARTICIPANTS:
            raise JamFull(f"a jam has at most {MAX_PARTICIPANTS} participants")
        rtc = await self.channels.ensure_rtc()
        pid = secrets.token_hex(16)
        link = Link(pid, "browser", notify)
        participant = Participant(pid, name[:MAX_NAME] or "someone", self.me, pid)
        self._add(jam, participant)
        try:
            answer = await rtc.run(
                lambda: _answer_browser(self, rtc, jam.id, link, participant, offer_sdp)
            )
        except Exception:
            jam.participants.pop(pid, None)
            self._on_loop(_detach, participant.source)
            raise
        jam.links[pid] = link
        self._refresh(jam)
        if jam.chat:
            notify({"t": "jam-chat", "jam": jam.id, "lines": list(jam.chat)})
        return pid, answer

    def leave(self, jam_id: str, participant: str) -> None:
        jam = self.jams.get(jam_id)
        if jam is None or participant not in jam.links:
            return
        link = jam.links[participant]
        self._remove_link(jam, participant)
        self._on_loop(_close_link_pc, link)

    def set_muted(self, jam_id: str, participant: str, muted: bool) -> None:
        jam = self.get(jam_id)
        found = jam.participants.get(participant)
        if found is None or found.link != participant:
            raise NoSuchJam("not a participant of yours")
        found.muted = muted
        self._refresh(jam)

    def say(self, jam_id: str, participant: str, text: str, now_ms: int) -> dict[str, Any]:
        """A local participant's chat line, sent to everyone in the jam."""
        jam = self.get(jam_id)
        found = jam.participants.get(participant)
        if found is None or found.link != participant:
            raise NoSuchJam("not a participant of yours")
        line = {
            "id": secrets.token_hex(16),
            "name": found.name,
            "node": self.me,
            "sent_ms": now_ms,
            "text": check_chat_text(text),
        }
        self._chat(jam, line, source=None)
        return line

    def _chat(self, jam: Jam, line: dict[str, Any], *, source: str | None) -> None:
        """Keep ``line`` once and pass it on over every link but the one it came from."""
        if line["id"] in jam.chat_ids:
            return  # already seen (a star never loops; this guards a confused peer)
        if len(jam.chat) == jam.chat.maxlen:
            jam.chat_ids.discard(jam.chat[0]["id"])
        jam.chat.append(line)
        jam.chat_ids.add(line["id"])
        for link in list(jam.links.values()):
            if link.id == source or link.kind == "stream":
                continue
            if link.kind == "browser":
                link.notify({"t": "jam-chat", "jam": jam.id, "lines": [line]})
            else:
                link.notify({"t": "chat", "line": line})

    def _browser_gone(self, jam_id: str, participant: str, reason: str) -> None:  # trio thread
        jam = self.jams.get(jam_id)
        if jam is None:
            return
        link = jam.links.get(participant)
        if link is not None:
            link.notify({"t": "jam-left", "jam": jam_id, "reason": reason})
            self._remove_link(jam, participant)

    # -- member nodes ----------------------------------------------------------------------

    async def _member(self, jam: Jam) -> None:
        """The member side: keep one call to the host while the jam lasts here."""
        failures, delay = 0, RETRY_INITIAL
        while not jam.ended.is_set() and failures < MEMBER_RETRIES:
            link = Link(jam.host, "node", lambda _message: None)
            with link.scope:
                try:
                    async with open_media_call(
                        self.calls, jam.host, _slots_setup(link, SLOTS, send=True),
                        purpose=("jam", jam.id),
                    ) as call:  # fmt: skip
                        failures, delay = 0, RETRY_INITIAL
                        link.notify = call.send
                        jam.links[link.id] = link
                        jam.connected = True
                        self._refresh(jam)
                        async for message in call.messages:
                            self._on_control(jam, link, message)
                except (ChannelFailed, LinkError, RtcLoopClosed, BadRoster) as exc:
                    log.info("jam %s: call to host failed: %s", jam.id[:8], exc)
                    failures += 1
                finally:
                    jam.connected = False
                    self._remove_link(jam, link.id)
            if jam.ended.is_set():
                break
            await trio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)
        if self.jams.get(jam.id) is jam:
            reason = jam.end_reason or "the host could not be reached"
            await self.end(jam.id, reason)

    async def _on_jam_offer(self, peer: str, jam_id: str, offer: Signal) -> None:
        """The host side: a member node calls to join."""
        jam = self.jams.get(jam_id)
        if jam is None or jam.host != self.me or peer in jam.links:
            self.calls.refuse(peer, offer)
            return
        link = Link(peer, "node", lambda _message: None)
        with link.scope:
            try:
                async with open_media_call(
                    self.calls, peer, _slots_setup(link, SLOTS, send=True), offer=offer
                ) as call:
                    link.notify = call.send
                    jam.links[peer] = link
                    self._refresh(jam)
                    async for message in call.messages:
                        self._on_control(jam, link, message)
            except (ChannelFailed, LinkError, RtcLoopClosed, BadRoster) as exc:
                log.info("jam %s: member %s left: %s", jam.id[:8], peer[:16], exc)
            finally:
                if jam.links.get(peer) is link:
                    self._remove_link(jam, peer)

    # -- streamed tracks -------------------------------------------------------------------

    def play_track(self, jam_id: str, peer: str, track: str) -> None:
        """Ask ``peer`` to play track event ``track`` into the jam (in the background)."""
        jam = self.get(jam_id)
        if not HEX32.fullmatch(peer) or not HEX32.fullmatch(track):
            raise ValueError("peer and track are 64 hex digits")
        if peer == self.me:
            raise ValueError("only a peer's tracks stream (this node's own play in the browser)")
        if peer not in self.channels.federation.sessions:
            raise ChannelFailed("no peer link to that node")
        if len(jam.participants) >= MAX_PARTICIPANTS:
            raise JamFull(f"a jam has at most {MAX_PARTICIPANTS} participants")
        assert self._nursery is not None
        self._nursery.start_soon(self._stream_in, jam, peer, track)

    async def _stream_in(self, jam: Jam, peer: str, track: str) -> None:
        link = Link(f"stream:{secrets.token_hex(8)}", "stream", lambda _message: None)
        with link.scope:
            try:
                async with open_media_call(
                    self.calls, peer, _slots_setup(link, 1, send=False), purpose=("stream", track)
                ) as call:
                    jam.links[link.id] = link
                    async for message in call.messages:
                        self._on_control(jam, link, message)
            except (ChannelFailed, LinkError, RtcLoopClosed, BadRoster) as exc:
                log.info("stream of %s from %s ended: %s", track[:16], peer[:16], exc)
            finally:
                self._remove_link(jam, link.id)

    async def _on_stream_offer(self, peer: str, track: str, offer: Signal) -> None:
        """The playing side: a peer asks for one of this node's tracks."""
        found = await trio.to_thread.run_sync(self._track_file, track)
        if found is None:
            self.calls.refuse(peer, offer)
            return
        path, title = found
        ended = trio.Event()
        players: list[Any] = []

        async def setup(pc: RTCPeerConnection) -> None:
            from aiortc.contrib.media import MediaPlayer

            player = MediaPlayer(str(path))
            players.append(player)
            if player.audio is None:
                raise ChannelFailed("the track has no audio")
            pc.addTrack(player.audio)
            player.audio.on("ended", lambda: self.channels.post(ended.set))

        try:
            async with open_media_call(self.calls, peer, setup, offer=offer) as call:
                call.send({
                    "t": "roster",
                    "participants": [{
                        "id": secrets.token_hex(16), "name": f"♪ {title}"[:MAX_NAME],
                        "node": self.me, "kind": "track", "muted": False, "slot": 0,
                    }],
                })  # fmt: skip
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_set_when, call.closed, ended)
                    await ended.wait()
                    nursery.cancel_scope.cancel()
        except (ChannelFailed, LinkError, RtcLoopClosed) as exc:
            log.info("streaming %s to %s ended: %s", track[:16], peer[:16], exc)
        finally:
            for player in players:
                self._on_loop(_stop_player, player)

    def _track_file(self, track: str) -> tuple[Path, str] | None:
        """This node's stored audio for track event ``track``, or None."""
        stored = self.node.store.get(track)
        if stored is None or stored.deleted or stored.event.kind != "track":
            return None
        body = stored.event.body or {}
        blob, title = body.get("blob"), body.get("title")
        if not isinstance(blob, str):
            return None
        try:
            return self.node.blobs.local_path(blob), str(title or "track")
        except TalasError:
            return None

    # -- recording -------------------------------------------------------------------------

    async def start_recording(self, jam_id: str, now_ms: int) -> None:
        jam = self.get(jam_id)
        if jam.recording is not None:
            return
        directory = self.recordings_dir / f"{jam.id}-{now_ms}"
        await trio.to_thread.run_sync(lambda: directory.mkdir(mode=0o700, parents=True))
        await self.channels.ensure_rtc()
        jam.recording = Recording(now_ms, directory)
        for participant in jam.participants.values():
            self._record(jam, participant)
        self._refresh(jam)

    def _record(self, jam: Jam, participant: Participant) -> None:
        recording = jam.recording
        assert recording is not None
        if participant.id in recording.names:
            return
        recording.names[participant.id] = participant.name
        path = recording.directory / f"{len(recording.names):02d}-{participant.id}.wav"
        self._on_loop(_start_recorder, recording, participant.id, participant.source, path)

    async def stop_recording(self, jam_id: str) -> list[Recorded]:
        """Stop recording; the files (one per participant heard) for the caller to publish."""
        jam = self.get(jam_id)
        recording, jam.recording = jam.recording, None
        if recording is None:
            return []
        self._refresh(jam)
        rtc = self.channels.rtc
        if rtc is None:
            return []
        sources = {p.id: p.source for p in jam.participants.values()}

        async def close_all() -> list[Recorded]:
            done = []
            for pid, recorder in recording.recorders.items():
                source = sources.get(pid)
                if source is not None and source.recorder is recorder:
                    source.recorder = None
                duration = recorder.close()
                if duration > 0 and recorder.heard:
                    done.append(Recorded(recorder.path, pid, recording.names[pid], duration))
                else:
                    recorder.path.unlink(missing_ok=True)  # nobody heard: no empty take
            return done

        return await rtc.run(close_all)


async def _set_when(source: trio.Event, target: trio.Event) -> None:
    await source.wait()
    target.set()


# -- the asyncio side ----------------------------------------------------------------


def _slots_setup(link: Link, count: int, *, send: bool) -> Callable[[RTCPeerConnection], Any]:
    """Transceivers for a node or stream link: ``count`` slots, each with its tap."""

    async def setup(pc: RTCPeerConnection) -> None:
        from node.jitter import install_low_latency_jitter
        from node.live.media import InSlot, SlotTrack

        existing = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if existing:  # answering: the offer made them
            if len(existing) > count:
                raise ChannelFailed(f"an offer with {len(existing)} audio slots (at most {count})")
            require_opus(existing)
            transceivers = existing
            for _ in existing:
                track = SlotTrack()
                link.out.append(track)
                pc.addTrack(track)
        else:
            transceivers = []
            for _ in range(count):
                if send:
                    track = SlotTrack()
                    link.out.append(track)
                    transceivers.append(pc.addTransceiver(track, direction="sendrecv"))
                else:
                    transceivers.append(pc.addTransceiver("audio", direction="recvonly"))
        for transceiver in transceivers:
            transceiver.setCodecPreferences(_opus_only())  # forwarding passes Opus packets on
            slot = InSlot()
            link.ins.append(slot)
            install_low_latency_jitter(transceiver.receiver, tap=slot)
        link.slot_map = [None] * len(link.out)

    return setup


async def _answer_browser(
    service: JamService,
    rtc: RtcLoop,
    jam_id: str,
    link: Link,
    participant: Participant,
    offer_sdp: str,
) -> str:
    pc = link.pc = await rtc.create_peer_connection(service.channels.ice_servers)
    try:
        return await _answer_on(service, pc, jam_id, link, participant, offer_sdp)
    except BaseException:
        link.pc = None
        await pc.close()
        raise


async def _answer_on(
    service: JamService,
    pc: RTCPeerConnection,
    jam_id: str,
    link: Link,
    participant: Participant,
    offer_sdp: str,
) -> str:
    from aiortc import RTCSessionDescription

    from node.jitter import install_low_latency_jitter
    from node.live.media import SlotTrack

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
    if not 1 <= len(audio) <= SLOTS:
        raise ValueError(f"a browser offers 1 to {SLOTS} audio transceivers, not {len(audio)}")
    require_opus(audio)
    for _ in audio:
        track = SlotTrack()
        link.out.append(track)
        pc.addTrack(track)
    link.slot_map = [None] * len(link.out)
    source = participant.source
    install_low_latency_jitter(audio[0].receiver, tap=source.push if source else None)

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            service.channels.post(
                service._browser_gone, jam_id, participant.id, f"connection {pc.connectionState}"
            )

    await pc.setLocalDescription(await pc.createAnswer())
    return str(pc.localDescription.sdp)


def _opus_only() -> list[Any]:
    from aiortc import RTCRtpSender

    codecs = RTCRtpSender.getCapabilities("audio").codecs
    return [c for c in codecs if c.mimeType.lower() == "audio/opus"]


def require_opus(transceivers: list[Any]) -> None:
    """Refuse a negotiation whose audio is not Opus: slots forward Opus packets as they are."""
    for transceiver in transceivers:
        codecs = transceiver._codecs  # aiortc's negotiated list; the first is what is sent
        if not codecs or codecs[0].mimeType.lower() != "audio/opus":
            raise ValueError("jam audio must be Opus (RFC 7587)")


def _close_link_pc(link: Link) -> None:
    import asyncio

    pc, link.pc = link.pc, None
    if pc is not None:
        asyncio.ensure_future(pc.close())  # noqa: RUF006 - the loop's cleanup also closes it


def _assign(tracks: list[SlotTrack], sources: list[Source | None]) -> None:
    for track, source in zip(tracks, sources, strict=False):
        track.assign(source)


def _route(slots: list[InSlot], sources: list[Source | None]) -> None:
    for slot, source in zip(slots, sources, strict=False):
        slot.source = source


def _detach(source: Source | None) -> None:
    if source is not None:
        source.detach()


def _start_recorder(
    recording: Recording, participant: str, source: Source | None, path: Path
) -> None:
    import asyncio

    from node.live.media import Recorder

    recorder = Recorder(path, asyncio.get_running_loop().time())
    recording.recorders[participant] = recorder
    if source is not None:
        source.recorder = recorder


def _stop_player(player: Any) -> None:
    for track in (player.audio, player.video):
        if track is not None:
            track.stop()
