"""A real etcd + kube-apiserver pair on loopback, for tests and the local run.

`KubeAPIServer` starts a fresh etcd and kube-apiserver on free loopback ports, with certificates
it generates (a CA, a serving certificate, a service-account signing key) and a static admin
token, waits for `/readyz`, and writes a kubeconfig. `stop()` ends both processes and removes
every file it made. The processes are in their own session and are killed by the kernel if this
process dies first (PR_SET_PDEATHSIG), so an aborted test run cannot leave them behind.

Several servers may run at once: each has its own ports, directory and credentials.

Only etcd and the API server run — no controller-manager, scheduler or kubelet — so what those
do never happens here: aggregated ClusterRoles (`view`, `edit`, `admin`) have no rules, no
ServiceAccount is created per namespace, pods are never scheduled, and deleted namespaces stay
Terminating. Tests grant RBAC with Roles of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import certs
from envtest.binaries import KubeBinaries, find_binaries
from envtest.ports import free_port
from kubeobject.kubeconfig import Credentials, build_kubeconfig

ADMIN_USER = "planelink-admin"
ADMIN_GROUPS = ("system:masters",)
_PR_SET_PDEATHSIG = 1
_STOP_GRACE_SECONDS = 10.0
_PORT_ATTEMPTS = 3
HTTP2_MAX_STREAMS_PER_CONNECTION = 250
"""What these API servers advertise as SETTINGS_MAX_CONCURRENT_STREAMS (kube-apiserver's
`--http2-max-streams-per-connection`; 100 when unset): an agent's HTTP/2 pool then holds
10,000 watches on 40 connections, within the 50 docs/install.md advises operators to allow for."""


class ServerFailed(RuntimeError):
    """A process did not start or did not become ready; the message carries its log's tail."""


@dataclass(frozen=True)
class StaticUser:
    """A user the server knows by a static bearer token."""

    token: str
    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerOptions:
    """What may differ between test API servers."""

    name: str = "kube"
    port: int = 0
    """The API server's loopback port (0: a free one; `planelink dev` fixes it for its users)."""
    startup_timeout: float = 90.0
    extra_apiserver_args: tuple[str, ...] = ()
    static_users: tuple[StaticUser, ...] = ()


class KubeAPIServer:
    """A running etcd + kube-apiserver; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        options: ServerOptions | None = None,
        binaries: KubeBinaries | None = None,
    ) -> None:
        self.options = options or ServerOptions()
        self._binaries = binaries
        self._processes: list[subprocess.Popen[bytes]] = []
        self._workdir: Path | None = None
        self.port = 0
        self.admin = Credentials(user=ADMIN_USER, token=secrets.token_urlsafe(32))
        self.ca: certs.CertificateBundle | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> KubeAPIServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._workdir is not None:
            raise RuntimeError("this server was started already")
        binaries = self._binaries or find_binaries()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"planelink-{self.options.name}-"))
        try:
            self._write_credentials()
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                try:
                    self._start_processes(binaries)
                    break
                except _PortTaken:
                    # Another process took a port between our probe and the bind: try new ones.
                    self._stop_processes()
                    if attempt == _PORT_ATTEMPTS:
                        raise
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both processes (apiserver first) and remove every file; safe to call twice."""
        self._stop_processes()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # -- what tests use -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the server is not running")
        return self._workdir

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def admin_token(self) -> str:
        assert self.admin.token is not None
        return self.admin.token

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def issue_user(self, user: str, groups: Sequence[str] = ()) -> Credentials:
        """Client-certificate credentials for `user` in `groups`, signed by the client CA."""
        if self.ca is None:
            raise RuntimeError("the server is not running")
        bundle = certs.issue_client(self.ca, common_name=user, organizations=list(groups))
        return Credentials(
            user=user,
            client_certificate_pem=bundle.certificate_pem(),
            client_key_pem=bundle.private_key_pem(),
        )

    def kubeconfig(self, credentials: Credentials | None = None) -> dict[str, Any]:
        """A kubeconfig (as a dict) for this server, as the admin unless told otherwise."""
        return build_kubeconfig(
            name=self.options.name,
            server=self.url,
            ca_pem=self.ca_file.read_bytes(),
            credentials=credentials or self.admin,
        )

    def write_kubeconfig(self, path: Path, credentials: Credentials | None = None) -> Path:
        path.write_text(yaml.safe_dump(self.kubeconfig(credentials)))
        path.chmod(0o600)
        return path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this server (as the admin unless `kubeconfig` is given)."""
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig_path), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    async def akubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,  # noqa: ASYNC109 - kubectl's own limit, as in `kubectl`
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl` from a coroutine: the event loop goes on serving (a gateway, agents,
        heartbeats) while kubectl runs."""
        return await run_kubectl(
            kubeconfig or self.kubeconfig_path, *args, input=input, check=check, timeout=timeout
        )

    async def watches_served(self, resource: str) -> int:
        """WATCH requests on namespaced `resource` this server is serving now, by its own
        `apiserver_longrunning_requests`. The page is megabytes: it is read line by line, as
        a whole-page parse would hold the caller's event loop still for seconds under load."""
        page = (await self.akubectl("get", "--raw", "/metrics")).stdout
        wanted = ('verb="WATCH"', f'resource="{resource}"', 'scope="namespace"')
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in page.splitlines()
            if line.startswith("apiserver_longrunning_requests{")
            and all(label in line for label in wanted)
        )

    def log_tail(self, component: str, lines: int = 40) -> str:
        path = self.workdir / f"{component}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- internals ----------------------------------------------------------------------------

    def _write_credentials(self) -> None:
        workdir = self.workdir
        self.ca = certs.create_ca(f"planelink-envtest-{self.options.name}")
        serving = certs.issue_server(
            self.ca,
            common_name="kube-apiserver",
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ip_addresses=["127.0.0.1"],
        )
        (workdir / "ca.crt").write_bytes(self.ca.certificate_pem())
        _write_private(workdir / "apiserver.crt", serving.certificate_pem())
        _write_private(workdir / "apiserver.key", serving.private_key_pem())

        signing_key = ec.generate_private_key(ec.SECP256R1())
        _write_private(
            workdir / "sa.key",
            signing_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        (workdir / "sa.pub").write_bytes(
            signing_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

        users = (StaticUser(self.admin_token, ADMIN_USER, ADMIN_GROUPS), *self.options.static_users)
        # The token file's columns: token, user name, uid, "group1,group2".
        lines = [f'{u.token},{u.user},{u.user},"{",".join(u.groups)}"' for u in users]
        _write_private(workdir / "tokens.csv", ("\n".join(lines) + "\n").encode())

    def _start_processes(self, binaries: KubeBinaries) -> None:
        workdir = self.workdir
        etcd_port, self.port = free_port(), self.options.port or free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        data_dir = workdir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                f"--name={self.options.name}",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                # Nobody dials the peer port of a one-member cluster; port 0 avoids a collision.
                "--listen-peer-urls=http://127.0.0.1:0",
                "--unsafe-no-fsync",  # a throw-away store: durability is not wanted, speed is
                "--log-level=warn",
            ],
        )
        self._wait_until_ready("etcd", f"{etcd_url}/health", context=None, token=None)

        self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={workdir / 'cert-dir'}",
                f"--tls-cert-file={workdir / 'apiserver.crt'}",
                f"--tls-private-key-file={workdir / 'apiserver.key'}",
                f"--client-ca-file={workdir / 'ca.crt'}",
                f"--token-auth-file={workdir / 'tokens.csv'}",
                f"--service-account-key-file={workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={workdir / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                # No controller-manager runs, so nothing creates the `default` ServiceAccount
                # that this admission plugin would demand of every pod.
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--profiling=false",
                f"--http2-max-streams-per-connection={HTTP2_MAX_STREAMS_PER_CONNECTION}",
                *self.options.extra_apiserver_args,
            ],
        )
        self._wait_until_ready(
            "kube-apiserver",
            f"{self.url}/readyz",
            context=ssl.create_default_context(cafile=str(workdir / "ca.crt")),
            token=self.admin_token,
        )

    def _spawn(self, component: str, argv: list[str]) -> None:
        log = (self.workdir / f"{component}.log").open("ab")
        with log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - runs only prctl, before exec
            )
        self._processes.append(process)

    def _wait_until_ready(
        self, component: str, url: str, *, context: ssl.SSLContext | None, token: str | None
    ) -> None:
        process = self._processes[-1]
        deadline = time.monotonic() + self.options.startup_timeout
        request = urllib.request.Request(url)  # noqa: S310 - a fixed loopback URL
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        last_error = "no answer yet"
        # Polling is the only signal a starting server gives; the interval is short and bounded.
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = self.log_tail(component)
                if "address already in use" in tail:
                    raise _PortTaken(component)
                raise ServerFailed(
                    f"{component} exited with {process.returncode} while starting:\n{tail}"
                )
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
                    last_error = f"HTTP {answer.status}"
            except (urllib.error.URLError, OSError) as error:
                last_error = str(error)
            time.sleep(0.1)
        raise ServerFailed(
            f"{component} was not ready after {self.options.startup_timeout:.0f} s "
            f"({last_error}):\n{self.log_tail(component)}"
        )

    def _stop_processes(self) -> None:
        while self._processes:
            process = self._processes.pop()  # the apiserver first, then etcd
            _terminate(process)

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.kubeconfig_path)


class _PortTaken(ServerFailed):
    pass


async def run_kubectl(
    kubeconfig: Path,
    *args: str,
    input: str | bytes | None = None,
    check: bool = False,
    timeout: float = 60.0,  # noqa: ASYNC109 - kubectl's own limit, killed when it is reached
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real kubectl with `kubeconfig`, run to its end without blocking the event loop (the
    loop may be serving the gateway and agents kubectl talks to). Raises `TimeoutError` after
    `timeout` seconds (kubectl is killed), and `CalledProcessError` on failure if `check`.
    `env`: kubectl's whole environment (this process's by default)."""
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=None if env is None else dict(env),
    )
    data = input.encode() if isinstance(input, str) else input
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(data)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    done = subprocess.CompletedProcess(
        ["kubectl", *args], process.returncode, out.decode(), err.decode()
    )
    if check:
        done.check_returncode()
    return done


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass; for state no event announces
    (an authorizer's cache, a process becoming ready). Returns the predicate's last answer."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


async def wait_listening(
    port: int, process: subprocess.Popen[bytes], *, within: float, name: str, log: Callable[[], str]
) -> None:
    """Return once 127.0.0.1:`port` accepts a connection. RuntimeError (with `log()`, the last
    lines of its output) if `process`, called `name`, exits first, or after `within` seconds."""

    async def connect() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    await wait_answering(
        connect, process, within=within, name=name, log=log, what=f"not listening on {port}"
    )


async def wait_answering(
    attempt: Callable[[], Awaitable[object]],
    process: subprocess.Popen[bytes],
    *,
    within: float,
    name: str,
    log: Callable[[], str],
    what: str,
) -> None:
    """Return once `attempt()` succeeds (an OSError is a no, tried again). RuntimeError, with
    `log()`, if `process`, called `name`, exits first, or (saying `name` `what`) after
    `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log()}")
        try:
            await attempt()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} {what}:\n{log()}") from None
            await asyncio.sleep(0.05)
        else:
            return


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)


def die_with_parent() -> None:
    """In a child before exec (`preexec_fn`): the kernel kills it if its parent dies first, so
    an aborted run cannot leave servers behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    stop_group(process, grace=_STOP_GRACE_SECONDS)


def start_in_group(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in a process group of its own (so `stop_group` ends it and its children),
    killed with this process if it dies first, its output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
            env=env,
        )


def stop_group(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM `process`'s group, then SIGKILL what is left after `grace` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
