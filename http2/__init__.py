"""HTTP/2 for the callers' hop, as a pure protocol layer (sans-I/O) over python-hyper's h2.

`http2.server.ServerConnection` is fed bytes and hands back planelink's own events and the bytes
to write; h2's types and exceptions never leave this package. No asyncio, sockets or TLS here
(an import contract says so): an adapter in `gateway/` moves bytes between a TLS stream and it.
"""
