"""kubectl through the gateway with ServiceAccount tokens, against real API servers.

The gateway authenticates callers with a TokenReview and authorizes them with a
SubjectAccessReview in the control plane (`proxy` on the plane's DataPlane); the agent calls the
data plane as its admin unless the gateway impersonates the caller.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import aiohttp

from certs import PlaneRef
from gateway.auth import CallerIdentity, Reviews
from tests.auth.conftest import AuthLab
from tests.kit.h2_caller import H2Caller
from tests.kit.waits import scaled


async def test_a_service_account_with_proxy_on_the_plane_uses_kubectl(lab: AuthLab) -> None:
    token = await lab.service_account("deployer", allowed=True)
    kubeconfig = lab.kubeconfig("deployer", token=token)
    result = await lab.kubectl(kubeconfig, "get", "namespaces", "-o", "name")
    assert result.returncode == 0, result.stderr
    assert "namespace/default" in result.stdout.split()
    assert (
        lab.metric("planelink_gateway_caller_authentications_total", method="token", result="ok")
        >= 1
    )
    assert lab.metric("planelink_gateway_caller_authorizations_total", result="allowed") >= 1


async def test_a_service_account_without_the_role_gets_403(lab: AuthLab) -> None:
    token = await lab.service_account("stranger", allowed=False)
    result = await lab.kubectl(lab.kubeconfig("stranger", token=token), "get", "namespaces")
    assert result.returncode != 0
    user = f"system:serviceaccount:{lab.plane.namespace}:stranger"
    assert "Error from server (Forbidden)" in result.stderr, result.stderr
    assert f'{user} cannot proxy dataplanes.openchoreo.dev "{lab.plane.name}"' in result.stderr
    assert lab.metric("planelink_gateway_caller_authorizations_total", result="denied") >= 1
    assert lab.metric("planelink_gateway_caller_errors_total", reason="Forbidden") >= 1


async def test_a_role_for_another_verb_or_plane_is_not_enough(lab: AuthLab) -> None:
    token = await lab.service_account("reader", allowed=True, verb="get")
    result = await lab.kubectl(lab.kubeconfig("reader", token=token), "get", "namespaces")
    assert "Error from server (Forbidden)" in result.stderr, result.stderr


async def test_no_credentials_get_401_as_a_status(lab: AuthLab) -> None:
    # (kubectl without credentials would prompt for a user name: ask over plain HTTPS instead.)
    context = ssl.create_default_context(cafile=str(lab.local.directory / "gateway" / "ca.crt"))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(f"{lab.server_url}/api/v1/namespaces") as response,
    ):
        assert response.status == 401
        assert response.content_type == "application/json"
        status = await response.json()
    assert status["kind"] == "Status"
    assert status["reason"] == "Unauthorized"
    assert status["code"] == 401
    assert "bearer token" in status["message"]
    assert (
        lab.metric(
            "planelink_gateway_caller_authentications_total", method="none", result="refused"
        )
        >= 1
    )
    assert lab.metric("planelink_gateway_caller_errors_total", reason="Unauthorized") >= 1


async def test_over_http2_each_request_is_authenticated_and_an_anonymous_caller_goes(
    lab: AuthLab,
) -> None:
    token = await lab.service_account("h2-reader", allowed=True)
    assert lab.local.gateway is not None
    port = lab.local.gateway.callers.port
    path = lab.server_url.split(str(port), 1)[1] + "/api/v1/namespaces"
    context = ssl.create_default_context(cafile=str(lab.local.directory / "gateway" / "ca.crt"))
    # A connection whose requests carry a token: each is reviewed, a bad one refused alone.
    async with await H2Caller.connect(port, context) as caller:
        bearer = [(b"authorization", f"Bearer {token}".encode())]
        assert (await caller.get(path, headers=bearer))[0] == 200
        status, _, body = await caller.get(path, headers=[(b"authorization", b"Bearer nope")])
        assert (status, json.loads(body)["reason"]) == (401, "Unauthorized")
        assert (await caller.get(path, headers=bearer))[0] == 200
        assert caller.goaway is None
    # A connection that never authenticated: its refusal, then GOAWAY, as HTTP/1.1 closes.
    context = ssl.create_default_context(cafile=str(lab.local.directory / "gateway" / "ca.crt"))
    async with await H2Caller.connect(port, context) as caller:
        status, _, body = await caller.get(path)
        assert (status, json.loads(body)["reason"]) == (401, "Unauthorized")
        assert (await caller.wait_goaway()).error_code == 0


async def test_a_wrong_token_gets_401(lab: AuthLab) -> None:
    result = await lab.kubectl(lab.kubeconfig("liar", token="not-a-token"), "get", "namespaces")
    assert result.returncode != 0
    assert "You must be logged in to the server" in result.stderr, result.stderr
    assert (
        lab.metric(
            "planelink_gateway_caller_authentications_total", method="token", result="refused"
        )
        >= 1
    )


async def test_certificate_callers_are_authorized_by_the_same_rule(lab: AuthLab) -> None:
    kubeconfig = lab.certificate_kubeconfig()
    refused = await lab.kubectl(kubeconfig, "get", "namespaces")
    assert "Error from server (Forbidden)" in refused.stderr, refused.stderr
    assert "planelink-dev cannot proxy" in refused.stderr
    namespace = lab.plane.namespace
    await lab.control_plane.akubectl(
        "create",
        "role",
        "cert-caller",
        "--verb=proxy",
        "--resource=dataplanes.openchoreo.dev",
        f"--resource-name={lab.plane.name}",
        "-n",
        namespace,
    )
    await lab.control_plane.akubectl(
        "create",
        "rolebinding",
        "cert-caller",
        "--role=cert-caller",
        "--user=planelink-dev",
        "-n",
        namespace,
    )
    # First the control plane's RBAC must see the binding (its authorizer follows an informer)...
    await lab.until_allowed(
        lab.control_plane,
        "proxy",
        f"dataplanes.openchoreo.dev/{lab.plane.name}",
        as_user="planelink-dev",
        namespace=namespace,
    )
    # ...then the gateway's cached denial has to expire: it lives `negative_ttl` seconds at most
    # (the margin is for kubectl runs, a second or more each on a slow machine).
    deadline = time.monotonic() + lab.local.caller_auth.negative_ttl + scaled(15)
    while (allowed := await lab.kubectl(kubeconfig, "get", "namespaces", "-o", "name")).returncode:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)  # the cache's expiry announces nothing
    assert allowed.returncode == 0, allowed.stderr
    assert (
        lab.metric(
            "planelink_gateway_caller_authentications_total", method="certificate", result="ok"
        )
        >= 2
    )


async def test_token_reviews_are_cached(long_cache_lab: AuthLab) -> None:
    lab = long_cache_lab  # nothing cached may expire between the three runs, however slow
    token = await lab.service_account("cached", allowed=True)
    kubeconfig = lab.kubeconfig("cached", token=token)
    assert lab.local.gateway is not None
    auth = lab.local.gateway.callers.auth
    assert auth.reviews is not None
    spy = _SpyReviews(auth.reviews)
    auth.reviews = spy
    for _ in range(3):
        result = await lab.kubectl(kubeconfig, "get", "configmaps", "-n", "default")
        assert result.returncode == 0, result.stderr
    assert spy.token_reviews == 1
    assert spy.access_reviews == 1
    assert (
        lab.metric("planelink_gateway_caller_authentications_total", method="token", result="ok")
        >= 3
    )


async def test_impersonation_forwards_the_callers_identity(impersonating_lab: AuthLab) -> None:
    lab = impersonating_lab
    token = await lab.service_account("someone", allowed=True)
    kubeconfig = lab.kubeconfig("someone", token=token)
    user = f"system:serviceaccount:{lab.plane.namespace}:someone"
    whoami = await lab.kubectl(kubeconfig, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == user
    assert "system:serviceaccounts" in info["groups"]
    # The data plane's RBAC applies to the caller: it may do nothing there yet.
    refused = await lab.kubectl(kubeconfig, "get", "namespaces")
    assert "Error from server (Forbidden)" in refused.stderr, refused.stderr
    assert f'User "{user}" cannot list resource "namespaces"' in refused.stderr
    await lab.data_plane.akubectl(
        "create",
        "clusterrolebinding",
        f"view-{lab.plane.namespace}",
        "--clusterrole=cluster-admin",
        f"--user={user}",
    )
    await lab.until_allowed(lab.data_plane, "list", "namespaces", as_user=user)
    allowed = await lab.kubectl(kubeconfig, "get", "namespaces", "-o", "name")
    assert allowed.returncode == 0, allowed.stderr


async def test_callers_cannot_impersonate_through_the_gateway(impersonating_lab: AuthLab) -> None:
    lab = impersonating_lab
    token = await lab.service_account("sneaky", allowed=True)
    kubeconfig = lab.kubeconfig("sneaky", token=token)
    result = await lab.kubectl(kubeconfig, "get", "namespaces", "--as=system:admin")
    assert "Error from server (Forbidden)" in result.stderr, result.stderr
    assert "does not accept Impersonate-User" in result.stderr


class _SpyReviews:
    def __init__(self, inner: Reviews) -> None:
        self.inner = inner
        self.token_reviews = 0
        self.access_reviews = 0

    async def review_token(self, token: str) -> CallerIdentity | None:
        self.token_reviews += 1
        return await self.inner.review_token(token)

    async def review_access(
        self, identity: CallerIdentity, plane: PlaneRef, verb: str
    ) -> tuple[bool, str]:
        self.access_reviews += 1
        return await self.inner.review_access(identity, plane, verb)


async def test_an_unreachable_control_plane_is_503_not_a_crash(unreachable_lab: AuthLab) -> None:
    # (kubectl would retry a 503 with Retry-After for a long while: ask over HTTPS once.)
    lab = unreachable_lab
    context = ssl.create_default_context(cafile=str(lab.local.directory / "gateway" / "ca.crt"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for _ in range(2):  # not cached, and the gateway still serves
            async with session.get(
                f"{lab.server_url}/api/v1/namespaces",
                headers={"Authorization": "Bearer whatever"},
            ) as response:
                assert response.status == 503
                assert response.headers["Retry-After"]
                status = await response.json()
            assert status["reason"] == "ServiceUnavailable"
            assert "did not answer the gateway's TokenReview" in status["message"]
    assert (
        lab.metric("planelink_gateway_caller_authentications_total", method="token", result="error")
        == 2
    )
