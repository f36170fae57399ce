"""Clients for a test API server: kubernetes_asyncio and the CRD installer."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import new_client_from_config_dict

import crd
from envtest.server import KubeAPIServer
from kubeobject.kubeconfig import Credentials

CRD_NAME = f"{crd.PLURAL}.{crd.GROUP}"


async def api_client(server: KubeAPIServer, credentials: Credentials | None = None) -> ApiClient:
    """An async client for `server`, as the admin unless told otherwise; close it after use."""
    config: dict[str, Any] = server.kubeconfig(credentials)
    client: ApiClient = await new_client_from_config_dict(config)
    return client


def install_crd(server: KubeAPIServer, *, timeout_seconds: int = 60) -> None:
    """Apply the DataPlane CRD with kubectl and wait (a watch, not a poll) until it is served."""
    manifest = yaml.safe_dump(crd.custom_resource_definition())
    server.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)
    try:
        server.kubectl(
            "wait",
            "--for=condition=Established",
            f"crd/{CRD_NAME}",
            f"--timeout={timeout_seconds}s",
            timeout=timeout_seconds + 10,
        )
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"the DataPlane CRD was not established: {error.stderr}") from error
