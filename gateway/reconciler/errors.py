"""The reconciler's own errors: what kubernetes_asyncio and aiohttp raise, translated once.

`gateway.reconciler.kube` is the only module that sees `ApiException` or aiohttp errors; every
other module catches these instead. Each maps to one way of handling it: `NotFound` and
`Conflict` are expected outcomes (give up, retry), `Gone` means relist, `Unreachable` and
`ApiError` mean back off and try again.
"""

from __future__ import annotations


class KubeError(Exception):
    """A request to the control plane's API server failed."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    """404: the object does not exist (any more)."""


class Conflict(KubeError):
    """409: the object changed since it was read, or already exists."""


class Gone(KubeError):
    """410: the resourceVersion a watch started from is too old; list again."""


class ApiError(KubeError):
    """Any other refusal by the API server (403, 422, 5xx...)."""


class Unreachable(KubeError):
    """The API server could not be reached or the connection broke."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "Unreachable", message)
