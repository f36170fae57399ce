"""HTTP/1.1 for the proxies at each end of the tunnel: the gateway facing callers, the agent
(`kubeproxy`) facing its API server.

`parser` parses messages from bytes (llhttp through httptools), `reader` feeds it from an
asyncio stream, `writer` builds heads and chunk framing, `forwarding` declares which header
fields each hop passes on, `framing` frames a relayed response for a client that must not be
fooled, and `status` makes Kubernetes `Status` bodies and status-class labels; `service` serves
a process's own endpoints (probes, metrics, the console) over `reader`. Stands on the standard
library, httptools and `protocol` (for the header field type); only `reader` and `service` wait
on I/O. The tunnel core never imports it.
"""

from http1.forwarding import (
    FORWARDED_BY,
    FORWARDED_CALLER,
    FROM_PEER,
    HOP_BY_HOP,
    PEER_REFUSED,
    PLANELINK_PREFIX,
    REQUEST_ID,
    TO_AGENT,
    TO_CALLER,
    TO_GATEWAY,
    TO_PEER,
    TO_UPSTREAM,
    Policy,
    header_value,
)
from http1.framing import FramingError, ResponseFramer, content_length
from http1.parser import MAX_HEADER_FIELDS, HttpError, MessageParser, RequestHead, ResponseHead
from http1.reader import READ_SIZE, MessageReader
from http1.status import REASONS, status_body, status_class, status_headers, warning_header
from http1.writer import LAST_CHUNK, chunk, reason_phrase, request_head_bytes, response_head_bytes

__all__ = [
    "FORWARDED_BY",
    "FORWARDED_CALLER",
    "FROM_PEER",
    "HOP_BY_HOP",
    "LAST_CHUNK",
    "MAX_HEADER_FIELDS",
    "PEER_REFUSED",
    "PLANELINK_PREFIX",
    "READ_SIZE",
    "REASONS",
    "REQUEST_ID",
    "TO_AGENT",
    "TO_CALLER",
    "TO_GATEWAY",
    "TO_PEER",
    "TO_UPSTREAM",
    "FramingError",
    "HttpError",
    "MessageParser",
    "MessageReader",
    "Policy",
    "RequestHead",
    "ResponseFramer",
    "ResponseHead",
    "chunk",
    "content_length",
    "header_value",
    "reason_phrase",
    "request_head_bytes",
    "response_head_bytes",
    "status_body",
    "status_class",
    "status_headers",
    "warning_header",
]
