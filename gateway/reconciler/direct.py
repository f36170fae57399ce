"""The probe of a directly reached plane: what `Connected` says of its API server.

The GETs go through the gateway's port (`gateway.interfaces.DirectPlaneSink.fetch`), so the probe
takes the path callers' requests take — the same upstream, credentials and connection pool.
This module only chooses the paths and judges the answers; it never dials anything itself.
"""

from __future__ import annotations

import asyncio
import time

from certs import PlaneRef
from gateway.interfaces import DirectPlaneSink, PlaneUnreachable
from gateway.reconciler.conditions import ProbeResult

_PROBE_PATHS = ("/readyz", "/version")


async def probe(direct: DirectPlaneSink, plane: PlaneRef, *, limit: float) -> ProbeResult:
    """GET /readyz (then /version if /readyz is not offered to us), both within `limit`."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            for path in _PROBE_PATHS:
                answer = await direct.fetch(plane, path, limit=limit)
                if answer.status in (403, 404) and path != _PROBE_PATHS[-1]:
                    continue
                return _judge(answer.url, answer.status, answer.body, time.monotonic() - started)
    except PlaneUnreachable as error:
        return _unreachable(error)
    except TimeoutError:
        return ProbeResult(False, "Timeout", f"no answer within {limit:g} s")
    raise AssertionError("unreachable: the last probe path always returns")


def _unreachable(error: PlaneUnreachable) -> ProbeResult:
    if error.kind == "tls":
        return ProbeResult(False, "TLSError", error.message)
    if error.kind == "timeout":
        return ProbeResult(False, "Timeout", error.message)
    return ProbeResult(False, "Unreachable", error.message)


def _judge(url: str, status: int, body: str, elapsed: float) -> ProbeResult:
    took = f"{elapsed * 1000:.0f} ms"
    if 200 <= status < 300:
        return ProbeResult(True, "ProbeSucceeded", f"GET {url}: {status} in {took}")
    reason = {401: "Unauthorized", 403: "Forbidden"}.get(status, "ServerNotReady")
    detail = f": {body}" if body else ""
    return ProbeResult(False, reason, f"GET {url}: {status}{detail}")
