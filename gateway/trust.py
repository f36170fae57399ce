"""Which planes exist and which client certificates their agents must present.

`TrustRegistry` is the interface between whatever knows the planes (a static YAML file now, the
DataPlane reconciler later) and the gateway's listeners. Sources call `set_plane` and
`remove_plane`; the agent listener asks `get` while it verifies an agent, and subscribers (the
agent registry) hear every change so that agents whose certificate no longer verifies are
disconnected at once.

The TLS handshake itself can only check a certificate against *some* trusted CA: Python's ssl
module has no per-connection verify callback. So the listener's SSLContext trusts the union of
all planes' CAs, and the per-plane decision — this certificate, for *that* plane — is taken
after the handshake, in `verify_agent`, before the WebSocket is accepted. CAs are only ever
added to the handshake store (OpenSSL cannot remove them); a removed CA is refused by
`verify_agent`, which is the decision that counts.

Until every trust source has loaded once (`startup`), the registry cannot tell an unknown plane
from one not read yet, nor verify a certificate whose CA it has not seen: agent handshakes then
use a context that asks for no certificate, and every such connection is told to come back.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import certs
from certs import CertificateInfo, CertificateRejected, PlaneRef, RejectionReason, plane_uri
from gateway.interfaces import PlaneTrust
from gateway.startup import StartupGate
from gateway.tls_alerts import ServerTlsContext
from gateway.tls_files import load_server_certificate

TrustListener = Callable[[PlaneRef, PlaneTrust | None], None]


class TrustRegistry:
    """The current trust of every plane, and the agent listener's TLS context."""

    def __init__(
        self,
        server_context: ssl.SSLContext,
        *,
        starting_context: ssl.SSLContext | None = None,
        startup: StartupGate | None = None,
    ) -> None:
        self._planes: dict[PlaneRef, PlaneTrust] = {}
        self._listeners: list[TrustListener] = []
        self._context = server_context
        self._starting_context = starting_context
        self._loaded_fingerprints: set[bytes] = set()
        self.startup = startup or StartupGate()
        """Which trust sources have not loaded yet (none: every plane that exists is known)."""

    @property
    def server_context(self) -> ssl.SSLContext:
        return self._context

    @property
    def handshake_context(self) -> ssl.SSLContext:
        """The context of the next agent handshake: the one that verifies against every
        plane's CA, or while starting (with a `starting_context`) one that asks for no
        certificate, so an agent whose CA is not known yet can still be told to come back."""
        if self._starting_context is not None and self.startup.starting is not None:
            return self._starting_context
        return self._context

    def handshaken_while_starting(self, ssl_object: object) -> bool:
        """Whether a connection's TLS was set up with the starting context: it proved nothing
        and is only ever told to come back, even if start-up has ended since."""
        context = getattr(ssl_object, "context", None)
        return self._starting_context is not None and context is self._starting_context

    def subscribe(self, listener: TrustListener) -> None:
        self._listeners.append(listener)

    def get(self, plane: PlaneRef) -> PlaneTrust | None:
        return self._planes.get(plane)

    def planes(self) -> list[PlaneTrust]:
        return sorted(self._planes.values(), key=lambda t: (t.plane.namespace, t.plane.name))

    def set_plane(self, trust: PlaneTrust) -> None:
        if self._planes.get(trust.plane) == trust:
            return
        self._planes[trust.plane] = trust
        self._add_to_handshake_store(trust.client_cas)
        for listener in self._listeners:
            listener(trust.plane, trust)

    def remove_plane(self, plane: PlaneRef) -> None:
        if self._planes.pop(plane, None) is None:
            return
        for listener in self._listeners:
            listener(plane, None)

    def replace_source(self, source_prefix: str, trusts: Iterable[PlaneTrust]) -> None:
        """Make the planes whose `source` starts with `source_prefix` exactly `trusts` (for a
        source that reloads all of its planes); planes of other sources are left alone."""
        wanted = {trust.plane: trust for trust in trusts}
        stale = [
            plane
            for plane, trust in self._planes.items()
            if plane not in wanted and trust.source.startswith(source_prefix)
        ]
        for plane in stale:
            self.remove_plane(plane)
        for trust in wanted.values():
            self.set_plane(trust)

    def _add_to_handshake_store(self, cas: Sequence[x509.Certificate]) -> None:
        for ca in cas:
            fingerprint = ca.fingerprint(hashes.SHA256())
            if fingerprint in self._loaded_fingerprints:
                continue
            self._context.load_verify_locations(
                cadata=ca.public_bytes(serialization.Encoding.PEM).decode()
            )
            self._loaded_fingerprints.add(fingerprint)


def verify_agent(
    trust: PlaneTrust, certificate_der: bytes | None, *, at: datetime | None = None
) -> CertificateInfo:
    """Accept an agent's certificate for `trust.plane`, or raise CertificateRejected saying why."""
    if not trust.accepts_agents:
        # Callers name the plane (the listener prefixes it); saying it here too doubled it.
        reason = "; ".join(trust.issues) or "the DataPlane has no agent client CA"
        raise CertificateRejected(
            RejectionReason.UNTRUSTED, f"the DataPlane accepts no agents: {reason}"
        )
    if certificate_der is None:
        raise CertificateRejected(RejectionReason.MALFORMED, "no client certificate presented")
    return certs.verify_client_certificate(
        certificate_der,
        trusted=trust.client_cas,
        at=at,
        expected_identity=plane_uri(trust.plane) if trust.require_identity else None,
    )


def agent_server_context(
    *, certificate_file: Path, key_file: Path, client_certificates: bool = True
) -> ssl.SSLContext:
    """The agent listener's TLS context: client certificates required, CAs added by planes
    (or, with `client_certificates=False`, the starting context: no certificate asked). A
    refused certificate gets a TLS alert, not a bare close."""
    context = ServerTlsContext()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_server_certificate(context, certificate_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED if client_certificates else ssl.CERT_NONE
    return context
