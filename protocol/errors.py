"""Error codes carried on the wire and the exceptions of the protocol core.

Two families, never mixed:

* :class:`RemoteProtocolError` describes something the *peer* did wrong. The
  :class:`~protocol.connection.Connection` never lets one escape to its caller: a
  :class:`StreamProtocolError` resets one stream (RESET frame + ``StreamReset`` event), a
  :class:`ConnectionProtocolError` closes the connection (GOAWAY frame + ``ConnectionTerminated``
  event). The exception objects exist so the decoder and the state machine can say *what*
  was wrong in one place; the connection catches them at its boundary.
* :class:`LocalProtocolError` is raised to the caller when the local application misuses
  the API (sends on a closed stream, queues a head that is too large, ...). It is a bug in
  the caller, not in the peer, and nothing is sent to the peer because of it.
"""

from __future__ import annotations

import enum

__all__ = [
    "ConnectionProtocolError",
    "ErrorCode",
    "HeadTooLarge",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "StreamClosedError",
    "StreamProtocolError",
]


class ErrorCode(enum.IntEnum):
    """Error codes carried by RESET and GOAWAY frames (u32 on the wire).

    A receiver treats a code it does not know as ``INTERNAL_ERROR``.
    """

    NO_ERROR = 0x0
    """Graceful: GOAWAY for a drain, RESET when a stream is no longer needed."""
    PROTOCOL_ERROR = 0x1
    """Generic violation of the protocol (illegal state transition, bad field value)."""
    INTERNAL_ERROR = 0x2
    """The sender hit a bug or an unexpected local failure."""
    FLOW_CONTROL_ERROR = 0x3
    """The peer sent more DATA than granted, or a window grew past 2**31 - 1."""
    STREAM_CLOSED = 0x4
    """A frame arrived on a stream that is closed for that direction."""
    FRAME_SIZE_ERROR = 0x5
    """A frame or message is larger than allowed, truncated, or has a wrong fixed size."""
    REFUSED_STREAM = 0x6
    """The stream was not processed at all (concurrency limit, GOAWAY); safe to retry."""
    CANCEL = 0x7
    """The stream is no longer wanted (caller went away)."""
    HEADER_ERROR = 0x8
    """A request or response head is malformed or larger than MAX_HEADER_BLOCK_SIZE."""
    VERSION_MISMATCH = 0x9
    """No common protocol version, or a frame carries a version other than the negotiated one."""
    SETTINGS_ERROR = 0xA
    """A HELLO carries an invalid, duplicate or out-of-range setting."""
    CONNECT_ERROR = 0xB
    """The responder could not reach the target (e.g. the agent cannot reach its API server)."""
    UNKNOWN_FRAME_TYPE = 0xC
    """A frame type this version does not define."""
    CONNECTION_LOST = 0xD
    """Never sent: reported locally for streams alive when the transport went away."""
    ENHANCE_YOUR_CALM = 0xE
    """The peer caused more work than a FloodLimits bound allows (a flood of frames without
    data, of streams reset at once, or of answers it does not read)."""

    @classmethod
    def from_wire(cls, value: int) -> ErrorCode:
        """Map a received code to a member; unknown codes become ``INTERNAL_ERROR``."""
        try:
            return cls(value)
        except ValueError:
            return cls.INTERNAL_ERROR


class ProtocolError(Exception):
    """Base class of every error of the protocol core; carries a wire ``code`` and a message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol. Reported as events, never raised to the caller."""


class ConnectionProtocolError(RemoteProtocolError):
    """A violation that makes the whole connection unusable: GOAWAY, then terminate."""


class StreamProtocolError(RemoteProtocolError):
    """A violation confined to one stream: RESET that stream, the others continue."""

    def __init__(self, stream_id: int, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.stream_id = stream_id


class LocalProtocolError(ProtocolError):
    """The local application called the API in a way the protocol forbids.

    ``code`` says which wire error the call would have caused had it been sent.
    """


class StreamClosedError(LocalProtocolError):
    """The application used a stream that is closed (or was never opened) for sending."""

    def __init__(self, stream_id: int, message: str) -> None:
        super().__init__(ErrorCode.STREAM_CLOSED, message)
        self.stream_id = stream_id


class HeadTooLarge(LocalProtocolError):
    """A head to send is larger than the peer's ``MAX_HEADER_BLOCK_SIZE`` (``HEADER_ERROR``):
    the request is too large for the tunnel, not malformed, which an HTTP proxy answers 431."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            ErrorCode.HEADER_ERROR,
            f"head of {size} bytes exceeds the peer's MAX_HEADER_BLOCK_SIZE {limit}",
        )
        self.size = size
        self.limit = limit
