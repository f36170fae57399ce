"""The pure part of caller authentication: cache, token parsing, decisions with fake reviews."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from certs import PlaneRef, plane_ref
from envtest import free_port
from gateway.auth import (
    CallerAuth,
    CallerAuthMode,
    CallerAuthSettings,
    CallerIdentity,
    Forbidden,
    ReviewUnavailable,
    TtlCache,
    Unauthenticated,
    bearer_token,
    certificate_identity,
    impersonation_headers,
    token_key,
)
from gateway.kube_reviews import KubeReviews
from gateway.metrics import GatewayMetrics

PLANE = plane_ref("org-a", "plane-a")
ALICE = CallerIdentity("alice", ("devs",), method="token")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeReviews:
    def __init__(self, *, tokens: dict[str, CallerIdentity], allowed: set[str]) -> None:
        self.tokens = tokens
        self.allowed = allowed
        self.token_reviews = 0
        self.access_reviews = 0
        self.down = False

    async def review_token(self, token: str) -> CallerIdentity | None:
        self.token_reviews += 1
        if self.down:
            raise ReviewUnavailable("down")
        return self.tokens.get(token)

    async def review_access(
        self, identity: CallerIdentity, plane: PlaneRef, verb: str
    ) -> tuple[bool, str]:
        self.access_reviews += 1
        if self.down:
            raise ReviewUnavailable("down")
        return identity.user in self.allowed and verb == "proxy", "rbac says so"


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {token}".encode())]


def make_auth(
    mode: CallerAuthMode = CallerAuthMode.BOTH, **settings: Any
) -> tuple[CallerAuth, FakeReviews, Clock, GatewayMetrics]:
    clock = Clock()
    reviews = FakeReviews(tokens={"good": ALICE}, allowed={"alice", "carol"})
    metrics = GatewayMetrics()
    auth = CallerAuth(
        CallerAuthSettings(mode=mode, **settings),
        metrics,
        reviews=reviews,
        clock=clock,
    )
    return auth, reviews, clock, metrics


def test_the_cache_expires_and_stays_bounded() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(2, clock)
    cache.put("a", 1, ttl=10)
    cache.put("b", 2, ttl=1)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3, ttl=10)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    clock.now += 10
    assert cache.get("a") is None
    assert len(cache) == 1


def test_bearer_tokens_are_parsed_strictly() -> None:
    assert bearer_token([]) is None
    assert bearer_token(bearer("abc")) == "abc"
    assert bearer_token([(b"authorization", b"bearer  abc ")]) == "abc"
    for bad in (b"Basic YTpi", b"Bearer", b"Bearer   "):
        with pytest.raises(Unauthenticated):
            bearer_token([(b"Authorization", bad)])
    with pytest.raises(Unauthenticated):
        bearer_token(bearer("a") + bearer("b"))


def test_tokens_are_keyed_by_a_hash() -> None:
    assert token_key("secret") != "secret"
    assert "secret" not in token_key("secret")
    assert len(token_key("secret")) == 64


def test_a_certificate_gives_user_and_groups() -> None:
    peercert = {
        "subject": (
            (("organizationName", "ops"),),
            (("organizationName", "devs"),),
            (("commonName", "jane"),),
        )
    }
    assert certificate_identity(peercert) == CallerIdentity("jane", ("ops", "devs"))
    assert certificate_identity(None) is None
    assert certificate_identity({}) is None


def test_impersonation_names_user_and_every_group() -> None:
    assert impersonation_headers(ALICE) == [
        (b"Impersonate-User", b"alice"),
        (b"Impersonate-Group", b"devs"),
    ]


async def test_a_good_token_with_access_is_admitted_and_cached() -> None:
    auth, reviews, clock, metrics = make_auth()
    for _ in range(3):
        assert await auth.admit(bearer("good"), None, PLANE) == ALICE
    assert (reviews.token_reviews, reviews.access_reviews) == (1, 1)
    clock.now += 10.5  # past the positive TTL
    await auth.admit(bearer("good"), None, PLANE)
    assert (reviews.token_reviews, reviews.access_reviews) == (2, 2)
    sample = metrics.registry.get_sample_value
    labels = {"method": "token", "result": "ok"}
    assert sample("planelink_gateway_caller_authentications_total", labels) == 4
    assert sample("planelink_gateway_caller_authorizations_total", {"result": "allowed"}) == 4


async def test_a_bad_token_is_refused_and_cached_briefly() -> None:
    auth, reviews, clock, metrics = make_auth()
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.admit(bearer("bad"), None, PLANE)
    assert reviews.token_reviews == 1
    clock.now += 2.5  # past the negative TTL
    with pytest.raises(Unauthenticated):
        await auth.admit(bearer("bad"), None, PLANE)
    assert reviews.token_reviews == 2
    labels = {"method": "token", "result": "refused"}
    assert (
        metrics.registry.get_sample_value("planelink_gateway_caller_authentications_total", labels)
        == 3
    )


async def test_a_denial_is_403_and_cached_briefly() -> None:
    auth, reviews, clock, _ = make_auth()
    reviews.tokens["bobs"] = CallerIdentity("bob", (), method="token")
    with pytest.raises(Forbidden) as refused:
        await auth.admit(bearer("bobs"), None, PLANE)
    assert refused.value.status == 403
    assert 'bob cannot proxy dataplanes.openchoreo.dev "plane-a"' in refused.value.message
    assert "rbac says so" in refused.value.message
    reviews.allowed.add("bob")
    with pytest.raises(Forbidden):
        await auth.admit(bearer("bobs"), None, PLANE)
    clock.now += 2.5
    assert (await auth.admit(bearer("bobs"), None, PLANE)).user == "bob"


async def test_an_unreachable_api_server_is_503_and_not_cached() -> None:
    auth, reviews, _, metrics = make_auth()
    reviews.down = True
    with pytest.raises(ReviewUnavailable) as refused:
        await auth.admit(bearer("good"), None, PLANE)
    assert refused.value.status == 503
    reviews.down = False
    assert await auth.admit(bearer("good"), None, PLANE) == ALICE
    labels = {"method": "token", "result": "error"}
    assert (
        metrics.registry.get_sample_value("planelink_gateway_caller_authentications_total", labels)
        == 1
    )


async def test_certificate_callers_follow_the_same_rule_when_authorizing() -> None:
    auth, reviews, _, _ = make_auth()
    carol, dave = CallerIdentity("carol", ("ops",)), CallerIdentity("dave", ())
    assert await auth.admit([], carol, PLANE) == carol
    with pytest.raises(Forbidden):
        await auth.admit([], dave, PLANE)
    assert reviews.token_reviews == 0


async def test_a_token_decides_over_a_certificate() -> None:
    auth, _, _, _ = make_auth()
    carol = CallerIdentity("carol", ("ops",))
    assert await auth.admit(bearer("good"), carol, PLANE) == ALICE
    with pytest.raises(Unauthenticated):
        await auth.admit(bearer("bad"), carol, PLANE)


async def test_certificates_only_without_authorization_needs_no_reviews() -> None:
    auth, reviews, _, _ = make_auth(CallerAuthMode.CERTIFICATE)
    assert not auth.settings.needs_reviews
    dave = CallerIdentity("dave", ())
    assert await auth.admit(bearer("good"), dave, PLANE) == dave  # the token is not looked at
    assert (reviews.token_reviews, reviews.access_reviews) == (0, 0)
    with pytest.raises(Unauthenticated):
        await auth.admit([], None, PLANE)


async def test_certificates_only_with_authorization_reviews_access() -> None:
    auth, reviews, _, _ = make_auth(CallerAuthMode.CERTIFICATE, authorize=True)
    with pytest.raises(Forbidden):
        await auth.admit([], CallerIdentity("dave", ()), PLANE)
    assert reviews.access_reviews == 1


async def test_tokens_only_refuses_a_certificate_alone() -> None:
    auth, _, _, _ = make_auth(CallerAuthMode.TOKEN)
    with pytest.raises(Unauthenticated, match="bearer token is required"):
        await auth.admit([], CallerIdentity("carol", ()), PLANE)
    assert await auth.admit(bearer("good"), None, PLANE) == ALICE


async def test_without_a_client_the_gateway_answers_503() -> None:
    auth = CallerAuth(CallerAuthSettings(mode=CallerAuthMode.TOKEN), GatewayMetrics())
    with pytest.raises(ReviewUnavailable):
        await auth.admit(bearer("good"), None, PLANE)


async def test_kube_reviews_translate_connection_errors() -> None:
    port = free_port()
    configuration = Configuration(host=f"https://127.0.0.1:{port}")
    async with ApiClient(configuration) as client:
        reviews = KubeReviews(client, timeout=5)
        with pytest.raises(ReviewUnavailable, match="did not answer"):
            await reviews.review_token("anything")
        with pytest.raises(ReviewUnavailable, match="did not answer"):
            await reviews.review_access(ALICE, PLANE, "proxy")
