"""docker-compose.yml: checked statically, then run for real with the Docker engine.

The file's structure, images, commands (planelink's own parser, the real kube-apiserver's and
etcd's --help), files, ports, certificate names, start order and health checks are checked
without an engine; `docker compose config -q` (Compose v2, built by deploy/build-compose.sh)
accepts it. Then `docker compose up --wait` runs it on the real engine, with the image the
Dockerfile builds and local stand-ins for the registry images (tests/kit/local_images.py): the
DataPlane becomes Ready, kubectl on this host reaches the data plane through the gateway with
the kubeconfig the compose file writes, the planelink containers run read-only as user 10001
without capabilities, and every health check costs under 1 % of a core.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from envtest import KubeBinaries, free_port
from planelink.cli import build_parser
from tests.kit import dockerfile
from tests.kit.docker_engine import BuiltImage, DockerEngine, docker_cli, install_compose
from tests.kit.waits import kubectl_timeout, scaled

ROOT = Path(__file__).resolve().parents[2]
# On a cold cache the first test also waits for what its fixtures build: Compose v2, the
# Debian rootfs, etcdctl (scripts/test builds those three before pytest) and the image.
pytestmark = pytest.mark.timeout(scaled(1200))
COMPOSE = ROOT / "docker-compose.yml"
STATE = "/var/lib/planelink"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
_URL = re.compile(r"^(?P<scheme>[a-z]+)://(?P<host>[A-Za-z0-9.-]+):(?P<port>\d+)(?P<rest>/.*)?$")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _go_mod_version(module: str) -> str:
    text = (ROOT / "envtest" / "kubebin" / "go.mod").read_text()
    found = re.search(rf"^\s*{re.escape(module)} (v\S+)$", text, re.MULTILINE)
    assert found, module
    return found.group(1)


def _is_planelink(service: dict[str, Any]) -> bool:
    return "build" in service


def _argv(service: dict[str, Any]) -> list[str]:
    """The process a service runs: entrypoint (the image's, for planelink) + command."""
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        assert _is_planelink(service), "only the planelink image's entrypoint is known here"
        entrypoint = dockerfile.entrypoint()
    command = service.get("command", [])
    assert isinstance(entrypoint, list), "entrypoint in exec (list) form"
    assert isinstance(command, list), "command in exec (list) form"
    return [*entrypoint, *command]


def _script_commands(script: str) -> list[list[str]]:
    """The planelink commands of a one-shot shell script, one per line."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if words and words[0] == "planelink":
            commands.append(words)
    return commands


def _parse(argv: list[str]) -> Any:
    assert argv[0] == "planelink", argv
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exit_:  # argparse reports on stderr and exits
        raise AssertionError(f"planelink's parser refuses: {shlex.join(argv)}") from exit_


def _flag_values(argv: list[str]) -> dict[str, str]:
    values = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            values[name] = value
    return values


# -- the planelink commands ----------------------------------------------------------------------


@dataclass
class _Pki:
    """What the pki service's script makes: files, and the names each server cert is for."""

    files: list[str] = field(default_factory=list)
    server_names: dict[str, set[str]] = field(default_factory=dict)  # cert dir -> DNS/IP SANs
    commands: list[Any] = field(default_factory=list)


def _pki() -> _Pki:
    service = _services()["pki"]
    assert service["entrypoint"] == ["/bin/sh", "-ec"]
    (script,) = service["command"]
    other_lines = [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.strip().startswith("planelink ")
    ]
    # Besides planelink: the guard that reuses earlier certificates, and the marker it reads.
    assert other_lines[0].startswith(f"if [ -e {STATE}/.pki-done ]; then")
    assert other_lines[1:] == [f"touch {STATE}/.pki-done"]
    pki = _Pki()
    for argv in _script_commands(script):
        args = _parse(argv)
        pki.commands.append(args)
        # Every input exists by the time the command runs.
        inputs = [getattr(args, name, None) for name in ("ca", "ca_cert", "client_cert")]
        inputs += [getattr(args, "client_key", None)]
        for path in filter(None, inputs):
            where = str(path)
            assert any(f == where or f.startswith(where + "/") for f in pki.files), (
                f"{shlex.join(argv)} reads {where} before anything wrote it"
            )
        if args.command == "certs" and args.certs_command == "init-ca":
            pki.files += [f"{args.out}/ca.crt", f"{args.out}/ca.key"]
        elif args.command == "certs" and args.certs_command.startswith("issue-"):
            assert args.format == "pem"
            pki.files += [f"{args.out}/{name}" for name in ("tls.crt", "tls.key", "ca.crt")]
            if args.certs_command == "issue-server":
                pki.server_names[str(args.out)] = {*args.dns, *args.ip}
        elif args.command == "certs" and args.certs_command == "dataplane-manifest":
            pki.files.append(str(args.out))
        elif args.command == "crd":
            pki.files.append(str(args.output))
        elif args.command == "kubeconfig":
            pki.files.append(str(args.out))
        else:
            raise AssertionError(f"unexpected in the pki script: {shlex.join(argv)}")
        outputs = [str(getattr(args, name, None) or "") for name in ("out", "output")]
        assert any(out.startswith(STATE + "/") for out in outputs), "writes into the volume"
    return pki


def test_every_planelink_command_parses_with_planelinks_own_parser() -> None:
    entrypoint = dockerfile.entrypoint()
    assert entrypoint[0] == "planelink"
    parsed = {}
    for name, service in _services().items():
        if not _is_planelink(service) or name == "pki":
            continue
        parsed[name] = _parse(_argv(service))
    assert parsed["gateway"].command == "gateway"
    assert parsed["gateway"].reconcile is True
    assert parsed["gateway"].log_format == "json"  # from the image's entrypoint
    assert parsed["agent"].command == "agent"
    assert parsed["agent"].plane == "dev/local"
    assert parsed["bootstrap"].command == "apply"
    assert parsed["bootstrap"].create_namespace is True
    assert len(_pki().commands) >= 15


def test_every_file_a_service_reads_is_made_by_the_pki_service_first() -> None:
    pki = _pki()
    for name, service in _services().items():
        if name == "pki":
            continue
        for arg in _argv(service):
            value = arg.split("=", 1)[-1]
            if not value.startswith(STATE + "/"):
                continue
            assert any(f == value or f.startswith(value + "/") for f in pki.files), (
                f"{name} uses {value}, which the pki service does not make"
            )
            assert f"state:{STATE}" in {v.removesuffix(":ro") for v in service["volumes"]}
            assert _waits_for_completion(name, "pki"), f"{name} may start before pki ends"
    # The agent's --tls-dir holds what it reads there.
    agent = _flag_values(_argv(_services()["agent"]))
    for name in ("tls.crt", "tls.key"):
        assert f"{agent['--tls-dir']}/{name}" in pki.files
    # The DataPlane trusts the CA that issued the agent's certificate, for the agent's plane.
    (manifest,) = [
        a for a in pki.commands if getattr(a, "certs_command", "") == "dataplane-manifest"
    ]
    (issued,) = [a for a in pki.commands if getattr(a, "certs_command", "") == "issue-agent"]
    assert str(manifest.ca_cert) == f"{issued.ca}/ca.crt"
    assert str(manifest.plane) == str(issued.plane) == agent["--plane"]
    assert str(issued.out) == agent["--tls-dir"]


def _waits_for_completion(name: str, one_shot: str) -> bool:
    """Whether `name` starts only after `one_shot` has completed (directly or through others)."""
    for dependency, spec in _services()[name].get("depends_on", {}).items():
        if dependency == one_shot:
            return bool(spec["condition"] == "service_completed_successfully")
        if _waits_for_completion(dependency, one_shot):
            return True
    return False


def test_images_are_the_pinned_versions_or_the_repositorys_dockerfile() -> None:
    compose = _compose()
    assert set(compose) <= {"name", "services", "volumes", "networks"} | {
        key for key in compose if key.startswith("x-")
    }
    apiserver = f"registry.k8s.io/kube-apiserver:{_go_mod_version('k8s.io/kubernetes')}"
    etcd = f"registry.k8s.io/etcd:{_go_mod_version('go.etcd.io/etcd/server/v3')[1:]}-0"
    assert apiserver == "registry.k8s.io/kube-apiserver:v1.32.4"
    assert etcd == "registry.k8s.io/etcd:3.5.16-0"
    kinds = {}
    for name, service in _services().items():
        if _is_planelink(service):
            assert service["build"] == "."
            assert (ROOT / service["build"] / "Dockerfile").is_file()
            assert service["user"] == "10001"
            kinds[name] = "planelink"
        else:
            assert service["image"] in {apiserver, etcd}, name
            kinds[name] = service["image"].split("/")[1].split(":")[0]
    assert sorted(kinds.values()) == sorted(
        ["planelink"] * 4 + ["kube-apiserver"] * 2 + ["etcd"] * 2
    )


def _help_flags(binary: Path) -> set[str]:
    shown = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=False)
    flags = set(re.findall(r"^\s+--([a-z0-9-]+)", shown.stdout + shown.stderr, re.MULTILINE))
    assert len(flags) > 30, f"{binary} --help listed too few flags"
    return flags


def test_every_apiserver_and_etcd_flag_exists_in_the_real_binaries(
    kube_binaries: KubeBinaries,
) -> None:
    known = {
        "kube-apiserver": _help_flags(kube_binaries.kube_apiserver),
        "etcd": _help_flags(kube_binaries.etcd),
    }
    checked = 0
    for name, service in _services().items():
        if _is_planelink(service):
            continue
        program, *args = _argv(service)
        assert program in known, name
        for arg in args:
            assert arg.startswith("--"), f"{name}: {arg} is not a flag"
            assert "=" in arg, f"{name}: {arg} is not --flag=value"
            flag = arg[2:].split("=", 1)[0]
            assert flag in known[program], f"{name}: {program} has no --{flag}"
            checked += 1
    assert checked >= 30


def _listening(name: str, service: dict[str, Any]) -> set[int]:
    """The ports a service's process listens on, from its own flags."""
    flags = _flag_values(_argv(service))
    ports = set()
    for flag, value in flags.items():
        if flag.endswith("-port"):
            ports.add(int(value))
        elif flag in ("--listen-client-urls", "--health-address"):
            ports.add(int(value.rsplit(":", 1)[1]))
    assert ports, f"{name} listens nowhere"
    return ports


def test_ports_are_consistent_and_clients_dial_names_their_servers_certificates_carry() -> None:
    services = _services()
    pki = _pki()
    published: dict[int, tuple[str, int]] = {}
    for name, service in services.items():
        if name in ("pki", "bootstrap"):
            assert "ports" not in service
            assert "expose" not in service
            continue
        listening = _listening(name, service)
        for port in service.get("expose", []):
            assert int(port) in listening, f"{name} exposes {port} but listens on {listening}"
        for mapping in service.get("ports", []):
            host, host_port, container_port = mapping.split(":")
            assert host == "127.0.0.1", "published on loopback only"
            assert int(container_port) in listening, f"{name} publishes {container_port}"
            assert int(host_port) not in published, f"host port {host_port} used twice"
            published[int(host_port)] = (name, int(container_port))
    assert "ports" not in services["data-plane"], "the data plane is reached through the agent"
    assert {name for name, _ in published.values()} == {"gateway", "control-plane"}

    def certificate_of(server: str) -> set[str]:
        flags = _flag_values(_argv(services[server]))
        cert = flags.get("--tls-cert") or flags["--tls-cert-file"]
        return pki.server_names[cert.rsplit("/", 1)[0]]

    # Every URL any service uses names a service (or a published port) that listens there,
    # and - with TLS - whose certificate carries the name dialled.
    urls = [arg.split("=", 1)[-1] for service in services.values() for arg in _argv(service)] + [
        args.server for args in pki.commands if args.command == "kubeconfig"
    ]
    dialled = 0
    for url in urls:
        found = _URL.match(url)
        anywhere = {"0.0.0.0", "localhost"}  # noqa: S104 - listen addresses, not a bind
        if not found or found["host"] in anywhere or found["port"] == "0":
            continue
        host, port = found["host"], int(found["port"])
        if host == "127.0.0.1":
            assert port in published, f"{url}: nothing is published on {port}"
            server, port = published[port]
        else:
            server = host
            assert server in services, f"{url}: no service {server}"
            assert port in _listening(server, services[server]), f"{url}: {server} not on {port}"
        if found["scheme"] in ("https", "wss"):
            assert host in certificate_of(server), f"{url}: {server}'s certificate lacks {host}"
        dialled += 1
    assert dialled >= 7


def test_start_order_is_a_dag_with_completion_conditions_for_one_shot_services() -> None:
    services = _services()
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"pki", "bootstrap"}
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            assert condition in CONDITIONS
            if dependency in one_shot:
                assert condition == "service_completed_successfully", (name, dependency)
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
    order = _start_order(services)
    assert order.index("bootstrap") < order.index("gateway") < order.index("agent")
    for name in ("control-plane", "data-plane"):
        assert services[name]["depends_on"][f"{name}-etcd"]["condition"] == "service_healthy"
    for name, service in services.items():
        if name not in one_shot:
            assert "healthcheck" in service or name in ("control-plane", "data-plane"), name
            assert service.get("restart") in (None, "unless-stopped")


def _start_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """Kahn's algorithm; fails on a cycle."""
    waiting = {name: set(s.get("depends_on", {})) for name, s in services.items()}
    order: list[str] = []
    while waiting:
        ready = sorted(name for name, deps in waiting.items() if deps <= set(order))
        assert ready, f"depends_on has a cycle among {sorted(waiting)}"
        for name in ready:
            order.append(name)
            del waiting[name]
    return order


def test_volumes_are_declared_and_docker_compose_accepts_the_file() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
            assert target.startswith("/")
    assert used == declared
    # Compose v2 accepts it.
    install_compose()
    checked = subprocess.run(
        [docker_cli(), "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def _seconds(duration: str) -> float:
    found = re.fullmatch(r"(\d+)(s|m)", duration)
    assert found, f"a duration in whole seconds or minutes: {duration}"
    return int(found[1]) * (60 if found[2] == "m" else 1)


def test_health_checks_are_cheap_commands_at_sensible_intervals() -> None:
    services = _services()
    checked = set()
    for name, service in services.items():
        check = service.get("healthcheck")
        if check is None:
            continue
        test = check["test"]
        assert test[0] == "CMD", "exec form: no shell is started around the check"
        # No Python starts per check: `planelink status` cost 300 ms of CPU, every 2 s.
        assert test[1] in ("bash", "etcdctl"), f"{name}: {test[1]}"
        if test[1] == "bash":
            port = int(test[-1])
            assert port in _listening(name, service), f"{name} checks {port}"
            assert "/dev/tcp/127.0.0.1/$$1" in test[3]
            assert "GET /readyz " in test[3]
        # One `docker exec` costs about 45 ms of CPU: every 10 s is under 1 % of a core.
        assert _seconds(check["interval"]) >= 10, name
        assert _seconds(check["timeout"]) < _seconds(check["interval"])
        assert _seconds(check["start_period"]) >= 60, "a slow first start is not a failure"
        checked.add(name)
    assert checked == {"control-plane-etcd", "data-plane-etcd", "gateway", "agent"}


def test_the_usage_in_the_header_names_what_the_services_make() -> None:
    header = [
        line.removeprefix("#").strip()
        for line in COMPOSE.read_text().splitlines()
        if line.startswith("#   ")
    ]
    copied = next(line for line in header if "docker compose cp" in line)
    source, destination = shlex.split(copied.split("&&")[1])[-2:]
    service, folder = source.split(":")
    assert service in _services()
    assert folder.endswith("/.")
    made = _pki().files
    kubeconfigs = [w for line in header for w in line.split() if w.endswith(".kubeconfig")]
    assert len(kubeconfigs) == 2
    for path in kubeconfigs:
        assert path.startswith(destination + "/")
        assert folder.removesuffix(".") + path.removeprefix(destination + "/") in made
    status = _parse(shlex.split(next(line for line in header if "planelink status" in line)))
    port = urlsplit(status.gateway).port
    assert (
        f"127.0.0.1:{port}:{_parse(_argv(_services()['gateway'])).operator_port}"
        in (_services()["gateway"]["ports"])
    )


# -- the real run ----------------------------------------------------------------------------


@dataclass
class _Project:
    """One `docker compose up` of docker-compose.yml under a project name of its own, with the
    published ports moved to free ones (an override file) so that it runs beside anything."""

    engine: DockerEngine
    name: str
    folder: Path
    caller_port: int = field(default_factory=free_port)
    operator_port: int = field(default_factory=free_port)
    control_plane_port: int = field(default_factory=free_port)
    up_seconds: float = 0.0

    @property
    def override(self) -> Path:
        return self.folder / "ports.override.yml"

    def write_override(self) -> None:
        self.override.write_text(
            "services:\n"
            "  gateway:\n"
            "    ports: !override\n"
            f'      - "127.0.0.1:{self.caller_port}:6443"\n'
            f'      - "127.0.0.1:{self.operator_port}:8081"\n'
            "  control-plane:\n"
            "    ports: !override\n"
            f'      - "127.0.0.1:{self.control_plane_port}:6443"\n'
        )

    def compose(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        files = ("-f", str(COMPOSE), "-f", str(self.override))
        return self.engine.run(
            "compose", "-p", self.name, *files, *args, timeout=timeout, check=check
        )

    def logs(self) -> str:
        shown = self.compose("logs", "--no-color", "--tail", "40", check=False)
        return shown.stdout[-6000:] + shown.stderr[-2000:]

    def container(self, service: str) -> str:
        (found,) = self.compose("ps", "--all", "-q", service).stdout.split()
        return found

    def kubectl(self, kubeconfig: str, server: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The real kubectl on this host, with a kubeconfig the pki service wrote for the host
        (its server moved to the published port)."""
        return subprocess.run(
            [
                "kubectl", "--kubeconfig", str(self.folder / "host" / kubeconfig),
                f"--server={server}", *args, f"--request-timeout={kubectl_timeout(20)}",
            ],
            capture_output=True, text=True, check=False, timeout=scaled(120),
        )  # fmt: skip


@pytest.fixture(scope="module")
def compose_project(
    docker_compose: DockerEngine,
    planelink_image: BuiltImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[_Project]:
    project = _Project(
        engine=docker_compose,
        name=f"planelink-test-{uuid.uuid4().hex[:10]}",
        folder=tmp_path_factory.mktemp("compose"),
    )
    project.write_override()
    try:
        started = time.monotonic()
        # As the header says: `up --wait`. The image exists (planelink_image built it from the
        # same Dockerfile), so Compose does not build it again.
        up = project.compose(
            "up", "--detach", "--wait", f"--wait-timeout={round(scaled(300))}",
            timeout=scaled(360), check=False,
        )  # fmt: skip
        project.up_seconds = time.monotonic() - started
        assert up.returncode == 0, f"{up.stderr[-3000:]}\n{project.logs()}"
        # What the header of docker-compose.yml tells the reader to do.
        project.compose("cp", "gateway:/var/lib/planelink/host/.", str(project.folder / "host"))
        yield project
    finally:
        project.compose("down", "--volumes", "--remove-orphans", "--timeout=10", check=False)


def test_compose_up_waits_until_the_dataplane_is_ready_and_kubectl_reaches_it(
    compose_project: _Project,
) -> None:
    project = compose_project
    control = f"https://127.0.0.1:{project.control_plane_port}"
    through = f"https://127.0.0.1:{project.caller_port}/planes/dev/local/k8s"
    wide = project.kubectl(
        "control-plane.kubeconfig", control, "get", "dataplanes", "-A", "-o", "wide"
    )
    assert re.search(r"^dev\s+local\s+True\s+True\s+True\s+true\s+Ready", wide.stdout, re.M), (
        wide.stdout + wide.stderr + project.logs()
    )
    listed = project.kubectl("dev.local.kubeconfig", through, "get", "ns", "-o", "name")
    assert listed.returncode == 0, listed.stderr + project.logs()
    assert "namespace/kube-system" in listed.stdout.split()
    created = project.kubectl("dev.local.kubeconfig", through, "create", "configmap", "via-compose")
    assert created.returncode == 0, created.stderr
    # It landed in the data plane's etcd, not in the control plane's.
    key = "/registry/configmaps/default/via-compose"
    for etcd, holds in (("data-plane-etcd", True), ("control-plane-etcd", False)):
        found = project.compose("exec", "-T", etcd, "etcdctl", "get", key, "--keys-only")
        assert (key in found.stdout) is holds, (etcd, found.stdout)
    status = subprocess.run(
        [
            sys.executable, "-m", "planelink", "status",
            "--gateway", f"http://127.0.0.1:{project.operator_port}",
        ],
        capture_output=True, text=True, check=False, timeout=scaled(60),
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert re.search(r"^dev/local\s+agent\s+1\s", status.stdout, re.M), status.stdout
    print(f"\ndocker compose up --wait: {project.up_seconds:.1f} s")


def test_the_planelink_containers_run_read_only_as_10001_without_capabilities(
    compose_project: _Project,
) -> None:
    for service in ("pki", "bootstrap", "gateway", "agent"):
        inspected = compose_project.engine.inspect("container", compose_project.container(service))
        config: dict[str, Any] = inspected["Config"]  # type: ignore[assignment]
        host: dict[str, Any] = inspected["HostConfig"]  # type: ignore[assignment]
        assert config["User"] == "10001", service
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
    for service in ("gateway", "agent"):
        status = compose_project.compose("exec", "-T", service, "cat", "/proc/1/status").stdout
        fields = dict(line.split(":", 1) for line in status.splitlines())
        assert fields["Uid"].split()[:2] == ["10001", "10001"]
        assert int(fields["CapEff"].strip(), 16) == 0


def _cgroup_cpu_seconds(pid: int) -> float:
    """CPU time used so far by the cgroup of process `pid` (a container's), v1 or v2."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            for mount in ("cpu,cpuacct", "cpuacct"):
                usage = Path(f"/sys/fs/cgroup/{mount}{path}/cpuacct.usage")
                if usage.exists():
                    return int(usage.read_text()) / 1e9
        if controllers == "" and line.startswith("0::"):
            stat = Path(f"/sys/fs/cgroup{path}/cpu.stat").read_text()
            return int(re.search(r"^usage_usec (\d+)$", stat, re.M)[1]) / 1e6  # type: ignore[index]
    raise AssertionError(f"no cpu accounting for pid {pid}")


def test_every_health_check_costs_under_one_percent_of_a_core(compose_project: _Project) -> None:
    """Each check as Docker runs it (`docker exec` of its command), ten times: the CPU time the
    container's cgroup spent (exec set-up, the command, and the server's answer), per interval."""
    runs = 10
    figures = []
    for name, service in _services().items():
        check = service.get("healthcheck")
        if check is None:
            continue
        container = compose_project.container(name)
        state: dict[str, Any] = compose_project.engine.inspect("container", container)["State"]  # type: ignore[assignment]
        assert state["Health"]["Status"] == "healthy", (name, state["Health"]["Log"][-1:])
        command = [arg.replace("$$", "$") for arg in check["test"][1:]]
        before = _cgroup_cpu_seconds(state["Pid"])
        for _ in range(runs):
            compose_project.engine.run("exec", container, *command)
        per_check = (_cgroup_cpu_seconds(state["Pid"]) - before) / runs
        share = per_check / _seconds(check["interval"])
        figures.append(f"{name}: {per_check * 1000:.1f} ms per check, {share:.2%} of a core")
        assert share < scaled(0.01), figures[-1]
    assert len(figures) == 4
    print("\nhealth checks: " + "; ".join(figures))


def test_a_second_pki_run_reuses_the_certificates(compose_project: _Project) -> None:
    listing = ("find /var/lib/planelink -type f ! -path '*/host/*' -exec sha256sum {} + | sort",)
    shell = ("run", "--rm", "--no-deps", "--entrypoint", "/bin/sh", "pki", "-c")
    before = compose_project.compose(*shell, *listing).stdout
    again = compose_project.compose("run", "--rm", "--no-deps", "pki")
    assert "reusing the certificates" in again.stdout
    assert compose_project.compose(*shell, *listing).stdout == before
    assert before.count("\n") >= 20
