"""PEM blocks found in bytes, without decoding what they hold (pure, no ``cryptography``)."""

from __future__ import annotations

import base64
import binascii
import re

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
KEY_LABELS = frozenset({b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"})
"""PEM labels of the unencrypted private keys planelink reads."""
CSR_LABELS = frozenset({b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"})
ENCRYPTED_KEY = b"ENCRYPTED PRIVATE KEY"


def pem_blocks(data: bytes) -> list[tuple[bytes, bytes, bytes | None]]:
    """(label, the block's PEM text, its DER bytes or None) of every PEM block in `data`."""
    found: list[tuple[bytes, bytes, bytes | None]] = []
    for match in _PEM_BLOCK.finditer(data):
        body = match.group(2)
        der: bytes | None = None
        if b":" not in body:  # no RFC 1421 headers (an encrypted legacy key has them)
            try:
                der = base64.b64decode(b"".join(body.split()), validate=True)
            except (ValueError, binascii.Error):
                der = None
        found.append((match.group(1), match.group(0), der))
    return found
