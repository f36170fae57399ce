"""A planelink whose gateway authenticates callers against a real control plane.

The gateway reviews tokens and access in `control_plane` (as its admin); the agent reaches a
real data plane as that plane's admin. Callers are ServiceAccounts of the test's namespace on
the control plane, with kubeconfigs that carry their tokens (or nothing, or a certificate).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from certs import PlaneRef, plane_ref
from envtest import Credentials, KubeAPIServer, build_kubeconfig, free_port, run_kubectl
from envtest.pytest_plugin import ServerFactory
from gateway.auth import CallerAuthMode, CallerAuthSettings
from planelink.local import LocalPlanelink
from tests.kit.waits import scaled, wait_for, within

PLANE_NAME = "plane-a"
RBAC_LIMIT = 30.0  # for a new binding to apply (scaled): the informer needs far less
RBAC_POLL = 0.1
LONG_TTL = 600.0  # a review cached this long cannot expire during a test


class AuthLab:
    def __init__(
        self,
        local: LocalPlanelink,
        control_plane: KubeAPIServer,
        data_plane: KubeAPIServer,
        plane: PlaneRef,
        directory: Path,
    ) -> None:
        self.local = local
        self.control_plane = control_plane
        self.data_plane = data_plane
        self.plane = plane
        self.directory = directory

    @property
    def server_url(self) -> str:
        assert self.local.gateway is not None
        port = self.local.gateway.callers.port
        return f"https://127.0.0.1:{port}/planes/{self.plane.namespace}/{self.plane.name}/k8s"

    async def service_account(self, name: str, *, allowed: bool, verb: str = "proxy") -> str:
        """A ServiceAccount of the plane's namespace and a token for it; `allowed` binds a
        Role granting `verb` on the plane's DataPlane, in force when this returns."""
        namespace = self.plane.namespace
        control = self.control_plane
        await control.akubectl("create", "serviceaccount", name, "-n", namespace)
        if allowed:
            await control.akubectl(
                "create",
                "role",
                f"{name}-plane",
                f"--verb={verb}",
                "--resource=dataplanes.openchoreo.dev",
                f"--resource-name={self.plane.name}",
                "-n",
                namespace,
            )
            await control.akubectl(
                "create",
                "rolebinding",
                f"{name}-plane",
                f"--role={name}-plane",
                f"--serviceaccount={namespace}:{name}",
                "-n",
                namespace,
            )
            await self.until_allowed(
                control,
                verb,
                f"dataplanes.openchoreo.dev/{self.plane.name}",
                as_user=f"system:serviceaccount:{namespace}:{name}",
                namespace=namespace,
            )
        token = await control.akubectl("create", "token", name, "-n", namespace)
        return token.stdout.strip()

    async def until_allowed(
        self,
        server: KubeAPIServer,
        verb: str,
        resource: str,
        *,
        as_user: str,
        namespace: str | None = None,
        limit: float = RBAC_LIMIT,
    ) -> None:
        """Returns once `server` lets `as_user` do `verb` on `resource`. RBAC follows Roles and
        bindings through an informer, so one just written may not apply yet; and a caller the
        gateway asks about too early is denied, and the denial cached (`negative_ttl`)."""
        can_i = ["auth", "can-i", verb, resource, f"--as={as_user}"]
        if namespace is not None:
            can_i += ["-n", namespace]
        answer = None
        try:
            async with within(limit):
                while True:
                    answer = await server.akubectl(*can_i, check=False)
                    if answer.returncode == 0:
                        return
                    await asyncio.sleep(RBAC_POLL)  # the authorizer's cache announces nothing
        except TimeoutError:
            detail = "no answer" if answer is None else (answer.stdout + answer.stderr).strip()
            raise AssertionError(
                f"{as_user} may still not {verb} {resource} after {limit:.0f} s: {detail}"
            ) from None

    def kubeconfig(self, name: str, *, token: str | None = None) -> Path:
        """A kubeconfig for the plane through the gateway with `token` (None: no credentials)."""
        config = build_kubeconfig(
            name=name,
            server=self.server_url,
            ca_pem=(self.local.directory / "gateway" / "ca.crt").read_bytes(),
            credentials=Credentials(user=name, token=token),
        )
        path = self.directory / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    def certificate_kubeconfig(self) -> Path:
        return self.local.caller_kubeconfig(self.plane)

    async def kubectl(
        self, kubeconfig: Path, *args: str, limit: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Real kubectl through the gateway (asynchronously: the gateway runs in this loop)."""
        return await run_kubectl(kubeconfig, *args, timeout=scaled(limit))

    def metric(self, name: str, **labels: str) -> float:
        assert self.local.gateway is not None
        value = self.local.gateway.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


async def start_lab(
    control_plane: KubeAPIServer,
    data_plane: KubeAPIServer,
    namespace: str,
    directory: Path,
    settings: CallerAuthSettings,
) -> tuple[AuthLab, LocalPlanelink]:
    plane = plane_ref(namespace, PLANE_NAME)
    local = LocalPlanelink(
        directory=directory / "planelink",
        planes={plane: data_plane.kubeconfig_path},
        caller_auth=settings,
        control_plane=control_plane.kubeconfig_path,
    )
    await local.start()
    await wait_for(local.wait_connected(plane), 30)
    return AuthLab(local, control_plane, data_plane, plane, directory), local


@pytest.fixture
def data_plane(kube_servers: ServerFactory) -> KubeAPIServer:
    return kube_servers("auth-plane")


@pytest.fixture
async def lab(
    control_plane: KubeAPIServer, data_plane: KubeAPIServer, namespace: str, tmp_path: Path
) -> AsyncIterator[AuthLab]:
    settings = CallerAuthSettings(mode=CallerAuthMode.BOTH)
    lab, local = await start_lab(control_plane, data_plane, namespace, tmp_path, settings)
    yield lab
    await local.stop()


@pytest.fixture
async def long_cache_lab(
    control_plane: KubeAPIServer, data_plane: KubeAPIServer, namespace: str, tmp_path: Path
) -> AsyncIterator[AuthLab]:
    """Reviews cached for far longer than a test runs: what is cached cannot expire mid-test."""
    settings = CallerAuthSettings(mode=CallerAuthMode.BOTH, positive_ttl=LONG_TTL)
    lab, local = await start_lab(control_plane, data_plane, namespace, tmp_path, settings)
    yield lab
    await local.stop()


@pytest.fixture
async def impersonating_lab(
    control_plane: KubeAPIServer, data_plane: KubeAPIServer, namespace: str, tmp_path: Path
) -> AsyncIterator[AuthLab]:
    settings = CallerAuthSettings(mode=CallerAuthMode.BOTH, impersonate=True)
    lab, local = await start_lab(control_plane, data_plane, namespace, tmp_path, settings)
    yield lab
    await local.stop()


@pytest.fixture
async def unreachable_lab(
    control_plane: KubeAPIServer, data_plane: KubeAPIServer, namespace: str, tmp_path: Path
) -> AsyncIterator[AuthLab]:
    """A gateway whose control plane (for reviews) does not answer: nothing listens there."""
    port = free_port()
    config = control_plane.kubeconfig()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dead = tmp_path / "dead-control-plane.kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    settings = CallerAuthSettings(mode=CallerAuthMode.BOTH, review_timeout=2)
    plane = plane_ref(namespace, PLANE_NAME)
    local = LocalPlanelink(
        directory=tmp_path / "planelink",
        planes={plane: data_plane.kubeconfig_path},
        caller_auth=settings,
        control_plane=dead,
    )
    await local.start()
    await wait_for(local.wait_connected(plane), 30)
    yield AuthLab(local, control_plane, data_plane, plane, tmp_path)
    await local.stop()
