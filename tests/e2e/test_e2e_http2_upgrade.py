"""An upgrade tried over HTTP/2 through the gateway is answered as the real API server answers
it. Upgrades are HTTP/1.1's (client-go opens exec, attach and port-forward on HTTP/1.1
connections itself); over HTTP/2, what a client can send is:

- what curl sends: it leaves `Connection` and `Upgrade` out of an HTTP/2 request, so a plain
  request for exec arrives, which the API server refuses (400, "Upgrade request required");
- what a careless client sends: `connection`/`upgrade` fields, which HTTP/2 forbids (Go's
  server, the API server's, answers 400 naming the field);
- RFC 8441's extended CONNECT, which neither server offers (a stream reset, PROTOCOL_ERROR).

The API server needs a pod bound to a node to get as far as the upgrade; no kubelet listens
where the node says, and none is reached.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from envtest.pytest_plugin import ServerFactory
from tests.e2e.http2_lab import Lab, curl, http2_lab, unique
from tests.kit.h2_request import Header, RawAnswer, send_raw
from tests.kit.waits import within

PROTOCOL_ERROR = 1


@pytest.fixture
async def lab(kube_servers: ServerFactory, tmp_path: Path) -> AsyncIterator[Lab]:
    async with http2_lab(kube_servers("e2e-http2"), tmp_path) as lab:
        yield lab


EXEC = "/api/v1/namespaces/{namespace}/pods/shell/exec?command=date&stdout=true"
WEBSOCKET_FIELDS = [
    argument
    for field in (
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol: v5.channel.k8s.io",
    )
    for argument in ("--header", field)
]


async def _pod_on_a_node(lab: Lab) -> str:
    """A namespace with pod `shell` bound to a node: what the API server needs to get as far
    as the upgrade (no kubelet listens where the node says)."""
    namespace = unique("h2-upgrade")
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"node-{namespace}"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}},
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "shell", "namespace": namespace},
        "spec": {
            "nodeName": f"node-{namespace}",
            "containers": [{"name": "main", "image": "busybox"}],
        },
    }
    await lab.direct("create", "namespace", namespace)
    await lab.direct("create", "-f", "-", stdin=json.dumps(node))
    await lab.direct("create", "-f", "-", stdin=json.dumps(pod))
    return namespace


async def test_curl_upgrade_over_http2_is_answered_as_the_api_server_answers(lab: Lab) -> None:
    """curl leaves `Connection` and `Upgrade` out of an HTTP/2 request: what arrives is a plain
    request for exec, which the API server refuses (400, "Upgrade request required")."""
    path = EXEC.format(namespace=await _pod_on_a_node(lab))
    direct = await curl("--http2", *lab.admin_curl_args(), *WEBSOCKET_FIELDS, lab.server.url + path)
    via_gateway = await curl(
        "--http2", *lab.caller_curl_args(), *WEBSOCKET_FIELDS, lab.gateway_url(path)
    )
    assert (direct.version, direct.status) == ("2", 400), direct
    assert (via_gateway.version, via_gateway.status) == ("2", 400), via_gateway
    direct_status, gateway_status = json.loads(direct.body), json.loads(via_gateway.body)
    assert direct_status["message"] == "Upgrade request required"
    assert (gateway_status["reason"], gateway_status["message"]) == (
        direct_status["reason"],
        direct_status["message"],
    )


async def send_both(lab: Lab, path: str, method: bytes, fields: list[Header]) -> list[RawAnswer]:
    """The request (`fields` after the pseudo-fields) sent straight to the API server, then
    through the gateway: the two answers in that order."""
    assert lab.local.gateway is not None
    gateway_port = lab.local.gateway.callers.port
    plane = lab.plane
    targets = [
        (
            lab.server.port,
            lab.server.ssl_context(),
            path,
            [("authorization", lab.server.admin_token)],
        ),
        (
            gateway_port,
            lab.local.caller_ssl_context(),
            f"/planes/{plane.namespace}/{plane.name}/k8s{path}",
            [],
        ),
    ]
    answers = []
    for port, context, target, token in targets:
        head = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", f"127.0.0.1:{port}".encode()),
            (b":path", target.encode()),
            *fields,
            *((name.encode(), f"Bearer {value}".encode()) for name, value in token),
        ]
        async with within(30):
            answers.append(await send_raw("127.0.0.1", port, context, head))
    return answers


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([(b"connection", b"Upgrade"), (b"upgrade", b"websocket")], id="connection"),
        pytest.param([(b"upgrade", b"websocket")], id="upgrade"),
    ],
)
async def test_forbidden_upgrade_fields_are_answered_as_the_api_server_answers(
    lab: Lab, fields: list[Header]
) -> None:
    """Go's HTTP/2 server answers 400, naming the first field HTTP/2 forbids (it does not reset
    the stream)."""
    path = EXEC.format(namespace=await _pod_on_a_node(lab))
    direct, via_gateway = await send_both(lab, path, b"GET", fields)
    named = fields[0][0].title()
    assert (direct.status, direct.reset) == (400, None), direct
    assert direct.body == b'request header "%s" is not valid in HTTP/2\n' % named, direct
    assert (via_gateway.status, via_gateway.reset) == (direct.status, direct.reset), via_gateway
    assert named in via_gateway.body, via_gateway


async def test_an_extended_connect_is_refused_as_the_api_server_refuses_it(lab: Lab) -> None:
    """RFC 8441's WebSocket over HTTP/2: neither server offers it (no
    SETTINGS_ENABLE_CONNECT_PROTOCOL), so `:protocol` makes the request malformed."""
    path = EXEC.format(namespace=await _pod_on_a_node(lab))
    direct, via_gateway = await send_both(lab, path, b"CONNECT", [(b":protocol", b"websocket")])
    assert (direct.status, direct.reset) == (None, PROTOCOL_ERROR), direct
    assert (via_gateway.status, via_gateway.reset) == (None, PROTOCOL_ERROR), via_gateway
