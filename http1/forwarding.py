"""Which header fields a proxy passes on, hop by hop: the one declaration of that policy.

One exchange crosses two proxies, each in both directions, and each applies one policy once,
to the fields it received, before it passes them on:

    caller ─HTTP/1.1─▶ gateway ─TO_AGENT─▶ agent ─TO_UPSTREAM─▶ API server   (the request)
    caller ◀─TO_CALLER─ gateway ◀─TO_GATEWAY─ agent ◀─HTTP/1.1─ API server   (the response)

A request forwarded to a peer replica (the one holding the plane's tunnel) takes one more hop:
the forwarding replica applies TO_AGENT and adds its own `Impersonate-*` and the `Planelink-*`
fields that vouch for the caller; the peer applies FROM_PEER, which accepts both (only from an
authenticated peer) and passes on all but the `Planelink-*` fields:

    caller ─TO_AGENT─▶ replica ─TO_PEER (HTTP/1.1, peer mTLS)─▶ peer ─FROM_PEER─▶ agent ─▶ ...

Every policy drops the hop-by-hop fields (RFC 9110 §7.6.1: `Connection` and the fields it names,
`Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, and `Upgrade` unless the
exchange upgrades, which then carries `Connection: Upgrade` as protocol/SPEC.md §5.3 says).
Both proxies do, in both directions, because neither takes the other's word for it: the
gateway never lets an agent's fields frame a caller's connection (a second `Transfer-Encoding`
would let an agent write a response of its own into it), and the agent never lets what arrives
on its tunnel frame its API server's connection. Then each policy drops the fields its hop
replaces with its own or must not pass on (`Policy.dropped`); the writer of the next HTTP/1.1
message adds its own framing. A caller's field that must not even be asked for is refused
(`Policy.refused`), before anything is forwarded.

Pure: this module never reads, writes or interprets a value beyond `Connection`'s tokens.
"""

from __future__ import annotations

from protocol.headers import Header, Headers

__all__ = [
    "FORWARDED_BY",
    "FORWARDED_CALLER",
    "FROM_PEER",
    "HOP_BY_HOP",
    "IMPERSONATE_PREFIX",
    "PEER_REFUSED",
    "PLANELINK_PREFIX",
    "REQUEST_ID",
    "TO_AGENT",
    "TO_CALLER",
    "TO_GATEWAY",
    "TO_PEER",
    "TO_UPSTREAM",
    "Policy",
    "header_value",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Fields about one connection (RFC 9110 §7.6.1), lower-case; `Connection` names more."""

_UPGRADE = frozenset({b"upgrade"})
_CONNECTION_UPGRADE: Header = (b"Connection", b"Upgrade")


class Policy:
    """What one hop passes on of the fields it received: the end-to-end ones minus `dropped`.

    `refused` lists name prefixes a sender may not use at all: `refused_field` finds one, and
    the hop answers with a refusal instead of forwarding anything.
    """

    __slots__ = ("_dropped", "_dropped_when_upgrading", "dropped", "hop", "refused")

    def __init__(
        self, hop: str, *, dropped: frozenset[bytes] = frozenset(), refused: tuple[bytes, ...] = ()
    ) -> None:
        if _UPGRADE & dropped:
            raise ValueError("Upgrade is the exchange's to keep or drop, not a policy's")
        self.hop = hop
        self.dropped = dropped
        self.refused = refused
        # Decided once: on the request path of every exchange no set is built unless a
        # Connection field names some.
        self._dropped = HOP_BY_HOP | dropped
        self._dropped_when_upgrading = self._dropped - _UPGRADE

    def __repr__(self) -> str:
        return f"Policy({self.hop!r})"

    def apply(self, headers: Headers, *, upgrade: bool = False) -> list[Header]:
        """The fields of `headers` to pass on, in order; `upgrade` keeps `Upgrade` and adds
        `Connection: Upgrade`."""
        named: set[bytes] = set()
        for key, value in headers:
            if key.lower() == b"connection":
                named.update(token.strip().lower() for token in value.split(b","))
        dropped = self._dropped_when_upgrading if upgrade else self._dropped
        if named:
            dropped = (dropped | named) - (_UPGRADE if upgrade else frozenset())
        kept = [(key, value) for key, value in headers if key.lower() not in dropped]
        if upgrade:
            kept.append(_CONNECTION_UPGRADE)
        return kept

    def refused_field(self, headers: Headers) -> bytes | None:
        """The name of the first field a sender may not use on this hop, or None."""
        if self.refused:
            for key, _ in headers:
                if key.lower().startswith(self.refused):
                    return key
        return None


PLANELINK_PREFIX = b"planelink-"
"""Fields only gateway replicas may send each other: a caller's are refused (400)."""
FORWARDED_BY = b"planelink-forwarded-by"
"""The replica that forwarded a request to a peer (its replica id)."""
FORWARDED_CALLER = b"planelink-caller"
"""The caller a forwarding replica authenticated (its user name), for the peer's logs."""
PEER_REFUSED = b"planelink-refused"
"""On a peer's refusal (503, 429): another replica may serve the request (its value: the
refusal's reason). The forwarding replica tries its next peer rather than pass it on."""
REQUEST_ID = b"planelink-request-id"
"""The id the gateway gave a caller's request (never the caller's own): in the answer to the
caller, to a peer it forwards the request to, and to the agent, which logs it with the stream
and drops it before the API server."""
IMPERSONATE_PREFIX = b"impersonate-"

TO_AGENT = Policy(
    "gateway → agent",
    # A caller's credentials end at the gateway (which authenticated it), and so does the Host
    # it named: the gateway's. Impersonation is the gateway's to assert, never a caller's, and
    # so is vouching for a caller to a peer replica.
    dropped=frozenset({b"authorization", b"host"}),
    refused=(IMPERSONATE_PREFIX, PLANELINK_PREFIX),
)
FROM_PEER = Policy(
    "peer replica → agent",
    # The forwarding replica applied TO_AGENT and asserted impersonation itself: what it sent
    # passes on, but for the fields that were meant for this replica alone.
    # (The request id is the peer's to pass on: it adds the one it adopted.)
    dropped=frozenset({b"authorization", b"host", FORWARDED_BY, FORWARDED_CALLER, REQUEST_ID}),
)
TO_UPSTREAM = Policy(
    "agent → API server",
    # The agent's own: its upstream's Host, its credentials, the body's framing as it writes
    # it; and no 100-continue, which it does not do. The request id was the tunnel's.
    dropped=frozenset({b"host", b"authorization", b"content-length", b"expect", REQUEST_ID}),
)
TO_PEER = Policy(
    "replica → peer replica",
    # What TO_UPSTREAM drops but the request id, which names the request at the peer too.
    dropped=frozenset({b"host", b"authorization", b"content-length", b"expect"}),
)
TO_GATEWAY = Policy("agent → gateway")
TO_CALLER = Policy(
    "gateway → caller",
    # The gateway frames every response itself and states the length it counts, and names
    # the request by its own id (a peer's answer carries the same one; an agent's is not
    # to be believed).
    dropped=frozenset({b"content-length", REQUEST_ID}),
)


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
