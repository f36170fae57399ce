"""``planelink certs``: create the CA and certificates that connect data planes to the gateway.

A thin argparse layer over :mod:`certs`: it parses flags, reads and writes files, and renders
Kubernetes manifests as YAML. Every subcommand handler returns an exit code - 0 success,
1 a check failed (``inspect`` that does not verify, ``check-expiry`` that finds an expiring
certificate), 2 bad usage or unreadable input - and reports errors as one line on stderr.
No file is ever overwritten without ``--force``.

Wiring: ``add_certs_parser(subparsers)`` registers ``certs``; each leaf parser sets
``run`` (``Callable[[argparse.Namespace], int]``), so a caller runs ``args.run(args)``.
``python -m planelink.certs_cli ...`` runs the same commands standalone.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import yaml
from cryptography import x509

import certs
import crd
from kubeobject import KubeObject

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2

_PROG = "planelink certs"
_KEY_TYPES = [k.value for k in certs.KeyType]
_SECRET_FILE_MODE = 0o600
_MANIFEST_FILE_MODE = 0o644
_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
_HOST = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


class UsageError(Exception):
    """Bad flags or unreadable input: reported as one line, exit code 2."""


# --- parser ------------------------------------------------------------------------------------

_CERTS_DESCRIPTION = """\
Create and check the certificates that connect data planes to the planelink gateway.

The agent in each data-plane cluster dials out to the gateway over mTLS. It presents the
client certificate from the Secret cluster-agent-tls (ca.crt, tls.crt, tls.key); the gateway
accepts it only if it verifies against the DataPlane's spec.agent.clientCA.

Typical setup:
  planelink certs init-ca --out ca/                          # once: the CA (keep ca.key safe)
  planelink certs issue-server --ca ca/ --dns gateway.example.com --out gw/
  planelink certs issue-agent --ca ca/ --plane my-org/prod --format secret \\
      | kubectl --context <dataplane> apply -f -
  planelink certs dataplane-manifest --ca-cert ca/ca.crt --plane my-org/prod \\
      --public-host api.example.com --org-host internal.example.com \\
      | kubectl --context <control-plane> apply -f -
"""


def add_certs_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``certs`` command and its subcommands on ``subparsers``."""
    parser = subparsers.add_parser(
        "certs",
        description=_CERTS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)
    _add_init_ca(commands)
    _add_issue_server(commands)
    _add_issue_agent(commands)
    _add_issue_caller(commands)
    _add_peer(commands)
    _add_dataplane_manifest(commands)
    _add_inspect(commands)
    _add_check_expiry(commands)


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone ``planelink`` parser with only the ``certs`` command (for ``-m``/tests)."""
    parser = argparse.ArgumentParser(prog="planelink")
    add_certs_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``planelink certs ...`` with ``argv`` (default: ``sys.argv[1:]``)."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.run
    return handler(args)


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=_guarded(name, handler))
    return parser


def _add_key_options(parser: argparse.ArgumentParser, *, days: int) -> None:
    parser.add_argument(
        "--key-type",
        choices=_KEY_TYPES,
        default=certs.KeyType.ECDSA_P256.value,
        help="kind of private key to generate (default: %(default)s)",
    )
    parser.add_argument(
        "--days",
        type=_positive_int,
        default=days,
        metavar="N",
        help="validity in days (default: %(default)s); a leaf never outlives its CA",
    )


def _add_output_options(
    parser: argparse.ArgumentParser,
    *,
    default_name: str | None,
    default_namespace: str,
    what: str,
) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="directory to write tls.crt, tls.key and ca.crt into (created if missing); with "
        "--format secret: write <secret-name>.yaml there instead of printing it",
    )
    parser.add_argument(
        "--format",
        choices=["pem", "secret"],
        default="pem",
        help="pem: PEM files in --out (default); secret: a kubernetes.io/tls Secret manifest "
        "(ca.crt/tls.crt/tls.key) for 'kubectl apply -f'",
    )
    shown = f" (default: {default_name})" if default_name else ""
    parser.add_argument(
        "--secret-name",
        default=default_name,
        metavar="NAME",
        help=f"name of the {what} Secret{shown}",
    )
    parser.add_argument(
        "--secret-namespace",
        default=default_namespace,
        metavar="NS",
        help="namespace of the Secret (default: %(default)s)",
    )
    _add_force(parser)


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def _add_ca_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca",
        required=True,
        metavar="DIR",
        type=Path,
        help="directory holding the issuing CA's ca.crt and ca.key (from 'init-ca')",
    )


def _add_init_ca(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "init-ca",
        _init_ca,
        summary="create a new CA (ca.crt, ca.key)",
        description="""\
Create a self-signed CA that signs agent, gateway and caller certificates.

Writes DIR/ca.crt (share it: it is what peers trust, e.g. a DataPlane's clientCA) and
DIR/ca.key (mode 0600: keep it secret, it can mint certificates). The other commands read
them back with --ca DIR. With --format secret the CA key pair is also printed as a
kubernetes.io/tls Secret (the format cert-manager's CA Issuer reads).

example:
  planelink certs init-ca --out ./ca --name "acme planelink CA"
""",
    )
    parser.add_argument("--out", required=True, metavar="DIR", type=Path, help="output directory")
    parser.add_argument(
        "--name",
        default="planelink CA",
        metavar="CN",
        help="subject common name of the CA (default: %(default)s)",
    )
    _add_key_options(parser, days=3650)
    parser.add_argument(
        "--format",
        choices=["pem", "secret"],
        default="pem",
        help="pem: only the files (default); secret: also print the CA Secret manifest",
    )
    parser.add_argument(
        "--secret-name",
        default=certs.CA_SECRET_NAME,
        metavar="NAME",
        help="name of the CA Secret (default: %(default)s)",
    )
    parser.add_argument(
        "--secret-namespace",
        default=certs.CONTROL_PLANE_NAMESPACE,
        metavar="NS",
        help="namespace of the CA Secret (default: %(default)s)",
    )
    _add_force(parser)


def _add_issue_server(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "issue-server",
        _issue_server,
        summary="issue the gateway's TLS server certificate",
        description=f"""\
Issue a TLS server certificate (extended key usage serverAuth) for the gateway the agents
dial. Agents check the DNS names / IP addresses given here against the address they dial.

Outputs tls.crt (certificate + CA), tls.key and ca.crt, or with --format secret the Secret
{certs.GATEWAY_SECRET_NAME} in {certs.CONTROL_PLANE_NAMESPACE}.

example:
  planelink certs issue-server --ca ./ca --dns gateway.example.com --ip 10.0.0.5 --out ./gw
""",
    )
    _add_ca_option(parser)
    parser.add_argument(
        "--dns",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="DNS name(s) of the gateway (repeatable)",
    )
    parser.add_argument(
        "--ip",
        action="extend",
        nargs="+",
        default=[],
        metavar="ADDR",
        help="IP address(es) of the gateway (repeatable)",
    )
    parser.add_argument(
        "--name", metavar="CN", help="subject common name (default: the first DNS name or IP)"
    )
    _add_key_options(parser, days=365)
    _add_output_options(
        parser,
        default_name=certs.GATEWAY_SECRET_NAME,
        default_namespace=certs.CONTROL_PLANE_NAMESPACE,
        what="gateway TLS",
    )


def _add_issue_agent(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "issue-agent",
        _issue_agent,
        summary="issue an agent's client certificate for one data plane",
        description=f"""\
Issue the client certificate the agent in a data-plane cluster presents to the gateway.

Its identity names the DataPlane: URI SAN {certs.PLANE_URI_PREFIX}<namespace>/<name> and
subject CN <namespace>/<name>, where <namespace>/<name> is the DataPlane resource in the
control plane. The gateway accepts it when it verifies against the DataPlane's
spec.agent.clientCA (this CA's ca.crt) and names that DataPlane.

Outputs tls.crt, tls.key and ca.crt, or with --format secret the Secret
{certs.AGENT_SECRET_NAME} in {certs.AGENT_SECRET_NAMESPACE} for the data-plane cluster.

example:
  planelink certs issue-agent --ca ./ca --plane my-org/prod --format secret \\
      | kubectl --context <dataplane-context> apply -f -
""",
    )
    _add_ca_option(parser)
    parser.add_argument(
        "--plane",
        required=True,
        type=_plane_ref,
        metavar="NS/NAME",
        help="the DataPlane this agent serves: <namespace>/<name> in the control plane",
    )
    parser.add_argument(
        "--dns",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="extra DNS SAN(s) for the agent (optional)",
    )
    _add_key_options(parser, days=365)
    _add_output_options(
        parser,
        default_name=certs.AGENT_SECRET_NAME,
        default_namespace=certs.AGENT_SECRET_NAMESPACE,
        what="agent TLS",
    )


def _add_issue_caller(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "issue-caller",
        _issue_caller,
        summary="issue a client certificate for a Kubernetes API caller (user + groups)",
        description="""\
Issue a client certificate (extended key usage clientAuth) for a program or person calling a
Kubernetes API server that trusts this CA: the API server reads the subject CN as the user
name and each O as a group.

Outputs tls.crt, tls.key and ca.crt, or with --format secret a kubernetes.io/tls Secret
(named <name>-client-tls unless --secret-name is given).

example:
  planelink certs issue-caller --ca ./ca --name planelink-controller \\
      --group system:masters --out ./controller
""",
    )
    _add_ca_option(parser)
    parser.add_argument(
        "--name", required=True, metavar="CN", help="user name (subject common name)"
    )
    parser.add_argument(
        "--group",
        action="extend",
        nargs="+",
        default=[],
        metavar="G",
        help="group(s) the user belongs to (subject O; repeatable)",
    )
    _add_key_options(parser, days=365)
    _add_output_options(parser, default_name=None, default_namespace="default", what="caller TLS")


def _add_peer(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "peer",
        _peer,
        summary="issue the gateway replicas' peer certificate (and their CA, if new)",
        description=f"""\
Issue the certificate gateway replicas present to each other on the peer port, where a replica
without a tunnel to a plane forwards a caller's request to one that has one. It serves both
ways (extended key usages serverAuth and clientAuth) and names {certs.PEER_SERVER_NAME!r}
(DNS SAN), the name a forwarding replica checks, since pod addresses change.

The peers have a CA of their own, trusted by nothing else: --ca DIR reuses DIR/ca.crt and
DIR/ca.key, or creates them there (ca.key mode 0600) when DIR has neither. Never use the
caller or agent CA here: whoever holds a peer certificate can act as any caller.

Outputs tls.crt, tls.key and ca.crt, or with --format secret the Secret
{certs.PEER_SECRET_NAME} in {certs.CONTROL_PLANE_NAMESPACE} (every replica mounts the same).

example:
  planelink certs peer --ca ./peer-ca --format secret | kubectl apply -f -
""",
    )
    parser.add_argument(
        "--ca",
        required=True,
        metavar="DIR",
        type=Path,
        help="directory of the peers' own CA (ca.crt, ca.key): reused, or created if absent",
    )
    parser.add_argument(
        "--name",
        default=certs.PEER_SERVER_NAME,
        metavar="CN",
        help="subject common name (default: %(default)s)",
    )
    _add_key_options(parser, days=365)
    _add_output_options(
        parser,
        default_name=certs.PEER_SECRET_NAME,
        default_namespace=certs.CONTROL_PLANE_NAMESPACE,
        what="peer TLS",
    )


def _add_dataplane_manifest(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = _command(
        commands,
        "dataplane-manifest",
        _dataplane_manifest,
        summary="print a DataPlane manifest that trusts an agent CA",
        description=f"""\
Print a {crd.API_VERSION} DataPlane with spec.agent.enabled: true whose
spec.agent.clientCA is the given CA certificate, for 'kubectl apply -f -' on the control plane.

By default the CA is inlined (clientCA.value) - fine for development. With --ca-secret NAME a
Secret NAME holding ca.crt is emitted too, in the DataPlane's namespace, and clientCA refers to
it (clientCA.secretRef) - recommended for production.

--ca-cert may also be a pinned self-signed agent certificate (cert-manager's ca.crt == tls.crt).

example:
  planelink certs dataplane-manifest --ca-cert ./ca/ca.crt --plane my-org/prod \\
      --public-host api.example.com --org-host internal.example.com --ca-secret prod-agent-ca
""",
    )
    parser.add_argument(
        "--ca-cert",
        required=True,
        type=Path,
        metavar="FILE",
        help="PEM file with the CA certificate(s) that issue this plane's agent certificates",
    )
    parser.add_argument(
        "--plane",
        required=True,
        type=_plane_ref,
        metavar="NS/NAME",
        help="namespace (organization) and name of the DataPlane",
    )
    parser.add_argument(
        "--public-host",
        required=True,
        type=_host,
        metavar="H",
        help="spec.gateway.publicVirtualHost, e.g. api.example.com",
    )
    parser.add_argument(
        "--org-host",
        required=True,
        type=_host,
        metavar="H",
        help="spec.gateway.organizationVirtualHost, e.g. internal.example.com",
    )
    parser.add_argument(
        "--ca-secret",
        metavar="NAME",
        help="put the CA in a Secret NAME (key ca.crt) and reference it instead of inlining",
    )
    parser.add_argument(
        "--secret-store",
        metavar="NAME",
        help="spec.secretStoreRef.name (External Secrets ClusterSecretStore), optional",
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="write the YAML to FILE instead of stdout"
    )
    _add_force(parser)


def _add_inspect(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "inspect",
        _inspect,
        summary="show what a certificate says, and whether it verifies against a CA",
        description="""\
Print subject, issuer, SANs, key and extended key usages, validity (with the days remaining)
and fingerprint of every certificate in FILE. FILE may be PEM, DER, or a Secret manifest
(kubectl get secret ... -o yaml); '-' reads stdin.

With --ca, also verify the first certificate against the CA certificate(s) in that file (the
other certificates in FILE serve as intermediates); exit code 1 if it does not verify.
--client / --plane additionally apply the gateway's agent checks (clientAuth usage, identity).

examples:
  planelink certs inspect ./agent/tls.crt --ca ./ca/ca.crt --plane my-org/prod
  kubectl get secret cluster-agent-tls -n openchoreo-data-plane -o yaml \\
      | planelink certs inspect - --ca dataplane-ca.crt
""",
    )
    parser.add_argument("file", metavar="FILE", help="certificate file, or '-' for stdin")
    parser.add_argument("--ca", metavar="FILE", help="CA certificate(s) to verify against")
    parser.add_argument(
        "--client",
        action="store_true",
        help="with --ca: also require it to be usable as a TLS client certificate",
    )
    parser.add_argument(
        "--plane",
        type=_plane_ref,
        metavar="NS/NAME",
        help="with --ca: verify as the gateway would for this DataPlane (implies --client)",
    )


def _add_check_expiry(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "check-expiry",
        _check_expiry,
        summary="fail if any certificate expires within DAYS (for cron/CI)",
        description="""\
Check every certificate in each FILE (PEM, DER or Secret manifest). Prints one line per
certificate; exits 1 and names the offenders on stderr if any has expired or expires within
DAYS, 0 otherwise.

example:
  planelink certs check-expiry ./ca/ca.crt ./gw/tls.crt ./agent/tls.crt --within 30
""",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="certificate files")
    parser.add_argument(
        "--within",
        required=True,
        type=_non_negative_int,
        metavar="DAYS",
        help="fail if a certificate expires within this many days",
    )


# --- handlers ----------------------------------------------------------------------------------


def _init_ca(args: argparse.Namespace) -> int:
    out: Path = args.out
    _refuse_existing([out / "ca.crt", out / "ca.key"], force=args.force)
    secret = None
    if args.format == "secret":
        # Validate names before generating anything.
        _validate_secret_target(args.secret_name, args.secret_namespace)
    ca = certs.create_ca(
        args.name, key_type=certs.KeyType(args.key_type), validity=timedelta(days=args.days)
    )
    if args.format == "secret":
        secret = certs.tls_secret(ca, name=args.secret_name, namespace=args.secret_namespace)
    cert_path, key_path = certs.write_pem_files(
        ca, out, cert_name="ca.crt", key_name="ca.key", overwrite=args.force
    )
    info = certs.describe(ca.certificate)
    note = sys.stderr if secret else sys.stdout
    print(f"created CA {info.subject!r}, valid until {_day(info.not_after)}", file=note)
    print(f"wrote {cert_path} (share: peers trust this)", file=note)
    print(f"wrote {key_path} (mode 0600: keep secret)", file=note)
    if secret:
        sys.stdout.write(_dump_yaml([secret]))
    return EXIT_OK


def _issue_server(args: argparse.Namespace) -> int:
    if not args.dns and not args.ip:
        raise UsageError("give at least one --dns NAME or --ip ADDR for the gateway")
    ca = _load_ca(args.ca)
    _check_output(args)
    common_name = args.name or (args.dns or args.ip)[0]
    bundle = certs.issue_server(
        ca,
        common_name=common_name,
        dns_names=args.dns,
        ip_addresses=args.ip,
        key_type=certs.KeyType(args.key_type),
        validity=timedelta(days=args.days),
    )
    names = ", ".join([*args.dns, *args.ip])
    return _emit_leaf(args, bundle, ca, what=f"gateway server certificate for {names}")


def _issue_agent(args: argparse.Namespace) -> int:
    ca = _load_ca(args.ca)
    _check_output(args)
    plane: certs.PlaneRef = args.plane
    bundle = certs.issue_agent(
        ca,
        plane=plane,
        dns_names=args.dns,
        key_type=certs.KeyType(args.key_type),
        validity=timedelta(days=args.days),
    )
    return _emit_leaf(
        args,
        bundle,
        ca,
        what=f"agent certificate for plane {plane} ({certs.plane_uri(plane)})",
        next_step=(
            f"register the CA with: {_PROG} dataplane-manifest --ca-cert {args.ca / 'ca.crt'} "
            f"--plane {plane} --public-host <host> --org-host <host>"
        ),
    )


def _issue_caller(args: argparse.Namespace) -> int:
    if args.format == "secret" and args.secret_name is None:
        args.secret_name = _secret_name_for(args.name)
    ca = _load_ca(args.ca)
    _check_output(args)
    bundle = certs.issue_client(
        ca,
        common_name=args.name,
        organizations=args.group,
        key_type=certs.KeyType(args.key_type),
        validity=timedelta(days=args.days),
    )
    groups = f" in group(s) {', '.join(args.group)}" if args.group else ""
    return _emit_leaf(args, bundle, ca, what=f"client certificate for user {args.name!r}{groups}")


def _peer(args: argparse.Namespace) -> int:
    _check_output(args)
    ca_dir: Path = args.ca
    present = [path.exists() for path in (ca_dir / "ca.crt", ca_dir / "ca.key")]
    if all(present):
        ca = _load_ca(ca_dir)
    elif any(present):
        raise UsageError(f"{ca_dir} holds only one of ca.crt and ca.key: give both or neither")
    else:
        ca = certs.create_ca("planelink peer CA", key_type=certs.KeyType(args.key_type))
        cert_path, key_path = certs.write_pem_files(
            ca, ca_dir, cert_name="ca.crt", key_name="ca.key"
        )
        print(f"created the peer CA: {cert_path}, {key_path} (mode 0600)", file=sys.stderr)
    bundle = certs.issue_peer(
        ca,
        common_name=args.name,
        key_type=certs.KeyType(args.key_type),
        validity=timedelta(days=args.days),
    )
    return _emit_leaf(args, bundle, ca, what=f"peer certificate for {certs.PEER_SERVER_NAME}")


def _dataplane_manifest(args: argparse.Namespace) -> int:
    ca_pem = _read_file(args.ca_cert)
    ca_certs = _parse_pem(ca_pem, args.ca_cert)
    _warn_about_client_ca(ca_certs, args.ca_cert)
    plane: certs.PlaneRef = args.plane
    if args.ca_secret:
        _validate_secret_target(args.ca_secret, plane.namespace)
    client_ca_pem = certs.certificates_pem(ca_certs)
    client_ca: bytes | KubeObject = client_ca_pem
    if args.ca_secret is not None:
        client_ca = certs.ca_certificate_secret(
            client_ca_pem, name=args.ca_secret, namespace=plane.namespace
        )
    docs = crd.dataplane_manifest(
        plane=plane,
        client_ca=client_ca,
        public_virtual_host=args.public_host,
        organization_virtual_host=args.org_host,
        secret_store=args.secret_store,
    )
    text = _dump_yaml(docs)
    if args.out is None:
        sys.stdout.write(text)
    else:
        certs.write_file(args.out, text.encode(), mode=_MANIFEST_FILE_MODE, overwrite=args.force)
        print(f"wrote {args.out} (DataPlane {plane})")
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    found = _read_certificates(args.file, prefer=("tls.crt", "ca.crt"))
    if args.ca is None and (args.client or args.plane):
        raise UsageError("--client and --plane need --ca FILE to verify against")
    trusted = None if args.ca is None else _read_certificates(args.ca, prefer=("ca.crt",))
    now = datetime.now(UTC)
    for number, cert in enumerate(found, start=1):
        if len(found) > 1:
            print(f"--- certificate {number} of {len(found)} ---")
        print(certs.describe(cert).render(at=now))
    if trusted is None:
        return EXIT_OK
    leaf, intermediates = found[0], found[1:]
    print()
    try:
        if args.client or args.plane:
            certs.verify_client_certificate(
                leaf,
                trusted=trusted,
                intermediates=intermediates,
                at=now,
                expected_identity=certs.plane_uri(args.plane) if args.plane else None,
            )
        else:
            certs.verify_certificate_chain(
                leaf, trusted=trusted, intermediates=intermediates, at=now
            )
    except certs.CertificateRejected as exc:
        print(f"Verification:   FAILED against {args.ca}")
        print(f"  reason:       {exc.reason.value}")
        print(f"  detail:       {exc.message}")
        return EXIT_CHECK_FAILED
    checks = "chain and validity"
    if args.client or args.plane:
        checks += ", clientAuth usage"
    if args.plane:
        checks += f", identity {certs.plane_uri(args.plane)}"
    print(f"Verification:   OK against {args.ca} ({checks})")
    return EXIT_OK


def _check_expiry(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    limit = timedelta(days=args.within)
    loaded = [(name, _read_certificates(name, prefer=None)) for name in args.files]
    offenders: list[str] = []
    for name, found in loaded:
        for cert in found:
            info = certs.describe(cert)
            remaining = info.remaining(now)
            if remaining < timedelta(0):
                status = "EXPIRED"
            elif remaining <= limit:
                status = "EXPIRING"
            else:
                status = "OK"
            print(
                f"{status:<8} {name}: {info.subject!r} not after {_day(info.not_after)} "
                f"({info.validity_status(now)})"
            )
            if status != "OK":
                offenders.append(f"{name} ({info.subject!r}, {info.validity_status(now)})")
    if offenders:
        _error(
            "check-expiry",
            f"{len(offenders)} certificate(s) expired or expiring within {args.within} days: "
            + "; ".join(offenders),
        )
        return EXIT_CHECK_FAILED
    return EXIT_OK


# --- helpers: output ---------------------------------------------------------------------------


def _check_output(args: argparse.Namespace) -> None:
    """Validate output flags and refuse existing files before any key is generated."""
    if args.format == "pem":
        if args.out is None:
            raise UsageError("--out DIR is required with --format pem")
        _refuse_existing(
            [args.out / name for name in ("tls.crt", "tls.key", "ca.crt")], force=args.force
        )
        return
    _validate_secret_target(args.secret_name, args.secret_namespace)
    if args.out is not None:
        _refuse_existing([args.out / f"{args.secret_name}.yaml"], force=args.force)


def _emit_leaf(
    args: argparse.Namespace,
    bundle: certs.CertificateBundle,
    ca: certs.CertificateBundle,
    *,
    what: str,
    next_step: str | None = None,
) -> int:
    info = certs.describe(bundle.certificate)
    summary = f"issued {what}, valid until {_day(info.not_after)}"
    if args.format == "pem":
        cert_path, key_path = certs.write_pem_files(
            bundle, args.out, cert_name="tls.crt", key_name="tls.key", overwrite=args.force
        )
        ca_path = certs.write_file(
            args.out / "ca.crt", ca.root_pem(), mode=0o644, overwrite=args.force
        )
        print(summary)
        print(f"wrote {cert_path}, {key_path} (mode 0600), {ca_path}")
        if next_step:
            print(f"next: {next_step}")
        return EXIT_OK
    secret = certs.tls_secret(bundle, name=args.secret_name, namespace=args.secret_namespace)
    text = _dump_yaml([secret])
    print(summary, file=sys.stderr)
    if args.out is None:
        sys.stdout.write(text)
    else:
        path = certs.write_file(
            args.out / f"{args.secret_name}.yaml",
            text.encode(),
            mode=_SECRET_FILE_MODE,
            overwrite=args.force,
        )
        print(f"wrote {path} (mode 0600: it contains the private key)", file=sys.stderr)
    if next_step:
        print(f"next: {next_step}", file=sys.stderr)
    return EXIT_OK


def _refuse_existing(paths: Sequence[Path], *, force: bool) -> None:
    if force:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise UsageError(
            f"refusing to overwrite existing file(s): {', '.join(existing)} (use --force)"
        )


def _validate_secret_target(name: str, namespace: str) -> None:
    try:
        certs.validate_secret_name(name)
        certs.validate_dns1123_label(namespace, what="namespace")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _secret_name_for(common_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", common_name.lower()).strip("-")
    name = f"{base}-client-tls"
    if not base or len(name) > 253:
        raise UsageError(
            f"cannot derive a Secret name from {common_name!r}: give --secret-name NAME"
        )
    return name


class _Dumper(yaml.SafeDumper):
    """Block-style YAML; multi-line strings (PEM) as literal blocks ``|``."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def _dump_yaml(docs: Sequence[dict[str, Any]]) -> str:
    return yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, explicit_start=True, default_flow_style=False
    )


def _warn_about_client_ca(ca_certs: Sequence[x509.Certificate], source: Path) -> None:
    now = datetime.now(UTC)
    for cert in ca_certs:
        info = certs.describe(cert)
        if not info.is_valid_at(now):
            _warn(f"{source}: {info.subject!r} is {info.validity_status(now)}")
        if not info.is_ca:
            _warn(
                f"{source}: {info.subject!r} is not a CA certificate; the gateway will accept "
                "only this exact (pinned) certificate"
            )


# --- helpers: input ----------------------------------------------------------------------------


def _load_ca(directory: Path) -> certs.CertificateBundle:
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    for path in (cert_path, key_path):
        if not path.is_file():
            raise UsageError(
                f"{path} not found: --ca must be a directory made by '{_PROG} init-ca --out DIR'"
            )
    try:
        ca = certs.CertificateBundle.from_files(cert_path, key_path)
    except OSError as exc:
        raise UsageError(f"cannot read CA from {directory}: {exc.strerror or exc}") from exc
    if not ca.is_ca:
        raise UsageError(f"{cert_path} is not a CA certificate")
    return ca


def _read_file(path: Path | str) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _parse_pem(data: bytes, source: Path | str) -> list[x509.Certificate]:
    try:
        return list(certs.load_pem_certificates(data))
    except certs.PemError as exc:
        raise UsageError(f"{source}: {exc}") from exc


def _read_certificates(source: str, *, prefer: Sequence[str] | None) -> list[x509.Certificate]:
    """Certificates from a PEM/DER file or a Secret manifest.

    For a Secret, ``prefer`` lists the data keys to try in order (the first present wins);
    ``None`` takes the certificates of every ``*.crt`` key.
    """
    data = _read_file(source)
    if b"-----BEGIN" in data:
        return _parse_pem(data, source)
    secret = _as_secret(data)
    if secret is None:
        try:
            return [certs.load_certificate(data)]
        except certs.PemError as exc:
            raise UsageError(f"{source}: {exc}") from exc
    keys = [k for k in secret if k.endswith(".crt")] if prefer is None else list(prefer)
    found: list[x509.Certificate] = []
    for key in keys:
        if key in secret:
            found.extend(_parse_pem(secret[key], f"{source} [{key}]"))
            if prefer is not None:
                break
    if not found:
        wanted = ", ".join(keys) or "*.crt"
        raise UsageError(f"{source}: the Secret has no certificate under {wanted}")
    return found


def _as_secret(data: bytes) -> dict[str, bytes] | None:
    """The decoded data of a Secret manifest in ``data``, or None if it is not one."""
    try:
        return certs.secret_files(yaml.safe_load(data))
    except yaml.YAMLError:
        return None


# --- helpers: argparse types and reporting -----------------------------------------------------


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _plane_ref(text: str) -> certs.PlaneRef:
    try:
        return certs.parse_plane_ref(text)
    except certs.InvalidPlaneRefError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host(text: str) -> str:
    if not _HOST.fullmatch(text) or len(text) > 253:
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name")
    return text


def _guarded(name: str, handler: Handler) -> Handler:
    """Run ``handler``; turn expected errors into one stderr line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (UsageError, certs.CertsError, ValueError) as exc:
            _error(name, str(exc))
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            _error(name, f"cannot access{where}: {exc.strerror or exc}")
        return EXIT_USAGE

    return run


def _error(command: str, message: str, stream: TextIO | None = None) -> None:
    print(f"{_PROG} {command}: error: {message}", file=stream or sys.stderr)


def _warn(message: str) -> None:
    print(f"{_PROG}: warning: {message}", file=sys.stderr)


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


if __name__ == "__main__":
    sys.exit(main())
