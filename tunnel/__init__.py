"""The tunnel's asyncio layer, shared by gateway and agent.

`TunnelSession` drives a sans-I/O `protocol.Connection` over a `MessageChannel` (a WebSocket in
production); `TunnelStream` is one exchange in it. Streams carry heads and bytes, never HTTP/1.1
(the proxies at each end read and write that with `http1`). Depends on `protocol`; never on
`http1`, `gateway` or `agent`.

The names below are loaded on first use (PEP 562): `planelink --help` imports `tunnel.tls` for
one number and must not pay for websockets and structlog that the sessions need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
_SUBMODULES = ("tunnel.channel", "tunnel.session", "tunnel.stream")


def __getattr__(name: str) -> object:
    if name in __all__:
        for home in _SUBMODULES:
            module = importlib.import_module(home)
            if hasattr(module, name):
                value: object = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module 'tunnel' has no attribute {name!r}")
