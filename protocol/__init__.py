"""planelink tunnel wire protocol: a sans-I/O core (no sockets, no asyncio, no clocks).

The wire format is specified in ``protocol/SPEC.md``. The I/O layers (``gateway/``,
``agent/``) move WebSocket binary messages between a socket and a :class:`Connection`::

    conn = Connection(Role.GATEWAY)
    conn.receive_data(message)          # one received binary message
    conn.events_received()              # -> list[Event]
    conn.data_to_send(max_bytes=None)   # -> list[bytes], one binary message each
"""

from protocol.connection import Connection, ConnectionState
from protocol.errors import (
    ConnectionProtocolError,
    ErrorCode,
    HeadTooLarge,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    StreamClosedError,
    StreamProtocolError,
)
from protocol.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    PingAcknowledged,
    ReplicasReceived,
    RequestReceived,
    ResponseReceived,
    SendCapacityAvailable,
    StreamEnded,
    StreamReset,
)
from protocol.frames import FrameType, Role
from protocol.headers import Header, Headers
from protocol.hello import (
    CAPABILITY_REPLICAS,
    SUPPORTED_VERSIONS,
    PeerInfo,
)
from protocol.registry import RESET_MEMORY
from protocol.settings import FloodLimits, SendLimits, SettingId, Settings

__all__ = [
    "CAPABILITY_REPLICAS",
    "RESET_MEMORY",
    "SUPPORTED_VERSIONS",
    "Connection",
    "ConnectionProtocolError",
    "ConnectionState",
    "ConnectionTerminated",
    "DataReceived",
    "ErrorCode",
    "Event",
    "FloodLimits",
    "FrameType",
    "GoAwayReceived",
    "HeadTooLarge",
    "Header",
    "Headers",
    "HelloReceived",
    "LocalProtocolError",
    "PeerInfo",
    "PingAcknowledged",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplicasReceived",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "SendCapacityAvailable",
    "SendLimits",
    "SettingId",
    "Settings",
    "StreamClosedError",
    "StreamEnded",
    "StreamProtocolError",
    "StreamReset",
]
