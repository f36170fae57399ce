"""Who may hold a connection on a listening port: the connection budget of each port.

Design. Every accepted connection is first *unauthenticated*: it has not yet shown a
certificate (or, on the caller port with tokens, a credential) that verifies. Such connections
cost the gateway a file descriptor and a little memory while proving nothing, so they live in a
budget of their own, separate from the authenticated ones:

* `max_unauthenticated` bounds them per port. A new arrival never waits for room: it *evicts the
  oldest* unauthenticated connection. A flood of anonymous sockets (from any number of source
  addresses) therefore cannot keep out a client that completes its handshake promptly: the
  newcomer is only ever at risk after `max_unauthenticated` further arrivals, and the flood's
  own sockets cycle instead of accumulating.
* `max_unauthenticated_per_ip` bounds how many of them one source address holds. An address at
  its limit is refused outright (it evicts nobody), so one host cannot churn the budget and
  evict everyone else's handshakes. Authenticated connections are not counted per address:
  many agents behind one NAT, or a control plane with many watches, are legitimate.
* `max_connections` bounds all connections of the port (authenticated or not). At the limit a
  newcomer evicts the oldest unauthenticated connection if there is one, else it is refused;
  authenticated connections are never evicted.

The limits of both ports stay below the process's file-descriptor limit (`fit_to_fd_limit`), so
the operator port, the control-plane client and established tunnels keep their descriptors.

This module is pure bookkeeping: it never touches a socket, a clock or the event loop. The
acceptor (`gateway.acceptor`) asks it and acts on the answer.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from enum import StrEnum


@dataclass(frozen=True)
class AdmissionSettings:
    """Connection limits and the deadlines of the phases before a port's protocol begins."""

    max_connections: int = 4096
    """Connections of this port at once, authenticated or not."""
    max_unauthenticated: int = 512
    """Connections not yet authenticated; a newcomer evicts the oldest beyond this."""
    max_unauthenticated_per_ip: int = 256
    """Connections not yet authenticated from one source address; beyond it, refused. Not
    smaller: over HTTP/1.1 client-go opens one connection per concurrent request, so a
    controller starting its informers handshakes dozens of watches at once from one address
    (and many callers may share one address behind a NAT)."""
    client_hello_timeout: float = 3.0
    """From accept to the first byte of the TLS ClientHello; no TLS state exists before it."""
    tls_handshake_timeout: float = 5.0
    """From the ClientHello to a finished handshake (including the wait for a handshake slot)."""
    max_concurrent_handshakes: int = 64
    """TLS handshakes in progress at once; a slot is taken only once a ClientHello is here."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_unauthenticated", "max_unauthenticated_per_ip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_concurrent_handshakes < 1:
            raise ValueError("max_concurrent_handshakes must be at least 1")
        if self.client_hello_timeout <= 0 or self.tls_handshake_timeout <= 0:
            raise ValueError("the ClientHello and TLS handshake timeouts must be positive")


class Refusal(StrEnum):
    """Why a connection was refused or ended by admission (the metric's `reason` label)."""

    PER_IP_LIMIT = "per_ip_limit"
    GLOBAL_LIMIT = "global_limit"
    EVICTED = "evicted"
    CLIENT_HELLO_TIMEOUT = "client_hello_timeout"
    TLS_HANDSHAKE_TIMEOUT = "tls_handshake_timeout"
    TLS_FAILED = "tls_failed"
    UNTRUSTED_BY_PEER = "untrusted_by_peer"
    """The client aborted the handshake: it does not trust the gateway's certificate."""
    HEAD_TIMEOUT = "head_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    UPGRADE_TIMEOUT = "upgrade_timeout"


class Slot:
    """One admitted connection's place in its port's budget."""

    __slots__ = ("address", "authenticated", "number", "released")

    def __init__(self, address: str, number: int) -> None:
        self.address = address
        self.number = number
        self.authenticated = False
        self.released = False

    def __repr__(self) -> str:
        state = "authenticated" if self.authenticated else "unauthenticated"
        return f"<Slot #{self.number} {self.address} {state}>"


@dataclass(frozen=True)
class Decision:
    """What to do with an arrival: `slot` is None when it is refused (`refusal` says why);
    `evicted` is a connection to end to make room for it."""

    slot: Slot | None
    refusal: Refusal | None = None
    evicted: Slot | None = None


class ConnectionBudget:
    """The connections of one port, and the decisions of the module docstring."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self._settings = settings
        self._numbers = itertools.count(1)
        self._unauthenticated: OrderedDict[Slot, None] = OrderedDict()  # oldest first
        self._unauthenticated_per_ip: Counter[str] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    @property
    def unauthenticated(self) -> int:
        return len(self._unauthenticated)

    def unauthenticated_from(self, address: str) -> int:
        return self._unauthenticated_per_ip[address]

    def admit(self, address: str) -> Decision:
        """Decide on a connection just accepted from `address`; an admitted one must be
        `release`d when it ends (an evicted one is released here)."""
        settings = self._settings
        if self._unauthenticated_per_ip[address] >= settings.max_unauthenticated_per_ip:
            return Decision(None, Refusal.PER_IP_LIMIT)
        evicted = None
        full = self._total >= settings.max_connections
        if full or len(self._unauthenticated) >= settings.max_unauthenticated:
            if not self._unauthenticated:
                return Decision(None, Refusal.GLOBAL_LIMIT)
            evicted = next(iter(self._unauthenticated))
            self.release(evicted)
        slot = Slot(address, next(self._numbers))
        self._unauthenticated[slot] = None
        self._unauthenticated_per_ip[address] += 1
        self._total += 1
        return Decision(slot, evicted=evicted)

    def authenticate(self, slot: Slot) -> None:
        """`slot`'s peer proved who it is: it leaves the unauthenticated budget for good."""
        if slot.released or slot.authenticated:
            return
        slot.authenticated = True
        del self._unauthenticated[slot]
        self._forget_address(slot.address)

    def release(self, slot: Slot) -> None:
        """`slot`'s connection ended (idempotent)."""
        if slot.released:
            return
        slot.released = True
        self._total -= 1
        if not slot.authenticated:
            del self._unauthenticated[slot]
            self._forget_address(slot.address)

    def _forget_address(self, address: str) -> None:
        self._unauthenticated_per_ip[address] -= 1
        if self._unauthenticated_per_ip[address] <= 0:
            del self._unauthenticated_per_ip[address]  # no entry per address ever seen


def fit_to_fd_limit(
    ports: dict[str, AdmissionSettings], *, fd_limit: int, reserve: int
) -> tuple[dict[str, AdmissionSettings], bool]:
    """The ports' settings with `max_connections` scaled down, if need be, so that all of them
    together leave `reserve` descriptors of `fd_limit` free; True if anything was lowered."""
    wanted = sum(settings.max_connections for settings in ports.values())
    available = max(len(ports), fd_limit - reserve)
    if wanted <= available:
        return ports, False
    fitted = {}
    for name, settings in ports.items():
        limit = max(1, settings.max_connections * available // wanted)
        fitted[name] = replace(
            settings,
            max_connections=limit,
            max_unauthenticated=min(settings.max_unauthenticated, limit),
            max_unauthenticated_per_ip=min(settings.max_unauthenticated_per_ip, limit),
        )
    return fitted, True
