"""Directly reached planes: their resolved credentials as ready-made TLS settings, and a probe.

`DirectPlanes.get(plane)` is the interface for whoever dials a direct-mode plane's API server
(the caller endpoint, later): the server URL, an SSLContext that trusts the plane's CA and
presents its client certificate (mTLS), and the bearer token, if that is how it authenticates.
Client certificates reach OpenSSL through a private temporary directory that is removed as soon
as they are loaded; nothing else is written to disk.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from certs import PlaneRef
from gateway.reconciler.conditions import ProbeResult
from gateway.reconciler.resolve import DirectCredentials

_PROBE_PATHS = ("/readyz", "/version")
_MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class DirectTarget:
    """How to reach one plane's API server directly."""

    plane: PlaneRef
    server: str
    ssl_context: ssl.SSLContext = field(repr=False)
    credentials: DirectCredentials = field(repr=False, compare=False)
    bearer_token: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """Headers every request to the server carries (the Authorization header, if any)."""
        if self.bearer_token is None:
            return {}
        return {"Authorization": f"Bearer {self.bearer_token}"}


DirectListener = Callable[[PlaneRef, "DirectTarget | None"], None]


class DirectPlanes:
    """The direct-mode planes the reconciler knows, by plane; subscribers hear every change."""

    def __init__(self) -> None:
        self._targets: dict[PlaneRef, DirectTarget] = {}
        self._listeners: list[DirectListener] = []

    def subscribe(self, listener: DirectListener) -> None:
        self._listeners.append(listener)

    def get(self, plane: PlaneRef) -> DirectTarget | None:
        return self._targets.get(plane)

    def planes(self) -> list[PlaneRef]:
        return sorted(self._targets, key=lambda p: (p.namespace, p.name))

    def set(self, plane: PlaneRef, credentials: DirectCredentials) -> tuple[DirectTarget, bool]:
        """Register `credentials`; the target, and whether it changed."""
        current = self._targets.get(plane)
        if current is not None and current.credentials == credentials:
            return current, False
        target = DirectTarget(
            plane=plane,
            server=credentials.server.rstrip("/"),
            ssl_context=ssl_context(credentials),
            bearer_token=credentials.bearer_token,
            credentials=credentials,
        )
        self._targets[plane] = target
        for listener in self._listeners:
            listener(plane, target)
        return target, True

    def remove(self, plane: PlaneRef) -> bool:
        if self._targets.pop(plane, None) is None:
            return False
        for listener in self._listeners:
            listener(plane, None)
        return True


def ssl_context(credentials: DirectCredentials) -> ssl.SSLContext:
    """A client context trusting the plane's CA, presenting its client certificate if any."""
    context = ssl.create_default_context(cadata=credentials.ca_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if credentials.client_cert_pem is not None and credentials.client_key_pem is not None:
        with tempfile.TemporaryDirectory(prefix="planelink-direct-") as directory:
            cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
            _write_private(cert, credentials.client_cert_pem)
            _write_private(key, credentials.client_key_pem)
            context.load_cert_chain(cert, key)
    return context


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


async def probe(target: DirectTarget, *, limit: float) -> ProbeResult:
    """GET /readyz (then /version if /readyz is not offered to us) with the plane's credentials."""
    started = time.monotonic()
    client_timeout = aiohttp.ClientTimeout(total=limit)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            for path in _PROBE_PATHS:
                url = target.server + path
                async with session.get(url, ssl=target.ssl_context, headers=target.headers()) as r:
                    body = (await r.text(errors="replace"))[:_MESSAGE_LIMIT].strip()
                    status = r.status
                if status in (403, 404) and path != _PROBE_PATHS[-1]:
                    continue
                return _judge(url, status, body, time.monotonic() - started)
    except aiohttp.ClientSSLError as error:
        return ProbeResult(False, "TLSError", f"{target.server}: TLS failed: {error}")
    except aiohttp.ClientError as error:
        return ProbeResult(False, "Unreachable", f"{target.server}: {error}")
    except TimeoutError:
        return ProbeResult(False, "Timeout", f"{target.server}: no answer within {limit:g} s")
    raise AssertionError("unreachable: the last probe path always returns")


def _judge(url: str, status: int, body: str, elapsed: float) -> ProbeResult:
    took = f"{elapsed * 1000:.0f} ms"
    if 200 <= status < 300:
        return ProbeResult(True, "ProbeSucceeded", f"GET {url}: {status} in {took}")
    reason = {401: "Unauthorized", 403: "Forbidden"}.get(status, "ServerNotReady")
    detail = f": {body}" if body else ""
    return ProbeResult(False, reason, f"GET {url}: {status}{detail}")
