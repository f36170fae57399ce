"""`planelink reconciler`: run the DataPlane reconciler alone and print what it would feed the
gateway (each plane's trust, each direct-mode target) as JSON lines on stdout.

By default it only reads: status is written with --write-status (run it so only where no
gateway writes status, or join the gateways' coordination with --lease-namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config.config_exception import ConfigException

from certs import PlaneRef
from gateway.agents import AgentRegistry
from gateway.direct import DirectPlanes
from gateway.interfaces import DirectCredentials, PlaneTrust
from gateway.kubeclient import load_api_client
from gateway.metrics import GatewayMetrics
from gateway.reconciler import (
    CoordinationSettings,
    Reconciler,
    ReconcilerSettings,
)
from gateway.trust import TrustRegistry
from planelink.settings import NAMESPACES, CommandSettings, Group, Setting, integer, number

_DESCRIPTION = """\
Follow the DataPlane resources of a control-plane cluster (and the Secrets they reference) and
print, as JSON lines, the trust and direct-mode targets the gateway would be fed. With
--write-status also write their status conditions (Ready, Connected, GatewayProvisioned) and
events; run alone, it sees no agents, so agent-mode planes read Connected=False.

Every flag can also be set in the environment: --namespaces is PLANELINK_RECONCILER_NAMESPACES
(each flag's variable is shown in brackets); a flag wins over the environment.
Without --kubeconfig: $KUBECONFIG, the in-cluster service account, then ~/.kube/config.

example:
  planelink reconciler --kubeconfig ~/.kube/config --namespaces my-org --once
"""

_DEFAULTS = ReconcilerSettings()


def _pod_name() -> str | None:
    return os.environ.get("POD_NAME")


SETTINGS = CommandSettings(
    "PLANELINK_RECONCILER_",
    (
        Group(
            None,
            (
                Setting(
                    name="kubeconfig",
                    shown_default="see above",
                    help="kubeconfig of the control plane",
                ),
                Setting(name="context", help="kubeconfig context to use"),
                NAMESPACES,
                Setting(
                    name="write_status",
                    switch=True,
                    default=False,
                    help="write DataPlane status and events",
                ),
                Setting(
                    name="once",
                    switch=True,
                    default=False,
                    help="reconcile every DataPlane once, print, and exit",
                ),
                Setting(
                    name="require_identity",
                    switch=True,
                    negatable=True,
                    default=True,
                    help="demand that agent certificates name their plane (a DataPlane opts "
                    'out with the annotation planelink.dev/require-agent-identity: "false")',
                ),
                Setting(
                    name="workers",
                    parse=integer,
                    default=_DEFAULTS.workers,
                    help="DataPlanes reconciled in parallel",
                ),
                Setting(
                    name="probe_interval",
                    parse=number,
                    default=_DEFAULTS.probe_interval,
                    help="seconds between direct probes",
                ),
                Setting(
                    name="probe_timeout",
                    parse=number,
                    default=_DEFAULTS.probe_timeout,
                    help="timeout of one probe",
                ),
                Setting(
                    name="status_interval",
                    parse=number,
                    default=_DEFAULTS.status_min_interval,
                    help="min seconds between writes",
                ),
                Setting(
                    name="resync_interval",
                    parse=number,
                    default=_DEFAULTS.resync_interval,
                    help="full resync period",
                ),
                Setting(
                    name="lease_namespace",
                    help="join the gateways' coordination Leases in this namespace",
                ),
                Setting(
                    name="identity",
                    default_factory=_pod_name,
                    shown_default="$POD_NAME",
                    help="this replica's name",
                ),
            ),
        ),
    ),
)
"""Every setting of `planelink reconciler`."""


def add_reconciler_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    SETTINGS.add_command(
        commands,
        "reconciler",
        description=_DESCRIPTION,
        run=run,
    )


def settings_from(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> ReconcilerSettings:
    """What `planelink reconciler` runs with, from its flags and the environment."""
    return _settings(SETTINGS.resolve(args, environ))


def _settings(values: argparse.Namespace) -> ReconcilerSettings:
    coordination = None
    if values.lease_namespace:
        if not values.identity:
            raise ValueError("--lease-namespace needs --identity (or POD_NAME)")
        coordination = CoordinationSettings(
            namespace=values.lease_namespace, identity=values.identity
        )
    return ReconcilerSettings(
        namespaces=values.namespaces,
        workers=values.workers,
        probe_interval=values.probe_interval,
        probe_timeout=values.probe_timeout,
        status_min_interval=values.status_interval,
        resync_interval=values.resync_interval,
        write_status=values.write_status,
        require_identity=values.require_identity,
        component="planelink-reconciler",
        coordination=coordination,
    )


def run(args: argparse.Namespace) -> int:
    try:
        values = SETTINGS.resolve(args, os.environ)
        return asyncio.run(
            serve(
                _settings(values),
                kubeconfig=values.kubeconfig,
                context=values.context,
                once=values.once,
            )
        )
    except (ValueError, OSError, ConfigException) as error:
        print(f"planelink reconciler: {error}", file=sys.stderr)
        return 2


async def load_client(kubeconfig: str | None, context: str | None) -> ApiClient:
    """A client from the kubeconfig named, $KUBECONFIG, in-cluster config, or ~/.kube/config."""
    return await load_api_client(kubeconfig, context)


async def serve(
    settings: ReconcilerSettings, *, kubeconfig: str | None, context: str | None, once: bool
) -> int:
    log = structlog.get_logger("reconciler")
    trust = TrustRegistry(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    agents = AgentRegistry(trust, GatewayMetrics())
    trust.subscribe(lambda plane, value: _print(_trust_line(plane, value)))
    async with await load_client(kubeconfig, context) as client:
        direct = _PrintedDirectPlanes()
        reconciler = Reconciler(
            client=client, trust=trust, agents=agents, direct=direct, settings=settings
        )
        await reconciler.start()
        try:
            if once:
                await reconciler.settle()
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            log.info("stopping")
            return 0
        finally:
            with contextlib.suppress(Exception):
                await reconciler.stop()
            await direct.stop()


def _trust_line(plane: PlaneRef, trust: PlaneTrust | None) -> dict[str, Any]:
    if trust is None:
        return {"plane": str(plane), "removed": True}
    return {
        "plane": str(plane),
        "acceptsAgents": trust.accepts_agents,
        "clientCAs": [ca.subject.rfc4514_string() for ca in trust.client_cas],
        "requireIdentity": trust.require_identity,
        "issues": list(trust.issues),
        "source": trust.source,
    }


class _PrintedDirectPlanes(DirectPlanes):
    """Direct planes (probed as the gateway would), each change printed as a line."""

    def set(self, plane: PlaneRef, credentials: DirectCredentials) -> bool:
        changed = super().set(plane, credentials)
        if changed:
            _print(_direct_line(plane, credentials))
        return changed

    def remove(self, plane: PlaneRef) -> bool:
        removed = super().remove(plane)
        if removed:
            _print(_direct_line(plane, None))
        return removed


def _direct_line(plane: PlaneRef, credentials: DirectCredentials | None) -> dict[str, Any]:
    if credentials is None:
        return {"plane": str(plane), "direct": None}
    return {
        "plane": str(plane),
        "direct": {"server": credentials.server.rstrip("/"), "auth": credentials.auth},
    }


def _print(line: dict[str, Any]) -> None:
    print(json.dumps(line, sort_keys=True), flush=True)
