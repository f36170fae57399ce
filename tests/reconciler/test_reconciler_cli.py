"""`planelink reconciler` against a real API server: one pass, JSON lines, optional status."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

import certs
import crd
from envtest import KubeAPIServer
from planelink import reconciler_cli


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="planelink")
    reconciler_cli.add_reconciler_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["reconciler", *argv])


def _apply(server: KubeAPIServer, namespace: str, name: str, client_ca: dict[str, object]) -> None:
    manifest = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "agent": {"enabled": True, "clientCA": client_ca},
            "gateway": {"publicVirtualHost": "a", "organizationVirtualHost": "b"},
        },
    }
    server.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def test_once_prints_what_the_gateway_would_be_fed(
    control_plane: KubeAPIServer, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = certs.create_ca("cli agents")
    _apply(control_plane, namespace, "good", {"value": ca.certificate_pem().decode()})
    _apply(control_plane, namespace, "broken", {"secretRef": {"name": "nope", "key": "ca.crt"}})

    args = _parse(
        ["--kubeconfig", str(control_plane.kubeconfig_path), "--namespaces", namespace, "--once"]
    )
    assert args.run(args) == 0
    # (Unconfigured structlog writes to stdout too; `planelink` sends logs to stderr.)
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    lines = {line["plane"]: line for line in printed}
    assert lines[f"{namespace}/good"]["acceptsAgents"] is True
    assert lines[f"{namespace}/good"]["clientCAs"] == ["CN=cli agents"]
    assert lines[f"{namespace}/broken"]["acceptsAgents"] is False
    assert lines[f"{namespace}/broken"]["issues"][0].startswith("SecretNotFound")
    # Read-only by default: no status was written.
    shown = control_plane.kubectl("get", "dataplane", "good", "-n", namespace, "-o", "json")
    assert "status" not in json.loads(shown.stdout)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANELINK_RECONCILER_NAMESPACES", "a, b")
    monkeypatch.setenv("PLANELINK_RECONCILER_WRITE_STATUS", "true")
    monkeypatch.setenv("PLANELINK_RECONCILER_PROBE_INTERVAL", "7")
    settings = reconciler_cli.settings_from(_parse(["--lease-namespace", "gw", "--identity", "r1"]))
    assert settings.namespaces == ("a", "b")
    assert settings.write_status
    assert settings.probe_interval == 7.0
    assert settings.coordination is not None
    assert settings.coordination.identity == "r1"
    monkeypatch.delenv("POD_NAME", raising=False)
    without_identity = _parse(["--lease-namespace", "gw", "--identity", ""])
    with pytest.raises(ValueError, match="needs --identity"):
        reconciler_cli.settings_from(without_identity)
