"""The forwarding policy of each hop, with bytes: what is dropped, what is replaced, what an
upgrade keeps (`http1.forwarding`)."""

from __future__ import annotations

import pytest

from http1.forwarding import (
    FROM_PEER,
    HOP_BY_HOP,
    TO_AGENT,
    TO_CALLER,
    TO_GATEWAY,
    TO_PEER,
    TO_UPSTREAM,
    Policy,
)
from http1.writer import request_head_bytes
from protocol import Header

# What a hop may receive: end-to-end fields, hop-by-hop ones, and one named by Connection.
_RECEIVED: list[Header] = [
    (b"Connection", b"keep-alive, X-Secret"),
    (b"X-Secret", b"1"),
    (b"Keep-Alive", b"timeout=5"),
    (b"Proxy-Connection", b"keep-alive"),
    (b"Proxy-Authorization", b"Basic cHJveHk="),
    (b"Proxy-Authenticate", b"Basic"),
    (b"TE", b"trailers"),
    (b"Trailer", b"X-Checksum"),
    (b"Transfer-Encoding", b"chunked"),
    (b"Upgrade", b"websocket"),
    (b"Host", b"gateway.example:6443"),
    (b"Authorization", b"Bearer the-callers"),
    (b"Content-Length", b"3"),
    (b"Expect", b"100-continue"),
    (b"Accept", b"application/json"),
    (b"accept", b"text/plain"),
    (b"Impersonate-User", b"jane"),
]


def _names(headers: list[Header]) -> list[bytes]:
    return [name.lower() for name, _ in headers]


@pytest.mark.parametrize("policy", [TO_AGENT, TO_UPSTREAM, TO_GATEWAY, TO_CALLER])
def test_every_hop_drops_the_hop_by_hop_fields_and_those_connection_names(policy: Policy) -> None:
    kept = _names(policy.apply(_RECEIVED))
    assert not HOP_BY_HOP & set(kept)
    assert b"x-secret" not in kept
    # End-to-end fields pass in order, duplicates and case kept.
    accepts = [
        (name, value) for name, value in policy.apply(_RECEIVED) if name.lower() == b"accept"
    ]
    assert accepts == [(b"Accept", b"application/json"), (b"accept", b"text/plain")]


_END_TO_END = b"Accept: application/json\r\naccept: text/plain\r\nImpersonate-User: jane\r\n"


@pytest.mark.parametrize(
    ("policy", "fields"),
    [
        # No caller credential and no Host reach an agent; the declared length does.
        (TO_AGENT, b"Content-Length: 3\r\nExpect: 100-continue\r\n" + _END_TO_END),
        # The agent replaces Host, credentials and framing with its own, and does no Expect.
        (TO_UPSTREAM, _END_TO_END),
    ],
)
def test_what_each_request_hop_passes_on(policy: Policy, fields: bytes) -> None:
    head = request_head_bytes("GET", "/api", policy.apply(_RECEIVED))
    assert head == b"GET /api HTTP/1.1\r\n" + fields + b"\r\n"


def test_a_caller_may_not_ask_for_impersonation_in_any_case() -> None:
    assert TO_AGENT.refused_field([(b"Accept", b"*/*")]) is None
    assert TO_AGENT.refused_field(_RECEIVED) == b"Impersonate-User"
    assert TO_AGENT.refused_field([(b"impersonate-group", b"admins")]) == b"impersonate-group"
    assert TO_AGENT.refused_field([(b"IMPERSONATE-EXTRA-X", b"y")]) == b"IMPERSONATE-EXTRA-X"
    # Only the caller's hop refuses: the agent passes the gateway's own impersonation on.
    assert TO_UPSTREAM.refused_field(_RECEIVED) is None


def test_the_agent_passes_the_api_servers_end_to_end_answer_back() -> None:
    answer: list[Header] = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"2"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"dropped"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Audit-Id", b"abc"),
    ]
    assert TO_GATEWAY.apply(answer) == [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"2"),
        (b"Audit-Id", b"abc"),
    ]


def test_the_gateway_drops_the_agents_length_which_it_states_itself() -> None:
    answer: list[Header] = [(b"Content-Length", b"2"), (b"Audit-Id", b"abc")]
    assert TO_CALLER.apply(answer) == [(b"Audit-Id", b"abc")]


@pytest.mark.parametrize("policy", [TO_AGENT, TO_UPSTREAM, TO_GATEWAY, TO_CALLER])
def test_an_upgrade_keeps_upgrade_and_says_connection_upgrade_once(policy: Policy) -> None:
    kept = policy.apply(_RECEIVED, upgrade=True)
    assert (b"Upgrade", b"websocket") in kept
    assert [value for name, value in kept if name.lower() == b"connection"] == [b"Upgrade"]
    assert kept[-1] == (b"Connection", b"Upgrade")
    # Everything else hop-by-hop still goes.
    assert not (HOP_BY_HOP - {b"upgrade", b"connection"}) & set(_names(kept))
    assert b"x-secret" not in _names(kept)


def test_connection_naming_upgrade_does_not_drop_it_from_an_upgrade() -> None:
    # The request as kubectl sends it: the Connection field names Upgrade.
    received: list[Header] = [(b"Connection", b"Upgrade"), (b"Upgrade", b"SPDY/3.1")]
    assert TO_AGENT.apply(received, upgrade=True) == [
        (b"Upgrade", b"SPDY/3.1"),
        (b"Connection", b"Upgrade"),
    ]
    assert TO_AGENT.apply(received) == []


def test_what_the_gateway_sends_for_an_upgrade_reaches_the_api_server_unchanged() -> None:
    received: list[Header] = [(b"Connection", b"Upgrade"), (b"Upgrade", b"SPDY/3.1")]
    to_agent = TO_AGENT.apply(received, upgrade=True)
    assert TO_UPSTREAM.apply(to_agent, upgrade=True) == to_agent


def test_a_policy_cannot_own_upgrade() -> None:
    with pytest.raises(ValueError, match="Upgrade"):
        Policy("bad", dropped=frozenset({b"upgrade"}))


def test_the_request_id_goes_to_peers_and_agents_but_never_to_an_api_server_or_back() -> None:
    received: list[Header] = [(b"Planelink-Request-Id", b"r-1"), (b"Accept", b"*/*")]
    assert _names(TO_PEER.apply(received)) == [b"planelink-request-id", b"accept"]
    # The API server never sees it; the gateway writes its own into the caller's answer (an
    # agent's or a peer's is not passed on), and a peer adds the one it adopted itself.
    for policy in (TO_UPSTREAM, TO_CALLER, FROM_PEER):
        assert _names(policy.apply(received)) == [b"accept"], policy
    # A caller may not send one at all.
    assert TO_AGENT.refused_field(received) == b"Planelink-Request-Id"
