"""PEM in and out: decoding certificates and keys, and writing them to disk safely.

Decoding errors from ``cryptography`` become :class:`certs.errors.PemError` with a message that
says what was wrong with the input. Writes never clobber a file unless asked to, and private keys
are created with mode 0600 from the start (never written first and chmod-ed later).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certs.errors import OutputExistsError, PemError
from certs.keys import PrivateKey
from certs.pem_contents import describe_pem

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)

KEY_FILE_MODE = 0o600
"""Mode of files holding private keys."""
CERT_FILE_MODE = 0o644
"""Mode of files holding only certificates."""


def certificate_pem(cert: x509.Certificate) -> bytes:
    """Encode one certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def certificates_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Encode certificates as one concatenated PEM bundle."""
    return b"".join(certificate_pem(c) for c in certs)


def private_key_pem(key: PrivateKey) -> bytes:
    """Encode a private key as unencrypted PKCS#8 PEM (``BEGIN PRIVATE KEY``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Return every certificate in a PEM bundle, in order.

    Non-certificate PEM blocks (e.g. a private key in the same file) are skipped; text between
    blocks is ignored. Raises :class:`PemError` if there is no certificate at all or a
    ``CERTIFICATE`` block does not decode.
    """
    if not isinstance(data, bytes | bytearray):
        raise PemError(f"expected PEM bytes, got {type(data).__name__}")
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    cert_blocks = [(i, raw) for i, (label, raw) in enumerate(blocks) if label == b"CERTIFICATE"]
    if not cert_blocks:
        if blocks:
            raise PemError(f"no CERTIFICATE PEM block found: the data holds {describe_pem(data)}")
        raise PemError("no PEM data found (expected '-----BEGIN CERTIFICATE-----')")
    certs: list[x509.Certificate] = []
    for number, (_, raw) in enumerate(cert_blocks, start=1):
        try:
            certs.append(x509.load_pem_x509_certificate(bytes(raw)))
        except ValueError as exc:
            raise PemError(f"certificate #{number} in the PEM data does not decode: {exc}") from exc
    return certs


def load_certificate(data: bytes) -> x509.Certificate:
    """Decode one certificate from PEM or DER bytes (the first one of a PEM bundle)."""
    if not data.strip():
        raise PemError("no certificate data (the input is empty)")
    if b"-----BEGIN" in data:
        return load_pem_certificates(data)[0]
    try:
        return x509.load_der_x509_certificate(bytes(data))
    except ValueError as exc:
        raise PemError(f"data is neither a PEM nor a DER certificate: {exc}") from exc


def load_private_key(data: bytes, *, password: bytes | None = None) -> PrivateKey:
    """Decode an ECDSA or RSA private key from PEM (PKCS#8, PKCS#1 or SEC1).

    Raises :class:`PemError` for garbage, an encrypted key without (or with a wrong) password,
    or a key type this package does not use (e.g. Ed25519).
    """
    if not isinstance(data, bytes | bytearray):
        raise PemError(f"expected PEM bytes, got {type(data).__name__}")
    if b"PRIVATE KEY-----" not in data:
        raise PemError(
            "no private key PEM block found (expected '-----BEGIN PRIVATE KEY-----'): the data "
            f"holds {describe_pem(bytes(data))}"
        )
    try:
        key = serialization.load_pem_private_key(bytes(data), password=password)
    except TypeError as exc:  # encrypted without password, or password for a plain key
        raise PemError(f"private key: {exc}") from exc
    except ValueError as exc:
        raise PemError(f"private key does not decode (corrupt or wrong password): {exc}") from exc
    except UnsupportedAlgorithm as exc:
        raise PemError(f"private key is not supported: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PemError(f"unsupported private key type {type(key).__name__}: use ECDSA or RSA")
    return key


def write_file(path: Path, data: bytes, *, mode: int, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path``, a file that has exactly ``mode`` from its first byte on.

    A new file is created exclusively (``O_EXCL``), so an existing file is never clobbered,
    even by a race; :class:`OutputExistsError` says so. With ``overwrite=True`` the data goes
    to a temporary file in the same directory that is then renamed over ``path``, so readers
    never see half a file. Missing parent directories are created.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"refusing to overwrite existing file {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError as exc:
            raise OutputExistsError(f"refusing to overwrite existing file {path}") from exc
        _fill(fd, data, mode=mode, cleanup=path)
        return path
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    _fill(fd, data, mode=mode, cleanup=Path(tmp_name))
    try:
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _fill(fd: int, data: bytes, *, mode: int, cleanup: Path) -> None:
    """Set ``mode`` on ``fd`` (the umask may have narrowed it), write, sync and close."""
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        cleanup.unlink(missing_ok=True)
        raise
