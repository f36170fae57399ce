"""The tunnel's asyncio layer, shared by gateway and agent.

`TunnelSession` drives a sans-I/O `protocol.Connection` over a `MessageChannel` (a WebSocket in
production); `TunnelStream` is one exchange in it. Streams carry heads and bytes, never HTTP/1.1
(the proxies at each end read and write that with `http1`). Depends on `protocol`; never on
`http1`, `gateway` or `agent`.
"""

from tunnel.channel import ChannelClosed, MessageChannel, WebSocketChannel, memory_channel_pair
from tunnel.session import (
    Heartbeat,
    ReplicasHandler,
    RequestHandler,
    SessionClosed,
    TunnelSession,
)
from tunnel.stream import StreamResetError, TunnelStream

__all__ = [
    "ChannelClosed",
    "Heartbeat",
    "MessageChannel",
    "ReplicasHandler",
    "RequestHandler",
    "SessionClosed",
    "StreamResetError",
    "TunnelSession",
    "TunnelStream",
    "WebSocketChannel",
    "memory_channel_pair",
]
