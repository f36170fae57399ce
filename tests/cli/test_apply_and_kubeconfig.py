"""`planelink kubeconfig` and `planelink apply` against a real API server and the real kubectl."""

from __future__ import annotations

import io
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import certs
from envtest import KubeAPIServer
from planelink.cli import build_parser
from tests.kit.waits import kubectl_timeout, scaled


def _planelink(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    code: int = args.run(args)
    return code


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(kubeconfig),
            *args,
            f"--request-timeout={kubectl_timeout(20)}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(60),
    )


# -- kubeconfig ---------------------------------------------------------------------------------


def test_kubeconfig_with_a_client_certificate_authenticates_as_its_user(
    control_plane: KubeAPIServer, tmp_path: Path
) -> None:
    user = control_plane.issue_user("kubeconfig-test-user", ["system:masters"])
    assert user.client_certificate_pem is not None
    assert user.client_key_pem is not None
    (tmp_path / "tls.crt").write_bytes(user.client_certificate_pem)
    (tmp_path / "tls.key").write_bytes(user.client_key_pem)
    out = tmp_path / "out" / "user.kubeconfig"
    code = _planelink(
        "kubeconfig",
        "--server",
        control_plane.url,
        "--ca-cert",
        str(control_plane.ca_file),
        "--client-cert",
        str(tmp_path / "tls.crt"),
        "--client-key",
        str(tmp_path / "tls.key"),
        "--name",
        "test",
        "--out",
        str(out),
    )
    assert code == 0
    assert out.stat().st_mode & 0o777 == 0o600
    whoami = _kubectl(out, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout == "kubeconfig-test-user"
    assert yaml.safe_load(out.read_text())["current-context"] == "test"
    # An existing file is kept unless --force.
    before = out.read_text()
    again = ("kubeconfig", "--server", "https://elsewhere:6443", "--ca-cert")
    rest = (str(control_plane.ca_file), "--client-cert", str(tmp_path / "tls.crt"))
    key = ("--client-key", str(tmp_path / "tls.key"), "--out", str(out))
    assert _planelink(*again, *rest, *key) == 2
    assert out.read_text() == before
    assert _planelink(*again, *rest, *key, "--force") == 0
    assert "https://elsewhere:6443" in out.read_text()


def test_kubeconfig_with_a_token_prints_to_stdout(
    control_plane: KubeAPIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text(control_plane.admin_token + "\n")
    code = _planelink(
        "kubeconfig",
        "--server",
        control_plane.url,
        "--ca-cert",
        str(control_plane.ca_file),
        "--token-file",
        str(token),
    )
    assert code == 0
    printed = tmp_path / "printed.kubeconfig"
    printed.write_text(capsys.readouterr().out)
    listed = _kubectl(printed, "get", "namespace", "default", "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "namespace/default"


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--server", "http://plain:80", "--token-file", "TOKEN"], "https:// URL"),
        (["--server", "https://a:6443", "--client-cert", "CA"], "go together"),
        (["--server", "https://a:6443"], "either"),
        (
            ["--server", "https://a:6443", "--token-file", "TOKEN", "--client-cert", "CA"],
            "go together",
        ),
        (["--server", "https://a:6443", "--token-file", "MISSING"], "cannot read"),
    ],
)
def test_kubeconfig_refuses_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], complaint: str
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(certs.create_ca().certificate_pem())  # a real one: --ca-cert is checked
    (tmp_path / "token").write_text("t")
    paths = {"TOKEN": str(tmp_path / "token"), "CA": str(ca), "MISSING": str(tmp_path / "no")}
    argv = [paths.get(item, item) for item in extra]
    assert _planelink("kubeconfig", "--ca-cert", str(ca), *argv) == 2
    captured = capsys.readouterr()
    assert complaint in captured.err
    assert captured.out == ""


# -- apply --------------------------------------------------------------------------------------


@pytest.fixture
def widget_group(control_plane: KubeAPIServer) -> Iterator[str]:
    group = f"t{uuid.uuid4().hex[:8]}.planelink.test"
    yield group
    control_plane.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def _widget_crd(group: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {"size": {"type": "integer", "minimum": 1}},
            }
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _widget(group: str, namespace: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": namespace},
        "spec": {"size": size},
    }


def test_apply_a_crd_and_its_first_object_in_one_run(
    control_plane: KubeAPIServer,
    widget_group: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = f"apply-{uuid.uuid4().hex[:8]}"
    crd_file = tmp_path / "crd.yaml"
    crd_file.write_text(yaml.safe_dump(_widget_crd(widget_group)))
    objects = tmp_path / "objects.yaml"
    objects.write_text(
        yaml.safe_dump_all(
            [
                _widget(widget_group, namespace, 3),
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            ]
        )
    )
    kubeconfig = str(control_plane.kubeconfig_path)
    code = _planelink(
        "apply", "--kubeconfig", kubeconfig, "-f", str(crd_file), "-f", str(objects),
        "--create-namespace", "--timeout", "60",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines() == [
        f"customresourcedefinition.apiextensions.k8s.io/widgets.{widget_group} serverside-applied",
        f"widget.{widget_group}/w1 serverside-applied",
        "configmap/c serverside-applied",
    ]
    size = control_plane.kubectl(
        "get", f"widgets.{widget_group}", "w1", "-n", namespace, "-o", "jsonpath={.spec.size}"
    )
    assert size.stdout == "3"
    # A manifest without a namespace lands in "default", as with kubectl.
    control_plane.kubectl("get", "configmap", "c", "-n", "default")
    control_plane.kubectl("delete", "configmap", "c", "-n", "default")

    # Applying again updates in place.
    objects.write_text(yaml.safe_dump(_widget(widget_group, namespace, 5)))
    assert _planelink("apply", "--kubeconfig", kubeconfig, "-f", str(objects)) == 0
    size = control_plane.kubectl(
        "get", f"widgets.{widget_group}", "w1", "-n", namespace, "-o", "jsonpath={.spec.size}"
    )
    assert size.stdout == "5"

    # The API server's refusal is reported, with exit code 1.
    capsys.readouterr()
    objects.write_text(yaml.safe_dump(_widget(widget_group, namespace, 0)))
    assert _planelink("apply", "--kubeconfig", kubeconfig, "-f", str(objects)) == 1
    assert "spec.size" in capsys.readouterr().err
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_apply_gives_up_on_a_kind_that_is_never_served(
    control_plane: KubeAPIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {"apiVersion": "nowhere.test/v1", "kind": "Ghost", "metadata": {"name": "g"}}
        )
    )
    kubeconfig = str(control_plane.kubeconfig_path)
    assert (
        _planelink("apply", "--kubeconfig", kubeconfig, "-f", str(manifest), "--timeout", "1") == 2
    )
    assert "timed out waiting for Ghost (nowhere.test/v1) to be served" in capsys.readouterr().err


def test_apply_gives_up_on_an_api_server_that_never_answers(
    control_plane: KubeAPIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = control_plane.kubeconfig()
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"  # nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    )
    code = _planelink(
        "apply", "--kubeconfig", str(kubeconfig), "-f", str(manifest), "--timeout", "1"
    )
    assert code == 2
    assert "timed out waiting for the API server to be ready" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "no manifests"),
        ("kind: ConfigMap\nmetadata: {name: a}\n", "document 1 is not a manifest"),
        ("apiVersion: v1\nkind: ConfigMap\n", "document 1 has no metadata.name"),
        ("a: [", "not YAML"),
    ],
)
def test_apply_refuses_what_is_not_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, complaint: str
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text)
    assert _planelink("apply", "--kubeconfig", str(tmp_path / "unused"), "-f", str(manifest)) == 2
    assert complaint in capsys.readouterr().err


def test_apply_reads_stdin(
    control_plane: KubeAPIServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "from-stdin", "namespace": namespace},
        "data": {"a": "b"},
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(manifest)))
    kubeconfig = str(control_plane.kubeconfig_path)
    assert _planelink("apply", "--kubeconfig", kubeconfig, "-f", "-") == 0
    assert capsys.readouterr().out == "configmap/from-stdin serverside-applied\n"
    stored = control_plane.kubectl(
        "get", "configmap", "from-stdin", "-n", namespace, "-o", "jsonpath={.data.a}"
    )
    assert stored.stdout == "b"
