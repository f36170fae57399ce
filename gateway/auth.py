"""Who a caller is and whether it may use a plane: bearer tokens, client certificates, RBAC.

A caller is *authenticated* by its client certificate (user = CN, groups = O values, verified
by TLS against the caller CA) or by a bearer token, which the control plane's API server checks
with a `TokenReview`. A caller is *authorized* by a `SubjectAccessReview`: it needs `verb`
(default `proxy`) on `dataplanes.openchoreo.dev` named after the plane, in the plane's namespace.

One rule for everyone: whenever authorization is on (always when tokens are accepted, or with
`authorize=True`), certificate callers are authorized by the same review as token callers; a
certificate proves who the caller is, never what it may do. With certificates only and
`authorize=False` (the default), a certificate from the caller CA is enough, as before.

When a request carries both a certificate and a token, the token decides: a caller that sends
a token means it, and a wrong one is refused rather than silently replaced by the certificate.

Reviews are cached briefly, keyed by a SHA-256 of the token (the token itself is never logged
nor kept past the request) or by user + groups + plane + verb. Failures to reach the API server
are not cached. The decision and cache logic below is pure; `gateway.kube_reviews.KubeReviews`
asks the control plane (the only code here that calls kubernetes_asyncio, imported only by a
gateway that reviews), and turns that library's errors into `ReviewUnavailable`.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

import structlog

import crd
from certs import PlaneRef
from gateway.metrics import GatewayMetrics

log = structlog.get_logger("gateway.auth")


K = TypeVar("K")
V = TypeVar("V")


class CallerAuthMode(StrEnum):
    CERTIFICATE = "certificate"
    TOKEN = "token"  # noqa: S105 - a mode's name, not a secret
    BOTH = "both"


@dataclass(frozen=True)
class CallerAuthSettings:
    mode: CallerAuthMode = CallerAuthMode.CERTIFICATE
    """Which credentials callers may present."""
    authorize: bool = False
    """SubjectAccessReview for certificate callers too (always on when tokens are accepted)."""
    verb: str = "proxy"
    """The verb a caller needs on its plane's DataPlane."""
    impersonate: bool = False
    """Forward as the caller (Impersonate-User/-Group) rather than as the agent's identity."""
    positive_ttl: float = 10.0
    negative_ttl: float = 2.0
    max_entries: int = 4096
    review_timeout: float = 5.0

    @property
    def accepts_tokens(self) -> bool:
        return self.mode is not CallerAuthMode.CERTIFICATE

    @property
    def accepts_certificates(self) -> bool:
        return self.mode is not CallerAuthMode.TOKEN

    @property
    def authorizes(self) -> bool:
        return self.authorize or self.accepts_tokens

    @property
    def needs_reviews(self) -> bool:
        """True when the gateway needs a client of the control plane's API server."""
        return self.accepts_tokens or self.authorizes


@dataclass(frozen=True)
class CallerIdentity:
    user: str
    groups: tuple[str, ...] = ()
    method: str = "certificate"
    """How the caller proved it: `certificate` or `token`."""


# -- refusals ------------------------------------------------------------------------------------


class AuthRefused(Exception):
    """The caller may not go on; `status` and `reason` are its Kubernetes Status."""

    status = 500
    reason = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(AuthRefused):
    status = 401
    reason = "Unauthorized"


class Forbidden(AuthRefused):
    status = 403
    reason = "Forbidden"


class ReviewUnavailable(AuthRefused):
    """The control plane's API server could not answer a review."""

    status = 503
    reason = "ServiceUnavailable"


# -- the pure part: cache, token parsing, headers --------------------------------------------------


class TtlCache(Generic[K, V]):
    """A bounded map whose entries expire; the least recently used goes first when full."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0 or self._max <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The bearer token of `Authorization`, None if there is none; a malformed one is refused."""
    values = [value for key, value in headers if key.lower() == b"authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated("more than one Authorization header")
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("only bearer tokens are accepted in the Authorization header")
    return token.strip()


def certificate_identity(peercert: object) -> CallerIdentity | None:
    """User (CN) and groups (O values) of a verified client certificate, as `ssl` gives it."""
    if not isinstance(peercert, dict):
        return None
    user = None
    groups: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and user is None:
                user = str(value)
            elif key == "organizationName":
                groups.append(str(value))
    if not user:
        return None
    return CallerIdentity(user=user, groups=tuple(groups), method="certificate")


def impersonation_headers(identity: CallerIdentity) -> list[tuple[bytes, bytes]]:
    headers = [(b"Impersonate-User", identity.user.encode())]
    headers += [(b"Impersonate-Group", group.encode()) for group in identity.groups]
    return headers


# -- reviews -------------------------------------------------------------------------------------


class Reviews(Protocol):
    """Asks the control plane; raises `ReviewUnavailable` when it cannot."""

    async def review_token(self, token: str) -> CallerIdentity | None:
        """The token's user, or None if the API server does not authenticate it."""

    async def review_access(
        self, identity: CallerIdentity, plane: PlaneRef, verb: str
    ) -> tuple[bool, str]:
        """(allowed, the API server's reason)."""


class CallerAuth:
    """Decides, per request, who the caller is and whether it may use the plane."""

    def __init__(
        self,
        settings: CallerAuthSettings,
        metrics: GatewayMetrics,
        *,
        reviews: Reviews | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.reviews = reviews
        self._metrics = metrics
        self._tokens: TtlCache[str, _TokenVerdict] = TtlCache(settings.max_entries, clock)
        self._access: TtlCache[tuple[str, tuple[str, ...], str, str], tuple[bool, str]] = TtlCache(
            settings.max_entries, clock
        )

    async def admit(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        certificate: CallerIdentity | None,
        plane: PlaneRef,
    ) -> CallerIdentity:
        """The caller's identity if it may use `plane`; raises an `AuthRefused` otherwise."""
        identity = await self._authenticate(headers, certificate)
        if self.settings.authorizes:
            await self._authorize(identity, plane)
        return identity

    def forwarded_identity_headers(self, identity: CallerIdentity) -> list[tuple[bytes, bytes]]:
        return impersonation_headers(identity) if self.settings.impersonate else []

    async def _authenticate(
        self, headers: Sequence[tuple[bytes, bytes]], certificate: CallerIdentity | None
    ) -> CallerIdentity:
        settings = self.settings
        try:
            token = bearer_token(headers) if settings.accepts_tokens else None
            if token is not None:
                identity = await self._review_token(token)
            elif certificate is not None and settings.accepts_certificates:
                identity = certificate
            elif settings.accepts_certificates:
                raise Unauthenticated("a client certificate or a bearer token is required")
            else:
                raise Unauthenticated("a bearer token is required")
        except AuthRefused as refused:
            result = "error" if isinstance(refused, ReviewUnavailable) else "refused"
            method = "token" if _has_authorization(headers) else "none"
            self._metrics.caller_authentications.labels(method, result).inc()
            raise
        self._metrics.caller_authentications.labels(identity.method, "ok").inc()
        return identity

    async def _review_token(self, token: str) -> CallerIdentity:
        key = token_key(token)
        verdict = self._tokens.get(key)
        if verdict is None:
            if self.reviews is None:
                raise ReviewUnavailable("the gateway has no client of the control plane")
            verdict = _TokenVerdict(await self.reviews.review_token(token))
            ttl = self.settings.positive_ttl if verdict.identity else self.settings.negative_ttl
            self._tokens.put(key, verdict, ttl)
        if verdict.identity is None:
            raise Unauthenticated("the bearer token is not valid")
        return verdict.identity

    async def _authorize(self, identity: CallerIdentity, plane: PlaneRef) -> None:
        verb = self.settings.verb
        key = (identity.user, tuple(sorted(identity.groups)), str(plane), verb)
        verdict = self._access.get(key)
        if verdict is None:
            if self.reviews is None:
                self._metrics.caller_authorizations.labels(result="error").inc()
                raise ReviewUnavailable("the gateway has no client of the control plane")
            try:
                verdict = await self.reviews.review_access(identity, plane, verb)
            except ReviewUnavailable:
                self._metrics.caller_authorizations.labels(result="error").inc()
                raise
            ttl = self.settings.positive_ttl if verdict[0] else self.settings.negative_ttl
            self._access.put(key, verdict, ttl)
        allowed, reason = verdict
        self._metrics.caller_authorizations.labels("allowed" if allowed else "denied").inc()
        if not allowed:
            message = (
                f'{identity.user} cannot {verb} {crd.PLURAL}.{crd.GROUP} "{plane.name}" '
                f'in the namespace "{plane.namespace}"'
            )
            raise Forbidden(f"{message}: {reason}" if reason else message)


@dataclass(frozen=True)
class _TokenVerdict:
    identity: CallerIdentity | None
    """None: the API server does not know the token (cached too, briefly)."""


def _has_authorization(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(key.lower() == b"authorization" for key, _ in headers)
