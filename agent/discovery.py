"""What the agent learns from its API server before it says HELLO: the Kubernetes version.

Best effort: the gateway shows the version to operators, but an agent whose API server is
down still connects (and answers callers with 502s), so every failure here is just `None`.
"""

from __future__ import annotations

import json

import http1
from kubeproxy import ConnectionPool, UpstreamCredentialsError, UpstreamError

_MAX_VERSION_BODY = 64 * 1024


async def kubernetes_version(pool: ConnectionPool) -> str | None:
    """The API server's gitVersion (GET /version), or None if it cannot be read now.

    Callers bound it with `asyncio.timeout`; a timeout raises TimeoutError as usual."""
    try:
        return await _fetch(pool)
    except (UpstreamError, UpstreamCredentialsError, ValueError):
        return None


async def _fetch(pool: ConnectionPool) -> str | None:
    upstream = pool.upstream
    headers = [(b"Host", upstream.authority.encode("ascii")), (b"Accept", b"application/json")]
    authorization = upstream.authorization()
    if authorization is not None:
        headers.append((b"Authorization", authorization))
    connection = await pool.acquire()
    reusable = False
    try:
        await connection.send(http1.request_head_bytes("GET", "/version", headers))
        head = await connection.response_head(head_request=False)
        body = bytearray()
        while piece := await connection.body_piece():
            body += piece
            if len(body) > _MAX_VERSION_BODY:
                return None
        reusable = head.keep_alive
        if head.status != 200:
            return None
        document = json.loads(body)
        version = document.get("gitVersion") if isinstance(document, dict) else None
        return version if isinstance(version, str) and version else None
    finally:
        pool.release(connection, reusable=reusable)
