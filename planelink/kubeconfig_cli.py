"""`planelink kubeconfig`: write a one-context kubeconfig from PEM files.

For callers of the gateway (`--server https://<gateway>:6443/planes/<ns>/<name>/k8s` with a
certificate from the caller CA) and for anything else that needs a kubeconfig where no kubectl
is at hand (the container image has none). CA, certificate and key are embedded, so the file
stands alone. Exit codes: 0 written, 2 bad usage or unreadable input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

import certs
from kubeobject.kubeconfig import Credentials, build_kubeconfig

EXIT_OK = 0
EXIT_USAGE = 2

_DESCRIPTION = """\
Write a kubeconfig with one cluster, one user and one context; the CA, the client certificate
and key (or the token) are embedded. Without --out it is printed.

examples:
  # a caller of the gateway, with a certificate from the caller CA
  planelink kubeconfig --server https://gateway.example.com:6443/planes/my-org/prod/k8s \\
      --ca-cert pki/gateway/ca.crt --client-cert pki/alice/tls.crt \\
      --client-key pki/alice/tls.key --out alice.kubeconfig
"""


def add_kubeconfig_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "kubeconfig",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--server", required=True, metavar="URL", help="https:// URL of the API server"
    )
    parser.add_argument(
        "--ca-cert",
        required=True,
        type=Path,
        metavar="FILE",
        help="CA certificate(s) (PEM) that sign the server's certificate",
    )
    parser.add_argument("--client-cert", type=Path, metavar="FILE", help="client certificate")
    parser.add_argument("--client-key", type=Path, metavar="FILE", help="its private key")
    parser.add_argument(
        "--token-file", type=Path, metavar="FILE", help="a bearer token instead of a certificate"
    )
    parser.add_argument(
        "--name", default="planelink", help="name of the cluster and context (default: planelink)"
    )
    parser.add_argument("--user", default="planelink-user", help="name of the user entry")
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="write here (mode 0600) instead of printing"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    parser.set_defaults(run=run)


class _Usage(Exception):
    pass


def run(args: argparse.Namespace) -> int:
    try:
        text = render(args)
        if args.out is None:
            sys.stdout.write(text)
        else:
            _write(args.out, text, force=args.force)
            print(f"wrote {args.out} (server {args.server})", file=sys.stderr)
    except _Usage as error:
        print(f"planelink kubeconfig: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def render(args: argparse.Namespace) -> str:
    """The kubeconfig's YAML for parsed `args`."""
    server = urlsplit(args.server)
    if server.scheme != "https" or not server.hostname:
        raise _Usage(f"--server must be an https:// URL, not {args.server!r}")
    with_certificate = args.client_cert is not None or args.client_key is not None
    if with_certificate and (args.client_cert is None or args.client_key is None):
        raise _Usage("--client-cert and --client-key go together")
    if with_certificate == (args.token_file is not None):
        raise _Usage("give either --client-cert/--client-key or --token-file")
    ca_pem = _checked(args.ca_cert, "--ca-cert", certs.FileRole.CA_BUNDLE)
    if args.token_file is not None:
        token = _read(args.token_file).decode().strip()
        if not token:
            raise _Usage(f"{args.token_file} is empty")
        credentials = Credentials(user=args.user, token=token)
    else:
        try:
            certs.load_key_pair(
                certs.CredentialFile(args.client_cert, certs.FileSetting("--client-cert")),
                certs.CredentialFile(args.client_key, certs.FileSetting("--client-key")),
                role=certs.FileRole.CLIENT_CERTIFICATE,
            )
        except certs.WrongFileError as error:
            raise _Usage(str(error)) from None
        credentials = Credentials(
            user=args.user,
            client_certificate_pem=_read(args.client_cert),
            client_key_pem=_read(args.client_key),
        )
    config = build_kubeconfig(
        name=args.name, server=args.server, ca_pem=ca_pem, credentials=credentials
    )
    return yaml.safe_dump(config, sort_keys=False)


def _checked(path: Path, flag: str, role: certs.FileRole) -> bytes:
    """The bytes of a certificate file, checked for `role` (the error names the file)."""
    data = _read(path)
    try:
        certs.certificates_for(data, role, path=str(path), setting=certs.FileSetting(flag))
    except certs.WrongFileError as error:
        raise _Usage(str(error)) from None
    return data


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise _Usage(f"cannot read {path}: {error.strerror or error}") from error


def _write(path: Path, text: str, *, force: bool) -> None:
    if path.exists() and not force:
        raise _Usage(f"refusing to overwrite {path} (use --force)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text)
    except OSError as error:
        raise _Usage(f"cannot write {path}: {error.strerror or error}") from error
