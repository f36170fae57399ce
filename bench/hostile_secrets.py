"""The gateway's memory against unrelated Secrets: `python -m bench.hostile_secrets [--source DIR]`.

Starts a real kube-apiserver (envtest) and a real `planelink gateway --reconcile` process that
follows one namespace, where one DataPlane names its agent CA by `secretRef`. Then it stores
`--count` unrelated Secrets of `--size` bytes in that same namespace, rotates the referenced
Secret, and waits until `/planes` shows the new CA. It prints the gateway's VmRSS before and
after, the growth, and how long the rotation took to reach the trust.

`--source` runs the gateway from another checkout (e.g. `git archive <rev> | tar -x -C DIR`)
so that the figures of two revisions can be set side by side; this process only drives it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import certs
from bench.processes import rss_bytes
from certs import plane_ref
from crd import dataplane_manifest
from envtest import KubeAPIServer, ServerOptions, die_with_parent, free_port, install_crd

MIB = 1024 * 1024
NAMESPACE = "org"
PLANE = plane_ref(NAMESPACE, "prod")


def _secret(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def _planes(operator: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{operator}/planes", timeout=5) as answer:  # noqa: S310
        planes: list[dict[str, Any]] = json.load(answer)["planes"]
    return planes


def _ca_subject(operator: str) -> str | None:
    try:
        for plane in _planes(operator):
            if (plane["namespace"], plane["name"]) == (PLANE.namespace, PLANE.name):
                cas = plane["clientCAs"]
                return str(cas[0]["subject"]) if cas else None
    except OSError:
        return None
    return None


def _until(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError("the gateway never got there")
        time.sleep(0.05)
    return time.monotonic() - started


def _settle_rss(pid: int) -> int:
    """VmRSS once it stops moving (the gateway has digested what it was sent)."""
    last, stable = rss_bytes(pid), 0
    while stable < 10:
        time.sleep(0.2)
        now = rss_bytes(pid)
        stable = stable + 1 if abs(now - last) < 256 * 1024 else 0
        last = now
    return last


def run(count: int, size: int, source: Path, work: Path) -> dict[str, float]:
    with KubeAPIServer(options=ServerOptions(name="hostile-secrets")) as server:
        install_crd(server)
        server.kubectl("create", "namespace", NAMESPACE)
        old, new = certs.create_ca("agents"), certs.create_ca("rotated agents")
        referenced = _secret("agent-ca", {"ca.crt": old.certificate_pem()})
        manifests = dataplane_manifest(
            plane=PLANE,
            client_ca=certs.ca_certificate_secret(
                old.certificate_pem(), name="agent-ca", namespace=PLANE.namespace
            ),
            public_virtual_host="a.example",
            organization_virtual_host="b.example",
        )
        server.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"kind": "List", "apiVersion": "v1", "items": manifests}),
        )
        gateway_ca = certs.create_ca("gateway")
        serving = certs.issue_server(gateway_ca, common_name="gateway", ip_addresses=["127.0.0.1"])
        (work / "tls.crt").write_bytes(serving.certificate_pem())
        (work / "tls.key").write_bytes(serving.private_key_pem())
        (work / "ca.crt").write_bytes(gateway_ca.certificate_pem())
        operator_port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(source),
            "PLANELINK_GATEWAY_TLS_CERT": str(work / "tls.crt"),
            "PLANELINK_GATEWAY_TLS_KEY": str(work / "tls.key"),
            "PLANELINK_GATEWAY_CALLER_CA": str(work / "ca.crt"),
            "PLANELINK_GATEWAY_BIND": "127.0.0.1",
            "PLANELINK_GATEWAY_AGENT_PORT": str(free_port()),
            "PLANELINK_GATEWAY_CALLER_PORT": str(free_port()),
            "PLANELINK_GATEWAY_OPERATOR_PORT": str(operator_port),
            "PLANELINK_GATEWAY_RECONCILE": "true",
            "PLANELINK_GATEWAY_NAMESPACES": NAMESPACE,
            "PLANELINK_GATEWAY_KUBECONFIG": str(server.kubeconfig_path),
        }
        operator = f"http://127.0.0.1:{operator_port}"
        with (work / "gateway.log").open("w") as log:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "planelink", "gateway"],
                cwd=source,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
            )
            try:
                old_subject = old.certificate.subject.rfc4514_string()
                _until(lambda: _ca_subject(operator) == old_subject, 120)
                before = _settle_rss(gateway.pid)
                unrelated = [
                    _secret(f"unrelated-{i}", {"blob": os.urandom(size)}) for i in range(count)
                ]
                server.kubectl(
                    "create",
                    "-f",
                    "-",
                    timeout=300,
                    input=json.dumps({"kind": "List", "apiVersion": "v1", "items": unrelated}),
                )
                referenced["data"]["ca.crt"] = base64.b64encode(new.certificate_pem()).decode()
                server.kubectl("apply", "-f", "-", input=json.dumps(referenced))
                new_subject = new.certificate.subject.rfc4514_string()
                rotation = _until(lambda: _ca_subject(operator) == new_subject, 120)
                after = _settle_rss(gateway.pid)
            finally:
                gateway.terminate()
                gateway.wait(timeout=30)
    return {
        "rss_before_mib": before / MIB,
        "rss_after_mib": after / MIB,
        "growth_mib": (after - before) / MIB,
        "rotation_seconds": rotation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="unrelated Secrets (100)")
    parser.add_argument("--size", type=int, default=400 * 1024, help="bytes each (400 KiB)")
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the checkout the gateway runs from (default: this one)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-secrets-") as work:
        figures = run(args.count, args.size, args.source.resolve(), Path(work))
    print(json.dumps({"source": str(args.source), **figures}, indent=2))


if __name__ == "__main__":
    main()
