"""HMAC-signed, expiring URLs, so an ``<audio>`` element can fetch media without a session.

A signed URL is ``<path>?exp=<unix seconds>&u=<user>&sig=<hex>`` where ``sig``
is HMAC-SHA256 under a key used for nothing else, over
``METHOD \\n path \\n exp \\n user``.  No field can contain a newline, so the
message is unambiguous.  Everything is a pure function of its arguments: the
caller passes the current time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

MAX_LIFETIME_S = 24 * 3600
"""A URL valid for longer than this was not made by us (or our clock was wrong): refused."""

_USER_RE = re.compile(r"[a-z0-9_-]{1,32}")
_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_PATH_RE = re.compile(r"/[\x21-\x7e]*")  # visible ASCII; '?' and '#' are refused separately
_EXP_RE = re.compile(r"0|[1-9][0-9]{0,11}")
_SIG_RE = re.compile(r"[0-9a-f]{64}")
_MIN_KEY_BYTES = 16


class SignedURLError(ValueError):
    """A signed URL was refused; the message says why, for logs and the 403 body."""


class BadSignature(SignedURLError):
    """The URL was not signed by us for this method, path and user, or is malformed."""


class Expired(SignedURLError):
    """The signature is genuine but the URL's lifetime has passed."""


def sign_url(key: bytes, method: str, path: str, user: str, expires: int) -> str:
    """Return ``path`` with the query that lets ``user`` use it with ``method`` until ``expires``.

    Raises ValueError for arguments that :func:`verify_url` could never accept,
    so a bad URL fails where it is made, not where it is used.
    """
    _check_key(key)
    if _METHOD_RE.fullmatch(method) is None:
        raise ValueError(f"method must be an upper-case HTTP method, got {method!r}")
    if _PATH_RE.fullmatch(path) is None or "?" in path or "#" in path:
        raise ValueError(f"path must be a plain absolute path without query, got {path!r}")
    if _USER_RE.fullmatch(user) is None:
        raise ValueError(f"user must match [a-z0-9_-]{{1,32}}, got {user!r}")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise ValueError("expires must be an int (unix seconds)")
    if _EXP_RE.fullmatch(str(expires)) is None:
        raise ValueError(f"expires out of range: {expires}")
    sig = _mac(key, method, path, str(expires), user)
    return f"{path}?exp={expires}&u={user}&sig={sig}"


def verify_url(
    key: bytes,
    method: str,
    path: str,
    query: Mapping[str, str] | Mapping[str, Sequence[str]],
    now: int,
) -> str:
    """Return the user a request's URL was signed for, or raise a :class:`SignedURLError`.

    ``query`` is the parsed query string.  Pass a mapping to lists (e.g.
    ``request.args.to_dict(flat=False)``) so that a repeated parameter is
    seen and refused; a flat dict cannot show repeats.  Other parameters are
    ignored: they are not signed and so cannot change what is served.
    """
    _check_key(key)
    exp = _single(query, "exp")
    user = _single(query, "u")
    sig = _single(query, "sig")
    if _EXP_RE.fullmatch(exp) is None:
        raise BadSignature("malformed expiry")
    if _USER_RE.fullmatch(user) is None:
        raise BadSignature("malformed user")
    if _SIG_RE.fullmatch(sig) is None:
        raise BadSignature("malformed signature")
    if _METHOD_RE.fullmatch(method) is None or _PATH_RE.fullmatch(path) is None:
        raise BadSignature("this URL cannot be signed")
    expected = _mac(key, method, path, exp, user)
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii")):
        raise BadSignature("bad signature")
    expires = int(exp)
    if now >= expires:
        raise Expired("this link has expired")
    if expires - now > MAX_LIFETIME_S:
        raise BadSignature("this link's expiry is too far in the future")
    return user


def _single(query: Mapping[str, str] | Mapping[str, Sequence[str]], name: str) -> str:
    """The one value of ``name``; missing, repeated or non-string values are refused."""
    value = query.get(name)
    if isinstance(value, str):
        return value
    if value is None:
        raise BadSignature(f"missing {name!r} parameter")
    values = list(value)
    if len(values) != 1:
        raise BadSignature(f"the {name!r} parameter must appear exactly once")
    return values[0]


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"the signing key must be at least {_MIN_KEY_BYTES} bytes")


def _mac(key: bytes, method: str, path: str, exp: str, user: str) -> str:
    message = f"{method}\n{path}\n{exp}\n{user}".encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()
