"""What gateway and agent agree on beyond the frame format (protocol/SPEC.md).

The agent dials `wss://<gateway><AGENT_CONNECT_PATH>?plane=<namespace>/<name>` with its client
certificate, offering the WebSocket subprotocol `SUBPROTOCOL`. The gateway answers 101 only
when the certificate verifies against that plane's CA; otherwise an HTTP error whose body is a
one-line reason and whose `REJECTION_HEADER` carries a machine-readable reason (CamelCase).

Inside the tunnel, the gateway opens one stream per caller request. The request head carries
the caller's method and path (the part after `/planes/<ns>/<name>/k8s`) and its end-to-end
headers — hop-by-hop headers are removed, and so are the caller's credentials; the agent adds
its own credentials for its API server. A body is framed on each hop by that hop's writer:
`Content-Length` travels as an end-to-end header and is honoured; without it the agent sends
the body chunked. An upgrade request (exec, attach, port-forward) opens the stream with the
upgrade flag and keeps its `Upgrade` header; a 101 answer turns the stream into a byte pipe.
"""

from __future__ import annotations

AGENT_CONNECT_PATH = "/agent/v1/connect"
PLANE_QUERY_PARAMETER = "plane"
SUBPROTOCOL = "planelink.v1"
REJECTION_HEADER = "X-Planelink-Rejection"
REJECTION_STARTING = "Starting"
"""The rejection of a gateway that does not know its planes yet: an HTTP 503 whose
`Retry-After` says when to dial again (soon; it is not the agent's fault)."""

IDENTITY_PLANE = "plane"
"""HELLO identity key: `<namespace>/<name>` of the DataPlane the agent serves."""
IDENTITY_AGENT_ID = "agent-id"
"""HELLO identity key: a stable id of the agent instance (pod name by default)."""
IDENTITY_AGENT_VERSION = "agent-version"
IDENTITY_KUBERNETES_VERSION = "kubernetes-version"
"""HELLO identity key: the gitVersion of the agent's API server, when it could read it."""

CAPABILITY_UPGRADE = "upgrade"
"""The agent tunnels HTTP upgrades (SPDY/3.1, WebSocket) as byte pipes."""
# The capability `replicas` is the protocol's own (`protocol.CAPABILITY_REPLICAS`): the
# connection itself refuses REPLICAS frames an agent did not ask for.

IDENTITY_GATEWAY_ID = "gateway-id"
"""HELLO identity key of the gateway: its replica id, as REPLICAS frames name it (the agent
holds one tunnel per id)."""
