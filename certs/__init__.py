"""Certificates for planelink: CAs, server/client/agent certificates, inspection, verification.

Pure library on top of ``cryptography`` and the standard library; it imports no planelink package
but ``kubeobject`` and never does network I/O. Typical use::

    ca = certs.create_ca("planelink agents")
    plane = certs.parse_plane_ref("my-org/prod")
    agent = certs.issue_agent(ca, plane=plane)
    info = certs.verify_client_certificate(
        agent.certificate, trusted=[ca.certificate], expected_identity=certs.plane_uri(plane)
    )

The errors, the file settings (:mod:`certs.files`), plane names (:mod:`certs.identity`) and
the DER reader (:mod:`certs.der`) are imported with the package; everything that needs
``cryptography`` loads it on first use (PEP 562), so an agent that starts and serves normally
never does (:mod:`certs.ssl_first`).

See :mod:`certs.identity` for how an agent certificate names its plane and
:mod:`certs.verify` for the order of checks and the rejection reasons.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from certs.der import CertificateFields, DerError
from certs.errors import (
    CertificateRejected,
    CertsError,
    InvalidPlaneRefError,
    KeyMismatchError,
    OutputExistsError,
    PemError,
    RejectionReason,
)
from certs.files import CredentialFile, FileRole, FileSetting, WrongFileError
from certs.identity import (
    PLANE_URI_PREFIX,
    PlaneRef,
    parse_plane_ref,
    plane_common_name,
    plane_ref,
    plane_ref_from_uri,
    plane_uri,
    planes_in_certificate,
    validate_dns1123_label,
)

if TYPE_CHECKING:
    from certs.bundle import CertificateBundle, write_pem_files
    from certs.inspect import CertificateInfo, describe, eku_name
    from certs.issue import (
        CLIENT_AUTH,
        CLOCK_SKEW,
        PEER_SERVER_NAME,
        SERVER_AUTH,
        create_ca,
        issue_agent,
        issue_client,
        issue_intermediate_ca,
        issue_peer,
        issue_server,
        self_signed_client,
    )
    from certs.keys import KeyType, PrivateKey, generate_private_key
    from certs.kube import (
        AGENT_SECRET_NAME,
        AGENT_SECRET_NAMESPACE,
        CA_SECRET_NAME,
        CONTROL_PLANE_NAMESPACE,
        GATEWAY_SECRET_NAME,
        PEER_SECRET_NAME,
        ca_certificate_secret,
        secret_files,
        tls_secret,
        validate_secret_name,
    )
    from certs.pem import (
        certificate_pem,
        certificates_pem,
        load_certificate,
        load_pem_certificates,
        load_private_key,
        private_key_pem,
        write_file,
    )
    from certs.pem_contents import describe_pem
    from certs.roles import certificates_for, check_key_matches, private_key_for
    from certs.tls_files import (
        load_cert_chain,
        load_certificate_file,
        load_key_pair,
        load_verify_locations,
    )
    from certs.verify import verify_certificate_chain, verify_client_certificate

__all__ = [
    "AGENT_SECRET_NAME",
    "AGENT_SECRET_NAMESPACE",
    "CA_SECRET_NAME",
    "CLIENT_AUTH",
    "CLOCK_SKEW",
    "CONTROL_PLANE_NAMESPACE",
    "GATEWAY_SECRET_NAME",
    "PEER_SECRET_NAME",
    "PEER_SERVER_NAME",
    "PLANE_URI_PREFIX",
    "SERVER_AUTH",
    "CertificateBundle",
    "CertificateFields",
    "CertificateInfo",
    "CertificateRejected",
    "CertsError",
    "CredentialFile",
    "DerError",
    "FileRole",
    "FileSetting",
    "InvalidPlaneRefError",
    "KeyMismatchError",
    "KeyType",
    "OutputExistsError",
    "PemError",
    "PlaneRef",
    "PrivateKey",
    "RejectionReason",
    "WrongFileError",
    "ca_certificate_secret",
    "certificate_pem",
    "certificates_for",
    "certificates_pem",
    "check_key_matches",
    "create_ca",
    "describe",
    "describe_pem",
    "eku_name",
    "generate_private_key",
    "issue_agent",
    "issue_client",
    "issue_intermediate_ca",
    "issue_peer",
    "issue_server",
    "load_cert_chain",
    "load_certificate",
    "load_certificate_file",
    "load_key_pair",
    "load_pem_certificates",
    "load_private_key",
    "load_verify_locations",
    "parse_plane_ref",
    "plane_common_name",
    "plane_ref",
    "plane_ref_from_uri",
    "plane_uri",
    "planes_in_certificate",
    "private_key_for",
    "private_key_pem",
    "secret_files",
    "self_signed_client",
    "tls_secret",
    "validate_dns1123_label",
    "validate_secret_name",
    "verify_certificate_chain",
    "verify_client_certificate",
    "write_file",
    "write_pem_files",
]

_LAZY = {
    "AGENT_SECRET_NAME": "certs.kube",
    "AGENT_SECRET_NAMESPACE": "certs.kube",
    "CA_SECRET_NAME": "certs.kube",
    "CLIENT_AUTH": "certs.issue",
    "CLOCK_SKEW": "certs.issue",
    "CONTROL_PLANE_NAMESPACE": "certs.kube",
    "CertificateBundle": "certs.bundle",
    "CertificateInfo": "certs.inspect",
    "GATEWAY_SECRET_NAME": "certs.kube",
    "KeyType": "certs.keys",
    "PEER_SECRET_NAME": "certs.kube",
    "PEER_SERVER_NAME": "certs.issue",
    "PrivateKey": "certs.keys",
    "SERVER_AUTH": "certs.issue",
    "ca_certificate_secret": "certs.kube",
    "certificate_pem": "certs.pem",
    "certificates_for": "certs.roles",
    "certificates_pem": "certs.pem",
    "check_key_matches": "certs.roles",
    "create_ca": "certs.issue",
    "describe": "certs.inspect",
    "describe_pem": "certs.pem_contents",
    "eku_name": "certs.inspect",
    "generate_private_key": "certs.keys",
    "issue_agent": "certs.issue",
    "issue_client": "certs.issue",
    "issue_intermediate_ca": "certs.issue",
    "issue_peer": "certs.issue",
    "issue_server": "certs.issue",
    "load_cert_chain": "certs.tls_files",
    "load_certificate": "certs.pem",
    "load_certificate_file": "certs.tls_files",
    "load_key_pair": "certs.tls_files",
    "load_pem_certificates": "certs.pem",
    "load_private_key": "certs.pem",
    "load_verify_locations": "certs.tls_files",
    "private_key_for": "certs.roles",
    "private_key_pem": "certs.pem",
    "secret_files": "certs.kube",
    "self_signed_client": "certs.issue",
    "tls_secret": "certs.kube",
    "validate_secret_name": "certs.kube",
    "verify_certificate_chain": "certs.verify",
    "verify_client_certificate": "certs.verify",
    "write_file": "certs.pem",
    "write_pem_files": "certs.bundle",
}
"""Names whose modules import ``cryptography``: loaded on first use."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
