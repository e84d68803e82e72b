"""Build the Talas live-signalling test vectors in specs/vectors/signalling.json.

Usage, from the project root::

    .venv/bin/python specs/vectors/make_signalling.py > specs/vectors/signalling.json

Every input is fixed: node key seeds, DTLS certificates (Ed25519 keys from
fixed seeds, fixed serial numbers and dates: Ed25519 signatures are
deterministic, so the DER is too), session ids, nonces and times.  Signatures
and wire forms come from :func:`protocol.signalling.sign_signal`; each invalid
vector is refused by :func:`protocol.signalling.verify_signal` with the error
named in it, which this script asserts while building.  tests/test_signalling.py
checks that the committed file equals what :func:`render` produces today, and
replays it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from protocol.canonical import JSONValue, canonical_bytes
from protocol.keys import SigningKey
from protocol.signalling import (
    MAX_LIFETIME_MS,
    MAX_SDP_BYTES,
    MAX_SIGNAL_BYTES,
    MAX_SKEW_MS,
    SIGNAL_DOMAIN,
    TRANSITIONS,
    CallState,
    Malformed,
    NonceCache,
    Origin,
    SignalKind,
    SignallingError,
    certificate_fingerprint,
    check_sdp,
    refusal_reason,
    sign_signal,
    verify_signal,
)

DESCRIPTION = (
    "Test vectors for Talas live signalling, talas/signal/v1 (specs/live.md). "
    "Binary values are lowercase hex; times are integer milliseconds. "
    "nodes: node key seeds (Ed25519, RFC 8032) and node ids. "
    "certificates: DER DTLS certificates and their SDP sha-256 fingerprints. "
    "valid: input is what the sender signs (sign_signal with nonce and issued_ms given, "
    "expires_ms = issued_ms + lifetime); signing_bytes = domain || JCS(every field but sig); "
    "wire is the canonical envelope; verifying wire as node 'me' on the link of "
    "'expected_from' MUST succeed at every time in accept_at with a fresh replay cache, "
    "giving fingerprint (null for candidate and bye), and MUST fail at every time in "
    "refuse_at with the error named there. "
    "invalid: verifying wire with verify MUST fail with error (the name of the "
    "specs/live.md §6 refusal); reason is a substring of the reference's message. "
    "Tampered vectors are the valid offer with one field changed after signing, "
    "re-encoded canonically; the others are genuine but refused by the receiver's state, "
    "carry a valid signature over fields that break a rule, or are no envelope at all. "
    "replay: the same wire verified twice against one replay cache: accepted, then Replayed. "
    "sdp: check_sdp cases, the fingerprint an sdp of that kind yields or the refusal. "
    "transitions: the complete call state table (specs/live.md §8): for every state, "
    "origin (local endpoint or verified remote signal) and kind, either the next state and "
    "the actions in order, or refused with the reference's reason."
)

T0 = 1_700_000_000_000
LIFETIME = 30_000


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"talas signalling vectors: {label}".encode()).digest()


def _hex16(label: str) -> str:
    return hashlib.sha256(f"talas signalling vectors: {label}".encode()).hexdigest()[:32]


CALLER = SigningKey(_seed("caller node key"))
CALLEE = SigningKey(_seed("callee node key"))
OTHER = SigningKey(_seed("other node key"))
NODES = {"caller": CALLER, "callee": CALLEE, "other": OTHER}
SESSION = _hex16("session")


def certificate(label: str) -> bytes:
    """A deterministic self-signed DTLS certificate (DER) for ``label``."""
    key = Ed25519PrivateKey.from_private_bytes(_seed(f"{label} certificate key"))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(_seed(f"{label} serial")[:8], "big") >> 1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .sign(key, None)
    )
    return cert.public_bytes(Encoding.DER)


CALLER_CERT = certificate("caller")
CALLEE_CERT = certificate("callee")
OTHER_CERT = certificate("other")
CALLER_FP = certificate_fingerprint(CALLER_CERT)
CALLEE_FP = certificate_fingerprint(CALLEE_CERT)
OTHER_FP = certificate_fingerprint(OTHER_CERT)


def sdp(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


def offer_sdp(fingerprint: str) -> str:
    """A browser-style offer: audio plus a data channel, fingerprint at media level."""
    return sdp(
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:actpass",
        "a=mid:1",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
    )


def answer_sdp(fingerprint: str) -> str:
    """A browser-style answer, fingerprint at session level."""
    return sdp(
        "v=0",
        "o=mozilla...THIS_IS_SDPARTA-99.0 7064487330476423164 0 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=group:BUNDLE 0 1",
        "a=ice-options:trickle",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=sendrecv",
        "a=ice-pwd:4b8e7f64c7b10b9e5aa2e6bb5f7c5b0d",
        "a=ice-ufrag:1f3e9a2c",
        "a=mid:0",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=setup:active",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=sendrecv",
        "a=ice-pwd:4b8e7f64c7b10b9e5aa2e6bb5f7c5b0d",
        "a=ice-ufrag:1f3e9a2c",
        "a=mid:1",
        "a=sctp-port:5000",
        "a=setup:active",
    )


CANDIDATE_SDP = sdp(
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=mid:0",
    "a=candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host generation 0",
)


def verify_params(me: SigningKey, sender: SigningKey, now_ms: int) -> dict[str, Any]:
    return {"me": me.id, "expected_from": sender.id, "now_ms": now_ms}


def outcome(wire: str, verify: dict[str, Any]) -> str:
    """'ok', or the name of the refusal verify_signal raises."""
    try:
        verify_signal(wire.encode(), seen=NonceCache(), **verify)
    except SignallingError as exc:
        return type(exc).__name__
    return "ok"


def outcome_reason(wire: str, verify: dict[str, Any]) -> str:
    try:
        verify_signal(wire.encode(), seen=NonceCache(), **verify)
    except SignallingError as exc:
        return str(exc)
    raise AssertionError("accepted")


# -- valid --------------------------------------------------------------------------

VALID_INPUTS: list[tuple[str, SigningKey, SigningKey, SignalKind, str, int]] = [
    ("offer", CALLER, CALLEE, SignalKind.OFFER, offer_sdp(CALLER_FP), T0),
    ("answer", CALLEE, CALLER, SignalKind.ANSWER, answer_sdp(CALLEE_FP), T0 + 2_500),
    ("candidate", CALLER, CALLEE, SignalKind.CANDIDATE, CANDIDATE_SDP, T0 + 2_600),
    ("bye", CALLEE, CALLER, SignalKind.BYE, "", T0 + 95_000),
]


def valid_vectors() -> list[dict[str, Any]]:
    cases = []
    for name, sender, receiver, kind, text, issued in VALID_INPUTS:
        nonce = _hex16(f"nonce of the {name}")
        signal = sign_signal(
            sender, kind=kind, session=SESSION, to=receiver.id, sdp=text,
            nonce=nonce, now_ms=issued, lifetime_ms=LIFETIME,
        )  # fmt: skip
        wire = signal.wire_bytes().decode()
        verify = verify_params(receiver, sender, issued + 1_000)
        accept_at = [issued - MAX_SKEW_MS, issued, issued + LIFETIME - 1]
        refuse_at = {
            str(issued - MAX_SKEW_MS - 1): "NotYetValid",
            str(issued + LIFETIME): "Expired",
        }
        for now in accept_at:
            assert outcome(wire, {**verify, "now_ms": now}) == "ok", (name, now)
        for when, error in refuse_at.items():
            assert outcome(wire, {**verify, "now_ms": int(when)}) == error, (name, when)
        cases.append(
            {
                "name": name,
                "sender": next(k for k, v in NODES.items() if v is sender),
                "input": {
                    "kind": kind.value,
                    "session": SESSION,
                    "to": receiver.id,
                    "sdp": text,
                    "nonce": nonce,
                    "issued_ms": issued,
                    "lifetime_ms": LIFETIME,
                },
                "signing_bytes": signal.signing_bytes().hex(),
                "sig": signal.sig,
                "wire": wire,
                "fingerprint": signal.fingerprint,
                "verify": {"me": receiver.id, "expected_from": sender.id},
                "accept_at": accept_at,
                "refuse_at": refuse_at,
            }
        )
    return cases


# -- invalid ------------------------------------------------------------------------


def _raw(key: SigningKey, fields: dict[str, JSONValue]) -> str:
    """Sign ``fields`` as given, bypassing every check, and encode canonically."""
    sig = key.sign(SIGNAL_DOMAIN + canonical_bytes(fields)).hex()
    return canonical_bytes({**fields, "sig": sig}).decode()


def _offer_fields(**changes: JSONValue) -> dict[str, JSONValue]:
    fields: dict[str, JSONValue] = {
        "v": 1, "kind": "offer", "session": SESSION, "from": CALLER.id, "to": CALLEE.id,
        "sdp": offer_sdp(CALLER_FP), "nonce": _hex16("nonce of a malformed offer"),
        "issued_ms": T0, "expires_ms": T0 + LIFETIME,
    }  # fmt: skip
    fields.update(changes)
    return fields


def _flip_hex(text: str) -> str:
    """Change the last hex digit of ``text``."""
    last = text[-1]
    return text[:-1] + ("0" if last != "0" else "1")


def invalid_vectors() -> list[dict[str, Any]]:
    offer = json.loads(valid_vectors()[0]["wire"])
    at = verify_params(CALLEE, CALLER, T0 + 1_000)
    fp_changed = CALLER_FP[:-1] + ("0" if CALLER_FP[-1] != "0" else "1")

    def tampered(**changes: Any) -> str:
        return canonical_bytes({**offer, **changes}).decode()

    cases: list[tuple[str, str, dict[str, Any], str]] = [
        # Tampered after signing.
        ("fingerprint_one_character", tampered(sdp=offer["sdp"].replace(CALLER_FP, fp_changed)),
         at, "BadSignature"),
        ("fingerprint_swapped", tampered(sdp=offer["sdp"].replace(CALLER_FP, OTHER_FP)),
         at, "BadSignature"),
        ("sdp_body", tampered(sdp=offer["sdp"].replace("a=sendrecv", "a=recvonly")),
         at, "BadSignature"),
        ("to_swapped", tampered(to=OTHER.id), verify_params(OTHER, CALLER, T0 + 1_000),
         "BadSignature"),
        ("from_swapped", tampered(**{"from": OTHER.id}), verify_params(CALLEE, OTHER, T0 + 1_000),
         "BadSignature"),
        ("expiry_extended", tampered(expires_ms=offer["expires_ms"] + 30_000), at,
         "BadSignature"),
        ("issued_moved", tampered(issued_ms=offer["issued_ms"] + 1), at, "BadSignature"),
        ("nonce", tampered(nonce=_flip_hex(offer["nonce"])), at, "BadSignature"),
        ("session", tampered(session=_flip_hex(offer["session"])), at, "BadSignature"),
        ("kind", tampered(kind="answer"), at, "BadSignature"),
        ("sig", tampered(sig=_flip_hex(offer["sig"])), at, "BadSignature"),
        # Genuine, but refused.
        ("expired", canonical_bytes(offer).decode(),
         verify_params(CALLEE, CALLER, offer["expires_ms"]), "Expired"),
        ("issued_in_the_future", canonical_bytes(offer).decode(),
         verify_params(CALLEE, CALLER, offer["issued_ms"] - MAX_SKEW_MS - 1), "NotYetValid"),
        ("not_for_me", canonical_bytes(offer).decode(), verify_params(OTHER, CALLER, T0 + 1_000),
         "NotForMe"),
        ("wrong_sender", canonical_bytes(offer).decode(),
         verify_params(CALLEE, OTHER, T0 + 1_000), "WrongSender"),
        # Validly signed, but breaking a rule.
        ("lifetime_too_long", _raw(CALLER, _offer_fields(expires_ms=T0 + MAX_LIFETIME_MS + 1)),
         at, "Malformed"),
        ("expires_before_issued", _raw(CALLER, _offer_fields(expires_ms=T0)), at, "Malformed"),
        ("no_fingerprint",
         _raw(CALLER, _offer_fields(sdp=offer_sdp(CALLER_FP).replace(
             f"a=fingerprint:sha-256 {CALLER_FP}\r\n", ""))), at, "Malformed"),
        ("conflicting_fingerprints",
         _raw(CALLER, _offer_fields(sdp=offer_sdp(CALLER_FP).replace(
             "a=mid:1\r\na=sctp", f"a=mid:1\r\na=fingerprint:sha-256 {OTHER_FP}\r\na=sctp"))),
         at, "Malformed"),
        ("sha1_fingerprint",
         _raw(CALLER, _offer_fields(sdp=offer_sdp(CALLER_FP).replace(
             "a=setup:actpass\r\na=mid:0",
             "a=fingerprint:sha-1 " + CALLER_FP[:59] + "\r\na=setup:actpass\r\na=mid:0"))),
         at, "Malformed"),
        ("lowercase_fingerprint",
         _raw(CALLER, _offer_fields(sdp=offer_sdp(CALLER_FP.lower()))), at, "Malformed"),
        ("bare_lf_line_endings",
         _raw(CALLER, _offer_fields(sdp=offer_sdp(CALLER_FP).replace("\r\n", "\n"))), at,
         "Malformed"),
        ("non_ascii_sdp",
         _raw(CALLER, _offer_fields(sdp=offer_sdp(CALLER_FP).replace("s=-", "s=♪"))), at,
         "Malformed"),
        ("candidate_with_fingerprint",
         _raw(CALLER, _offer_fields(kind="candidate",
                                    sdp=CANDIDATE_SDP + f"a=fingerprint:sha-256 {CALLER_FP}\r\n")),
         at, "Malformed"),
        ("bye_with_sdp", _raw(CALLER, _offer_fields(kind="bye")), at, "Malformed"),
        ("from_is_to", _raw(CALLER, _offer_fields(to=CALLER.id)),
         verify_params(CALLER, CALLER, T0 + 1_000), "Malformed"),
        ("uppercase_session", _raw(CALLER, _offer_fields(session=SESSION.upper())), at,
         "Malformed"),
        ("short_nonce", _raw(CALLER, _offer_fields(nonce=SESSION[:30])), at, "Malformed"),
        ("version_2", _raw(CALLER, _offer_fields(v=2)), at, "Malformed"),
        ("unknown_kind", _raw(CALLER, _offer_fields(kind="renegotiate")), at, "Malformed"),
        ("unknown_field", _raw(CALLER, _offer_fields(room="lobby")), at, "Malformed"),
        ("fractional_time", _raw(CALLER, _offer_fields(issued_ms=T0 + 0.5)), at, "Malformed"),
        # Not an envelope at all.
        ("missing_sig", canonical_bytes({k: v for k, v in offer.items() if k != "sig"}).decode(),
         at, "Malformed"),
        ("duplicate_key", canonical_bytes(offer).decode()[:-1] + ',"v":1}', at, "Malformed"),
        ("nested", canonical_bytes({**offer, "sdp": [offer["sdp"]]}).decode(), at, "Malformed"),
        ("not_json", "offer " + offer["sdp"], at, "Malformed"),
        ("array", json.dumps([offer]), at, "Malformed"),
    ]  # fmt: skip
    vectors = []
    for name, wire, verify, error in cases:
        assert outcome(wire, verify) == error, (name, outcome(wire, verify), error)
        reason = outcome_reason(wire, verify)
        vectors.append(
            {"name": name, "wire": wire, "verify": verify, "error": error, "reason": reason}
        )
    return vectors


def replay_vector() -> dict[str, Any]:
    answer = valid_vectors()[1]
    verify = {**answer["verify"], "now_ms": answer["accept_at"][1]}
    seen = NonceCache()
    verify_signal(answer["wire"].encode(), seen=seen, **verify)
    try:
        verify_signal(answer["wire"].encode(), seen=seen, **verify)
    except SignallingError as exc:
        assert type(exc).__name__ == "Replayed"
    else:
        raise AssertionError("replay accepted")
    return {"wire": answer["wire"], "verify": verify, "outcomes": ["ok", "Replayed"]}


def with_session_level(fingerprint: str) -> str:
    """The offer of the caller, with ``fingerprint`` at session level as well."""
    line = f"a=fingerprint:sha-256 {fingerprint}\r\n"
    return offer_sdp(CALLER_FP).replace("t=0 0\r\n", "t=0 0\r\n" + line)


def sdp_vectors() -> list[dict[str, Any]]:
    cases: list[tuple[str, SignalKind, str]] = [
        ("offer_media_level", SignalKind.OFFER, offer_sdp(CALLER_FP)),
        ("answer_session_level", SignalKind.ANSWER, answer_sdp(CALLEE_FP)),
        ("session_and_media_level_equal", SignalKind.OFFER, with_session_level(CALLER_FP)),
        ("session_and_media_level_differ", SignalKind.OFFER, with_session_level(OTHER_FP)),
        ("sha512_as_well", SignalKind.OFFER,
         offer_sdp(CALLER_FP).replace("a=setup:actpass\r\na=mid:0",
                                      "a=fingerprint:sha-512 " + ":".join(["AB"] * 64)
                                      + "\r\na=setup:actpass\r\na=mid:0")),
        ("uppercase_algorithm", SignalKind.OFFER,
         offer_sdp(CALLER_FP).replace("sha-256", "SHA-256")),
        ("attribute_name_case", SignalKind.OFFER,
         offer_sdp(CALLER_FP).replace("a=fingerprint:", "a=Fingerprint:", 1)),
        ("short_fingerprint", SignalKind.OFFER, offer_sdp(CALLER_FP[:-3])),
        ("trailing_space", SignalKind.OFFER,
         offer_sdp(CALLER_FP).replace(CALLER_FP, CALLER_FP + " ")),
        ("no_final_crlf", SignalKind.OFFER, offer_sdp(CALLER_FP)[:-2]),
        ("empty_line", SignalKind.OFFER, offer_sdp(CALLER_FP).replace("s=-\r\n", "s=-\r\n\r\n")),
        ("not_v0", SignalKind.ANSWER, answer_sdp(CALLEE_FP).replace("v=0", "v=1")),
        ("candidate", SignalKind.CANDIDATE, CANDIDATE_SDP),
        ("end_of_candidates", SignalKind.CANDIDATE, sdp("a=mid:0", "a=end-of-candidates")),
        ("candidate_session_line", SignalKind.CANDIDATE, "v=0\r\n" + CANDIDATE_SDP),
        ("candidate_empty", SignalKind.CANDIDATE, ""),
        ("bye", SignalKind.BYE, ""),
        ("bye_with_text", SignalKind.BYE, "\r\n"),
    ]  # fmt: skip
    vectors = []
    for name, kind, text in cases:
        entry: dict[str, Any] = {"name": name, "kind": kind.value, "sdp": text}
        try:
            entry["fingerprint"] = check_sdp(kind, text)
        except Malformed as exc:
            entry["error"] = str(exc)
        vectors.append(entry)
    return vectors


def transition_vectors() -> list[dict[str, Any]]:
    vectors = []
    for state in CallState:
        for origin in Origin:
            for kind in SignalKind:
                entry: dict[str, Any] = {
                    "state": state.value,
                    "origin": origin.value,
                    "kind": kind.value,
                }
                step = TRANSITIONS.get((state, origin, kind))
                if step is None:
                    entry["refused"] = refusal_reason(state, origin, kind)
                else:
                    entry["next"] = step[0].value
                    entry["actions"] = [do.value for do in step[1]]
                vectors.append(entry)
    return vectors


def build() -> dict[str, Any]:
    return {
        "description": DESCRIPTION,
        "domain": SIGNAL_DOMAIN.hex(),
        "limits": {
            "max_sdp_bytes": MAX_SDP_BYTES,
            "max_signal_bytes": MAX_SIGNAL_BYTES,
            "max_lifetime_ms": MAX_LIFETIME_MS,
            "max_skew_ms": MAX_SKEW_MS,
        },
        "nodes": {name: {"seed": key.seed.hex(), "id": key.id} for name, key in NODES.items()},
        "certificates": {
            name: {"der": der.hex(), "fingerprint": certificate_fingerprint(der)}
            for name, der in (
                ("caller", CALLER_CERT),
                ("callee", CALLEE_CERT),
                ("other", OTHER_CERT),
            )
        },
        "session": SESSION,
        "valid": valid_vectors(),
        "invalid": invalid_vectors(),
        "replay": replay_vector(),
        "sdp": sdp_vectors(),
        "transitions": transition_vectors(),
    }


def render() -> str:
    """signalling.json exactly as committed: indented, UTF-8, one final newline."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.buffer.write(render().encode())


if __name__ == "__main__":
    main()
