"""The HELLO exchange: building our HELLO, checking the peer's, negotiating the version.

Each side sends HELLO as its first frame without waiting for the peer's. The negotiated
version is the highest version both HELLOs offer; with none in common the receiver fails
the connection with ``VERSION_MISMATCH``. Nothing here touches connection state: the
functions take values and return values (or raise a ``ConnectionProtocolError``).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterable, Mapping

from protocol.errors import ConnectionProtocolError, ErrorCode
from protocol.frames import Hello, Role
from protocol.headers import HeaderBlockError, check_token, check_value
from protocol.settings import FRAME_HEADER_SIZE, MIN_MAX_FRAME_SIZE, Settings, settings_from_wire

__all__ = [
    "CAPABILITY_REPLICAS",
    "IDENTITY_KEYS",
    "SUPPORTED_VERSIONS",
    "PeerInfo",
    "accept_hello",
    "build_hello",
]

SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
"""Protocol versions this implementation speaks."""

CAPABILITY_REPLICAS = "replicas"
"""Offered by an agent that keeps a tunnel to every live gateway replica: only to such an
agent may the gateway send REPLICAS frames (the connection enforces it on both ends)."""

IDENTITY_KEYS: Mapping[str, str] = types.MappingProxyType(
    {
        "plane": "agent: the DataPlane it serves, as <namespace>/<name>",
        "agent-id": "agent: unique id of this agent process (e.g. pod name)",
        "agent-version": "agent: its software version",
        "kubernetes-version": "agent: gitVersion of the API server behind it, when known",
        "gateway-id": "gateway: id of the gateway replica (as REPLICAS frames name it)",
    }
)
"""Well-known identity keys (informative; any token key is allowed)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the peer said about itself in its HELLO, plus the negotiated version."""

    role: Role
    version: int
    settings: Settings
    identity: Mapping[str, str]
    capabilities: tuple[str, ...]


def build_hello(
    *,
    role: Role,
    versions: Iterable[int],
    settings: Settings,
    identity: Mapping[str, str],
    capabilities: Iterable[str],
) -> bytes:
    """Validate the local HELLO fields and encode the frame; raises ``ValueError``."""
    offered = tuple(versions)
    if not offered or any(not 1 <= v <= 255 for v in offered) or len(set(offered)) != len(offered):
        raise ValueError(f"versions {offered!r} must be distinct integers in [1, 255]")
    pairs: list[tuple[bytes, bytes]] = []
    for key, value in identity.items():
        raw_key, raw_value = key.encode("ascii", "replace"), value.encode("utf-8")
        check_token("identity key", raw_key)
        check_value("identity value", raw_value)
        pairs.append((raw_key, raw_value))
    caps = tuple(cap.encode("ascii", "replace") for cap in capabilities)
    if len(set(caps)) != len(caps):
        raise ValueError(f"capabilities {caps!r} contain duplicates")
    frame = Hello(int(role), offered, tuple(settings.to_wire()), tuple(pairs), caps).encode()
    if len(frame) - FRAME_HEADER_SIZE > MIN_MAX_FRAME_SIZE:
        raise ValueError(
            f"HELLO payload of {len(frame) - FRAME_HEADER_SIZE} bytes exceeds "
            f"{MIN_MAX_FRAME_SIZE}; shorten identity or capabilities"
        )
    return frame


def accept_hello(*, local_role: Role, local_versions: Iterable[int], frame: Hello) -> PeerInfo:
    """Check the peer's HELLO and negotiate; raises ``ConnectionProtocolError``."""
    expected = Role.AGENT if local_role is Role.GATEWAY else Role.GATEWAY
    if frame.role != expected:
        raise ConnectionProtocolError(
            ErrorCode.PROTOCOL_ERROR,
            f"peer HELLO announces role {frame.role}, expected {expected.name} ({int(expected)})",
        )
    if len(set(frame.versions)) != len(frame.versions):
        raise ConnectionProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"peer HELLO repeats a version in {frame.versions!r}"
        )
    common = set(local_versions) & set(frame.versions)
    if not common:
        raise ConnectionProtocolError(
            ErrorCode.VERSION_MISMATCH,
            f"no common protocol version: peer offers {sorted(frame.versions)}, "
            f"we speak {sorted(local_versions)}",
        )
    settings = settings_from_wire(frame.settings)
    identity: dict[str, str] = {}
    try:
        for raw_key, raw_value in frame.identity:
            key = raw_key.decode("ascii")
            if key in identity:
                raise HeaderBlockError(f"identity key {key!r} appears twice")
            identity[key] = raw_value.decode("utf-8")
        caps = tuple(cap.decode("ascii") for cap in frame.capabilities)
        if len(set(caps)) != len(caps):
            raise HeaderBlockError(f"capabilities {caps!r} contain duplicates")
    except (UnicodeDecodeError, HeaderBlockError) as exc:
        raise ConnectionProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"peer HELLO identity/capabilities: {exc}"
        ) from None
    return PeerInfo(
        role=expected,
        version=max(common),
        settings=settings,
        identity=types.MappingProxyType(identity),
        capabilities=caps,
    )
