"""Signed WebRTC signalling for live calls: envelopes, replay cache, call state machine.

Theory of operation
-------------------
A live call's offer, answer, trickled candidates and hang-up travel between
nodes as **signals**: one JSON object per signal (canonical per RFC 8785)::

    {"expires_ms": ms, "from": hex32, "issued_ms": ms, "kind": "offer",
     "nonce": hex16, "sdp": "v=0\\r\\n...", "session": hex16, "sig": hex64,
     "to": hex32, "v": 1}

The sending node signs ``SIGNAL_DOMAIN || canonical(every field but sig)``
with its node key.  The SDP of an offer or answer names exactly one DTLS
certificate fingerprint (sha-256); WebRTC endpoints refuse a DTLS peer whose
certificate does not match the fingerprint of the remote description, so the
signature binds the media of the call to the sending node's key: swap the
fingerprint and the signature fails, keep it and only the holder of that
certificate can complete DTLS.  ``from``/``to`` stop a signal being replayed
to another node, ``nonce`` plus a short ``expires_ms`` stop it being replayed
to the same one (:class:`NonceCache`).

:func:`verify_signal` checks, in order: shape (:class:`Malformed`), the
sender against the authenticated link (:class:`WrongSender`), the recipient
(:class:`NotForMe`), the signature (:class:`BadSignature`), the clock
(:class:`NotYetValid`, :class:`Expired`) and the nonce (:class:`Replayed`);
only a signal that passed everything enters the replay cache.

:class:`CallSignalling` is one call's table-driven state machine on one node:
frozen events in (:class:`Local`, :class:`Remote`), actions out
(:class:`Transmit`, :class:`Deliver`, :class:`Refuse`, :class:`Close`).
Sans-IO throughout: time and randomness (nonces, session ids) are passed in.
The normative description is specs/live.md.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import re
from dataclasses import dataclass, replace
from typing import Any

from protocol import errors
from protocol.canonical import MAX_SAFE_INTEGER, JSONValue, canonical_bytes, parse_strict
from protocol.errors import InvalidJSON, ProtocolError
from protocol.keys import SigningKey, verify

SIGNAL_VERSION = 1
SIGNAL_DOMAIN = b"talas/signal/v1\x00"
MAX_SDP_BYTES = 65536
"""Longest ``sdp`` accepted, in bytes (the SDP is ASCII, so also in characters)."""
MAX_SIGNAL_BYTES = 2 * MAX_SDP_BYTES + 1024
"""Longest envelope accepted.  JCS escapes at most one extra byte per SDP byte
(CR LF become ``\\r\\n``; ``"`` and ``\\`` are escaped), so a canonical envelope
with the longest SDP always fits."""
MAX_LIFETIME_MS = 60_000
"""Longest validity window ``expires_ms - issued_ms`` a signal may claim."""
DEFAULT_LIFETIME_MS = 30_000
MAX_SKEW_MS = 10_000
"""How far in the receiver's future ``issued_ms`` may be (clock skew between nodes)."""
DEFAULT_NONCE_CAPACITY = 4096

SIGNED_FIELDS = frozenset(
    {"v", "kind", "session", "from", "to", "sdp", "nonce", "issued_ms", "expires_ms"}
)
WIRE_FIELDS = SIGNED_FIELDS | {"sig"}

_HEX16 = re.compile(r"[0-9a-f]{32}\Z")
_HEX32 = re.compile(r"[0-9a-f]{64}\Z")
_HEX64 = re.compile(r"[0-9a-f]{128}\Z")
# One SDP line without its CRLF: a type letter, "=", printable ASCII.
_SDP_LINE = re.compile(r"[a-z]=[\x20-\x7e]*\Z")
_FINGERPRINT_VALUE = re.compile(r"sha-256 ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})\Z")
_CRLF = "\r\n"


# -- errors -------------------------------------------------------------------------


class SignallingError(ProtocolError):
    """Base for every refusal of a received signal."""


class Malformed(SignallingError):
    """Not a well-formed signal: bad JSON, fields, bounds or SDP."""


class BadSignature(SignallingError, errors.BadSignature):
    """The signature does not verify against the sender's node key."""


class Expired(SignallingError):
    """The signal is outside its validity window on the receiver's clock."""


class NotYetValid(Expired):
    """``issued_ms`` is further in the future than the allowed clock skew."""


class NotForMe(SignallingError):
    """The signal is addressed to another node."""


class WrongSender(SignallingError):
    """The signal names a sender other than the authenticated peer it came from."""


class Replayed(SignallingError):
    """The nonce was already accepted (or may have been: see :class:`NonceCache`)."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise Malformed(message)


# -- SDP ----------------------------------------------------------------------------


class SignalKind(enum.Enum):
    OFFER = "offer"
    ANSWER = "answer"
    CANDIDATE = "candidate"
    BYE = "bye"


_KINDS = {kind.value: kind for kind in SignalKind}


def check_sdp(kind: SignalKind, sdp: str) -> str | None:
    """Check ``sdp`` for a signal of ``kind``; return its DTLS fingerprint.

    Offers and answers carry a full SDP naming exactly one distinct sha-256
    fingerprint (at session or media level, repeated as often as wanted), which
    is returned.  A candidate carries an SDP fragment of ``a=``/``m=`` lines and
    no fingerprint; a bye carries the empty string.  Both return None.  Raises
    :class:`Malformed` otherwise.
    """
    if kind is SignalKind.BYE:
        _require(sdp == "", "a bye carries an empty sdp")
        return None
    _require(sdp.isascii(), "sdp must be ASCII")
    _require(len(sdp) <= MAX_SDP_BYTES, f"sdp is over {MAX_SDP_BYTES} bytes")
    _require(sdp.endswith(_CRLF), "sdp must be lines each ending in CRLF")
    lines = sdp[: -len(_CRLF)].split(_CRLF)
    fingerprints: set[str] = set()
    for number, line in enumerate(lines, 1):
        _require(
            _SDP_LINE.match(line) is not None,
            f"sdp line {number} is not '<letter>=<printable ASCII>' ending in CRLF",
        )
        if line.startswith("a="):
            name, colon, value = line[2:].partition(":")
            if name.lower() == "fingerprint":
                # Endpoints match attribute names exactly: a line they would skip
                # must not count here, so any other spelling is refused.
                found = _FINGERPRINT_VALUE.match(value) if colon else None
                _require(
                    found is not None and name == "fingerprint",
                    f"sdp line {number}: must be 'a=fingerprint:sha-256 ' and 32 uppercase "
                    "hex pairs separated by colons",
                )
                assert found is not None
                fingerprints.add(found.group(1))
    if kind is SignalKind.CANDIDATE:
        _require(not fingerprints, "a candidate carries no fingerprint")
        _require(all(line[0] in "am" for line in lines), "a candidate carries only a= and m= lines")
        return None
    _require(lines[0] == "v=0", "an offer or answer sdp starts with 'v=0'")
    _require(bool(fingerprints), f"an {kind.value} sdp must carry a sha-256 fingerprint")
    _require(len(fingerprints) == 1, f"{len(fingerprints)} different fingerprints in the sdp")
    return fingerprints.pop()


def sha256_fingerprints_only(sdp: str) -> str:
    """``sdp`` without its non-sha-256 ``a=fingerprint`` lines, to sign a local description.

    aiortc announces sha-256, sha-384 and sha-512 fingerprints of its certificate;
    signals carry sha-256 only.  Only for the node's own SDP, before signing.
    """
    kept = []
    for line in sdp.split(_CRLF):
        name, colon, value = line.removeprefix("a=").partition(":")
        if line.startswith("a=") and colon and name.lower() == "fingerprint":
            algorithm = value.split(" ", 1)[0]
            if algorithm.lower() != "sha-256":
                continue
        kept.append(line)
    return _CRLF.join(kept)


CALL_PURPOSE_ATTRIBUTE = "a=x-talas-call:"
"""Session-level SDP attribute naming what an offer is for (specs/live.md §5.4)."""
_PURPOSE_ARG = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}")
CALL_PURPOSES = frozenset({"jam", "stream"})


def call_purpose(sdp: str) -> tuple[str, str] | None:
    """``(purpose, argument)`` an offer declares, or None for a plain data channel call.

    Raises ValueError for a purpose line that is not exactly one known
    purpose and one lowercase hex id, or for more than one such line.
    """
    found = [line for line in sdp.split(_CRLF) if line.startswith(CALL_PURPOSE_ATTRIBUTE)]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError("an offer names one call purpose")
    purpose, _, argument = found[0].removeprefix(CALL_PURPOSE_ATTRIBUTE).partition(" ")
    if purpose not in CALL_PURPOSES or not _PURPOSE_ARG.fullmatch(argument):
        raise ValueError(f"unknown call purpose {found[0][:80]!r}")
    return purpose, argument


def with_call_purpose(sdp: str, purpose: str, argument: str) -> str:
    """``sdp`` with the purpose line added at session level (after ``t=``), before signing."""
    if purpose not in CALL_PURPOSES or not _PURPOSE_ARG.fullmatch(argument):
        raise ValueError(f"bad call purpose {purpose!r} {argument!r}")
    lines = sdp.split(_CRLF)
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("t=")), 1)
    lines.insert(at, f"{CALL_PURPOSE_ATTRIBUTE}{purpose} {argument}")
    return _CRLF.join(lines)


def certificate_fingerprint(der: bytes) -> str:
    """The SDP form of a DER certificate's sha-256 fingerprint (``AB:CD:...``)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


# -- the envelope -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """A decoded signal.  ``sender`` and ``recipient`` are the wire's ``from`` and ``to``;
    ``fingerprint`` is the SDP's DTLS fingerprint (offer and answer; None otherwise)."""

    kind: SignalKind
    session: str
    sender: str
    recipient: str
    sdp: str
    nonce: str
    issued_ms: int
    expires_ms: int
    sig: str
    fingerprint: str | None

    def signed_fields(self) -> dict[str, JSONValue]:
        return {
            "v": SIGNAL_VERSION,
            "kind": self.kind.value,
            "session": self.session,
            "from": self.sender,
            "to": self.recipient,
            "sdp": self.sdp,
            "nonce": self.nonce,
            "issued_ms": self.issued_ms,
            "expires_ms": self.expires_ms,
        }

    def signing_bytes(self) -> bytes:
        """The exact bytes the sender's node key signs."""
        return SIGNAL_DOMAIN + canonical_bytes(self.signed_fields())

    def to_json(self) -> dict[str, JSONValue]:
        return {**self.signed_fields(), "sig": self.sig}

    def wire_bytes(self) -> bytes:
        """Canonical bytes of the envelope: what travels in a ``signal`` message."""
        return canonical_bytes(self.to_json())


def _hex(obj: dict[str, Any], name: str, pattern: re.Pattern[str], size: int) -> str:
    value = obj[name]
    _require(
        isinstance(value, str) and pattern.match(value) is not None,
        f"{name!r} must be {2 * size} lowercase hex characters",
    )
    assert isinstance(value, str)
    return value


def _time(obj: dict[str, Any], name: str) -> int:
    value = obj[name]
    _require(
        type(value) is int and 0 <= value <= MAX_SAFE_INTEGER,
        f"{name!r} must be an integer in [0, 2^53-1]",
    )
    assert isinstance(value, int)
    return value


def decode_value(obj: JSONValue) -> Signal:
    """Check an already-parsed envelope; everything but the signature and the clock."""
    _require(isinstance(obj, dict), "a signal must be a JSON object")
    assert isinstance(obj, dict)
    extra = obj.keys() - WIRE_FIELDS
    _require(not extra, f"unknown signal field(s): {', '.join(sorted(extra))[:200]}")
    missing = WIRE_FIELDS - obj.keys()
    _require(not missing, f"missing signal field(s): {', '.join(sorted(missing))}")
    _require(type(obj["v"]) is int and obj["v"] == SIGNAL_VERSION, "unsupported signal version")
    kind = _KINDS.get(obj["kind"]) if isinstance(obj["kind"], str) else None
    _require(kind is not None, f"'kind' must be one of {', '.join(_KINDS)}")
    assert kind is not None
    session = _hex(obj, "session", _HEX16, 16)
    sender = _hex(obj, "from", _HEX32, 32)
    recipient = _hex(obj, "to", _HEX32, 32)
    _require(sender != recipient, "'from' and 'to' must be different nodes")
    nonce = _hex(obj, "nonce", _HEX16, 16)
    sig = _hex(obj, "sig", _HEX64, 64)
    issued, expires = _time(obj, "issued_ms"), _time(obj, "expires_ms")
    _require(expires > issued, "'expires_ms' must be after 'issued_ms'")
    _require(
        expires - issued <= MAX_LIFETIME_MS, f"lifetime over {MAX_LIFETIME_MS} ms is not allowed"
    )
    sdp = obj["sdp"]
    _require(isinstance(sdp, str), "'sdp' must be a string")
    assert isinstance(sdp, str)
    fingerprint = check_sdp(kind, sdp)
    return Signal(kind, session, sender, recipient, sdp, nonce, issued, expires, sig, fingerprint)


def decode_signal(data: bytes) -> Signal:
    """Parse and check envelope bytes, without verifying the signature or the clock."""
    _require(len(data) <= MAX_SIGNAL_BYTES, f"signal is over {MAX_SIGNAL_BYTES} bytes")
    try:
        obj = parse_strict(data, max_bytes=MAX_SIGNAL_BYTES, max_depth=1)
    except InvalidJSON as exc:
        raise Malformed(f"not a signal: {exc}") from exc
    return decode_value(obj)


def check_time(signal: Signal, now_ms: int) -> None:
    """Raise unless ``signal`` is valid at ``now_ms`` (receiver's clock, allowing skew)."""
    if signal.issued_ms > now_ms + MAX_SKEW_MS:
        raise NotYetValid(
            f"issued {signal.issued_ms - now_ms} ms in the future (skew allowed: {MAX_SKEW_MS})"
        )
    if now_ms >= signal.expires_ms:
        raise Expired(f"expired at {signal.expires_ms}, now is {now_ms}")


def sign_signal(
    key: SigningKey,
    *,
    kind: SignalKind,
    session: str,
    to: str,
    sdp: str,
    nonce: str,
    now_ms: int,
    lifetime_ms: int = DEFAULT_LIFETIME_MS,
) -> Signal:
    """Build and sign a signal from ``key``'s node; it passes the receiver's checks.

    ``session`` (chosen by the offerer) and ``nonce`` (fresh for every signal)
    are 128-bit random values in lowercase hex, e.g. ``secrets.token_hex(16)``.
    Raises :class:`Malformed` for anything a receiver would refuse.
    """
    fields: dict[str, JSONValue] = {
        "v": SIGNAL_VERSION, "kind": kind.value, "session": session, "from": key.id,
        "to": to, "sdp": sdp, "nonce": nonce, "issued_ms": now_ms,
        "expires_ms": now_ms + lifetime_ms, "sig": "0" * 128,
    }  # fmt: skip
    unsigned = decode_value(fields)
    signal = replace(unsigned, sig=key.sign(unsigned.signing_bytes()).hex())
    decode_signal(signal.wire_bytes())  # the size cap applies to the wire form
    return signal


def verify_signal(
    data: bytes, *, expected_from: str, me: str, now_ms: int, seen: NonceCache
) -> Signal:
    """The whole path for one received envelope.

    ``expected_from`` is the node id the link authenticated, ``me`` this node's
    id.  Raises a :class:`SignallingError` subclass, and nothing else, for any
    signal refused; an accepted signal's nonce is recorded in ``seen``.
    """
    signal = decode_signal(data)
    if signal.sender != expected_from:
        raise WrongSender(f"signal from {signal.sender[:16]}… on the link of {expected_from[:16]}…")
    if signal.recipient != me:
        raise NotForMe(f"signal for {signal.recipient[:16]}…")
    try:
        verify(bytes.fromhex(signal.sender), signal.signing_bytes(), bytes.fromhex(signal.sig))
    except ProtocolError as exc:
        raise BadSignature(f"signal signature: {exc}") from exc
    check_time(signal, now_ms)
    seen.admit(signal.sender, signal.nonce, signal.expires_ms, now_ms)
    return signal


# -- replay protection --------------------------------------------------------------


class NonceCache:
    """The nonces of accepted signals, each kept until its signal expires.

    Bounded: when more than ``capacity`` unexpired nonces are held, those
    expiring first are forgotten and the cache raises its *floor* to their
    expiry; from then on a signal expiring at or before the floor is refused,
    since it might be a replay of a forgotten one.  So a replay is never
    accepted; under a flood, fresh signals may be refused (fail closed).  The
    clock is the highest ``now_ms`` seen, so a clock stepping back cannot
    revive a forgotten nonce.
    """

    def __init__(self, capacity: int = DEFAULT_NONCE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._expiry: dict[tuple[str, str], int] = {}
        self._heap: list[tuple[int, str, str]] = []
        self._floor = -1
        self._now = -1

    def __len__(self) -> int:
        return len(self._expiry)

    @property
    def floor(self) -> int:
        """Signals expiring at or before this time (ms) are refused."""
        return self._floor

    def purge(self, now_ms: int) -> None:
        """Forget the nonces of signals expired at ``now_ms``."""
        self._now = max(self._now, now_ms)
        while self._heap and self._heap[0][0] <= self._now:
            _, sender, nonce = heapq.heappop(self._heap)
            del self._expiry[(sender, nonce)]

    def admit(self, sender: str, nonce: str, expires_ms: int, now_ms: int) -> None:
        """Record ``sender``'s ``nonce`` until ``expires_ms``, or raise if it cannot be new."""
        self.purge(now_ms)
        if expires_ms <= self._now:
            raise Expired("signal expired (replay cache clock)")
        if (sender, nonce) in self._expiry:
            raise Replayed(f"nonce {nonce} already seen")
        if expires_ms <= self._floor:
            raise Replayed("replay cache overflowed: cannot rule out a replay of this nonce")
        self._expiry[(sender, nonce)] = expires_ms
        heapq.heappush(self._heap, (expires_ms, sender, nonce))
        while len(self._expiry) > self.capacity:
            expiry, old_sender, old_nonce = heapq.heappop(self._heap)
            del self._expiry[(old_sender, old_nonce)]
            self._floor = max(self._floor, expiry)


# -- one call's state machine --------------------------------------------------------


class CallState(enum.Enum):
    IDLE = "idle"
    OFFER_SENT = "offer-sent"
    OFFER_RECEIVED = "offer-received"
    ANSWERED = "answered"
    CLOSED = "closed"


class Origin(enum.Enum):
    LOCAL = "local"
    """From this node's own endpoint (the browser on the UI WebSocket, or aiortc)."""
    REMOTE = "remote"
    """A verified signal from the peer node."""


@dataclass(frozen=True, slots=True)
class Local:
    """This node's endpoint wants to send ``kind`` (``sdp`` empty for a bye)."""

    kind: SignalKind
    sdp: str = ""


@dataclass(frozen=True, slots=True)
class Remote:
    """A signal from the peer that :func:`verify_signal` accepted."""

    signal: Signal


CallEvent = Local | Remote


@dataclass(frozen=True, slots=True)
class Transmit:
    """Sign this with the node key (:func:`sign_signal`) and send it to the peer."""

    kind: SignalKind
    session: str
    to: str
    sdp: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand this verified signal to the local endpoint."""

    signal: Signal


@dataclass(frozen=True, slots=True)
class Refuse:
    """The event was refused and dropped; the state did not change."""

    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    """The call is over: tear down its peer connection and forget its keys."""

    reason: str


Action = Transmit | Deliver | Refuse | Close


class _Do(enum.Enum):
    TRANSMIT = "transmit"
    DELIVER = "deliver"
    CLOSE = "close"


_S, _O, _K = CallState, Origin, SignalKind
_BYE_CLOSES = {_O.LOCAL: "hung up", _O.REMOTE: "peer hung up"}

# (state, origin, kind) -> (next state, what to do).  Anything absent is refused.
TRANSITIONS: dict[tuple[CallState, Origin, SignalKind], tuple[CallState, tuple[_Do, ...]]] = {
    (_S.IDLE, _O.LOCAL, _K.OFFER): (_S.OFFER_SENT, (_Do.TRANSMIT,)),
    (_S.IDLE, _O.REMOTE, _K.OFFER): (_S.OFFER_RECEIVED, (_Do.DELIVER,)),
    (_S.IDLE, _O.LOCAL, _K.BYE): (_S.CLOSED, (_Do.CLOSE,)),
    (_S.OFFER_SENT, _O.REMOTE, _K.ANSWER): (_S.ANSWERED, (_Do.DELIVER,)),
    (_S.OFFER_SENT, _O.LOCAL, _K.CANDIDATE): (_S.OFFER_SENT, (_Do.TRANSMIT,)),
    (_S.OFFER_RECEIVED, _O.LOCAL, _K.ANSWER): (_S.ANSWERED, (_Do.TRANSMIT,)),
    (_S.OFFER_RECEIVED, _O.REMOTE, _K.CANDIDATE): (_S.OFFER_RECEIVED, (_Do.DELIVER,)),
    (_S.ANSWERED, _O.LOCAL, _K.CANDIDATE): (_S.ANSWERED, (_Do.TRANSMIT,)),
    (_S.ANSWERED, _O.REMOTE, _K.CANDIDATE): (_S.ANSWERED, (_Do.DELIVER,)),
}
for _state in (_S.OFFER_SENT, _S.OFFER_RECEIVED, _S.ANSWERED):
    TRANSITIONS[(_state, _O.LOCAL, _K.BYE)] = (_S.CLOSED, (_Do.TRANSMIT, _Do.CLOSE))
    TRANSITIONS[(_state, _O.REMOTE, _K.BYE)] = (_S.CLOSED, (_Do.CLOSE,))


def refusal_reason(state: CallState, origin: Origin, kind: SignalKind) -> str:
    """Why ``(state, origin, kind)`` is not in :data:`TRANSITIONS`."""
    if state is _S.CLOSED:
        return "the call is closed"
    if kind is _K.OFFER:
        return "duplicate offer: a call has one offer (no renegotiation)"
    if state is _S.IDLE:
        return f"{kind.value} without an offer"
    if kind is _K.ANSWER:
        if state is _S.ANSWERED:
            return "duplicate answer"
        return "an answer must come from the side that received the offer"
    assert kind is _K.CANDIDATE
    return "candidate before the answer"


class CallSignalling:
    """The signalling of one call (one session id) between this node and one peer.

    Created before the first event: by the caller for its own offer, by the
    callee for a verified offer with an unknown session id.
    """

    def __init__(self, *, session: str, me: str, peer: str) -> None:
        if _HEX16.match(session) is None or _HEX32.match(me) is None:
            raise ValueError("session must be hex16 and me hex32")
        if _HEX32.match(peer) is None or peer == me:
            raise ValueError("peer must be another node's id")
        self.session = session
        self.me = me
        self.peer = peer
        self.state = CallState.IDLE
        self.local_fingerprint: str | None = None
        """The DTLS fingerprint of this node's endpoint, from its offer or answer."""
        self.peer_fingerprint: str | None = None
        """The DTLS fingerprint the peer signed: its certificate must match it."""

    def handle(self, event: CallEvent) -> list[Action]:
        """Apply one event; return what the node must do, in order."""
        if isinstance(event, Remote):
            signal = event.signal
            origin, kind, sdp = Origin.REMOTE, signal.kind, signal.sdp
            if signal.sender != self.peer:
                return [Refuse(f"signal from {signal.sender[:16]}…, not from the peer")]
            if signal.recipient != self.me or signal.session != self.session:
                return [Refuse("signal for another call")]
            fingerprint = signal.fingerprint
        else:
            origin, kind, sdp = Origin.LOCAL, event.kind, event.sdp
            try:
                fingerprint = check_sdp(kind, sdp)
            except Malformed as exc:
                return [Refuse(str(exc))]
        step = TRANSITIONS.get((self.state, origin, kind))
        if step is None:
            return [Refuse(refusal_reason(self.state, origin, kind))]
        self.state, todo = step
        if fingerprint is not None:
            if origin is Origin.LOCAL:
                self.local_fingerprint = fingerprint
            else:
                self.peer_fingerprint = fingerprint
        actions: list[Action] = []
        for do in todo:
            if do is _Do.TRANSMIT:
                actions.append(Transmit(kind, self.session, self.peer, sdp))
            elif do is _Do.DELIVER:
                assert isinstance(event, Remote)
                actions.append(Deliver(event.signal))
            else:
                actions.append(Close(_BYE_CLOSES[origin]))
        return actions
