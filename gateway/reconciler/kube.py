"""The one place that talks to the control plane's API server (kubernetes_asyncio).

Objects travel as plain dicts (the JSON the API server sends), never as generated models, so
what is cached is what was read. Every request goes through `_call`, which turns
`ApiException` and aiohttp errors into `gateway.reconciler.errors`; nothing above this module
catches a dependency's exception type.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import aiohttp
from kubernetes_asyncio.client import (
    ApiClient,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes_asyncio.client.exceptions import ApiException, ApiValueError

import crd
from gateway.reconciler.errors import (
    ApiError,
    Conflict,
    Gone,
    KubeError,
    NotFound,
    Unreachable,
)
from kubeobject import KubeObject

_PAGE_SIZE = 500
_MERGE_PATCH = "application/merge-patch+json"


class WatchEvent(NamedTuple):
    type: str
    """ADDED, MODIFIED, DELETED or BOOKMARK (ERROR events are raised as errors)."""
    object: KubeObject


class ListWatch(Protocol):
    """A collection that can be listed, then watched from the list's resourceVersion."""

    kind: str
    namespace: str | None
    """The namespace listed, or None for all namespaces."""

    async def list(self) -> tuple[list[KubeObject], str]:
        """Every object and the collection's resourceVersion."""
        ...

    def watch(self, resource_version: str) -> AsyncIterator[WatchEvent]:
        """Changes after `resource_version`; ends when the server ends the watch.

        Raises `Gone` if the version is too old, `Unreachable` if the connection breaks."""
        ...


@dataclass
class _Collection:
    kind: str
    namespace: str | None
    call: Callable[..., Awaitable[Any]]
    """The generated list function, with its positional arguments bound."""
    watch_timeout: int
    request_timeout: float
    label_selector: str | None = None
    field_selector: str | None = None

    async def list(self) -> tuple[list[KubeObject], str]:
        items: list[KubeObject] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"limit": _PAGE_SIZE, **self._selector()}
            if token:
                params["_continue"] = token
            page = await _call(
                self.call(**params, _preload_content=False, _request_timeout=self.request_timeout)
            )
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion", ""))

    async def watch(self, resource_version: str) -> AsyncIterator[WatchEvent]:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=10, sock_read=self.watch_timeout + 30
        )
        try:
            response = await self.call(
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _preload_content=False,
                _request_timeout=timeout,
                **self._selector(),
            )
        except (ApiException, ApiValueError, aiohttp.ClientError, TimeoutError, OSError) as error:
            raise _translate(error) from error
        try:
            if response.status >= 400:
                raise _status_error(response.status, await response.text())
            async for line in response.content:
                if line.strip():
                    yield _event(line)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise _translate(error) from error
        finally:
            response.close()

    def _selector(self) -> dict[str, str]:
        selectors = {"label_selector": self.label_selector, "field_selector": self.field_selector}
        return {name: value for name, value in selectors.items() if value}


class KubeApi:
    """The requests the reconciler makes, on one kubernetes_asyncio ApiClient."""

    def __init__(
        self, client: ApiClient, *, watch_timeout: int = 300, request_timeout: float = 10.0
    ) -> None:
        # Typed as Any: the package's stubs omit `_content_type` and refuse dict bodies, both of
        # which the generated code accepts; this class is the typed boundary instead.
        self._custom: Any = CustomObjectsApi(client)
        self._core: Any = CoreV1Api(client)
        self._coordination: Any = CoordinationV1Api(client)
        self._watch_timeout = watch_timeout
        self._timeout = request_timeout
        """Deadline of every request but a watch: an API server that accepts and then says
        nothing must not stall a list (aiohttp's own default is five minutes)."""

    # -- collections --------------------------------------------------------------------------

    def dataplanes(self, namespace: str | None) -> ListWatch:
        def call(**params: Any) -> Any:
            if namespace is None:
                return self._custom.list_cluster_custom_object(
                    crd.GROUP, crd.VERSION, crd.PLURAL, **params
                )
            return self._custom.list_namespaced_custom_object(
                crd.GROUP, crd.VERSION, namespace, crd.PLURAL, **params
            )

        return _Collection(crd.KIND, namespace, call, self._watch_timeout, self._timeout)

    def secret(self, namespace: str, name: str) -> ListWatch:
        """One Secret, as a collection of at most one (the rest of the namespace is never read)."""

        def call(**params: Any) -> Any:
            return self._core.list_namespaced_secret(namespace, **params)

        return _Collection(
            "Secret",
            namespace,
            call,
            self._watch_timeout,
            self._timeout,
            field_selector=f"metadata.name={name}",
        )

    def leases(self, namespace: str, *, label_selector: str) -> ListWatch:
        def call(**params: Any) -> Any:
            return self._coordination.list_namespaced_lease(namespace, **params)

        return _Collection(
            "Lease", namespace, call, self._watch_timeout, self._timeout, label_selector
        )

    # -- single objects -----------------------------------------------------------------------

    async def get_secret(self, namespace: str, name: str) -> KubeObject | None:
        try:
            return await _call(
                self._core.read_namespaced_secret(
                    name, namespace, _preload_content=False, _request_timeout=self._timeout
                )
            )
        except NotFound:
            return None

    async def patch_dataplane_status(
        self, namespace: str, name: str, body: KubeObject
    ) -> KubeObject:
        """A JSON merge patch of the /status subresource."""
        return await _call(
            self._custom.patch_namespaced_custom_object_status(
                crd.GROUP,
                crd.VERSION,
                namespace,
                crd.PLURAL,
                name,
                body,
                _content_type=_MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        )

    async def create_event(self, namespace: str, body: KubeObject) -> KubeObject:
        return await _call(
            self._core.create_namespaced_event(
                namespace, body, _preload_content=False, _request_timeout=self._timeout
            )
        )

    async def patch_event(self, namespace: str, name: str, body: KubeObject) -> KubeObject:
        return await _call(
            self._core.patch_namespaced_event(
                name,
                namespace,
                body,
                _content_type=_MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        )

    async def get_lease(self, namespace: str, name: str) -> KubeObject:
        return await _call(
            self._coordination.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=self._timeout
            )
        )

    async def create_lease(self, namespace: str, body: KubeObject) -> KubeObject:
        return await _call(
            self._coordination.create_namespaced_lease(
                namespace, body, _preload_content=False, _request_timeout=self._timeout
            )
        )

    async def replace_lease(self, namespace: str, name: str, body: KubeObject) -> KubeObject:
        """PUT: fails with Conflict unless body's resourceVersion is the stored one."""
        return await _call(
            self._coordination.replace_namespaced_lease(
                name, namespace, body, _preload_content=False, _request_timeout=self._timeout
            )
        )

    async def delete_lease(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await _call(
                self._coordination.delete_namespaced_lease(
                    name, namespace, _preload_content=False, _request_timeout=self._timeout
                )
            )


async def _call(request: Awaitable[Any]) -> KubeObject:
    """Await a generated API call made with `_preload_content=False`; the JSON body or an error."""
    try:
        response = await request
        try:
            if response.status >= 400:
                raise _status_error(response.status, await response.text())
            body: KubeObject = await response.json(content_type=None)
            return body
        finally:
            response.release()
    except KubeError:
        raise
    except (ApiException, ApiValueError, aiohttp.ClientError, TimeoutError, OSError) as error:
        raise _translate(error) from error


def _event(line: bytes) -> WatchEvent:
    try:
        raw = json.loads(line)
        kind, obj = str(raw["type"]), raw["object"]
    except (ValueError, KeyError, TypeError) as error:
        raise Unreachable(f"undecodable watch event: {error}") from error
    if kind == "ERROR":
        raise _status_error(int(obj.get("code") or 500), json.dumps(obj))
    return WatchEvent(kind, obj)


def _status_error(status: int, body: str) -> KubeError:
    """A metav1.Status body (or any text) as our error for that HTTP status."""
    reason, message = "", body.strip()
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            reason = str(parsed.get("reason") or "")
            message = str(parsed.get("message") or message)
    except ValueError:
        pass
    kinds: dict[int, type[KubeError]] = {404: NotFound, 409: Conflict, 410: Gone}
    return kinds.get(status, ApiError)(status, reason or str(status), message)


def _translate(error: BaseException) -> KubeError:
    if isinstance(error, ApiException):
        body = error.body.decode() if isinstance(error.body, bytes) else str(error.body or "")
        return _status_error(int(error.status or 0), body or str(error.reason))
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return Unreachable("the request timed out")
    return Unreachable(f"{type(error).__name__}: {error}")
