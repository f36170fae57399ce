"""docs/install.md stays true: its commands parse, its Helm values exist, and following it
against real API servers - certificates, Secrets, CRD, charts, DataPlane - gives a Ready
DataPlane, with the gateway and the agent run as the rendered Deployments would run them.

The guide's `sh` blocks are run in order, as written, with kubeconfig contexts `control-plane`
(the session's control plane) and `data-plane` (a server of its own). What needs a cluster
that runs pods is done here instead: each `helm upgrade --install` is also rendered with
`helm template` and dry-run on the server, and its Deployment is started as a local process -
the container's args after the image's entrypoint, its environment, the files of the Secrets it
mounts (read back from the cluster), its service account's token; ports are moved to free
loopback ports and the gateway's host name resolves to loopback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import pytest
import yaml

import certs
from crd import dataplane_manifest
from envtest import KubeAPIServer, build_kubeconfig, die_with_parent, free_port, wait_until
from planelink.cli import build_parser
from tests.kit.dockerfile import entrypoint
from tests.kit.waits import kubectl_timeout, scaled

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "install.md"
CHARTS = ROOT / "deploy" / "charts"
CONTEXTS = ("control-plane", "data-plane")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(*languages: str) -> list[tuple[str, str]]:
    return [
        (lang, body)
        for lang, body in _FENCE.findall(GUIDE.read_text())
        if not languages or lang in languages
    ]


def _commands(body: str) -> list[str]:
    joined = body.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _planelink_commands() -> list[list[str]]:
    """Every `planelink …` in the guide: fenced blocks (pipelines split) and inline spans
    with options (a span without is a name, like `planelink certs init-ca`)."""
    found = []
    for _, body in _blocks("sh", "text"):
        for command in _commands(body):
            for part in command.rstrip("&").split("|"):
                words = shlex.split(part)
                if words and words[0] == "planelink":
                    found.append(words)
    prose = _FENCE.sub("", GUIDE.read_text())
    for span in re.findall(r"`([^`]+)`", prose):
        words = shlex.split(" ".join(span.split()))
        if words[:1] == ["planelink"] and any(w.startswith("--") for w in words):
            found.append(words)
    return found


def _parse(words: list[str]) -> Any:
    try:
        return build_parser().parse_args(words[1:])
    except SystemExit as exit_:
        raise AssertionError(f"planelink's parser refuses: {shlex.join(words)}") from exit_


def test_every_planelink_command_in_the_guide_parses() -> None:
    commands = _planelink_commands()
    parsed = [_parse(words) for words in commands]
    used = {(a.command, getattr(a, "certs_command", None)) for a in parsed}
    assert used >= {
        ("certs", "init-ca"),
        ("certs", "issue-server"),
        ("certs", "issue-agent"),
        ("certs", "issue-caller"),
        ("certs", "dataplane-manifest"),
        ("certs", "inspect"),
        ("certs", "check-expiry"),
        ("status", None),
        ("kubeconfig", None),
        ("crd", None),
    }


def _values(chart: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    return loaded


def _has_key(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@dataclass
class _Helm:
    release: str
    chart: str
    context: str
    namespace: str
    sets: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, words: list[str]) -> _Helm:
        assert words[:3] == ["helm", "upgrade", "--install"], words
        release, chart, *options = words[3:]
        values: dict[str, str] = {}
        sets = []
        while options:
            option, value, *options = options
            if option == "--set":
                sets.append(value)
            else:
                values[option] = value
        assert set(values) == {"--kube-context", "--namespace"}, values
        return cls(release, chart, values["--kube-context"], values["--namespace"], sets)

    @property
    def chart_name(self) -> str:
        assert self.chart.startswith("deploy/charts/")
        return self.chart.removeprefix("deploy/charts/")


def _helm_commands() -> list[_Helm]:
    return [
        _Helm.parse(shlex.split(command))
        for _, body in _blocks("sh")
        for command in _commands(body)
        if command.startswith("helm ")
    ]


def test_every_helm_value_the_guide_sets_is_in_the_charts_values() -> None:
    helms = _helm_commands()
    assert [h.chart_name for h in helms] == ["planelink-gateway", "planelink-agent"]
    for helm in helms:
        values = _values(helm.chart_name)
        for assignment in helm.sets:
            key = assignment.split("=", 1)[0]
            assert _has_key(values, key), f"{helm.chart_name} has no value {key}"
    # Values named in the prose exist in one of the charts.
    both = [_values("planelink-gateway"), _values("planelink-agent")]
    prose = _FENCE.sub("", GUIDE.read_text())
    named = set(re.findall(r"--set ([A-Za-z.]+)=", prose))
    # A dotted name in backticks whose first part is a chart's top-level value is a value
    # (`callers.auth`, `rbac.rules=...`); others are files and fields (`ca.crt`, `spec.agent`).
    top = {key for values in both for key in values}
    spans = re.findall(r"`([a-z][A-Za-z]*\.[a-z][A-Za-z.]*)(?:=[^`]*)?`", prose)
    named |= {span for span in spans if span.split(".")[0] in top}
    named -= {"tls.crt", "tls.key"}  # the Secret's files, in "tls.crt and tls.key"
    assert {"rbac.clusterAdmin", "gatewayCA.secretName", "callers.auth", "rbac.rules"} <= named
    for key in named:
        assert any(_has_key(values, key) for values in both), f"no chart has a value {key}"


def _reasons_in_source() -> set[str]:
    text = "".join(p.read_text() for p in (ROOT / "gateway" / "reconciler").glob("*.py"))
    patterns = [
        r'_Unresolved\(\s*"([A-Z]\w+)"',
        r'Problem\(\s*"([A-Z]\w+)"',
        r'Verdict\(\s*"(?:True|False|Unknown)",\s*"([A-Z]\w+)"',
        r'ProbeResult\(\s*[^,]+,\s*"([A-Z]\w+)"',
        r'not_probed\(\s*"([A-Z]\w+)"',
        r'\d{3}: "([A-Z]\w+)"',
        r'get\(status, "([A-Z]\w+)"\)',
    ]
    return {reason for pattern in patterns for reason in re.findall(pattern, text)}


def _table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table whose header row starts with `heading`."""
    lines = GUIDE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {heading} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_troubleshooting_tables_name_every_reason_there_is() -> None:
    in_source = _reasons_in_source()
    positive = {"Ready", "AgentConnected", "Provisioned", "ProbeSucceeded"}
    assert len(in_source) > 15
    documented = {r for row in _table("reason") for r in re.findall(r"`(\w+)`", row[0])}
    assert documented == in_source - positive
    # The agent port's refusals: the listener's, and the TLS handshake's (its acceptor).
    refusals = {
        reason
        for module in ("agent_listener.py", "acceptor.py")
        for reason in re.findall(r'"([A-Z][a-zA-Z]+)"', (ROOT / "gateway" / module).read_text())
    }
    refusals |= {reason.value for reason in certs.RejectionReason}
    for row in _table("refusal reason"):
        for reason in re.findall(r"`(\w+)`", row[0]):
            assert reason in refusals, reason


def test_the_yaml_examples_are_what_the_tools_make(tmp_path: Path) -> None:
    dataplane_example, cert_manager = [yaml.safe_load_all(b) for _, b in _blocks("yaml")]
    example = list(dataplane_example)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(certs.create_ca("agents").certificate_pem())
    made = dataplane_manifest(
        plane=certs.plane_ref("my-org", "prod"),
        client_ca=certs.ca_certificate_secret(
            ca.read_bytes(), name="prod-agent-ca", namespace="my-org"
        ),
        public_virtual_host="api.example.com",
        organization_virtual_host="internal.example.com",
    )
    made[0]["data"]["ca.crt"] = example[0]["data"]["ca.crt"]
    assert example == made
    issuer, certificate = list(cert_manager)
    agent_values = _values("planelink-agent")
    assert certificate["spec"]["secretName"] == agent_values["tls"]["secretName"]
    assert certificate["metadata"]["namespace"] == certs.AGENT_SECRET_NAMESPACE
    assert certificate["spec"]["uris"] == [certs.plane_uri(certs.plane_ref("my-org", "prod"))]
    assert certificate["spec"]["commonName"] == "my-org/prod"
    assert "client auth" in certificate["spec"]["usages"]
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]


# -- following the guide -------------------------------------------------------------------------


class _Follower:
    """Runs the guide's commands in a work folder against the two API servers."""

    def __init__(
        self, work: Path, servers: dict[str, KubeAPIServer], helm: Path, logs: Path
    ) -> None:
        self.work = work
        self.servers = servers
        self.helm = helm
        self.logs = logs
        (work / "deploy").symlink_to(ROOT / "deploy")
        kubeconfig: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
        for key in ("clusters", "users", "contexts"):
            kubeconfig[key] = []
        for context, server in servers.items():
            one = build_kubeconfig(
                name=context,
                server=server.url,
                ca_pem=server.ca_file.read_bytes(),
                credentials=server.admin,
            )
            one["users"][0]["name"] = f"{context}-admin"
            one["contexts"][0]["context"]["user"] = f"{context}-admin"
            for key in ("clusters", "users", "contexts"):
                kubeconfig[key] += one[key]
        kubeconfig["current-context"] = "control-plane"
        self.kubeconfig = work.parent / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig))
        self.env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": os.pathsep.join(
                [str(Path(sys.executable).parent), str(helm.parent), os.environ["PATH"]]
            ),
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_files: list[TextIO] = []
        self.ports: dict[str, int] = {}
        self.rendered: dict[str, list[dict[str, Any]]] = {}
        self.skipped: list[str] = []

    def run(self, words: list[str], *, input: str | None = None) -> str:
        done = subprocess.run(
            words,
            cwd=self.work,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=scaled(180),
        )
        assert done.returncode == 0, f"{shlex.join(words)}:\n{done.stderr}\n{self.log_tails()}"
        return done.stdout

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2500:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    # -- helm --------------------------------------------------------------------------------

    def helm_install(self, words: list[str]) -> None:
        helm = _Helm.parse(words)
        rendered = self.run(
            [str(self.helm), "template", helm.release, helm.chart, "--namespace", helm.namespace]
            + [arg for value in helm.sets for arg in ("--set", value)]
        )
        docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
        applied = self.run(
            [
                "kubectl",
                "--context",
                helm.context,
                "apply",
                "--dry-run=server",
                "-n",
                helm.namespace,
                "-f",
                "-",
            ],
            input=yaml.safe_dump_all(docs),
        )
        assert applied.count("(server dry run)") == len(docs)
        self.run(words)  # as written: a real install (its pods never run here)
        self.rendered[helm.chart_name] = docs
        (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
        if helm.chart_name == "planelink-gateway":
            self.start_gateway(deployment, helm)
        else:
            self.start_agent(deployment, helm)

    def _container(
        self, deployment: dict[str, Any], helm: _Helm
    ) -> tuple[list[str], dict[str, str]]:
        """argv and environment of the Deployment's container, its Secret volumes as files."""
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts: dict[str, Path] = {}
        for mount in container["volumeMounts"]:
            secret = volumes[mount["name"]]["secret"]
            stored = json.loads(
                self.run(
                    [
                        "kubectl",
                        "--context",
                        helm.context,
                        "-n",
                        helm.namespace,
                        "get",
                        "secret",
                        secret["secretName"],
                        "-o",
                        "json",
                    ]
                )
            )
            local = self.work.parent / "mounts" / helm.release / mount["mountPath"].lstrip("/")
            local.mkdir(parents=True)
            items = secret.get("items") or [{"key": k, "path": k} for k in stored["data"]]
            for item in items:
                (local / item["path"]).write_bytes(base64.b64decode(stored["data"][item["key"]]))
            mounts[mount["mountPath"]] = local
        fields = {
            "metadata.name": f"{deployment['metadata']['name']}-local",
            "metadata.namespace": helm.namespace,
            "status.podIP": "127.0.0.1",
        }
        env = {}
        for item in container["env"]:
            value = item.get("value")
            if value is None:
                value = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
            for mount_path, local in mounts.items():
                if value.startswith(mount_path + "/") or value == mount_path:
                    value = str(local) + value.removeprefix(mount_path)
            env[item["name"]] = value
        argv = [*entrypoint(), *container["args"]]
        assert argv[0] == "planelink"
        return [sys.executable, "-m", "planelink", *argv[1:]], env

    def _token(self, helm: _Helm, service_account: str) -> Path:
        token = self.run(
            [
                "kubectl",
                "--context",
                helm.context,
                "-n",
                helm.namespace,
                "create",
                "token",
                service_account,
                "--duration=1h",
            ]
        )
        path = self.work.parent / f"{service_account}.token"
        path.write_text(token.strip())
        return path

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("w")
        self.log_files.append(log)
        self.processes.append(
            subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
            )
        )

    def start_gateway(self, deployment: dict[str, Any], helm: _Helm) -> None:
        argv, env = self._container(deployment, helm)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        for port in container["ports"]:  # what the Service targets is what it listens on
            variable = f"PLANELINK_GATEWAY_{port['name'].removesuffix('s').upper()}_PORT"
            assert env[variable] == str(port["containerPort"])
            self.ports[port["name"]] = free_port()
            env[variable] = str(self.ports[port["name"]])
        env["PLANELINK_GATEWAY_BIND"] = "127.0.0.1"  # its default: every interface
        # In the cluster it reads the control plane with its service account: so here too.
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        server = self.servers[helm.context]
        kubeconfig = self.work.parent / "gateway.kubeconfig"
        self.run(
            [
                "planelink",
                "kubeconfig",
                "--server",
                server.url,
                "--ca-cert",
                str(server.ca_file),
                "--token-file",
                str(self._token(helm, account)),
                "--out",
                str(kubeconfig),
            ]
        )
        env["PLANELINK_GATEWAY_KUBECONFIG"] = str(kubeconfig)
        self._spawn("gateway", argv, env)
        readyz = f"http://127.0.0.1:{self.ports['operator']}/readyz"

        def ready() -> bool:
            assert self.processes[-1].poll() is None, self.log_tails()
            try:
                with urllib.request.urlopen(readyz, timeout=scaled(2)) as answer:
                    return bool(answer.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        assert wait_until(ready, timeout=scaled(60), interval=0.2), self.log_tails()

    def start_agent(self, deployment: dict[str, Any], helm: _Helm) -> None:
        argv, env = self._container(deployment, helm)
        url = urlsplit(env["PLANELINK_GATEWAY_URL"])
        assert url.port == deployment_port(self.rendered["planelink-gateway"], "agents")
        # The gateway's name, as the agent dials it, resolves to loopback; the port is moved.
        env["PLANELINK_GATEWAY_URL"] = f"wss://{url.hostname}:{self.ports['agents']}"
        hosts = self.work.parent / "hosts"
        hosts.mkdir()
        (hosts / "sitecustomize.py").write_text(
            "import socket\n"
            "_real = socket.getaddrinfo\n"
            "def _getaddrinfo(host, *args, **kwargs):\n"
            f"    if host == {url.hostname!r}:\n"
            "        host = '127.0.0.1'\n"
            "    return _real(host, *args, **kwargs)\n"
            "socket.getaddrinfo = _getaddrinfo\n"
        )
        env["PYTHONPATH"] = str(hosts)
        assert env["PLANELINK_HEALTH_ADDRESS"] == ":8080"
        env["PLANELINK_HEALTH_ADDRESS"] = f"127.0.0.1:{free_port()}"
        # In the pod: the service account's token and the cluster's CA, and the Service's address.
        server = self.servers[helm.context]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        root = self.work.parent / "serviceaccount"
        root.mkdir()
        (root / "token").write_text(self._token(helm, account).read_text())
        (root / "ca.crt").write_bytes(server.ca_file.read_bytes())
        env["PLANELINK_IN_CLUSTER_ROOT"] = str(root)
        env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
        env["KUBERNETES_SERVICE_PORT"] = str(server.port)
        self._spawn("agent", argv, env)

    # -- the rest ----------------------------------------------------------------------------

    def follow(self, command: str) -> str | None:
        words = shlex.split(command.rstrip("&"))
        if words[0] == "docker" or "port-forward" in words:
            self.skipped.append(words[0] if words[0] == "docker" else "port-forward")
            return None
        if words[0] == "helm":
            self.helm_install(words)
            return None
        if words[:2] == ["planelink", "status"]:
            assert words[2:4] == ["--gateway", "http://127.0.0.1:8081"]
            words[3] = f"http://127.0.0.1:{self.ports['operator']}"
        elif words[0] == "kubectl" and words[1] == "--kubeconfig":
            # A caller's kubeconfig names the gateway's public address: dial it here instead.
            config = yaml.safe_load((self.work / words[2]).read_text())
            public = urlsplit(config["clusters"][0]["cluster"]["server"])
            local = public._replace(netloc=f"127.0.0.1:{self.ports['callers']}").geturl()
            words += [f"--server={local}", f"--tls-server-name={public.hostname}"]
        return self.run(words)

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in self.log_files:
            log.close()


def deployment_port(docs: list[dict[str, Any]], name: str) -> int:
    ports = [p for d in docs if d["kind"] == "Service" for p in d["spec"]["ports"]]
    (port,) = [p for p in ports if p["name"] == name]
    number: int = port["port"]
    return number


@pytest.fixture
def follower(
    control_plane: KubeAPIServer,
    kube_servers: Any,
    helm: Path,
    tmp_path: Path,
) -> Iterator[_Follower]:
    servers = {"control-plane": control_plane, "data-plane": kube_servers("install-guide")}
    (tmp_path / "work").mkdir()
    (tmp_path / "logs").mkdir()
    follower = _Follower(tmp_path / "work", servers, helm, tmp_path / "logs")
    try:
        yield follower
    finally:
        follower.stop()
        # Leave the shared control plane as other tests expect it: no DataPlane of ours.
        control_plane.kubectl("delete", "dataplane", "prod", "-n", "my-org", check=False)
        for release, context, namespace in (
            ("planelink-gateway", "control-plane", "openchoreo-control-plane"),
            ("planelink-agent", "data-plane", "openchoreo-data-plane"),
        ):
            subprocess.run(
                [
                    str(helm),
                    "uninstall",
                    release,
                    "--kube-context",
                    context,
                    "--namespace",
                    namespace,
                ],
                env=follower.env,
                capture_output=True,
                check=False,
            )


def _console_after(command: str) -> list[str]:
    """The lines of the `console` block that follows the `sh` block holding `command`."""
    blocks = _blocks()
    for index, (lang, body) in enumerate(blocks):
        if lang == "sh" and command in _commands(body):
            following_lang, following = blocks[index + 1]
            assert following_lang == "console"
            return following.splitlines()
    raise AssertionError(command)


def test_following_the_guide_gives_a_ready_dataplane(follower: _Follower) -> None:
    outputs = {}
    for _, body in _blocks("sh"):
        for command in _commands(body):
            outputs[command] = follower.follow(command)
    assert sorted(set(follower.skipped)) == ["docker", "port-forward"]

    # The DataPlane is Ready, and the guide's sample output has the real columns.
    wide = next(c for c in outputs if "get dataplanes -o wide" in c)
    shown = (outputs[wide] or "").splitlines()
    expected = _console_after(wide)
    assert shown[0].split() == expected[0].split()
    assert shown[1].split()[:-1] == expected[1].split()[:-1]  # all but AGE
    # planelink status lists the plane, connected.
    status = next(c for c in outputs if c.startswith("planelink status"))
    shown = (outputs[status] or "").splitlines()
    expected = _console_after(status)
    assert shown[0].split() == expected[0].split()
    plane, mode, agents = shown[1].split()[:3]
    assert (plane, mode, agents) == ("my-org/prod", "agent", "1")
    assert shown[1].split()[-1] == expected[1].split()[-1] == "-"
    # The caller's kubectl went through the gateway and the agent into the data plane.
    caller = next(c for c in outputs if c.startswith("kubectl --kubeconfig"))
    assert "openchoreo-data-plane" in (outputs[caller] or "")
    # The DataPlane of option 2 names its CA by secretRef; option 1 (inline) is Ready too.
    get = ["kubectl", "--context", "control-plane", "-n", "my-org", "get", "dataplane", "prod"]
    plane_now = json.loads(follower.run([*get, "-o", "json"]))
    assert plane_now["spec"]["agent"]["clientCA"] == {
        "secretRef": {"name": "prod-agent-ca", "namespace": "my-org", "key": "ca.crt"}
    }
    follower.run(
        ["kubectl", "--context", "control-plane", "apply", "-f", "pki/prod/dataplane-inline.yaml"]
    )
    plane_now = json.loads(follower.run([*get, "-o", "json"]))
    assert set(plane_now["spec"]["agent"]["clientCA"]) == {"value"}
    generation = plane_now["metadata"]["generation"]
    wait = ["kubectl", "--context", "control-plane", "-n", "my-org", "wait", "dataplane/prod"]
    follower.run(
        [
            *wait,
            f"--for=jsonpath={{.status.observedGeneration}}={generation}",
            f"--timeout={kubectl_timeout(60)}",
        ]
    )
    follower.run([*wait, "--for=condition=Ready", f"--timeout={kubectl_timeout(60)}"])
