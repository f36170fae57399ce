"""What a Kubernetes API request asks for, as the API server's `RequestInfoFactory` reads it
(k8s.io/apiserver/pkg/endpoints/request/requestinfo.go): the verb kubectl and RBAC speak
(get, list, watch, create, update, patch, delete, deletecollection) and the resource,
subresource, namespace and name, from the method, path and query alone.

A path outside `/api` and `/apis` (`/version`, `/openapi/v2`, `/healthz`) is a non-resource
request: its verb is the method in lower case and it names no resource. Discovery paths
(`/api/v1`, `/apis/apps/v1`) name no resource either.

Pure: it parses a string, never looks anything up, and never decides who may do what (that is
the API server's, behind the agent); it serves the access log.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["RequestInfo", "request_info"]

_API_PREFIXES = ("api", "apis")
_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_SPECIAL_VERBS = frozenset({"watch", "proxy"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
"""What follows `/namespaces/<name>/` that is a subresource of the namespace, not a resource
in it."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    verb: str
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    api_group: str = ""
    api_version: str = ""

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)


REMEMBERED_TARGETS = 1024
"""Readings kept, least recently used dropped first: clients ask for the same targets again and
again (a controller's list and watch, a probe), and reading one anew is a quarter of what the
access line costs."""
REMEMBERED_TARGET_LENGTH = 256
"""Longer targets are read each time, so what is kept stays under 1024 x 256 bytes whatever
callers send."""


def request_info(method: str, target: str) -> RequestInfo:
    """The request as the API server would read it; `target` is its path and query."""
    if len(target) > REMEMBERED_TARGET_LENGTH:
        return _read(method, target)
    return _remembered(method, target)


def _read(method: str, target: str) -> RequestInfo:
    url = urlsplit(target)
    parts = [unquote(part) for part in url.path.strip("/").split("/") if part]
    lower = method.lower()
    if len(parts) < 2 or parts[0] not in _API_PREFIXES:
        return RequestInfo(verb=lower)
    if parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) < 3:
        return RequestInfo(verb=lower)  # /apis/<group>: discovery
    else:
        group, version, rest = parts[1], parts[2], parts[3:]
    verb = _VERBS.get(method.upper(), lower)
    if rest and rest[0] in _SPECIAL_VERBS:
        # /watch/... (deprecated) and /proxy/...: the verb is the path's, for what follows.
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if (
        len(rest) >= 2
        and rest[0] == "namespaces"
        and (len(rest) == 2 or rest[2] in _NAMESPACE_SUBRESOURCES)
    ):
        # /namespaces/<name>[/status]: the namespace itself (resource "namespaces").
        pass
    elif len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return RequestInfo(verb=lower, api_group=group, api_version=version)
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    # What follows a proxied object's name is the path proxied to, not a subresource.
    subresource = rest[2] if len(rest) > 2 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if _watching(url.query) else "list"
    elif not name and verb == "delete":
        verb = "deletecollection"
    if resource == "namespaces" and not namespace and name:
        namespace = name
    return RequestInfo(
        verb=verb,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        api_group=group,
        api_version=version,
    )


_remembered = functools.lru_cache(maxsize=REMEMBERED_TARGETS)(_read)


def _watching(query: str) -> bool:
    return any(value in ("true", "1") for value in parse_qs(query).get("watch", []))
