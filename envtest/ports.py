"""Loopback ports for servers that tests and benchmarks start, chosen where the kernel never picks.

A port the kernel picks for `bind(0)` is free only until it is picked again, and the kernel picks
from the same range for every outgoing connection: on a busy host a client socket took such a
port between our probe and a gateway's bind (EADDRINUSE). Below that range only an explicit bind
can take a port. Each process walks the range from a random place, so that two runs side by side
seldom meet, and skips any port a bind finds taken.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000
"""Below this, registered services listen more often than not."""
_HIGHEST = 65535


def unpicked_range(ephemeral: tuple[int, int]) -> range:
    """The larger stretch of ports at or above `_LOWEST` outside `ephemeral` (inclusive bounds)."""
    low, high = ephemeral
    below = range(_LOWEST, max(_LOWEST, low))
    above = range(max(_LOWEST, high + 1), _HIGHEST + 1)
    return below if len(below) >= len(above) else above


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = EPHEMERAL_RANGE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _kernel_choice() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PortWalk:
    """Hands out ports of `ports` in turn from a random start, skipping those a bind finds taken;
    after a whole lap it begins again, by when the first ones are long closed."""

    def __init__(self, ports: range) -> None:
        self._ports = ports
        self._next = random.randrange(len(ports)) if ports else 0  # noqa: S311 - spread, not secrecy
        self._lock = threading.Lock()

    def take(self) -> int:
        if not self._ports:
            return _kernel_choice()
        with self._lock:
            for _ in range(len(self._ports)):
                port = self._ports[self._next]
                self._next = (self._next + 1) % len(self._ports)
                if _bindable(port):
                    return port
        raise RuntimeError(f"no loopback port free in {self._ports.start}-{self._ports.stop - 1}")


_walk = PortWalk(unpicked_range(_ephemeral_range()))


def free_port() -> int:
    """A loopback TCP port nothing listens on now, from outside the kernel's ephemeral range (so
    no outgoing connection can take it before the server binds it)."""
    return _walk.take()
