"""The DataPlane reconciler: follows DataPlane resources, feeds the gateway, writes status.

Wiring (the gateway, or `planelink reconciler`)::

    reconciler = Reconciler(client=api_client, trust=trust_registry, agents=agent_registry,
                            direct=direct_planes, settings=ReconcilerSettings(...),
                            registry=metrics.registry)
    await reconciler.start()      # returns once DataPlanes are listed
    await reconciler.stop()

It reaches the gateway only through the ports of `gateway.interfaces` (trust, agents, direct
planes), which the gateway wires; an import contract forbids every other gateway module here.
Layout: pure logic (`conditions`, `resolve`, `events.transitions`, `store`) apart from I/O
(`kube` is the only module calling kubernetes_asyncio; `direct` judges probes that the gateway's
direct planes carry). It never accepts agents, serves callers or dials a plane itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.reconciler.conditions import ProbeResult, Verdict
from gateway.reconciler.settings import CoordinationSettings, ReconcilerSettings

if TYPE_CHECKING:
    from gateway.reconciler.controller import Reconciler

__all__ = [
    "CoordinationSettings",
    "ProbeResult",
    "Reconciler",
    "ReconcilerSettings",
    "Verdict",
]


def __getattr__(name: str) -> Any:
    # The controller imports kubernetes_asyncio (a hundred megabytes): only for a process that
    # runs the reconciler, not for one that merely reads its settings.
    if name == "Reconciler":
        from gateway.reconciler.controller import Reconciler  # noqa: PLC0415

        return Reconciler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
