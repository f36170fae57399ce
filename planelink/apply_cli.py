"""`planelink apply`: server-side apply of YAML manifests, where no kubectl is at hand.

What `kubectl apply --server-side --force-conflicts -f FILE` does, for the few manifests a
bootstrap needs (the DataPlane CRD, a DataPlane, Secrets) from the container image, which has no
kubectl. It waits - up to `--timeout` - for the API server to answer `/readyz` and for each
manifest's kind to be served (so a DataPlane may follow its CRD in the same run, as the CRD is
established), and with `--create-namespace` creates the namespaces the manifests name.
Exit codes: 0 applied, 1 the API server refused a manifest, 2 bad usage, unreadable input or
the timeout passed (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from gateway.kubeclient import load_api_client

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

FIELD_MANAGER = "planelink"
_RETRY_INTERVAL = 0.2
_APPLY = "application/apply-patch+yaml"

_DESCRIPTION = """\
Apply every manifest in the files (server-side apply, field manager "planelink", conflicts
forced), in order. Waits up to --timeout for the API server to be ready and for each kind to
be served, so a CRD and its first objects can be applied in one run.

examples:
  planelink crd --output crd.yaml
  planelink apply --kubeconfig control-plane.kubeconfig -f crd.yaml -f dataplane.yaml \\
      --create-namespace
"""


def add_apply_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "apply",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML file of one or more manifests ('-' for stdin; repeatable)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="kubeconfig of the cluster (default: $KUBECONFIG, in-cluster, ~/.kube/config)",
    )
    parser.add_argument("--context", help="kubeconfig context to use")
    parser.add_argument(
        "--create-namespace",
        action="store_true",
        help="create the namespaces the manifests are in, when missing",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the API server and for kinds to be served (default: 60)",
    )
    parser.set_defaults(run=run)


class ApplyFailed(Exception):
    """A manifest could not be applied; `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Resource:
    """Where objects of one kind live in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{base}{scope}/{self.plural}/{name}"


def run(args: argparse.Namespace) -> int:
    try:
        documents = read_manifests(args.files)
        applied = asyncio.run(
            apply(
                documents,
                kubeconfig=args.kubeconfig,
                context=args.context,
                create_namespace=args.create_namespace,
                wait_seconds=args.timeout,
            )
        )
    except ApplyFailed as error:
        print(f"planelink apply: error: {error}", file=sys.stderr)
        return error.code
    for line in applied:
        print(line)
    return EXIT_OK


def read_manifests(files: Sequence[str]) -> list[dict[str, Any]]:
    """Every non-empty YAML document of `files`, each checked to name a kind and a name."""
    documents: list[dict[str, Any]] = []
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
            loaded = list(yaml.safe_load_all(text))
        except OSError as error:
            message = f"cannot read {name}: {error.strerror or error}"
            raise ApplyFailed(message, EXIT_USAGE) from None
        except yaml.YAMLError as error:
            raise ApplyFailed(f"{name}: not YAML: {error}", EXIT_USAGE) from None
        for number, document in enumerate(loaded, start=1):
            if document is None:
                continue
            if not isinstance(document, dict) or not all(
                isinstance(document.get(key), str) for key in ("apiVersion", "kind")
            ):
                raise ApplyFailed(
                    f"{name}: document {number} is not a manifest with apiVersion and kind",
                    EXIT_USAGE,
                )
            if not isinstance((document.get("metadata") or {}).get("name"), str):
                raise ApplyFailed(f"{name}: document {number} has no metadata.name", EXIT_USAGE)
            documents.append(document)
    if not documents:
        raise ApplyFailed("no manifests in " + ", ".join(files), EXIT_USAGE)
    return documents


async def apply(
    documents: Sequence[dict[str, Any]],
    *,
    kubeconfig: Path | None,
    context: str | None = None,
    create_namespace: bool = False,
    wait_seconds: float = 60.0,
) -> list[str]:
    """Apply `documents` in order; one kubectl-style line per object applied. Waits up to
    `wait_seconds` in all for the API server to be ready and for kinds to be served."""
    deadline = time.monotonic() + wait_seconds
    try:
        client = await load_api_client(kubeconfig, context)
    except Exception as error:  # the loader raises config, OS and YAML errors alike
        raise ApplyFailed(f"cannot load the kubeconfig: {error}", EXIT_USAGE) from error
    async with client:
        session = _Session(client, deadline)
        await session.wait_ready()
        lines: list[str] = []
        created: set[str] = set()
        for document in documents:
            resource = await session.resource(document["apiVersion"], document["kind"])
            namespace = (document.get("metadata") or {}).get("namespace")
            if resource.namespaced:
                namespace = namespace or "default"
                if create_namespace and namespace not in created:
                    namespace_doc = {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": namespace},
                    }
                    await session.apply(_NAMESPACES, None, namespace_doc)
                    created.add(namespace)
            body = dict(document)
            if resource.namespaced:
                body["metadata"] = {**document["metadata"], "namespace": namespace}
            await session.apply(resource, namespace, body)
            group = resource.api_version.split("/")[0] if "/" in resource.api_version else ""
            kind = resource.kind.lower() + (f".{group}" if group else "")
            lines.append(f"{kind}/{document['metadata']['name']} serverside-applied")
        return lines


_NAMESPACES = Resource("v1", "Namespace", "namespaces", namespaced=False)


class _Session:
    def __init__(self, client: ApiClient, deadline: float) -> None:
        self._client = client
        self._deadline = deadline
        self._resources: dict[tuple[str, str], Resource] = {}

    async def _call(
        self, method: str, path: str, *, body: Any = None, query: Sequence[tuple[str, str]] = ()
    ) -> tuple[int, str]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = _APPLY
        try:
            response = await self._client.call_api(
                path,
                method,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=max(1.0, self._deadline - time.monotonic()),
            )
        except ApiException as error:
            return int(error.status or 0), str(error.body or error.reason)
        try:
            return response.status, await response.text()
        finally:
            response.release()

    def _expired(self, what: str, last: str) -> ApplyFailed:
        return ApplyFailed(f"timed out waiting for {what} ({last})", EXIT_USAGE)

    async def wait_ready(self) -> None:
        """Until the API server answers /readyz with 200. Polled: a starting server announces
        nothing, and compose cannot health-check the distroless kube-apiserver image."""
        last = "no answer yet"
        while True:
            try:
                status, text = await self._call("GET", "/readyz")
                if status == 200:
                    return
                last = f"HTTP {status}: {text[:200]}"
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                last = str(error) or type(error).__name__
            if time.monotonic() >= self._deadline:
                raise self._expired("the API server to be ready", last)
            await asyncio.sleep(_RETRY_INTERVAL)

    async def resource(self, api_version: str, kind: str) -> Resource:
        """The resource serving `kind`, waiting for it to be served (a CRD being established)."""
        key = (api_version, kind)
        while key not in self._resources:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            status, text = await self._call("GET", path)
            if status == 200:
                for item in json.loads(text).get("resources", []):
                    if "/" not in item["name"]:
                        found = Resource(
                            api_version, item["kind"], item["name"], item["namespaced"]
                        )
                        self._resources[(api_version, item["kind"])] = found
            elif status != 404:
                raise ApplyFailed(f"discovery of {path}: HTTP {status}: {text}", EXIT_REFUSED)
            if key in self._resources:
                break
            if time.monotonic() >= self._deadline:
                raise self._expired(f"{kind} ({api_version}) to be served", f"HTTP {status}")
            await asyncio.sleep(_RETRY_INTERVAL)
        return self._resources[key]

    async def apply(self, resource: Resource, namespace: str | None, body: dict[str, Any]) -> None:
        path = resource.path(namespace, body["metadata"]["name"])
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        status, text = await self._call("PATCH", path, body=body, query=query)
        if status >= 300:
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise ApplyFailed(
                f"{resource.kind} {body['metadata']['name']}: HTTP {status}: {message}",
                EXIT_REFUSED,
            )
