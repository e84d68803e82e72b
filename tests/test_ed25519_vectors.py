"""External Ed25519 vectors through Talas's own verification path (protocol.keys).

The vectors live outside the repository (see /work/shared/vectors/README.md).
They are required: a missing or truncated file fails the suite, it never skips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import BadSignature, InvalidEvent
from protocol.keys import SigningKey, is_valid_signature, verify

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
WYCHEPROOF = VECTORS / "wycheproof" / "ed25519_test.json"
SPECCHECK = VECTORS / "ed25519-speccheck" / "cases.json"

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_TEST1_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_TEST1_PK = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
RFC8032_TEST1_SIG = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


@dataclass(frozen=True)
class WycheproofCase:
    tc_id: int
    public_key: bytes
    msg: bytes
    sig: bytes
    valid: bool
    comment: str
    flags: tuple[str, ...]


def _load_json(path: Path) -> Any:
    # Raising here makes collection fail (an error, not a skip) when a vector is missing.
    if not path.is_file():
        raise FileNotFoundError(f"required test vector file missing: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def _wycheproof_cases() -> list[WycheproofCase]:
    data = _load_json(WYCHEPROOF)
    cases: list[WycheproofCase] = []
    for group in data["testGroups"]:
        public_key = bytes.fromhex(group["publicKey"]["pk"])
        for test in group["tests"]:
            if test["result"] not in ("valid", "invalid"):
                raise ValueError(f"tcId {test['tcId']}: unexpected result {test['result']!r}")
            cases.append(
                WycheproofCase(
                    tc_id=test["tcId"],
                    public_key=public_key,
                    msg=bytes.fromhex(test["msg"]),
                    sig=bytes.fromhex(test["sig"]),
                    valid=test["result"] == "valid",
                    comment=test["comment"],
                    flags=tuple(test["flags"]),
                )
            )
    return cases


WYCHEPROOF_CASES = _wycheproof_cases()
SPECCHECK_CASES: list[dict[str, str]] = _load_json(SPECCHECK)


def test_vector_files_are_complete() -> None:
    data = _load_json(WYCHEPROOF)
    assert data["algorithm"] == "EDDSA"
    assert len(WYCHEPROOF_CASES) == 150 == data["numberOfTests"]
    assert sum(not case.valid for case in WYCHEPROOF_CASES) == 62
    assert sum("SignatureMalleability" in case.flags for case in WYCHEPROOF_CASES) == 8
    assert len({case.tc_id for case in WYCHEPROOF_CASES}) == 150
    assert len(SPECCHECK_CASES) == 12


@pytest.mark.parametrize("case", WYCHEPROOF_CASES, ids=lambda case: f"tcId{case.tc_id}")
def test_wycheproof_ed25519(case: WycheproofCase) -> None:
    if case.valid:
        verify(case.public_key, case.msg, case.sig)  # must not raise
        assert is_valid_signature(case.public_key, case.msg, case.sig)
    else:
        # BadSignature is an InvalidEvent; a malformed key length is a plain InvalidEvent.
        with pytest.raises(InvalidEvent) as info:
            verify(case.public_key, case.msg, case.sig)
        assert info.type in (BadSignature, InvalidEvent)
        assert not is_valid_signature(case.public_key, case.msg, case.sig)


def test_wycheproof_includes_rfc8032_test1_and_it_verifies() -> None:
    matches = [
        case
        for case in WYCHEPROOF_CASES
        if case.public_key.hex() == RFC8032_TEST1_PK
        and case.msg == b""
        and case.sig.hex() == RFC8032_TEST1_SIG
    ]
    assert len(matches) == 1
    assert matches[0].valid
    verify(bytes.fromhex(RFC8032_TEST1_PK), b"", bytes.fromhex(RFC8032_TEST1_SIG))
    # Talas's signing side reproduces the RFC too (Ed25519 is deterministic).
    key = SigningKey(bytes.fromhex(RFC8032_TEST1_SEED))
    assert key.id == RFC8032_TEST1_PK
    assert key.sign(b"").hex() == RFC8032_TEST1_SIG


def test_wycheproof_malleable_signatures_rejected() -> None:
    # S + L (same point equation, non-canonical S) must never verify, or one
    # event could have several ids.
    malleable = [case for case in WYCHEPROOF_CASES if "SignatureMalleability" in case.flags]
    assert malleable
    assert not any(is_valid_signature(c.public_key, c.msg, c.sig) for c in malleable)


def _speccheck_accepts(case: dict[str, str]) -> bool:
    return is_valid_signature(
        bytes.fromhex(case["pub_key"]),
        bytes.fromhex(case["message"]),
        bytes.fromhex(case["signature"]),
    )


def test_speccheck_accepts_exactly_case_3() -> None:
    # ed25519-speccheck's 12 cases probe where Ed25519 verifiers disagree:
    #   0-2   a small-order point (c7176a...) as A and/or R,
    #   3-5   mixed-order A and R: in 3 both the cofactored and the cofactorless
    #         equation hold, in 4-5 only the cofactored one,
    #   6-7   S >= L, a non-reduced scalar (the malleability case),
    #   8-11  a non-canonical encoding (ecff...ff, sign bit set on x = 0) of the
    #         small-order point (0, -1) as R (8-9) or as A (10-11).
    # libsodium's strict rule rejects small-order and non-canonical points and
    # S >= L, and checks the cofactorless equation, so of these it accepts
    # exactly case 3 (as the vectors' README states).  Talas must accept exactly
    # that set: accepting more would let nodes disagree on which events are
    # valid (and allow several ids for one signed envelope); fewer would refuse
    # honest signatures.
    accepted = {index for index, case in enumerate(SPECCHECK_CASES) if _speccheck_accepts(case)}
    assert accepted == {3}


@pytest.mark.parametrize("index", [i for i in range(12) if i != 3])
def test_speccheck_rejected_cases_raise_bad_signature(index: int) -> None:
    case = SPECCHECK_CASES[index]
    with pytest.raises(BadSignature):
        verify(
            bytes.fromhex(case["pub_key"]),
            bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]),
        )


def test_verify_rejects_wrong_lengths() -> None:
    case = next(c for c in WYCHEPROOF_CASES if c.valid and c.msg)
    with pytest.raises(InvalidEvent):
        verify(case.public_key[:31], case.msg, case.sig)
    with pytest.raises(BadSignature):
        verify(case.public_key, case.msg, case.sig[:63])
    with pytest.raises(BadSignature):
        verify(case.public_key, case.msg, case.sig + b"\x00")
    with pytest.raises(BadSignature):
        verify(case.public_key, case.msg + b"\x00", case.sig)
