"""The gateway's TLS files, each with the setting that names it, loaded into TLS contexts.

Every certificate, key and CA file of the gateway (its server certificate for the agent and
caller ports, the callers' CA, the peer certificate and CA) is loaded here through
`certs.load_cert_chain` / `certs.load_verify_locations`: checked for its role first, so a wrong
one is a `certs.WrongFileError` naming the file, what it holds, what was expected and the flag,
environment variable and chart value below (`planelink gateway` prints it and exits 2). The
settings' flags and variables are `planelink gateway`'s own (tests/certs checks them).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import certs
from certs import CredentialFile, FileRole, FileSetting

TLS_CERT = FileSetting("--tls-cert", "PLANELINK_GATEWAY_TLS_CERT", "tls.secretName (its tls.crt)")
TLS_KEY = FileSetting("--tls-key", "PLANELINK_GATEWAY_TLS_KEY", "tls.secretName (its tls.key)")
CALLER_CA = FileSetting(
    "--caller-ca", "PLANELINK_GATEWAY_CALLER_CA", "callerCA.secretName (its ca.crt)"
)
PEER_CERTIFICATE = FileSetting(
    "--peer-certificate", "PLANELINK_GATEWAY_PEER_CERTIFICATE", "peers.secretName (its tls.crt)"
)
PEER_KEY = FileSetting("--peer-key", "PLANELINK_GATEWAY_PEER_KEY", "peers.secretName (its tls.key)")
PEER_CA = FileSetting("--peer-ca", "PLANELINK_GATEWAY_PEER_CA", "peers.secretName (its ca.crt)")


def load_server_certificate(context: ssl.SSLContext, certificate: Path, key: Path) -> None:
    """The gateway's server certificate (agent and caller ports) into `context`."""
    certs.load_cert_chain(
        context,
        CredentialFile(certificate, TLS_CERT),
        CredentialFile(key, TLS_KEY),
        role=FileRole.SERVER_CERTIFICATE,
    )


def load_caller_ca(context: ssl.SSLContext, ca: Path) -> None:
    """The CAs that sign callers' certificates into `context`."""
    certs.load_verify_locations(context, CredentialFile(ca, CALLER_CA))


def load_peer_files(context: ssl.SSLContext, certificate: Path, key: Path, ca: Path) -> None:
    """This replica's peer certificate and the peer CA into `context`."""
    certs.load_cert_chain(
        context,
        CredentialFile(certificate, PEER_CERTIFICATE),
        CredentialFile(key, PEER_KEY),
        role=FileRole.SERVER_CERTIFICATE,
    )
    certs.load_verify_locations(context, CredentialFile(ca, PEER_CA))


def check_files(
    *, certificate: Path, key: Path, caller_ca: Path, peer: tuple[Path, Path, Path] | None
) -> None:
    """Check every file as the loaders above will, without a context: for a command that
    must refuse before it starts workers."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_server_certificate(scratch, certificate, key)
    load_caller_ca(scratch, caller_ca)
    if peer is not None:
        load_peer_files(scratch, *peer)
