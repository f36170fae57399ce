"""Private key types: generation, and the description of public keys.

Only ECDSA P-256 and RSA (2048/3072/4096) keys are produced; they are what Kubernetes, Go's
crypto/tls and the webpki verification profile in ``cryptography`` all accept.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The private key types this package generates, loads and signs with."""

_RSA_PUBLIC_EXPONENT = 65537

_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class KeyType(enum.Enum):
    """Kind of key to generate. ``ECDSA_P256`` is the default: small, fast and widely supported."""

    ECDSA_P256 = "ecdsa-p256"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @property
    def is_rsa(self) -> bool:
        return self is not KeyType.ECDSA_P256

    @classmethod
    def parse(cls, text: str) -> KeyType:
        """Return the key type named ``text`` (its value, e.g. ``rsa-2048``, or member name)."""
        wanted = text.strip().lower().replace("_", "-")
        for member in cls:
            if wanted in (member.value, member.name.lower().replace("_", "-")):
                return member
        choices = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown key type {text!r} (choose one of: {choices})")


def generate_private_key(key_type: KeyType = KeyType.ECDSA_P256) -> PrivateKey:
    """Generate a fresh private key of ``key_type``."""
    if key_type is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    size = int(key_type.value.removeprefix("rsa-"))
    return rsa.generate_private_key(public_exponent=_RSA_PUBLIC_EXPONENT, key_size=size)


def describe_public_key(key: CertificatePublicKeyTypes) -> tuple[str, int | None]:
    """Return ``(kind, size_in_bits)`` for a public key, e.g. ``("ECDSA P-256", 256)``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVE_NAMES.get(key.curve.name, key.curve.name)
        return f"ECDSA {curve}", key.curve.key_size
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    return type(key).__name__.removeprefix("_").removesuffix("PublicKey") or "unknown", None


def key_id(key: CertificatePublicKeyTypes) -> str:
    """The key's identifier as a certificate's SubjectKeyIdentifier (and its issuer's
    AuthorityKeyIdentifier) carries it, first 8 bytes: e.g. ``"3A:4B:5C:6D:7E:8F:90:A1"``."""
    return short_hex(x509.SubjectKeyIdentifier.from_public_key(key).digest)


def key_fingerprint(key: CertificatePublicKeyTypes) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo, hex: the same for every certificate of it."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize().hex()


def short_hex(digest: bytes) -> str:
    """The first 8 bytes of a digest as colon-separated upper-case hex (what `certs inspect`
    and OpenSSL print, cut to what tells two keys apart)."""
    return digest[:8].hex(":").upper()
