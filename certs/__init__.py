"""Certificates for planelink: CAs, server/client/agent certificates, inspection, verification.

Pure library on top of ``cryptography`` and the standard library; it imports no planelink package
but ``kubeobject`` and never does network I/O. Typical use::

    ca = certs.create_ca("planelink agents")
    plane = certs.parse_plane_ref("my-org/prod")
    agent = certs.issue_agent(ca, plane=plane)
    info = certs.verify_client_certificate(
        agent.certificate, trusted=[ca.certificate], expected_identity=certs.plane_uri(plane)
    )

See :mod:`certs.identity` for how an agent certificate names its plane and
:mod:`certs.verify` for the order of checks and the rejection reasons.
"""

from certs.bundle import CertificateBundle, write_pem_files
from certs.errors import (
    CertificateRejected,
    CertsError,
    InvalidPlaneRefError,
    KeyMismatchError,
    OutputExistsError,
    PemError,
    RejectionReason,
)
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
from certs.roles import (
    FileRole,
    FileSetting,
    WrongFileError,
    certificates_for,
    check_key_matches,
    private_key_for,
)
from certs.tls_files import (
    CredentialFile,
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
    "CertificateInfo",
    "CertificateRejected",
    "CertsError",
    "CredentialFile",
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
