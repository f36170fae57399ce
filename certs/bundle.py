"""The :class:`CertificateBundle`: a certificate, its private key and its issuer chain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.errors import KeyMismatchError, OutputExistsError, PemError
from certs.keys import PrivateKey
from certs.pem import (
    CERT_FILE_MODE,
    KEY_FILE_MODE,
    certificate_pem,
    certificates_pem,
    load_pem_certificates,
    load_private_key,
    private_key_pem,
    write_file,
)


@dataclass(frozen=True)
class CertificateBundle:
    """A certificate with its private key.

    ``chain`` holds the issuers of ``certificate``, the direct issuer first; it is empty for a
    root (self-signed) certificate. For a leaf issued by a root CA it is ``(ca_cert,)``.
    """

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def certificate_pem(self) -> bytes:
        """The certificate alone, PEM."""
        return certificate_pem(self.certificate)

    def private_key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return private_key_pem(self.private_key)

    def chain_pem(self) -> bytes:
        """The certificate followed by its chain, PEM: what a TLS peer should present."""
        return certificates_pem((self.certificate, *self.chain))

    @property
    def root(self) -> x509.Certificate:
        """The last certificate of the chain (the certificate itself for a root)."""
        return self.chain[-1] if self.chain else self.certificate

    def root_pem(self) -> bytes:
        """:attr:`root` as PEM: what goes into a ``ca.crt`` for peers that must trust this."""
        return certificate_pem(self.root)

    @property
    def is_ca(self) -> bool:
        """Whether the certificate has BasicConstraints with ``cA`` set."""
        try:
            bc = self.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            return False
        return bc.value.ca

    @classmethod
    def from_pem(
        cls, certificate_pem: bytes, private_key_pem: bytes, *, password: bytes | None = None
    ) -> CertificateBundle:
        """Load a bundle: the first certificate is the leaf, the rest its chain.

        Raises :class:`PemError` for bad PEM and :class:`KeyMismatchError` if the key is not
        the certificate's.
        """
        certs = load_pem_certificates(certificate_pem)
        key = load_private_key(private_key_pem, password=password)
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        cert_spki = certs[0].public_key().public_bytes(serialization.Encoding.DER, public)
        key_spki = key.public_key().public_bytes(serialization.Encoding.DER, public)
        if cert_spki != key_spki:
            raise KeyMismatchError(
                f"private key does not match certificate {certs[0].subject.rfc4514_string()!r}"
            )
        return cls(certificate=certs[0], private_key=key, chain=tuple(certs[1:]))

    @classmethod
    def from_files(cls, cert_path: Path, key_path: Path) -> CertificateBundle:
        """Load a bundle from a certificate file and a key file (see :meth:`from_pem`)."""
        cert_data = Path(cert_path).read_bytes()
        key_data = Path(key_path).read_bytes()
        try:
            return cls.from_pem(cert_data, key_data)
        except PemError as exc:
            raise PemError(f"{cert_path} / {key_path}: {exc}") from exc


def write_pem_files(
    bundle: CertificateBundle,
    directory: Path | str,
    *,
    cert_name: str,
    key_name: str,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``bundle.chain_pem()`` and the private key into ``directory``.

    The key file gets mode 0600, the certificate 0644; ``directory`` is created if missing.
    Both paths are checked before anything is written, so a refusal leaves no half-written pair.
    Returns ``(cert_path, key_path)``; raises :class:`OutputExistsError` if either exists and
    ``overwrite`` is false.
    """
    directory = Path(directory)
    cert_path = directory / cert_name
    key_path = directory / key_name
    if cert_path == key_path:
        raise ValueError(f"cert_name and key_name must differ (both are {cert_name!r})")
    if not overwrite:
        existing = [str(p) for p in (cert_path, key_path) if p.exists()]
        if existing:
            raise OutputExistsError(
                f"refusing to overwrite existing file(s): {', '.join(existing)}"
            )
    write_file(key_path, bundle.private_key_pem(), mode=KEY_FILE_MODE, overwrite=overwrite)
    write_file(cert_path, bundle.chain_pem(), mode=CERT_FILE_MODE, overwrite=overwrite)
    return cert_path, key_path
