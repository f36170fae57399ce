"""How a replica listens for, and reaches, its peers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
