"""What a replica's Lease says about it, and what is read back from a peer's: pure, no I/O.

A replica's Lease (`gateway.reconciler.replicas`) advertises, besides its holder (the replica
id), three annotations:

- `planelink.dev/agents`: `{"<ns>/<name>": ["<agent id>", ...]}`, the agents it holds a tunnel
  from, per plane, sorted (replicas before scale-out wrote `{"<ns>/<name>": <count>}`, still
  read: as that many agents known only to that replica);
- `planelink.dev/peer-url`: where its peer listener is reached (`https://host:port`, or "");
- `planelink.dev/host`: the pod (or host) it runs in.

The API server limits a Lease's annotations to 256 KiB in all, so what one Lease holds is
bounded: at most `max_ids` agent ids per plane (the smallest, so every replica keeps the same
ones), each id at most `MAX_AGENT_ID_CHARS` long, and the whole annotation at most `max_bytes`
(planes beyond, in name order, are left out). What is left out is reported, never silent.

Only a Lease with the `host` annotation is a peer (`is_gateway_replica`): a replica agents keep
a tunnel to and callers' requests may be forwarded to. A standalone `planelink reconciler`, or
a gateway before scale-out (whose HELLO names no replica), keeps a Lease too and its agents are
counted, but agents are never told to look for a tunnel to it.

Reading never trusts the writer: a Lease anyone could have written yields at most `max_ids`
ids per plane, a peer URL only if it is a bare `https://host:port`, and nothing at all (the
Lease is ignored as a peer) if its holder is not a plausible replica id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from urllib.parse import urlsplit

from certs import InvalidPlaneRefError, PlaneRef, parse_plane_ref
from gateway.interfaces import Replica
from kubeobject import KubeObject

AGENTS_ANNOTATION = "planelink.dev/agents"
PEER_URL_ANNOTATION = "planelink.dev/peer-url"
HOST_ANNOTATION = "planelink.dev/host"

MAX_AGENT_ID_CHARS = 253
"""Longer agent ids are advertised shortened (a prefix and a hash of the whole id, the same on
every replica, so they still match across replicas and stay distinct)."""
MAX_REPLICA_ID_CHARS = 253
MAX_TEXT_CHARS = 512
"""Longest peer URL or host name read from a Lease."""

PlaneAgents = Mapping[PlaneRef, frozenset[str]]
"""The agents of each plane, by id."""


@dataclass(frozen=True)
class Advertisement:
    """This replica's `planelink.dev/agents` annotation and what it had to leave out."""

    text: str
    ids_left_out: int
    """Agent ids not advertised because their plane had more than `max_ids`."""
    planes_left_out: tuple[PlaneRef, ...]
    """Planes not advertised at all because the annotation reached `max_bytes`."""


def bounded_agent_id(agent_id: str) -> str:
    """`agent_id` as advertised: itself, or if too long, a prefix and a hash of it."""
    if len(agent_id) <= MAX_AGENT_ID_CHARS:
        return agent_id
    digest = hashlib.sha256(agent_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{agent_id[: MAX_AGENT_ID_CHARS - 17]}~{digest}"


def advertise_agents(planes: PlaneAgents, *, max_ids: int, max_bytes: int) -> Advertisement:
    """The annotation for `planes`, within `max_ids` ids per plane and `max_bytes` in all:
    compact JSON, keys and ids sorted (what `json.dumps(..., sort_keys=True)` would write,
    built entry by entry so that its size is known as it grows)."""
    entries: list[str] = []
    size = 2  # "{}"
    ids_left_out = 0
    planes_left_out: list[PlaneRef] = []
    for name, plane in sorted((str(plane), plane) for plane, ids in planes.items() if ids):
        if planes_left_out:  # full: the rest is only counted
            planes_left_out.append(plane)
            continue
        ids = sorted({bounded_agent_id(agent_id) for agent_id in planes[plane]})
        ids_left_out += max(0, len(ids) - max_ids)
        quoted = ",".join(encode_basestring_ascii(agent_id) for agent_id in ids[:max_ids])
        entry = f"{encode_basestring_ascii(name)}:[{quoted}]"
        if size + len(entry) + 1 > max_bytes:
            planes_left_out.append(plane)
            continue
        entries.append(entry)
        size += len(entry) + 1
    return Advertisement("{" + ",".join(entries) + "}", ids_left_out, tuple(planes_left_out))


def read_agents(text: object, *, replica: str, max_ids: int) -> dict[PlaneRef, frozenset[str]]:
    """The agents per plane a Lease's annotation says; an old count `n` becomes `n` ids made
    up from `replica` (at most `max_ids`): agents only that replica knows. Anything malformed
    is skipped, entry by entry."""
    if not isinstance(text, str):
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    planes: dict[PlaneRef, frozenset[str]] = {}
    for name, value in raw.items():
        try:
            plane = parse_plane_ref(name)
        except (InvalidPlaneRefError, TypeError, ValueError):
            continue
        ids = _ids(value, replica=replica, max_ids=max_ids)
        if ids:
            planes[plane] = ids
    return planes


def _ids(value: object, *, replica: str, max_ids: int) -> frozenset[str]:
    if isinstance(value, bool):
        return frozenset()
    if isinstance(value, int):  # the format before scale-out: a count
        return frozenset(f"{replica}#{i}" for i in range(min(value, max_ids)))
    if isinstance(value, list):
        ids = sorted({v for v in value if isinstance(v, str) and 0 < len(v) <= MAX_AGENT_ID_CHARS})
        return frozenset(ids[:max_ids])
    return frozenset()


def read_peer_url(text: object) -> str:
    """A peer URL from a Lease if it is a bare `https://host:port`, else ""."""
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT_CHARS:
        return ""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError:
        return ""
    bare = not (url.path.strip("/") or url.query or url.fragment or url.username or url.password)
    if url.scheme != "https" or not url.hostname or port is None or not bare:
        return ""
    return text.rstrip("/")


def is_gateway_replica(lease: KubeObject) -> bool:
    """Whether a Lease was written by a gateway replica that agents keep a tunnel to."""
    annotations = (lease.get("metadata") or {}).get("annotations")
    return isinstance(annotations, dict) and HOST_ANNOTATION in annotations


def read_replica(lease: KubeObject, *, max_ids: int) -> Replica | None:
    """The replica a peer's Lease advertises, or None if its holder is no replica id."""
    holder = (lease.get("spec") or {}).get("holderIdentity")
    if not isinstance(holder, str) or not 0 < len(holder) <= MAX_REPLICA_ID_CHARS:
        return None
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    host = annotations.get(HOST_ANNOTATION)
    return Replica(
        id=holder,
        peer_url=read_peer_url(annotations.get(PEER_URL_ANNOTATION)),
        host=host if isinstance(host, str) and len(host) <= MAX_TEXT_CHARS else "",
        planes=read_agents(annotations.get(AGENTS_ANNOTATION), replica=holder, max_ids=max_ids),
    )
