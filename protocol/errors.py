"""Exceptions raised by the sans-IO protocol layer.

One base, :class:`ProtocolError`, split by what was wrong: the bytes were not
acceptable JSON (:class:`InvalidJSON`), or they were JSON but not an
acceptable event (:class:`InvalidEvent`, with :class:`BadSignature` for the
cryptographic failure).  Everything here is the *remote* party's fault: the
protocol layer never performs I/O, so it has no local failures of its own.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base for every error the protocol layer raises about its input."""


class InvalidJSON(ProtocolError):
    """Bytes that are not strict I-JSON (RFC 7493) within our bounds."""


class InvalidEvent(ProtocolError):
    """Well-formed JSON that is not a valid Talas event."""


class BadSignature(InvalidEvent):
    """The signature does not verify against the author key."""
