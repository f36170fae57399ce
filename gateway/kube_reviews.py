"""`gateway.auth.Reviews` through a kubernetes_asyncio client of the control plane.

Apart from `gateway.auth` so that a gateway which reviews nothing (certificate callers, no
authorization) never imports kubernetes_asyncio: a hundred megabytes and a second of start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client import (
    ApiClient,
    AuthenticationV1Api,
    AuthorizationV1Api,
    V1ResourceAttributes,
    V1SubjectAccessReview,
    V1SubjectAccessReviewSpec,
    V1TokenReview,
    V1TokenReviewSpec,
)
from kubernetes_asyncio.client.exceptions import ApiException, ApiValueError

import crd
from certs import PlaneRef
from gateway.auth import CallerIdentity, ReviewUnavailable

__all__ = ["KubeReviews"]


class KubeReviews:
    """`Reviews` through a kubernetes_asyncio client of the control plane."""

    def __init__(self, client: ApiClient, *, timeout: float = 5.0) -> None:
        self._authn = AuthenticationV1Api(client)
        self._authz = AuthorizationV1Api(client)
        self._timeout = timeout

    async def review_token(self, token: str) -> CallerIdentity | None:
        body = V1TokenReview(spec=V1TokenReviewSpec(token=token))
        review = await self._call("TokenReview", self._authn.create_token_review, body)
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        return CallerIdentity(
            user=status.user.username or "",
            groups=tuple(status.user.groups or ()),
            method="token",
        )

    async def review_access(
        self, identity: CallerIdentity, plane: PlaneRef, verb: str
    ) -> tuple[bool, str]:
        body = V1SubjectAccessReview(
            spec=V1SubjectAccessReviewSpec(
                user=identity.user,
                groups=list(identity.groups),
                resource_attributes=V1ResourceAttributes(
                    namespace=plane.namespace,
                    verb=verb,
                    group=crd.GROUP,
                    resource=crd.PLURAL,
                    name=plane.name,
                ),
            )
        )
        review = await self._call(
            "SubjectAccessReview", self._authz.create_subject_access_review, body
        )
        status = review.status
        if status is None:
            return False, ""
        return bool(status.allowed) and not status.denied, status.reason or ""

    async def _call(self, kind: str, create: Callable[..., Any], body: object) -> Any:
        # Errors of kubernetes_asyncio and aiohttp stop here.
        try:
            async with asyncio.timeout(self._timeout):
                return await create(body=body)
        except ApiException as error:
            raise ReviewUnavailable(
                f"the control plane refused the gateway's {kind}: {error.status} {error.reason}"
            ) from error
        except (ApiValueError, aiohttp.ClientError, TimeoutError, OSError) as error:
            raise ReviewUnavailable(
                f"the control plane's API server did not answer the gateway's {kind}: "
                f"{type(error).__name__}"
            ) from error
