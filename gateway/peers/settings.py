"""How a replica listens for, and reaches, its peers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.admission import AdmissionSettings


@dataclass(frozen=True)
class PeerSettings:
    """The peer listener (mTLS with the peers' own CA) and how peers are dialled.

    Every replica has a certificate from the peer CA (`planelink certs peer`), used both as
    the peer listener's server certificate and as the client certificate it forwards with;
    a connection on the peer port without one is refused in the TLS handshake.
    """

    certificate: Path
    key: Path
    ca: Path
    """The peers' CA: the only CA the peer listener and the forwarding client trust."""
    host: str = "0.0.0.0"  # noqa: S104 - peers reach it from the cluster network
    port: int = 8444
    advertise_host: str = ""
    """The address peers dial ($POD_IP); "" means 127.0.0.1 (workers of one host)."""
    admission: AdmissionSettings = field(
        default_factory=lambda: AdmissionSettings(
            max_connections=1024, max_unauthenticated=64, max_unauthenticated_per_ip=64
        )
    )
    """The peer port's connection budget, its own: one connection per request in flight from
    each peer (HTTP/1.1), and few unauthenticated ones (only peers have a certificate)."""
