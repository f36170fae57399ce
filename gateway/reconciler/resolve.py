"""From a DataPlane and the Secrets it names to what the gateway needs: pure, no I/O.

A plane is in one of two modes. *Agent* mode (`spec.agent.enabled`): its agents must present a
certificate that verifies against `spec.agent.clientCA`. *Direct* mode (otherwise): the gateway
dials `spec.kubernetesCluster.server` with its CA and credentials. Whatever cannot be resolved
becomes a `Problem` whose reason is a condition reason (`SecretNotFound`, `KeyNotFound`,
`InvalidCertificate`, `CertificateExpired`...) and whose message names the field, the Secret and
the key. A plane is registered even then — with `issues` — so callers get 503, not 404.

The caller fetches the Secrets that `secret_refs` lists (None for one that does not exist) and
hands them to `resolve`; this module never reads a Secret itself and never reads the clock.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cryptography import x509

import certs
import crd
from certs import KeyMismatchError, PemError, PlaneRef
from crd.models import DataPlane, ValueFrom
from gateway.reconciler.conditions import Verdict, not_provisioned, provisioned
from gateway.trust import PlaneTrust
from kubeobject import ObjectRef

SecretData = Mapping[str, bytes]
Secrets = Mapping[ObjectRef, SecretData | None]
"""Secrets by namespace/name; None for one that does not exist."""

Mode = Literal["agent", "direct"]


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


class _Unresolved(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(reason, message)


@dataclass(frozen=True)
class DirectCredentials:
    """How to reach a directly connected plane's API server (secrets left out of repr)."""

    server: str
    ca_pem: bytes = field(repr=False)
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)

    @property
    def auth(self) -> str:
        return "bearerToken" if self.bearer_token is not None else "mtls"


@dataclass(frozen=True)
class Resolution:
    """Everything the gateway needs for one plane, and what is wrong with it if anything."""

    mode: Mode
    trust: PlaneTrust
    direct: DirectCredentials | None = None
    problem: Problem | None = None

    @property
    def gateway_verdict(self) -> Verdict:
        if self.problem is None:
            return provisioned()
        return not_provisioned(self.problem.reason, self.problem.message)


def secret_refs(dataplane: DataPlane, *, cross_namespace: bool = False) -> frozenset[ObjectRef]:
    """The Secrets that resolving `dataplane` in its current mode reads (those of other
    namespaces only with `cross_namespace`)."""
    default = dataplane.metadata.namespace
    return frozenset(
        key
        for value in _value_fields(dataplane)
        if value is not None
        and (ref := value.secret_ref) is not None
        and (
            (key := ObjectRef(ref.namespace or default, ref.name)).namespace == default
            or cross_namespace
        )
    )


def resolve(
    plane: PlaneRef,
    dataplane: DataPlane,
    secrets: Secrets,
    *,
    now: datetime,
    require_identity: bool = True,
    cross_namespace_secrets: bool = False,
) -> Resolution:
    """Secrets of namespaces other than the DataPlane's are refused (`CrossNamespaceSecret`)
    unless `cross_namespace_secrets`."""
    spec = dataplane.spec
    default_ns = dataplane.metadata.namespace
    if not cross_namespace_secrets:
        secrets = _Own(secrets, default_ns)
    if spec.agent_enabled:
        return _resolve_agent(plane, dataplane, secrets, now=now, require=require_identity)
    cluster = spec.kubernetes_cluster
    assert cluster is not None  # the model refuses a spec with neither
    trust = PlaneTrust(
        plane=plane,
        client_cas=(),
        source=f"DataPlane {plane} (direct mode)",
        issues=(
            "agent mode is off (spec.agent.enabled is not true): the plane is reached directly",
        ),
        mode="direct",
    )
    try:
        what = "spec.kubernetesCluster.tls.ca"
        ca = _pem(_value(cluster.tls.ca, what, default_ns, secrets))
        _certificates(ca, _where(cluster.tls.ca, what, default_ns), now)
        auth = cluster.auth
        if auth.bearer_token is not None:
            what = "spec.kubernetesCluster.auth.bearerToken"
            token = _value(auth.bearer_token, what, default_ns, secrets).decode().strip()
            if not token:
                raise _Unresolved("InvalidToken", f"{what} is empty")
            credentials = DirectCredentials(server=cluster.server, ca_pem=ca, bearer_token=token)
        else:
            assert auth.mtls is not None
            mtls = "spec.kubernetesCluster.auth.mtls"
            cert = _value(auth.mtls.client_cert, f"{mtls}.clientCert", default_ns, secrets)
            key = _value(auth.mtls.client_key, f"{mtls}.clientKey", default_ns, secrets)
            _client_pair(cert, key, now)
            credentials = DirectCredentials(
                server=cluster.server, ca_pem=ca, client_cert_pem=cert, client_key_pem=key
            )
    except _Unresolved as unresolved:
        return Resolution(mode="direct", trust=trust, problem=unresolved.problem)
    return Resolution(mode="direct", trust=trust, direct=credentials)


def invalid_spec(plane: PlaneRef, message: str) -> Resolution:
    """For an object the models refuse: registered, accepting no agent, saying why."""
    problem = Problem("InvalidSpec", message)
    trust = PlaneTrust(
        plane=plane,
        client_cas=(),
        source=f"DataPlane {plane}",
        issues=(f"InvalidSpec: {message}",),
    )
    return Resolution(mode="agent", trust=trust, problem=problem)


def require_identity(dataplane: DataPlane, *, default: bool) -> bool:
    """Whether agents of `dataplane` must present a certificate naming it.

    Only the exact opt-out `"false"` turns the check off; any other value (a typo, "no") keeps
    it, so a mistake never widens who may serve the plane."""
    value = dataplane.metadata.annotations.get(crd.REQUIRE_AGENT_IDENTITY_ANNOTATION)
    if value is None:
        return default
    return value.strip().lower() != "false"


def _resolve_agent(
    plane: PlaneRef, dataplane: DataPlane, secrets: Secrets, *, now: datetime, require: bool
) -> Resolution:
    agent = dataplane.spec.agent
    assert agent is not None
    where = _where(agent.client_ca, "spec.agent.clientCA", dataplane.metadata.namespace)
    source = f"DataPlane {plane}: {where}"
    try:
        if agent.client_ca is None:
            raise _Unresolved(
                "MissingClientCA",
                "spec.agent.clientCA is not set, so no agent certificate can be verified",
            )
        pem = _value(agent.client_ca, "spec.agent.clientCA", dataplane.metadata.namespace, secrets)
        cas = _certificates(_pem(pem), where, now)
    except _Unresolved as unresolved:
        problem = unresolved.problem
        trust = PlaneTrust(
            plane=plane,
            client_cas=(),
            source=source,
            require_identity=require,
            issues=(f"{problem.reason}: {problem.message}",),
        )
        return Resolution(mode="agent", trust=trust, problem=problem)
    trust = PlaneTrust(plane=plane, client_cas=cas, require_identity=require, source=source)
    return Resolution(mode="agent", trust=trust)


def _value_fields(dataplane: DataPlane) -> list[ValueFrom | None]:
    spec = dataplane.spec
    if spec.agent_enabled:
        assert spec.agent is not None
        return [spec.agent.client_ca]
    cluster = spec.kubernetes_cluster
    if cluster is None:
        return []
    mtls = cluster.auth.mtls
    return [
        cluster.tls.ca,
        cluster.auth.bearer_token,
        mtls.client_cert if mtls else None,
        mtls.client_key if mtls else None,
    ]


def _where(value: ValueFrom | None, what: str, default_ns: str) -> str:
    if value is None:
        return f"{what} (not set)"
    ref = value.secret_ref
    if ref is None:
        return f"{what} (inline value)"
    return f"{what} (Secret {ref.namespace or default_ns}/{ref.name}, key {ref.key!r})"


class _Own(dict[ObjectRef, SecretData | None]):
    """The Secrets of one namespace: asking for another's is refused, not just not found."""

    def __init__(self, secrets: Secrets, namespace: str) -> None:
        super().__init__(secrets)
        self.namespace = namespace


def _value(value: ValueFrom, what: str, default_ns: str, secrets: Secrets) -> bytes:
    if value.value is not None:
        return value.value.encode()
    ref = value.secret_ref
    assert ref is not None  # the model demands exactly one
    key = ObjectRef(ref.namespace or default_ns, ref.name)
    if isinstance(secrets, _Own) and key.namespace != secrets.namespace:
        raise _Unresolved(
            "CrossNamespaceSecret",
            f"{what}: Secret {key} is not in the DataPlane's namespace {secrets.namespace!r};"
            " the gateway reads Secrets of other namespaces only when started with"
            " --cross-namespace-secrets",
        )
    data = secrets.get(key)
    if data is None:
        raise _Unresolved("SecretNotFound", f"{what}: Secret {key} not found")
    if ref.key not in data:
        present = ", ".join(sorted(data)) or "none"
        raise _Unresolved(
            "KeyNotFound", f"{what}: Secret {key} has no key {ref.key!r} (keys: {present})"
        )
    return data[ref.key]


def _pem(data: bytes) -> bytes:
    """PEM as given, or base64-encoded PEM (the reference documents both for clientCA)."""
    if b"-----BEGIN" in data:
        return data
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return data
    return decoded if b"-----BEGIN" in decoded else data


def _certificates(pem: bytes, what: str, now: datetime) -> tuple[x509.Certificate, ...]:
    try:
        found = certs.load_pem_certificates(pem)
    except PemError as error:
        raise _Unresolved("InvalidCertificate", f"{what}: {error}") from error
    _check_validity(found, what, now)
    return tuple(found)


def _check_validity(found: list[x509.Certificate], what: str, now: datetime) -> None:
    if any(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in found):
        return
    first = found[0]
    subject = first.subject.rfc4514_string()
    if now > first.not_valid_after_utc:
        when = first.not_valid_after_utc.isoformat()
        raise _Unresolved("CertificateExpired", f"{what}: certificate {subject!r} expired {when}")
    when = first.not_valid_before_utc.isoformat()
    raise _Unresolved(
        "CertificateNotYetValid", f"{what}: certificate {subject!r} is not valid before {when}"
    )


def _client_pair(cert: bytes, key: bytes, now: datetime) -> None:
    what = "spec.kubernetesCluster.auth.mtls"
    try:
        bundle = certs.CertificateBundle.from_pem(cert, key)
    except KeyMismatchError as error:
        raise _Unresolved("KeyMismatch", f"{what}: {error}") from error
    except PemError as error:
        raise _Unresolved("InvalidCertificate", f"{what}: {error}") from error
    _check_validity([bundle.certificate], f"{what}.clientCert", now)
