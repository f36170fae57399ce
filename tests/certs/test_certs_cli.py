"""`planelink certs ...`: files, modes, overwrite refusal, manifests and exit codes."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

import certs
from planelink import certs_cli
from tests.kit.waits import scaled


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `planelink certs <argv>` in-process; return (exit code, stdout, stderr)."""
    code = certs_cli.main(["certs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run a command argparse must refuse; return its stderr."""
    with pytest.raises(SystemExit) as exc:
        certs_cli.main(["certs", *argv])
    assert exc.value.code == 2
    return capsys.readouterr().err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


@pytest.fixture
def ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "ca"
    assert run(capsys, "init-ca", "--out", str(out), "--name", "test CA")[0] == 0
    return out


# --- init-ca -----------------------------------------------------------------------------------


def test_init_ca_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new-ca"
    code, stdout, err = run(capsys, "init-ca", "--out", str(out), "--days", "30")
    assert (code, err) == (0, "")
    created = certs.load_certificate((out / "ca.crt").read_bytes())
    spki = created.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Named after its key: two CAs made with the defaults never share a name.
    assert f"created CA 'CN=planelink CA {hashlib.sha256(spki).hexdigest()[:8]}'" in stdout
    assert mode(out / "ca.key") == 0o600
    assert mode(out / "ca.crt") == 0o644
    ca = certs.CertificateBundle.from_files(out / "ca.crt", out / "ca.key")
    info = certs.describe(ca.certificate)
    assert info.is_ca
    assert timedelta(days=29) < info.remaining() <= timedelta(days=30)


def test_init_ca_refuses_overwrite(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (ca_dir / "ca.key").read_bytes()
    code, stdout, err = run(capsys, "init-ca", "--out", str(ca_dir))
    assert code == 2
    assert stdout == ""
    line = one_error_line(err)
    assert line.startswith("planelink certs init-ca: error: refusing to overwrite existing file")
    assert "(use --force)" in line
    assert (ca_dir / "ca.key").read_bytes() == before
    code, _, _ = run(capsys, "init-ca", "--out", str(ca_dir), "--force")
    assert code == 0
    assert (ca_dir / "ca.key").read_bytes() != before
    assert mode(ca_dir / "ca.key") == 0o600


def test_init_ca_rsa_and_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(
        capsys, "init-ca", "--out", str(tmp_path), "--key-type", "rsa-2048", "--format", "secret"
    )
    assert code == 0
    assert "created CA" in err  # notes go to stderr so stdout can be piped to kubectl
    (secret,) = yaml.safe_load_all(stdout)
    assert secret["kind"] == "Secret"
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"] == {"name": "planelink-ca", "namespace": "openchoreo-control-plane"}
    assert decoded(secret, "tls.crt") == decoded(secret, "ca.crt")
    assert decoded(secret, "tls.crt") == (tmp_path / "ca.crt").read_bytes()
    assert certs.describe(certs.load_certificate(decoded(secret, "ca.crt"))).key_type == "RSA"


@pytest.mark.parametrize("days", ["0", "-3", "ten"])
def test_bad_days(tmp_path: Path, capsys: pytest.CaptureFixture[str], days: str) -> None:
    err = usage_error(capsys, "init-ca", "--out", str(tmp_path), "--days", days)
    assert "argument --days" in err


# --- issue-server ------------------------------------------------------------------------------


def test_issue_server(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gw"
    code, stdout, _ = run(
        capsys,
        "issue-server",
        "--ca",
        str(ca_dir),
        "--out",
        str(out),
        "--dns",
        "gw.example.com",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--dns",
        "gw2.example.com",
    )
    assert code == 0
    assert "issued gateway server certificate for gw.example.com" in stdout
    assert mode(out / "tls.key") == 0o600
    assert (out / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()
    chain = certs.load_pem_certificates((out / "tls.crt").read_bytes())
    info = certs.describe(chain[0])
    assert info.common_name == "gw.example.com"
    assert info.dns_names == ("gw.example.com", "localhost", "gw2.example.com")
    assert info.ip_addresses == ("127.0.0.1",)
    assert info.extended_key_usages == ("serverAuth",)
    ca_cert = certs.load_pem_certificates((ca_dir / "ca.crt").read_bytes())
    certs.verify_certificate_chain(chain[0], trusted=ca_cert)


def test_issue_server_secret(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(
        capsys, "issue-server", "--ca", str(ca_dir), "--ip", "10.0.0.5", "--format", "secret"
    )
    assert code == 0
    (secret,) = yaml.safe_load_all(stdout)
    assert secret["metadata"] == {
        "name": "cluster-gateway-tls",
        "namespace": "openchoreo-control-plane",
    }
    assert certs.describe(certs.load_certificate(decoded(secret, "tls.crt"))).ip_addresses == (
        "10.0.0.5",
    )


def test_issue_server_needs_names(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "issue-server", "--ca", str(ca_dir), "--out", str(tmp_path))
    assert code == 2
    assert "give at least one --dns NAME or --ip ADDR" in one_error_line(err)


def test_issue_server_bad_ip(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "issue-server", "--ca", str(ca_dir), "--out", str(tmp_path), "--ip", "1.2.3"
    )
    assert code == 2
    assert "invalid IP address '1.2.3'" in one_error_line(err)
    assert not (tmp_path / "tls.key").exists()


def test_pem_format_needs_out(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "issue-server", "--ca", str(ca_dir), "--dns", "x")
    assert code == 2
    assert "--out DIR is required with --format pem" in one_error_line(err)


def test_missing_ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "issue-agent", "--ca", str(tmp_path / "nope"), "--plane", "a/b", "--out", "x"
    )
    assert code == 2
    line = one_error_line(err)
    assert "nope/ca.crt not found" in line
    assert "init-ca --out DIR" in line


def test_ca_dir_with_mismatched_key(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    run(capsys, "init-ca", "--out", str(other))
    (ca_dir / "ca.key").write_bytes((other / "ca.key").read_bytes())
    code, _, err = run(capsys, "issue-agent", "--ca", str(ca_dir), "--plane", "a/b", "--out", "x")
    assert code == 2
    assert "private key does not match certificate 'CN=test CA'" in one_error_line(err)


# --- issue-agent -------------------------------------------------------------------------------


def test_issue_agent_pem(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "agent"
    code, stdout, _ = run(
        capsys, "issue-agent", "--ca", str(ca_dir), "--plane", "my-org/prod", "--out", str(out)
    )
    assert code == 0
    assert "agent certificate for plane my-org/prod (planelink://plane/my-org/prod)" in stdout
    assert "next: register the CA with: planelink certs dataplane-manifest" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert mode(out / "tls.key") == 0o600
    bundle = certs.CertificateBundle.from_files(out / "tls.crt", out / "tls.key")
    trusted = certs.load_pem_certificates((out / "ca.crt").read_bytes())
    info = certs.verify_client_certificate(
        bundle.certificate,
        trusted=trusted,
        expected_identity=certs.plane_uri(certs.parse_plane_ref("my-org/prod")),
    )
    assert info.common_name == "my-org/prod"


def test_issue_agent_refuses_any_overwrite(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ca.crt").write_text("mine")
    code, _, err = run(
        capsys, "issue-agent", "--ca", str(ca_dir), "--plane", "a/b", "--out", str(tmp_path)
    )
    assert code == 2
    assert "refusing to overwrite existing file(s): " in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca", "ca.crt"]  # nothing written


def test_issue_agent_secret_manifest(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(
        capsys, "issue-agent", "--ca", str(ca_dir), "--plane", "my-org/prod", "--format", "secret"
    )
    assert code == 0
    assert "issued agent certificate" in err
    docs = list(yaml.safe_load_all(stdout))
    assert docs == [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cluster-agent-tls", "namespace": "openchoreo-data-plane"},
            "type": "kubernetes.io/tls",
            "data": {
                "ca.crt": docs[0]["data"]["ca.crt"],
                "tls.crt": docs[0]["data"]["tls.crt"],
                "tls.key": docs[0]["data"]["tls.key"],
            },
        }
    ]
    bundle = certs.CertificateBundle.from_pem(
        decoded(docs[0], "tls.crt"), decoded(docs[0], "tls.key")
    )
    assert decoded(docs[0], "ca.crt") == (ca_dir / "ca.crt").read_bytes()
    assert bundle.chain_pem() == decoded(docs[0], "tls.crt")
    assert certs.planes_in_certificate(bundle.certificate) == (certs.plane_ref("my-org", "prod"),)


def test_issue_agent_secret_to_file(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "issue-agent", "--ca", str(ca_dir), "--plane", "a/b", "--format", "secret",
        "--secret-name", "edge-agent", "--secret-namespace", "agents", "--out", str(tmp_path),
    ]  # fmt: skip
    code, stdout, err = run(capsys, *args)
    assert (code, stdout) == (0, "")
    path = tmp_path / "edge-agent.yaml"
    assert f"wrote {path} (mode 0600" in err
    assert mode(path) == 0o600
    secret = yaml.safe_load(path.read_text())
    assert secret["metadata"] == {"name": "edge-agent", "namespace": "agents"}
    code, _, err = run(capsys, *args)
    assert code == 2
    assert "refusing to overwrite" in one_error_line(err)
    assert run(capsys, *args, "--force")[0] == 0


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--secret-name", "Bad_Name", "is not a DNS-1123 subdomain"),
        ("--secret-namespace", "a.b", "is not a DNS-1123 label"),
    ],
)
def test_issue_agent_bad_secret_target(
    ca_dir: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    code, _, err = run(
        capsys, "issue-agent", "--ca", str(ca_dir), "--plane", "a/b", "--format", "secret",
        flag, value,
    )  # fmt: skip
    assert code == 2
    assert message in one_error_line(err)


@pytest.mark.parametrize("plane", ["prod", "My-Org/prod", "a/b/c"])
def test_issue_agent_bad_plane(
    ca_dir: Path, capsys: pytest.CaptureFixture[str], plane: str
) -> None:
    err = usage_error(capsys, "issue-agent", "--ca", str(ca_dir), "--plane", plane, "--out", "x")
    assert "argument --plane" in err


# --- issue-caller ------------------------------------------------------------------------------


def test_issue_caller(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(
        capsys, "issue-caller", "--ca", str(ca_dir), "--name", "system:admin",
        "--group", "system:masters", "--group", "ops", "--out", str(tmp_path / "c"),
    )  # fmt: skip
    assert code == 0
    assert "user 'system:admin' in group(s) system:masters, ops" in stdout
    info = certs.describe(certs.load_pem_certificates((tmp_path / "c" / "tls.crt").read_bytes())[0])
    assert info.common_name == "system:admin"
    assert info.organizations == ("system:masters", "ops")
    assert info.extended_key_usages == ("clientAuth",)


def test_issue_caller_secret_name_is_derived(
    ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, _ = run(
        capsys, "issue-caller", "--ca", str(ca_dir), "--name", "System:Admin", "--format", "secret"
    )
    assert code == 0
    secret = yaml.safe_load(stdout)
    assert secret["metadata"] == {"name": "system-admin-client-tls", "namespace": "default"}


# --- dataplane-manifest ------------------------------------------------------------------------

HOSTS = ["--public-host", "api.example.com", "--org-host", "internal.example.com"]


def test_dataplane_manifest_inline(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(
        capsys, "dataplane-manifest", "--ca-cert", str(ca_dir / "ca.crt"),
        "--plane", "my-org/prod", *HOSTS,
    )  # fmt: skip
    assert (code, err) == (0, "")
    (dataplane,) = yaml.safe_load_all(stdout)
    assert dataplane == {
        "apiVersion": "openchoreo.dev/v1alpha1",
        "kind": "DataPlane",
        "metadata": {"name": "prod", "namespace": "my-org"},
        "spec": {
            "agent": {
                "enabled": True,
                "clientCA": {"value": (ca_dir / "ca.crt").read_text()},
            },
            "gateway": {
                "publicVirtualHost": "api.example.com",
                "organizationVirtualHost": "internal.example.com",
            },
        },
    }
    assert "      value: |\n        -----BEGIN CERTIFICATE-----\n" in stdout  # readable block


def test_dataplane_manifest_secret_ref(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(
        capsys, "dataplane-manifest", "--ca-cert", str(ca_dir / "ca.crt"),
        "--plane", "my-org/prod", *HOSTS, "--ca-secret", "prod-agent-ca",
        "--secret-store", "default",
    )  # fmt: skip
    assert code == 0
    secret, dataplane = yaml.safe_load_all(stdout)
    assert secret["kind"] == "Secret"
    assert secret["type"] == "Opaque"
    assert secret["metadata"] == {"name": "prod-agent-ca", "namespace": "my-org"}
    assert decoded(secret, "ca.crt") == (ca_dir / "ca.crt").read_bytes()
    assert list(secret["data"]) == ["ca.crt"]
    assert dataplane["spec"]["agent"] == {
        "enabled": True,
        "clientCA": {
            "secretRef": {"name": "prod-agent-ca", "namespace": "my-org", "key": "ca.crt"}
        },
    }
    assert dataplane["spec"]["secretStoreRef"] == {"name": "default"}


def test_dataplane_manifest_to_file(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dp.yaml"
    argv = ["dataplane-manifest", "--ca-cert", str(ca_dir / "ca.crt"), "--plane", "o/p", *HOSTS]
    code, stdout, _ = run(capsys, *argv, "--out", str(out))
    assert code == 0
    assert f"wrote {out}" in stdout
    assert yaml.safe_load(out.read_text())["kind"] == "DataPlane"
    code, _, err = run(capsys, *argv, "--out", str(out))
    assert code == 2
    assert "refusing to overwrite existing file" in one_error_line(err)


def test_dataplane_manifest_pinned_cert_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = certs.self_signed_client(common_name="cluster-agent")
    path = tmp_path / "ca.crt"
    path.write_bytes(pinned.certificate_pem())
    code, stdout, err = run(
        capsys, "dataplane-manifest", "--ca-cert", str(path), "--plane", "o/p", *HOSTS
    )
    assert code == 0
    assert "is not a CA certificate; the gateway will accept only this exact" in err
    assert yaml.safe_load(stdout)["spec"]["agent"]["clientCA"]["value"] == path.read_text()


@pytest.mark.parametrize("content", [b"", b"not a certificate", b"\x00\x01"])
def test_dataplane_manifest_garbage_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "ca.crt"
    path.write_bytes(content)
    code, stdout, err = run(
        capsys, "dataplane-manifest", "--ca-cert", str(path), "--plane", "o/p", *HOSTS
    )
    assert (code, stdout) == (2, "")
    assert "no PEM data found" in one_error_line(err)


def test_dataplane_manifest_missing_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "dataplane-manifest", "--ca-cert", str(tmp_path / "x.crt"), "--plane", "o/p", *HOSTS
    )
    assert code == 2
    assert "cannot read" in one_error_line(err)
    assert "No such file or directory" in err


def test_dataplane_manifest_bad_host(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(
        capsys, "dataplane-manifest", "--ca-cert", str(ca_dir / "ca.crt"), "--plane", "o/p",
        "--public-host", "https://api.example.com", "--org-host", "x",
    )  # fmt: skip
    assert "is not a host name" in err


# --- inspect -----------------------------------------------------------------------------------


@pytest.fixture
def agent_dir(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "agent"
    run(capsys, "issue-agent", "--ca", str(ca_dir), "--plane", "my-org/prod", "--out", str(out))
    return out


def test_inspect(agent_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "inspect", str(agent_dir / "tls.crt"))
    assert code == 0
    assert "--- certificate 1 of 2 ---" in stdout
    assert "Subject:        CN=my-org/prod" in stdout
    assert "URIs:           planelink://plane/my-org/prod" in stdout
    assert "Ext. key usage: clientAuth" in stdout
    assert "days left)" in stdout
    assert "Verification" not in stdout


def test_inspect_verifies(agent_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(
        capsys, "inspect", str(agent_dir / "tls.crt"), "--ca", str(agent_dir / "ca.crt"),
        "--plane", "my-org/prod",
    )  # fmt: skip
    assert code == 0
    assert "Verification:   OK against" in stdout
    assert "identity planelink://plane/my-org/prod" in stdout


def test_inspect_wrong_ca(
    agent_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    run(capsys, "init-ca", "--out", str(other), "--name", "other CA")
    code, stdout, _ = run(
        capsys, "inspect", str(agent_dir / "tls.crt"), "--ca", str(other / "ca.crt")
    )
    assert code == 1
    assert "Verification:   FAILED" in stdout
    assert "reason:       Untrusted" in stdout
    assert "which is not a trusted CA (trusted: 'CN=other CA' [SHA-256 " in stdout


def test_inspect_identity_mismatch(agent_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(
        capsys, "inspect", str(agent_dir / "tls.crt"), "--ca", str(agent_dir / "ca.crt"),
        "--plane", "my-org/staging",
    )  # fmt: skip
    assert code == 1
    assert "reason:       IdentityMismatch" in stdout


def test_inspect_server_cert_as_client(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gw"
    run(capsys, "issue-server", "--ca", str(ca_dir), "--dns", "gw", "--out", str(out))
    argv = ["inspect", str(out / "tls.crt"), "--ca", str(ca_dir / "ca.crt")]
    assert run(capsys, *argv)[0] == 0
    code, stdout, _ = run(capsys, *argv, "--client")
    assert code == 1
    assert "reason:       NotClientAuth" in stdout


def test_inspect_secret_manifest_and_der(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest, _ = run(
        capsys, "issue-agent", "--ca", str(ca_dir), "--plane", "o/p", "--format", "secret"
    )
    secret_path = tmp_path / "secret.yaml"
    secret_path.write_text(manifest)
    code, stdout, _ = run(
        capsys, "inspect", str(secret_path), "--ca", str(secret_path), "--plane", "o/p"
    )
    assert code == 0
    assert "Subject:        CN=o/p" in stdout
    assert "Verification:   OK" in stdout
    der_path = tmp_path / "ca.der"
    der_path.write_bytes(
        certs.load_certificate((ca_dir / "ca.crt").read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
    )
    code, stdout, _ = run(capsys, "inspect", str(der_path))
    assert code == 0
    assert "Subject:        CN=test CA" in stdout


def test_inspect_stdin(
    agent_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (agent_dir / "tls.crt").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, stdout, _ = run(capsys, "inspect", "-")
    assert code == 0
    assert "CN=my-org/prod" in stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage", "neither a PEM nor a DER certificate"),
        (b"kind: Secret\ndata:\n  other: eA==\n", "the Secret has no certificate under"),
        (b"kind: Secret\ndata:\n  tls.crt: '%%%'\n", "is not valid base64"),
    ],
)
def test_inspect_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "x.crt"
    path.write_bytes(content)
    code, stdout, err = run(capsys, "inspect", str(path))
    assert (code, stdout) == (2, "")
    assert message in one_error_line(err)


def test_inspect_unreadable_ca_prints_nothing(
    agent_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.crt"
    empty.touch()
    code, stdout, err = run(capsys, "inspect", str(agent_dir / "tls.crt"), "--ca", str(empty))
    assert (code, stdout) == (2, "")
    assert "the input is empty" in one_error_line(err)


def test_inspect_plane_needs_ca(agent_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "inspect", str(agent_dir / "tls.crt"), "--plane", "a/b")
    assert code == 2
    assert "need --ca FILE" in one_error_line(err)


# --- check-expiry ------------------------------------------------------------------------------


def test_check_expiry(agent_dir: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(ca_dir / "ca.crt"), str(agent_dir / "tls.key"), str(agent_dir / "tls.crt")]
    del files[1]  # key files hold no certificate
    code, stdout, err = run(capsys, "check-expiry", *files, "--within", "30")
    assert (code, err) == (0, "")
    assert stdout.count("OK ") == 3
    code, stdout, err = run(capsys, "check-expiry", *files, "--within", "400")
    assert code == 1
    assert "EXPIRING " in stdout
    line = one_error_line(err)
    assert "1 certificate(s) expired or expiring within 400 days:" in line
    assert f"{agent_dir / 'tls.crt'} ('CN=my-org/prod'" in line


def test_check_expiry_expired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = certs.create_ca(
        "old", not_before=datetime(2020, 1, 1, tzinfo=UTC), validity=timedelta(days=10)
    )
    path = tmp_path / "old.crt"
    path.write_bytes(old.certificate_pem())
    code, stdout, err = run(capsys, "check-expiry", str(path), "--within", "0")
    assert code == 1
    assert stdout.startswith(f"EXPIRED  {path}: 'CN=old' not after 2020-01-11")
    assert "days ago" in one_error_line(err)


def test_check_expiry_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(capsys, "check-expiry", str(tmp_path / "nope.crt"), "--within", "1")
    assert (code, stdout) == (2, "")
    assert "cannot read" in one_error_line(err)


def test_check_expiry_needs_within(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--within" in usage_error(capsys, "check-expiry", "x.crt")


# --- wiring ------------------------------------------------------------------------------------


def test_certs_requires_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert "COMMAND" in usage_error(capsys)


def test_wiring_into_another_parser(tmp_path: Path) -> None:
    # This is how planelink/cli.py mounts the command.
    parser = argparse.ArgumentParser(prog="planelink")
    subparsers = parser.add_subparsers(dest="command", required=True)
    certs_cli.add_certs_parser(subparsers)
    args = parser.parse_args(["certs", "init-ca", "--out", str(tmp_path), "--name", "wired"])
    assert args.run(args) == 0
    assert certs.describe(certs.load_certificate((tmp_path / "ca.crt").read_bytes())).subject == (
        "CN=wired"
    )


def test_help_via_python_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "planelink.certs_cli", "certs", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(60),
    )
    assert result.returncode == 0, result.stderr
    for command in [
        "init-ca", "issue-server", "issue-agent", "issue-caller", "dataplane-manifest",
        "inspect", "check-expiry",
    ]:  # fmt: skip
        assert command in result.stdout
    assert "cluster-agent-tls" in result.stdout


@pytest.mark.parametrize(
    "command",
    ["init-ca", "issue-server", "issue-agent", "issue-caller", "dataplane-manifest", "inspect",
     "check-expiry"],
)  # fmt: skip
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exc:
        certs_cli.main(["certs", command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert f"usage: planelink certs {command}" in out


def test_two_default_cas_are_told_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: two `init-ca` with the defaults, a certificate of the first inspected
    against the second. The message names two different CAs and shows the trusted one's
    fingerprint as `certs inspect` prints it."""
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        assert run(capsys, "init-ca", "--out", str(out))[0] == 0
    assert run(
        capsys, "issue-server", "--ca", str(first), "--dns", "gw.example", "--out",
        str(tmp_path / "gw"),
    )[0] == 0  # fmt: skip
    first_name = certs.load_certificate((first / "ca.crt").read_bytes()).subject.rfc4514_string()
    second_ca = certs.load_certificate((second / "ca.crt").read_bytes())
    second_name = second_ca.subject.rfc4514_string()
    assert first_name != second_name
    code, stdout, _ = run(
        capsys, "inspect", str(tmp_path / "gw" / "tls.crt"), "--ca", str(second / "ca.crt")
    )
    assert code == 1
    assert f"chains to root {first_name!r} [SHA-256 " in stdout  # tls.crt ends with its CA
    assert f"(trusted: {second_name!r} [SHA-256 " in stdout
    _, inspected, _ = run(capsys, "inspect", str(second / "ca.crt"))
    full = next(line for line in inspected.splitlines() if line.startswith("SHA-256:"))
    assert f"[SHA-256 {full.split()[1][:23]}..." in stdout
