"""A Kubernetes object as planelink handles it: its JSON (`KubeObject`), named by `ObjectRef`.

The bottom of the import layers: certs, crd and the reconciler all name objects with these, so
this package imports nothing but the standard library, never validates a name (what a valid name
is depends on what it names: see `certs.identity` for a plane's) and never does I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple

KubeObject = dict[str, Any]
"""One Kubernetes object as the JSON the API server sends: a plain dict, never a model."""


class ObjectRef(NamedTuple):
    """A namespaced Kubernetes object by namespace and name (Kubernetes' NamespacedName): the
    key of a watch's cache, a Secret a DataPlane names, and (checked) a plane.
    ``str(ref)`` is ``"<namespace>/<name>"``."""

    namespace: str
    name: str

    @classmethod
    def of(cls, obj: KubeObject) -> ObjectRef:
        """The reference of `obj`, from its metadata ("" for a part it lacks)."""
        metadata = obj.get("metadata") or {}
        return cls(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


__all__ = ["KubeObject", "ObjectRef"]
