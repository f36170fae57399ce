"""A small, strict DER reader for the X.509 fields an agent reads from its own files.

An agent that starts and serves normally needs a few facts of its certificate and of the
gateway CA bundle (serial, subject, validity, whether a certificate can anchor trust) and the
algorithm of its private key; TLS itself is the stdlib `ssl` module. Reading them here keeps
``cryptography`` (ten megabytes of resting memory) out of such an agent: it is loaded only when
something is wrong and an error must say what (:mod:`certs.ssl_first`).

Strict and bounded: definite lengths only, minimal length encoding, low tag numbers, at most
:data:`MAX_CERTIFICATE_BYTES` per certificate, and a fixed structure walked without recursion.
Anything else (truncated, a length past the end, a wrong tag, a string type this reader does not
decode) raises :class:`DerError`; callers then ask ``cryptography``, which decides.

Names print as ``cryptography``'s ``Name.rfc4514_string()`` does: last RDN first, short names
for the attributes it knows (CN, O, OU, ...), the dotted OID for the others, its escaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MAX_CERTIFICATE_BYTES = 64 * 1024
"""A larger certificate is not read here (``cryptography`` decides about it)."""

_SEQUENCE = 0x30
_SET = 0x31
_INTEGER = 0x02
_BOOLEAN = 0x01
_OCTET_STRING = 0x04
_OID = 0x06
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_VERSION = 0xA0
_EXTENSIONS = 0xA3
_SAN_DNS = 0x82
_SAN_URI = 0x86
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii"}
"""UTF8String, PrintableString, IA5String: the string types of the names planelink issues."""

_PRINTABLE_STRING = 0x13
_PRINTABLE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)
_BASIC_CONSTRAINTS = "2.5.29.19"
_EXTENDED_KEY_USAGE = "2.5.29.37"
_SUBJECT_ALT_NAME = "2.5.29.17"
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"


class DerError(ValueError):
    """Bytes this reader does not accept as the structure it was asked to read."""


@dataclass(frozen=True, slots=True)
class CertificateFields:
    """What an agent reads of a certificate; the `der` is kept for a diagnosis that needs
    ``cryptography`` later (a handshake the gateway's certificate failed)."""

    der: bytes
    serial_number: int
    subject: str
    """RFC 4514, as ``cryptography`` prints it."""
    issuer: str
    subject_der: bytes
    """The subject Name's DER (tag and length too), to compare with the issuer's."""
    issuer_der: bytes
    not_valid_before_utc: datetime
    not_valid_after_utc: datetime
    is_ca: bool
    """basicConstraints cA (False without the extension)."""
    extended_key_usages: tuple[str, ...]
    """Dotted OIDs; empty without the extension."""
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Element:
    tag: int
    head: int
    """Where the element (its tag) begins."""
    start: int
    """Where the contents begin."""
    end: int
    """Where the contents end (and the next element begins)."""


def _element(data: bytes, pos: int, end: int) -> _Element:
    if pos + 2 > end:
        raise DerError(f"truncated at byte {pos}: no room for a tag and a length")
    head = pos
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError(f"high tag number at byte {pos}")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError(f"indefinite length at byte {pos - 1}")
    else:
        count = first & 0x7F
        if count > 4:
            raise DerError(f"a length of {count} bytes at byte {pos - 1}")
        if pos + count > end:
            raise DerError(f"truncated length at byte {pos - 1}")
        raw = data[pos : pos + count]
        length = int.from_bytes(raw, "big")
        if raw[0] == 0 or length < 0x80:
            raise DerError(f"length not minimally encoded at byte {pos - 1}")
        pos += count
    if pos + length > end:
        raise DerError(f"length {length} at byte {pos} runs past the end ({end})")
    return _Element(tag, head, pos, pos + length)


def _expect(data: bytes, pos: int, end: int, tag: int) -> _Element:
    element = _element(data, pos, end)
    if element.tag != tag:
        raise DerError(f"expected tag 0x{tag:02x} at byte {pos}, found 0x{element.tag:02x}")
    return element


def _children(data: bytes, parent: _Element) -> list[_Element]:
    found: list[_Element] = []
    pos = parent.start
    while pos < parent.end:
        child = _element(data, pos, parent.end)
        found.append(child)
        pos = child.end
    return found


def _integer(data: bytes, element: _Element) -> int:
    raw = data[element.start : element.end]
    if not raw:
        raise DerError("an empty INTEGER")
    if len(raw) > 1 and ((raw[0] == 0 and raw[1] < 0x80) or (raw[0] == 0xFF and raw[1] >= 0x80)):
        raise DerError("INTEGER not minimally encoded")
    return int.from_bytes(raw, "big", signed=True)


def _boolean(data: bytes, element: _Element) -> bool:
    raw = data[element.start : element.end]
    if raw not in (b"\x00", b"\xff"):
        raise DerError("BOOLEAN neither 0x00 nor 0xff")
    return raw == b"\xff"


def oid(data: bytes, element: _Element | None = None) -> str:
    """The dotted form of an OBJECT IDENTIFIER's contents (all of `data` without `element`)."""
    raw = data if element is None else data[element.start : element.end]
    if not raw or raw[-1] & 0x80:
        raise DerError("an empty or truncated OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in raw:
        if fresh and byte == 0x80:
            raise DerError("OBJECT IDENTIFIER arc not minimally encoded")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in (*head, *arcs[1:]))


def _time(data: bytes, element: _Element) -> datetime:
    text = data[element.start : element.end]
    if element.tag == _UTC_TIME and len(text) == 13:
        digits = text[:12]
        year = int(digits[:2].decode()) if digits.isdigit() else -1
        full = (1900 if year >= 50 else 2000) + year
        rest = digits[2:]
    elif element.tag == _GENERALIZED_TIME and len(text) == 15:
        digits = text[:14]
        full = int(digits[:4].decode()) if digits.isdigit() else -1
        rest = digits[4:]
    else:
        raise DerError(f"a time of tag 0x{element.tag:02x} and {len(text)} bytes")
    if not digits.isdigit() or not text.endswith(b"Z") or full < 0:
        raise DerError(f"a time that is not digits and 'Z': {text!r}")
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    try:
        return datetime(full, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as error:
        raise DerError(f"an impossible time {text!r}: {error}") from None


def escape_rfc4514(value: str) -> str:
    """An attribute value escaped as ``cryptography`` escapes it in an RFC 4514 string."""
    if not value:
        return ""
    for special in ("\\", '"', "+", ",", ";", "<", ">"):
        value = value.replace(special, "\\" + special)
    value = value.replace("\0", "\\00")
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def _name(data: bytes, element: _Element) -> str:
    rdns: list[str] = []
    for rdn in _children(data, element):
        if rdn.tag != _SET:
            raise DerError(f"a name part of tag 0x{rdn.tag:02x}, not a SET")
        attributes: list[str] = []
        for attribute in _children(data, rdn):
            if attribute.tag != _SEQUENCE:
                raise DerError("a name attribute that is not a SEQUENCE")
            parts = _children(data, attribute)
            if len(parts) != 2 or parts[0].tag != _OID:
                raise DerError("a name attribute that is not (OID, value)")
            encoding = _STRINGS.get(parts[1].tag)
            if encoding is None:
                raise DerError(f"a name value of string tag 0x{parts[1].tag:02x}")
            raw = data[parts[1].start : parts[1].end]
            if parts[1].tag == _PRINTABLE_STRING and not _PRINTABLE.issuperset(raw):
                raise DerError("a PrintableString with a character it may not hold")
            try:
                value = raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise DerError(f"a name value that does not decode: {error}") from None
            dotted = oid(data, parts[0])
            attributes.append(f"{_SHORT_NAMES.get(dotted, dotted)}={escape_rfc4514(value)}")
        if not attributes:
            raise DerError("an empty name part")
        rdns.append("+".join(attributes))
    return ",".join(reversed(rdns))


@dataclass(slots=True)
class _Extensions:
    is_ca: bool = False
    extended_key_usages: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()


def _extensions(data: bytes, wrapper: _Element) -> _Extensions:
    found = _Extensions()
    seen: set[str] = set()
    (sequence,) = _exactly(data, wrapper, 1)
    if sequence.tag != _SEQUENCE:
        raise DerError("extensions that are not a SEQUENCE")
    for extension in _children(data, sequence):
        parts = _children(data, extension) if extension.tag == _SEQUENCE else []
        if len(parts) not in (2, 3) or parts[0].tag != _OID or parts[-1].tag != _OCTET_STRING:
            raise DerError("an extension that is not (OID, critical?, OCTET STRING)")
        if len(parts) == 3 and (parts[1].tag != _BOOLEAN or not _boolean(data, parts[1])):
            raise DerError("an extension's critical flag that is not an explicit TRUE")
        name = oid(data, parts[0])
        if name in seen:
            raise DerError(f"extension {name} twice")
        seen.add(name)
        value = _element(data, parts[-1].start, parts[-1].end)
        if value.end != parts[-1].end:
            raise DerError(f"extension {name} has bytes after its value")
        if name not in (_BASIC_CONSTRAINTS, _EXTENDED_KEY_USAGE, _SUBJECT_ALT_NAME):
            continue
        if value.tag != _SEQUENCE:
            raise DerError(f"extension {name} is not a SEQUENCE")
        _note_extension(found, name, data, _children(data, value))
    return found


def _note_extension(found: _Extensions, name: str, data: bytes, items: list[_Element]) -> None:
    if name == _BASIC_CONSTRAINTS:
        if items and items[0].tag == _BOOLEAN:
            found.is_ca = _boolean(data, items[0])
            if not found.is_ca:  # DER leaves the default out
                raise DerError("basicConstraints with an explicit cA FALSE")
    elif name == _EXTENDED_KEY_USAGE:
        if any(item.tag != _OID for item in items):
            raise DerError("an extended key usage that is not an OID")
        found.extended_key_usages = tuple(oid(data, item) for item in items)
    else:
        found.dns_names = _ascii_names(data, items, _SAN_DNS)
        found.uris = _ascii_names(data, items, _SAN_URI)


def _ascii_names(data: bytes, items: list[_Element], tag: int) -> tuple[str, ...]:
    try:
        return tuple(data[i.start : i.end].decode("ascii") for i in items if i.tag == tag)
    except UnicodeDecodeError:
        raise DerError("a subject alternative name that is not ASCII") from None


def _exactly(data: bytes, parent: _Element, count: int) -> list[_Element]:
    children = _children(data, parent)
    if len(children) != count:
        raise DerError(f"{len(children)} elements where {count} belong")
    return children


def read_certificate(der: bytes) -> CertificateFields:
    """The fields of one DER certificate; raises :class:`DerError` for anything it does not
    read exactly (the signature is not checked: TLS and ``cryptography`` do that)."""
    der = bytes(der)
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise DerError(f"a certificate of {len(der)} bytes (at most {MAX_CERTIFICATE_BYTES})")
    outer = _expect(der, 0, len(der), _SEQUENCE)
    if outer.end != len(der):
        raise DerError(f"{len(der) - outer.end} bytes after the certificate")
    tbs, algorithm, signature = _exactly(der, outer, 3)
    if tbs.tag != _SEQUENCE or algorithm.tag != _SEQUENCE or signature.tag != 0x03:
        raise DerError("a certificate that is not (SEQUENCE, SEQUENCE, BIT STRING)")
    fields = _children(der, tbs)
    if fields and fields[0].tag == _VERSION:
        (version,) = _exactly(der, fields[0], 1)
        if version.tag != _INTEGER or _integer(der, version) not in (1, 2):
            raise DerError("a version other than v2 or v3")
        fields = fields[1:]
    if len(fields) < 6:
        raise DerError(f"a TBSCertificate of {len(fields)} fields")
    serial, _, issuer, validity, subject, public_key = fields[:6]
    tags = (serial.tag, issuer.tag, validity.tag, subject.tag, public_key.tag)
    if tags != (_INTEGER, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE):
        raise DerError("a TBSCertificate whose fields have the wrong tags")
    not_before, not_after = _exactly(der, validity, 2)
    extensions = _Extensions()
    for optional in fields[6:]:
        if optional.tag == _EXTENSIONS:
            extensions = _extensions(der, optional)
        elif optional.tag not in (0x81, 0x82, 0xA1, 0xA2):  # the unique identifiers
            raise DerError(f"a TBSCertificate field of tag 0x{optional.tag:02x}")
    return CertificateFields(
        der=der,
        serial_number=_integer(der, serial),
        subject=_name(der, subject),
        issuer=_name(der, issuer),
        subject_der=der[subject.head : subject.end],
        issuer_der=der[issuer.head : issuer.end],
        not_valid_before_utc=_time(der, not_before),
        not_valid_after_utc=_time(der, not_after),
        is_ca=extensions.is_ca,
        extended_key_usages=extensions.extended_key_usages,
        dns_names=extensions.dns_names,
        uris=extensions.uris,
    )


def private_key_algorithm(der: bytes) -> str:
    """The algorithm OID of a PKCS#8 ``PrivateKeyInfo``; raises :class:`DerError`."""
    outer = _expect(der, 0, len(der), _SEQUENCE)
    if outer.end != len(der):
        raise DerError("bytes after the private key")
    parts = _children(der, outer)
    if len(parts) < 3 or parts[0].tag != _INTEGER or parts[1].tag != _SEQUENCE:
        raise DerError("a private key that is not (version, algorithm, key)")
    identifier = _expect(der, parts[1].start, parts[1].end, _OID)
    return oid(der, identifier)
