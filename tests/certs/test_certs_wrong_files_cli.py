"""`planelink gateway` and `planelink agent` given the wrong TLS file: one line naming the file,
what it holds, what was expected and the setting to change; exit code 2; never OpenSSL's words
nor a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import certs
from agent.settings import CLIENT_CERT_SETTING, CLIENT_KEY_SETTING, GATEWAY_CA_SETTING
from gateway import tls_files
from gateway.static_config import load_static_planes
from planelink import agent_cli, gateway_cli, kubeconfig_cli
from tests.kit.waits import scaled

OPENSSL_WORDS = ("PEM lib", "NO_CERTIFICATE_OR_CRL_FOUND", "_ssl.c", "Errno", "Traceback")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gateway CA with a server certificate, a caller CA, and an agent certificate."""
    directory = tmp_path_factory.mktemp("pki")
    gateway_ca = certs.create_ca()
    certs.write_pem_files(
        certs.issue_server(gateway_ca, common_name="gateway", dns_names=["localhost"]),
        directory / "gateway",
        cert_name="tls.crt",
        key_name="tls.key",
    )
    (directory / "gateway" / "ca.crt").write_bytes(gateway_ca.certificate_pem())
    callers = certs.create_ca("callers")
    certs.write_pem_files(callers, directory / "callers", cert_name="ca.crt", key_name="ca.key")
    agents = certs.create_ca("agents")
    certs.write_pem_files(
        certs.issue_agent(agents, plane="edge/prod"),
        directory / "agent",
        cert_name="tls.crt",
        key_name="tls.key",
    )
    (directory / "agent" / "ca.crt").write_bytes(gateway_ca.certificate_pem())
    return directory


def gateway(capsys: pytest.CaptureFixture[str], pki: Path, **files: Path) -> tuple[int, list[str]]:
    given = {
        "tls_cert": pki / "gateway" / "tls.crt",
        "tls_key": pki / "gateway" / "tls.key",
        "caller_ca": pki / "callers" / "ca.crt",
        **files,
    }
    parser = argparse.ArgumentParser()
    gateway_cli.add_gateway_parser(parser.add_subparsers())
    argv = ["gateway", "--operator-port=0", "--agent-port=0", "--caller-port=0"]
    for name, path in given.items():
        argv.append(f"--{name.replace('_', '-')}={path}")
    code = gateway_cli.run(parser.parse_args(argv))
    return code, capsys.readouterr().err.splitlines()


def agent(capsys: pytest.CaptureFixture[str], pki: Path, **files: Path) -> tuple[int, list[str]]:
    parser = argparse.ArgumentParser()
    agent_cli.add_agent_parser(parser.add_subparsers())
    argv = [
        "agent",
        "--gateway-url=wss://localhost:8443",
        "--plane=edge/prod",
        f"--tls-dir={pki / 'agent'}",
    ]
    argv += [f"--{name.replace('_', '-')}={path}" for name, path in files.items()]
    code = agent_cli.run(parser.parse_args(argv))
    return code, capsys.readouterr().err.splitlines()


def one_clear_line(lines: list[str], prefix: str) -> str:
    assert len(lines) == 1, lines
    assert lines[0].startswith(prefix)
    for words in OPENSSL_WORDS:
        assert words not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("setting", "given", "expected"),
    [
        (
            "tls_key",
            "gateway/tls.crt",
            (
                "expected an unencrypted private key (PEM), but the file holds a certificate "
                "(subject 'CN=gateway', issued by 'CN=planelink CA ",
                "(set with --tls-key / PLANELINK_GATEWAY_TLS_KEY / chart value tls.secretName "
                "(its tls.key))",
            ),
        ),
        (
            "caller_ca",
            "callers/ca.key",
            (
                "expected CA certificates (PEM), but the file holds a private key",
                "PLANELINK_GATEWAY_CALLER_CA / chart value callerCA.secretName",
            ),
        ),
        ("tls_cert", "nowhere.crt", ("but there is no such file",)),
        (
            "tls_key",
            "agent/tls.key",
            (
                "expected the private key of --tls-cert {pki}/gateway/tls.crt (subject "
                "'CN=gateway'), but the file holds the private key of another certificate",
            ),
        ),
    ],
)
def test_gateway_with_a_wrong_file(
    capsys: pytest.CaptureFixture[str],
    pki: Path,
    setting: str,
    given: str,
    expected: tuple[str, ...],
) -> None:
    code, lines = gateway(capsys, pki, **{setting: pki / given})
    assert code == 2
    flag = "--" + setting.replace("_", "-")
    line = one_clear_line(lines, f"planelink gateway: {flag} {pki / given}: ")
    for words in expected:
        assert words.format(pki=pki) in line


def test_agent_with_its_key_as_the_gateway_ca(
    capsys: pytest.CaptureFixture[str], pki: Path
) -> None:
    code, lines = agent(capsys, pki, gateway_ca=pki / "agent" / "tls.key")
    assert code == 2
    line = one_clear_line(lines, f"planelink agent: --gateway-ca {pki / 'agent' / 'tls.key'}: ")
    assert "expected CA certificates (PEM), but the file holds a private key" in line
    assert "--gateway-ca / PLANELINK_GATEWAY_CA / chart value gatewayCA.secretName" in line


def test_agent_with_a_certificate_as_its_key(capsys: pytest.CaptureFixture[str], pki: Path) -> None:
    code, lines = agent(capsys, pki, client_key=pki / "agent" / "ca.crt")
    assert code == 2
    line = one_clear_line(lines, f"planelink agent: --client-key {pki / 'agent' / 'ca.crt'}: ")
    assert "but the file holds a CA certificate (subject 'CN=planelink CA " in line


def test_the_agent_s_hints_name_its_real_settings() -> None:
    declared = {setting.name: setting for setting in agent_cli.SETTINGS}
    for name, hint in (
        ("client_cert", CLIENT_CERT_SETTING),
        ("client_key", CLIENT_KEY_SETTING),
        ("gateway_ca", GATEWAY_CA_SETTING),
    ):
        assert (hint.flag, hint.env) == (
            declared[name].flag,
            agent_cli.SETTINGS.env(declared[name]),
        )


def test_the_gateway_s_hints_name_its_real_settings() -> None:
    declared = {setting.name: setting for setting in gateway_cli.SETTINGS}
    for name, hint in (
        ("tls_cert", tls_files.TLS_CERT),
        ("tls_key", tls_files.TLS_KEY),
        ("caller_ca", tls_files.CALLER_CA),
        ("peer_certificate", tls_files.PEER_CERTIFICATE),
        ("peer_key", tls_files.PEER_KEY),
        ("peer_ca", tls_files.PEER_CA),
    ):
        assert (hint.flag, hint.env) == (
            declared[name].flag,
            gateway_cli.SETTINGS.env(declared[name]),
        )


def test_the_real_command_prints_one_line_and_exits_2(pki: Path) -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "planelink",
            "gateway",
            f"--tls-cert={pki / 'gateway' / 'tls.crt'}",
            f"--tls-key={pki / 'gateway' / 'tls.crt'}",
            f"--caller-ca={pki / 'callers' / 'ca.crt'}",
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert finished.returncode == 2
    line = one_clear_line(finished.stderr.splitlines(), "planelink gateway: --tls-key ")
    assert "holds a certificate (subject 'CN=gateway'" in line


def test_kubeconfig_with_a_key_as_the_ca_and_swapped_files(
    capsys: pytest.CaptureFixture[str], pki: Path
) -> None:
    def kubeconfig(*flags: str) -> tuple[int, list[str]]:
        parser = argparse.ArgumentParser()
        kubeconfig_cli.add_kubeconfig_parser(parser.add_subparsers())
        args = parser.parse_args(["kubeconfig", "--server=https://gw:6443/planes/a/b/k8s", *flags])
        return kubeconfig_cli.run(args), capsys.readouterr().err.splitlines()

    code, lines = kubeconfig(
        f"--ca-cert={pki / 'callers' / 'ca.key'}", f"--token-file={pki / 'callers' / 'ca.crt'}"
    )
    assert code == 2
    line = one_clear_line(
        lines, f"planelink kubeconfig: error: --ca-cert {pki / 'callers' / 'ca.key'}: "
    )
    assert "expected CA certificates (PEM), but the file holds a private key" in line
    code, lines = kubeconfig(
        f"--ca-cert={pki / 'gateway' / 'ca.crt'}",
        f"--client-cert={pki / 'agent' / 'tls.key'}",
        f"--client-key={pki / 'agent' / 'tls.crt'}",
    )
    assert code == 2
    line = one_clear_line(
        lines, f"planelink kubeconfig: error: --client-cert {pki / 'agent' / 'tls.key'}: "
    )
    assert "expected a client certificate (PEM, the certificate first" in line
    assert "but the file holds a private key" in line


def test_a_planes_file_naming_a_key_or_nothing_as_a_plane_s_ca(pki: Path, tmp_path: Path) -> None:
    planes = tmp_path / "planes.yaml"
    planes.write_text(
        f"planes:\n- plane: a/key\n  clientCA: {pki / 'callers' / 'ca.key'}\n"
        "- plane: a/missing\n  clientCA: nope.crt\n"
    )
    issues = {str(trust.plane): trust.issues for trust in load_static_planes(planes)}
    assert issues == {
        "a/key": (
            f"client CA unusable: clientCA {pki / 'callers' / 'ca.key'}: expected CA "
            "certificates (PEM), but the file holds a private key (set with clientCA)",
        ),
        "a/missing": (
            f"client CA unusable: clientCA {tmp_path / 'nope.crt'}: expected CA certificates "
            "(PEM), but there is no such file (set with clientCA)",
        ),
    }
