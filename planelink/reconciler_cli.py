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

_ENV_PREFIX = "PLANELINK_RECONCILER_"

_DESCRIPTION = """\
Follow the DataPlane resources of a control-plane cluster (and the Secrets they reference) and
print, as JSON lines, the trust and direct-mode targets the gateway would be fed. With
--write-status also write their status conditions (Ready, Connected, GatewayProvisioned) and
events; run alone, it sees no agents, so agent-mode planes read Connected=False.

Every flag can also be set in the environment: --namespaces is PLANELINK_RECONCILER_NAMESPACES.
Without --kubeconfig: $KUBECONFIG, the in-cluster service account, then ~/.kube/config.

example:
  planelink reconciler --kubeconfig ~/.kube/config --namespaces my-org --once
"""


def _env(flag: str, default: str | None = None) -> str | None:
    return os.environ.get(_ENV_PREFIX + flag.upper().replace("-", "_"), default)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def add_reconciler_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "reconciler",
        help="follow DataPlanes and print what the gateway would be fed (optionally write status)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def flag(name: str, *, help: str, type: type = str, default: str | None = None) -> None:
        parser.add_argument(f"--{name}", default=_env(name, default), type=type, help=help)

    def switch(name: str, *, help: str) -> None:
        parser.add_argument(
            f"--{name}", action="store_true", default=_truthy(_env(name)), help=help
        )

    flag("kubeconfig", help="kubeconfig of the control plane (default: see above)")
    flag("context", help="kubeconfig context to use")
    flag("namespaces", default="", help="comma-separated namespaces to watch (default: all)")
    switch("write-status", help="write DataPlane status and events")
    switch("once", help="reconcile every DataPlane once, print, and exit")
    parser.add_argument(
        "--require-identity",
        action=argparse.BooleanOptionalAction,
        default=(_env("require-identity") or "true").strip().lower() != "false",
        help="demand that agent certificates name their plane (default: on; a DataPlane opts "
        'out with the annotation planelink.dev/require-agent-identity: "false")',
    )
    flag("workers", default="4", type=int, help="DataPlanes reconciled in parallel (4)")
    flag("probe-interval", default="30", type=float, help="seconds between direct probes (30)")
    flag("probe-timeout", default="5", type=float, help="timeout of one probe (5)")
    flag("status-interval", default="1", type=float, help="min seconds between writes (1)")
    flag("resync-interval", default="300", type=float, help="full resync period (300)")
    flag("lease-namespace", help="join the gateways' coordination Leases in this namespace")
    flag("identity", default=os.environ.get("POD_NAME"), help="this replica's name ($POD_NAME)")
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> ReconcilerSettings:
    coordination = None
    if args.lease_namespace:
        if not args.identity:
            raise ValueError("--lease-namespace needs --identity (or POD_NAME)")
        coordination = CoordinationSettings(namespace=args.lease_namespace, identity=args.identity)
    return ReconcilerSettings(
        namespaces=tuple(ns.strip() for ns in (args.namespaces or "").split(",") if ns.strip()),
        workers=args.workers,
        probe_interval=args.probe_interval,
        probe_timeout=args.probe_timeout,
        status_min_interval=args.status_interval,
        resync_interval=args.resync_interval,
        write_status=args.write_status,
        require_identity=args.require_identity,
        component="planelink-reconciler",
        coordination=coordination,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        return asyncio.run(
            serve(settings, kubeconfig=args.kubeconfig, context=args.context, once=args.once)
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
