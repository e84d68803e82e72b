"""Exceptions raised by the microphone driver, split by who is at fault.

:class:`MicError` is the single base.  :class:`MicLocalError` is the caller's
fault (an out-of-range setting, a module used after it was closed, misuse of
the sans-IO connections); :class:`MicRemoteError` is the module's or the
link's (unplugged, silent, speaking the protocol wrongly, refusing a command).
Transport failures are split like httpx's: :class:`MicClosed` when *we* closed
the module, :class:`MicDisconnected` when the link broke underneath us.
Foreign exceptions (OSError, serial, trio) are translated in
:mod:`hardware.driver` with ``raise ... from exc``.

Malformed *input* never raises: the sans-IO layer skips, counts or reports it
as an event, so a noisy serial line cannot crash the reader.
"""

from __future__ import annotations


class MicError(Exception):
    """Base for every error the microphone driver raises on purpose."""


class MicLocalError(MicError):
    """The caller did something wrong; the module is not at fault."""


class InvalidSetting(MicLocalError, ValueError):
    """A requested value is outside what the protocol can express (gain, interval...)."""


class LocalProtocolError(MicLocalError):
    """The sans-IO connection was asked to send something the protocol forbids."""


class MicClosed(MicLocalError):
    """The module was closed by this side (its context manager exited)."""


class MicRemoteError(MicError):
    """The module or the link to it misbehaved."""


class MicTransportError(MicRemoteError):
    """The link to the module failed: a reason to mark it offline, never to crash."""


class MicConnectError(MicTransportError):
    """The serial port or TCP address could not be opened."""


class MicDisconnected(MicTransportError):
    """The link broke: end of file, unplugged device, reset connection."""


class MicTimeout(MicTransportError):
    """The module did not answer a request in time."""


class MicProtocolError(MicRemoteError):
    """The module answered with a frame we cannot accept for that request."""


class MicRejected(MicRemoteError):
    """The module answered a request with an ERROR frame (``code`` from the spec)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"module refused the command: error 0x{code:02x} {message}".rstrip())
        self.code = code
        self.message = message
