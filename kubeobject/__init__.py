"""A Kubernetes object as planelink handles it: its JSON (`KubeObject`), named by `ObjectRef`.

The bottom of the import layers: certs, crd and the reconciler all name objects with these, so
this package imports nothing but the standard library, never validates a name (what a valid name
is depends on what it names: see `certs.identity` for a plane's) and never does I/O.
"""

from __future__ import annotations

from typing import Any

KubeObject = dict[str, Any]
"""One Kubernetes object as the JSON the API server sends: a plain dict, never a model."""

__all__ = ["KubeObject"]
