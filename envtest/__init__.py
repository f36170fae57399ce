"""Real Kubernetes API servers (etcd + kube-apiserver) on loopback, for tests and local runs.

The same idea as controller-runtime's envtest: the binaries are built once from the Go module
proxy and cached; each server gets its own ports, certificates, token and temporary directory.
"""

from envtest.binaries import BinariesUnavailable, KubeBinaries, find_binaries
from envtest.client import CRD_NAME, api_client, install_crd
from envtest.ports import free_port
from envtest.server import (
    HTTP2_MAX_STREAMS_PER_CONNECTION,
    KubeAPIServer,
    ServerFailed,
    ServerOptions,
    StaticUser,
    die_with_parent,
    run_kubectl,
    wait_until,
)
from kubeobject.kubeconfig import Credentials, build_kubeconfig

__all__ = [
    "CRD_NAME",
    "HTTP2_MAX_STREAMS_PER_CONNECTION",
    "BinariesUnavailable",
    "Credentials",
    "KubeAPIServer",
    "KubeBinaries",
    "ServerFailed",
    "ServerOptions",
    "StaticUser",
    "api_client",
    "build_kubeconfig",
    "die_with_parent",
    "find_binaries",
    "free_port",
    "install_crd",
    "run_kubectl",
    "wait_until",
]
