"""The real API servers tests run against: start, isolate, authenticate, stop without a trace."""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubernetes_asyncio.client import CoreV1Api

import envtest
from envtest import KubeAPIServer, KubeBinaries, ServerOptions, StaticUser
from envtest.pytest_plugin import ServerFactory
from tests.kit.waits import scaled

PINNED_VERSION = "v1.32.4"


def _get(server: KubeAPIServer, path: str, token: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(
            request, context=server.ssl_context(), timeout=scaled(10)
        ) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_reports_the_pinned_version(control_plane: KubeAPIServer) -> None:
    status, version = _get(control_plane, "/version", control_plane.admin_token)
    assert status == 200
    assert version["gitVersion"] == PINNED_VERSION


def test_kubectl_works_with_the_written_kubeconfig(control_plane: KubeAPIServer) -> None:
    names = control_plane.kubectl("get", "ns", "-o", "name").stdout.split()
    assert "namespace/kube-system" in names


def test_wrong_token_is_unauthorized(control_plane: KubeAPIServer) -> None:
    status, body = _get(control_plane, "/api/v1/namespaces", "not-a-token")
    assert status == 401
    assert body["reason"] == "Unauthorized"


def test_servers_are_isolated_from_each_other(
    kube_servers: ServerFactory,
) -> None:
    plane_a, plane_b = kube_servers("plane-a"), kube_servers("plane-b")
    assert plane_a.port != plane_b.port
    plane_a.kubectl("create", "namespace", "only-in-a")
    try:
        assert plane_b.kubectl("get", "ns", "only-in-a", check=False).returncode != 0
        assert plane_a.admin_token != plane_b.admin_token
        status, _ = _get(plane_b, "/api/v1/namespaces", plane_a.admin_token)
        assert status == 401
    finally:
        plane_a.kubectl("delete", "namespace", "only-in-a", "--wait=false")


def test_client_certificate_users_meet_rbac(
    control_plane: KubeAPIServer, namespace: str, tmp_path: Path
) -> None:
    viewer = control_plane.issue_user("jane", groups=["viewers"])
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "jane", viewer)
    denied = control_plane.kubectl(
        "get", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False
    )
    assert denied.returncode != 0
    assert 'User "jane" cannot list resource "pods"' in denied.stderr

    # Not the aggregated `view` ClusterRole: with no controller-manager, nothing fills it in.
    control_plane.kubectl(
        "create", "role", "pod-reader", "-n", namespace, "--verb=list", "--resource=pods"
    )
    control_plane.kubectl(
        "create", "rolebinding", "viewers", "-n", namespace, "--role=pod-reader", "--group=viewers"
    )

    # RBAC's authorizer learns of the binding through an informer: no event tells us when.
    def allowed() -> bool:
        got = control_plane.kubectl(
            "get", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False
        )
        return got.returncode == 0 and "No resources found" in got.stderr

    assert envtest.wait_until(allowed, timeout=scaled(10))


async def test_async_client(control_plane: KubeAPIServer, namespace: str) -> None:
    async with await envtest.api_client(control_plane) as client:
        found = await CoreV1Api(client).read_namespace(namespace)
    assert found.metadata.name == namespace


def test_static_users_and_clean_stop(kube_binaries: KubeBinaries) -> None:
    server = KubeAPIServer(
        options=ServerOptions(
            name="short-lived", static_users=(StaticUser("t0ken", "bob", ("devs",)),)
        ),
        binaries=kube_binaries,
    )
    with server:
        status, review = _get(server, "/apis/authentication.k8s.io/v1", "t0ken")
        assert status == 200, review
        pids = [p.pid for p in server._processes]
        workdir, port = server.workdir, server.port
        assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not workdir.exists()
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_failed_start_says_why_and_leaves_nothing(kube_binaries: KubeBinaries) -> None:
    server = KubeAPIServer(
        options=ServerOptions(name="broken", extra_apiserver_args=("--no-such-flag",)),
        binaries=kube_binaries,
    )
    with pytest.raises(envtest.ServerFailed, match="unknown flag: --no-such-flag"):
        server.start()
    assert server._processes == []
    assert server._workdir is None


def test_ssl_context_verifies_the_server(control_plane: KubeAPIServer) -> None:
    with (
        socket.create_connection(("127.0.0.1", control_plane.port)) as raw,
        control_plane.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    with (
        socket.create_connection(("127.0.0.1", control_plane.port)) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
