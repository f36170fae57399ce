"""HTTP statuses as the proxies report them: Kubernetes `Status` bodies, so that kubectl prints
an error well, and the class of a status that metrics are labelled with.

Pure: it builds bytes and labels, and never decides which status an error gets.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from protocol.headers import Header

__all__ = ["REASONS", "status_body", "status_class", "status_headers", "warning_header"]

# The reasons of metav1.StatusReason that the gateway and agent answer with.
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "Timeout",
    413: "RequestEntityTooLarge",
    429: "TooManyRequests",
    431: "BadRequest",
    500: "InternalError",
    501: "BadRequest",
    502: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(code: int, message: str, *, reason: str | None = None) -> bytes:
    """A `Status` object (kind Status, apiVersion v1) as JSON bytes."""
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, HTTPStatus(code).phrase.replace(" ", "")),
        "code": code,
    }
    return json.dumps(status, separators=(",", ":")).encode()


def status_headers(body: bytes, *, retry_after: int | None = None) -> list[Header]:
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Cache-Control", b"no-cache, private"),
    ]
    if retry_after is not None:
        headers.append((b"Retry-After", str(retry_after).encode()))
    return headers


def status_class(status: int) -> str:
    """The class of an HTTP status as a metric label: "2xx" for 200 to 299, and so on."""
    return f"{status // 100}xx"


def warning_header(text: str) -> Header:
    """A `Warning: 299 - "<text>"` field, the form the API server gives its warnings in
    (RFC 7234 §5.5; apimachinery's `NewWarningHeader`): client-go hands every 299 warning of
    every response, an error's too, to its warning handler, and kubectl prints it on stderr
    (`Warning: <text>`, each text once). The text is made printable ASCII: a header value is
    Latin-1, and a control character would end the field."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    quoted = printable.replace("\\", "\\\\").replace('"', '\\"')
    return (b"Warning", f'299 - "{quoted}"'.encode("ascii"))
