"""The objects last seen of one kind, keyed by namespace and name: a watch's local cache.

Never goes back in time: an update whose resourceVersion is older than the stored one is
ignored (resourceVersions are compared as integers when both are — etcd revisions, as every
API server hands out today — and otherwise always accepted). That lets a writer store the
object its own PATCH returned without a late watch event undoing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from kubeobject import KubeObject, ObjectRef


class Change(NamedTuple):
    key: ObjectRef
    old: KubeObject | None
    new: KubeObject | None


def resource_version(obj: KubeObject | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


class Store:
    def __init__(self) -> None:
        self._objects: dict[ObjectRef, KubeObject] = {}

    def get(self, key: ObjectRef) -> KubeObject | None:
        return self._objects.get(key)

    def all_keys(self) -> list[ObjectRef]:
        return list(self._objects)

    def __iter__(self) -> Iterator[KubeObject]:
        return iter(list(self._objects.values()))

    def __len__(self) -> int:
        return len(self._objects)

    def upsert(self, obj: KubeObject) -> Change | None:
        """Store `obj`; the change, or None if it is not newer than what is stored."""
        key = ObjectRef.of(obj)
        old = self._objects.get(key)
        if old is not None and _older(resource_version(obj), resource_version(old)):
            return None
        self._objects[key] = obj
        if old is not None and resource_version(old) == resource_version(obj):
            return None
        return Change(key, old, obj)

    def delete(self, key: ObjectRef) -> Change | None:
        old = self._objects.pop(key, None)
        return None if old is None else Change(key, old, None)

    def replace(self, items: Iterable[KubeObject], *, namespace: str | None) -> list[Change]:
        """Make the objects in `namespace` (None: all) exactly `items`; the changes."""
        fresh = {ObjectRef.of(obj): obj for obj in items}
        changes = [
            change
            for key in self.all_keys()
            if key not in fresh
            and (namespace is None or key.namespace == namespace)
            and (change := self.delete(key)) is not None
        ]
        for obj in fresh.values():
            if (change := self.upsert(obj)) is not None:
                changes.append(change)
        return changes


def _older(candidate: str, stored: str) -> bool:
    if candidate.isdigit() and stored.isdigit():
        return int(candidate) < int(stored)
    return False
