"""Signed media URLs (webui.signed_urls): round trips, tampering, expiry, malformed queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webui.signed_urls import (
    MAX_LIFETIME_S,
    BadSignature,
    Expired,
    SignedURLError,
    sign_url,
    verify_url,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_700_000_000
PATH = "/media/tracks/" + "ab" * 32
EXP = NOW + 6 * 3600


def split(url: str) -> tuple[str, dict[str, list[str]]]:
    """Path and parsed query of a signed URL, as a server would see them."""
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)


def signed(user: str = "alice", exp: int = EXP, path: str = PATH) -> dict[str, list[str]]:
    _, query = split(sign_url(KEY, "GET", path, user, exp))
    return query


def test_round_trip() -> None:
    url = sign_url(KEY, "GET", PATH, "alice", EXP)
    path, query = split(url)
    assert path == PATH
    assert set(query) == {"exp", "u", "sig"}
    assert verify_url(KEY, "GET", path, query, NOW) == "alice"


def test_flat_query_dicts_are_accepted() -> None:
    flat = {name: values[0] for name, values in signed().items()}
    assert verify_url(KEY, "GET", PATH, flat, NOW) == "alice"


def test_url_shape() -> None:
    url = sign_url(KEY, "GET", PATH, "_node", EXP)
    assert url.startswith(f"{PATH}?exp={EXP}&u=_node&sig=")
    assert len(url.rsplit("sig=", 1)[1]) == 64


def test_unsigned_extra_parameters_are_ignored() -> None:
    query = signed() | {"cachebust": ["1"]}
    assert verify_url(KEY, "GET", PATH, query, NOW) == "alice"


@pytest.mark.parametrize(
    ("method", "path", "change"),
    [
        ("POST", PATH, {}),
        ("GET", PATH + "0", {}),
        ("GET", "/media/tracks/" + "cd" * 32, {}),
        ("GET", PATH, {"u": ["bob"]}),
        ("GET", PATH, {"exp": [str(EXP + 1)]}),
        ("GET", PATH, {"exp": [str(EXP - 1)]}),
    ],
)
def test_tampering_is_refused(method: str, path: str, change: dict[str, list[str]]) -> None:
    with pytest.raises(BadSignature):
        verify_url(KEY, method, path, signed() | change, NOW)


@pytest.mark.parametrize("position", [0, 31, 63])
def test_tampered_signature_is_refused(position: int) -> None:
    query = signed()
    sig = query["sig"][0]
    flipped = sig[:position] + ("0" if sig[position] != "0" else "1") + sig[position + 1 :]
    with pytest.raises(BadSignature):
        verify_url(KEY, "GET", PATH, query | {"sig": [flipped]}, NOW)


def test_other_key_is_refused() -> None:
    with pytest.raises(BadSignature):
        verify_url(OTHER_KEY, "GET", PATH, signed(), NOW)


def test_expiry() -> None:
    query = signed(exp=NOW + 10)
    assert verify_url(KEY, "GET", PATH, query, NOW + 9) == "alice"
    for now in (NOW + 10, NOW + 11, NOW + 10**6):
        with pytest.raises(Expired):
            verify_url(KEY, "GET", PATH, query, now)


def test_expiry_too_far_in_the_future_is_refused() -> None:
    assert verify_url(KEY, "GET", PATH, signed(exp=NOW + MAX_LIFETIME_S), NOW) == "alice"
    with pytest.raises(BadSignature, match="future"):
        verify_url(KEY, "GET", PATH, signed(exp=NOW + MAX_LIFETIME_S + 1), NOW)


def test_exceptions_share_a_value_error_base() -> None:
    assert issubclass(BadSignature, SignedURLError)
    assert issubclass(Expired, SignedURLError)
    assert issubclass(SignedURLError, ValueError)


def _without(name: str) -> dict[str, list[str]]:
    query = signed()
    del query[name]
    return query


MALFORMED: list[Mapping[str, str] | Mapping[str, Sequence[str]]] = [
    {},
    _without("exp"),
    _without("u"),
    _without("sig"),
    signed() | {"exp": [str(EXP), str(EXP)]},
    signed() | {"u": ["alice", "bob"]},
    signed() | {"sig": [signed()["sig"][0]] * 2},
    signed() | {"sig": []},
    *(
        signed() | {"exp": [bad]}
        for bad in ["", "+1", "-1", " 1", "1 ", "0x10", "1e9", "01", "١٢٣", "9" * 40]
    ),
    *(
        signed() | {"u": [bad]}
        for bad in ["", "Alice", "a" * 33, "a b", "ä", "a/b", "a\nb", "alice\x00"]
    ),
    *(
        signed() | {"sig": [bad]}
        for bad in ["", "00", signed()["sig"][0].upper(), "g" * 64, "é" * 64, "0" * 65]
    ),
]


@pytest.mark.parametrize("query", MALFORMED)
def test_malformed_queries_are_refused(
    query: Mapping[str, str] | Mapping[str, Sequence[str]],
) -> None:
    with pytest.raises(BadSignature):
        verify_url(KEY, "GET", PATH, query, NOW)


@pytest.mark.parametrize(
    ("method", "path", "user", "expires"),
    [
        ("get", PATH, "alice", EXP),
        ("GET", "media/no-slash", "alice", EXP),
        ("GET", PATH + "?x=1", "alice", EXP),
        ("GET", PATH + "#frag", "alice", EXP),
        ("GET", "/with space", "alice", EXP),
        ("GET", "/line\nbreak", "alice", EXP),
        ("GET", PATH, "Alice", EXP),
        ("GET", PATH, "", EXP),
        ("GET", PATH, "a" * 33, EXP),
        ("GET", PATH, "alice", -1),
        ("GET", PATH, "alice", 10**13),
    ],
)
def test_sign_url_refuses_what_could_never_verify(
    method: str, path: str, user: str, expires: int
) -> None:
    with pytest.raises(ValueError):
        sign_url(KEY, method, path, user, expires)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        sign_url(b"short", "GET", PATH, "alice", EXP)
    with pytest.raises(ValueError):
        verify_url(b"", "GET", PATH, signed(), NOW)


USERS = st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True)
PATHS = st.from_regex(r"/[A-Za-z0-9._~/-]{0,80}", fullmatch=True)


@settings(max_examples=200, deadline=None, database=None)
@given(user=USERS, path=PATHS, lifetime=st.integers(1, MAX_LIFETIME_S))
def test_round_trip_property(user: str, path: str, lifetime: int) -> None:
    url = sign_url(KEY, "GET", path, user, NOW + lifetime)
    _, query = split(url)
    assert verify_url(KEY, "GET", path, query, NOW) == user
    assert verify_url(KEY, "GET", path, query, NOW + lifetime - 1) == user


QUERY_VALUES = st.lists(st.text(max_size=70), max_size=3)


@settings(max_examples=300, deadline=None, database=None)
@given(
    query=st.dictionaries(st.sampled_from(["exp", "u", "sig", "x"]), QUERY_VALUES),
    now=st.integers(0, 2**40),
)
def test_garbage_only_ever_raises_signed_url_errors(query: dict[str, list[str]], now: int) -> None:
    with pytest.raises(SignedURLError):
        verify_url(KEY, "GET", PATH, query, now)
