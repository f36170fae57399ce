"""What PEM (or DER) bytes hold, in words an operator reads: "a private key", "a certificate
(subject 'CN=a', issued by 'CN=b')", "a certificate signing request (CSR) ...", "nothing".

Pure, and never quotes the bytes themselves (a file given by mistake may hold a secret).
Used by :mod:`certs.pem` and :mod:`certs.roles` for their errors.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from certs.pem_text import CSR_LABELS, ENCRYPTED_KEY, KEY_LABELS, pem_blocks


def describe_pem(data: bytes) -> str:
    """What `data` holds, in words: "nothing (the file is empty)", "a certificate (subject
    'CN=a', issued by 'CN=b')", "a private key", "a certificate signing request (CSR) ..."."""
    if not data.strip():
        return "nothing (the file is empty)"
    blocks = pem_blocks(data)
    if not blocks:
        return _describe_not_pem(data)
    parts: list[str] = []
    certificates = [der for label, _, der in blocks if label == b"CERTIFICATE"]
    if certificates:
        parts.append(_describe_certificates(certificates))
    for label, raw, der in blocks:
        if label == b"CERTIFICATE":
            continue
        parts.append(_describe_block(label, raw, der))
    unique = list(dict.fromkeys(parts))
    return " and ".join(unique)


def _describe_certificates(ders: list[bytes | None]) -> str:
    decoded: list[x509.Certificate] = []
    for der in ders:
        try:
            if der is not None:
                decoded.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    if not decoded:
        return "a CERTIFICATE block that does not decode"
    first = decoded[0]
    kind = "a CA certificate" if is_ca(first) else "a certificate"
    text = f"{kind} (subject {subject_text(first.subject)}, issued by {subject_text(first.issuer)})"
    if len(ders) > 1:
        text += f" followed by {len(ders) - 1} more certificate(s)"
    return text


def _describe_block(label: bytes, raw: bytes, der: bytes | None) -> str:
    if label == ENCRYPTED_KEY or (label in KEY_LABELS and b"ENCRYPTED" in raw):
        return "an encrypted private key"
    if label in KEY_LABELS:
        return "a private key"
    if label in CSR_LABELS:
        try:
            csr = x509.load_der_x509_csr(der) if der is not None else None
        except ValueError:
            csr = None
        subject = f" for subject {subject_text(csr.subject)}" if csr is not None else ""
        return f"a certificate signing request (CSR){subject}, not a certificate issued for it"
    if label == b"PUBLIC KEY":
        return "a public key, not a private key"
    return f"a PEM block {label.decode()!r}"


def _describe_not_pem(data: bytes) -> str:
    certificate = der_certificate(data)
    if certificate is not None:
        return f"a DER-encoded certificate (subject {subject_text(certificate.subject)}), not PEM"
    if is_der_key(data):
        return "a DER-encoded private key, not PEM"
    # Never quote the bytes: the file may be a secret of another kind.
    return f"no PEM data ({len(data)} bytes without a '-----BEGIN ...-----' line)"


def der_certificate(data: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return None


def is_der_key(data: bytes) -> bool:
    try:
        serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError):
        return False
    except UnsupportedAlgorithm:  # still a key, of a kind planelink does not use
        return True
    return True


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except (x509.ExtensionNotFound, ValueError):
        return False
    return constraints.value.ca


def subject_text(name: x509.Name) -> str:
    return repr(name.rfc4514_string())
