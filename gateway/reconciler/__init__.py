"""The DataPlane reconciler: follows DataPlane resources, feeds the gateway, writes status.

Wiring (the gateway, or `planelink reconciler`)::

    reconciler = Reconciler(client=api_client, trust=trust_registry, agents=agent_registry,
                            settings=ReconcilerSettings(...), registry=metrics.registry)
    await reconciler.start()      # returns once DataPlanes are listed
    reconciler.direct.get(plane)  # DirectTarget of a direct-mode plane, or None
    await reconciler.stop()

Layout: pure logic (`conditions`, `resolve`, `events.transitions`, `store`) apart from I/O
(`kube` is the only module calling kubernetes_asyncio; `direct` the only one dialing planes).
It never accepts agents or serves callers itself.
"""

from gateway.reconciler.conditions import ProbeResult, Verdict
from gateway.reconciler.controller import AgentView, Reconciler
from gateway.reconciler.direct import DirectPlanes, DirectTarget
from gateway.reconciler.resolve import DirectCredentials
from gateway.reconciler.settings import CoordinationSettings, ReconcilerSettings

__all__ = [
    "AgentView",
    "CoordinationSettings",
    "DirectCredentials",
    "DirectPlanes",
    "DirectTarget",
    "ProbeResult",
    "Reconciler",
    "ReconcilerSettings",
    "Verdict",
]
