"""The access log: one structured line (event `access`) per caller request, when it ends.

Who (the caller's identity), what (the verb, resource, subresource, namespace and name, read
from the request as the API server reads it: `gateway.request_info`), where (the plane, this
replica, and the peer it was forwarded to or by), the outcome (status, body bytes in and out,
duration) and the request id that the caller got in `Planelink-Request-Id` and the agent logged
with the stream. A watch or another long stream is logged when it ends, with its duration.

The request id is made here, by the gateway, never taken from a caller (a caller's
`Planelink-*` field is refused); a peer replica adopts the forwarding replica's id, which it
can trust (`adopted_request_id`).

Never raises, never blocks: a line is formatted and handed to structlog, nothing more.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import structlog

from gateway.request_info import request_info

__all__ = ["AccessRecord", "adopted_request_id", "log_access", "new_request_id"]

log = structlog.get_logger("gateway.access")

_REQUEST_ID = re.compile(rb"[0-9A-Za-z._-]{1,64}")


def new_request_id() -> str:
    """A fresh id for a caller's request: a random (version 4) UUID, in its usual spelling."""
    # `str(uuid.uuid4())` does the same through a UUID object and an int: 3x the time, on
    # every request.
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def adopted_request_id(value: bytes | None) -> str | None:
    """A forwarding replica's id for the request, if it is a plausible one (else the peer
    makes its own)."""
    if value is None or _REQUEST_ID.fullmatch(value) is None:
        return None
    return value.decode("ascii")


@dataclass(slots=True)
class AccessRecord:
    """What the access line says of one request, filled in as the request goes."""

    request_id: str
    replica: str
    method: str
    target: str
    """The caller's request target (path and query), as it asked for it."""
    caller: str = ""
    auth: str = ""
    """How the caller proved who it is: certificate, token, peer (vouched for)."""
    plane: str = ""
    path: str = ""
    """The target on the plane's API server, once routed."""
    status: int = 0
    """0: no answer was written (the caller or the connection went away first)."""
    bytes_in: int = 0
    bytes_out: int = 0
    forwarded_to: str = ""
    forwarded_by: str = ""
    protocol: str = "http1"
    """The HTTP version the caller spoke: http1, http2."""


def log_access(record: AccessRecord, *, seconds: float) -> None:
    """Write the access line of `record`, which took `seconds`."""
    if not log.is_enabled_for(logging.INFO):
        return  # the line would be dropped: not worth building (it parses the path)
    info = request_info(record.method, record.path) if record.path else None
    fields: dict[str, object] = {
        "request_id": record.request_id,
        "replica": record.replica,
        "caller": record.caller,
        "auth": record.auth,
        "plane": record.plane,
        "verb": info.verb if info is not None else record.method.lower(),
        "api_group": info.api_group if info is not None else "",
        "resource": info.resource if info is not None else "",
        "subresource": info.subresource if info is not None else "",
        "namespace": info.namespace if info is not None else "",
        "name": info.name if info is not None else "",
        "method": record.method,
        "protocol": record.protocol,
        "path": (record.path or record.target)[:512],
        "status": record.status,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "duration": round(seconds, 6),
    }
    if record.forwarded_to:
        fields["forwarded_to"] = record.forwarded_to
    if record.forwarded_by:
        fields["forwarded_by"] = record.forwarded_by
    log.info("access", **fields)
