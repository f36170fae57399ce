"""A stand-in API server that speaks exec the way kubectl does, for upgrade tests.

A real kube-apiserver cannot run `kubectl exec` without a kubelet and a container runtime, so
tests of the upgrade path use this peer instead: it serves one running pod and answers its exec
subresource over WebSocket with the `v5.channel.k8s.io` subprotocol kubectl speaks (channel 1:
stdout, channel 3: the final Status, as the kubelet would send them). What it "runs" is an
echo: the command's arguments come back on stdout, then stdin's bytes until stdin closes.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import certs

EXEC_SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_STDIN, _STDOUT, _STATUS, _CLOSE = 0, 1, 3, 255


@dataclass(frozen=True)
class FakePod:
    namespace: str = "default"
    name: str = "shell"
    container: str = "main"

    def manifest(self) -> dict[str, object]:
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": "0000"},
            "spec": {"containers": [{"name": self.container, "image": "busybox"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": self.container, "ready": True, "state": {"running": {}}}
                ],
            },
        }


class ExecPeer:
    """`async with ExecPeer(workdir) as peer:` serves on 127.0.0.1 at `peer.url`."""

    def __init__(self, workdir: Path, pod: FakePod | None = None) -> None:
        self.pod = pod or FakePod()
        self.ca = certs.create_ca("exec-peer")
        serving = certs.issue_server(self.ca, common_name="exec-peer", ip_addresses=["127.0.0.1"])
        self.ca_file = workdir / "exec-peer-ca.crt"
        self.ca_file.write_bytes(self.ca.certificate_pem())
        (workdir / "exec-peer.crt").write_bytes(serving.chain_pem())
        (workdir / "exec-peer.key").write_bytes(serving.private_key_pem())
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(workdir / "exec-peer.crt", workdir / "exec-peer.key")
        self._server: Server | None = None
        self.exec_requests: list[str] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    async def __aenter__(self) -> ExecPeer:
        self._server = await serve(
            self._exec,
            "127.0.0.1",
            0,
            ssl=self._context,
            process_request=self._plain_http,
            subprotocols=list(EXEC_SUBPROTOCOLS),  # type: ignore[arg-type]
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _plain_http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        pod_path = f"/api/v1/namespaces/{self.pod.namespace}/pods/{self.pod.name}"
        if path == f"{pod_path}/exec" and request.headers.get("Upgrade", "").lower() == "websocket":
            self.exec_requests.append(request.path)
            return None  # let the WebSocket handshake go on
        if path == pod_path:
            return _json(HTTPStatus.OK, self.pod.manifest())
        if path in _DISCOVERY:
            return _json(HTTPStatus.OK, _DISCOVERY[path])
        return _json(
            HTTPStatus.NOT_FOUND,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "message": f"{path} is not served by the exec peer",
                "code": 404,
            },
        )

    async def _exec(self, connection: ServerConnection) -> None:
        query = parse_qs(urlsplit(connection.request.path if connection.request else "").query)
        await connection.send(
            bytes([_STDOUT]) + (" ".join(query.get("command", [])) + "\n").encode()
        )
        if query.get("stdin") == ["true"]:
            try:
                async for message in connection:
                    data = message if isinstance(message, bytes) else message.encode()
                    if data[:1] == bytes([_STDIN]):
                        await connection.send(bytes([_STDOUT]) + data[1:])
                    elif data[:2] == bytes([_CLOSE, _STDIN]):
                        break  # v5: the client closed stdin
            except ConnectionClosed:
                return
        status = {"metadata": {}, "status": "Success"}
        await connection.send(bytes([_STATUS]) + json.dumps(status).encode())
        await connection.close()


# Just enough discovery for kubectl to find pods and their exec subresource.
_DISCOVERY: dict[str, object] = {
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    },
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
                "shortNames": ["po"],
            },
            {
                "name": "pods/exec",
                "singularName": "",
                "namespaced": True,
                "kind": "PodExecOptions",
                "verbs": ["create", "get"],
            },
        ],
    },
}


def _json(status: HTTPStatus, body: object) -> Response:
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status.value, status.phrase, headers, data)
