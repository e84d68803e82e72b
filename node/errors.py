"""Exceptions raised by the node, split by who is at fault.

:class:`TalasError` is the single base.  :class:`LocalError` covers problems on
this machine the operator must fix (permissions, a corrupted key file, a data
directory in use); :class:`RemoteError` covers misbehaviour by something
outside (a peer, an imported file).  Foreign exceptions (sqlite3, OSError,
nacl) are translated at the module boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class TalasError(Exception):
    """Base for every error the node raises on purpose."""


class LocalError(TalasError):
    """Something on this machine is wrong and the operator must act."""


class KeyFileError(LocalError):
    """A key file is missing, unreadable, insecure or corrupted."""


class InsecureKeyFile(KeyFileError):
    """A key file (or its directory) is accessible to group or others."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not open this key file (or the file was altered)."""


class StoreError(LocalError):
    """The database or blob store is unusable."""


class CliError(TalasError):
    """A command-line problem with a message for the user (bad usage: exit 2)."""


class NodeExists(LocalError):
    """``init`` was asked to create a node where one already exists."""


class BlobError(TalasError):
    """Base for blob store failures."""


class BlobNotFound(BlobError):
    """No blob with that hash is stored."""


class BlobCorrupted(BlobError, LocalError):
    """A stored blob no longer matches its hash."""


class BlobTooLarge(BlobError):
    """A blob exceeded the configured size cap while being written."""


class RemoteError(TalasError):
    """Something outside this node sent input we refuse."""


class LinkError(TalasError):
    """Base for peer-link failures."""


class LinkClosed(LinkError):
    """The peer closed the link in an orderly way (or we did)."""


class LinkBroken(LinkError):
    """The transport failed underneath the link (reset, timeout, refused)."""


class PeerMisbehaved(LinkError, RemoteError):
    """The peer broke the protocol: bad handshake, bad framing, abuse."""
