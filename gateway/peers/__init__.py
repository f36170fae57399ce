"""Several replicas, one gateway: who is live (`directory`), how they reach each other."""

from gateway.peers.directory import PeerDirectory
from gateway.peers.settings import PeerSettings

__all__ = ["PeerDirectory", "PeerSettings"]
