"""A kubernetes_asyncio client for the control plane, from the usual places."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient


async def load_api_client(kubeconfig: Path | str | None, context: str | None = None) -> ApiClient:
    """A client from the kubeconfig named, $KUBECONFIG, in-cluster config, or ~/.kube/config
    (in that order); close it after use."""
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG")
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return ApiClient()
    client: ApiClient = await config.new_client_from_config(config_file=path, context=context)
    return client
