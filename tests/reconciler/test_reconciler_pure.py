"""Pure parts: conditions from observed state, credentials from a DataPlane and its Secrets,
events from a status change. No server, no event loop."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import certs
import crd
from gateway.reconciler import conditions as c
from gateway.reconciler.events import EventSpec, transitions
from gateway.reconciler.resolve import (
    require_identity,
    resolve,
    secret_refs,
)
from kubeobject import ObjectRef

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
PLANE = certs.plane_ref("org", "plane")


def test_ready_takes_the_first_failing_reason() -> None:
    ok, agents = c.provisioned(), c.connected_from_agents(2)
    assert c.ready(ok, agents) == c.Verdict("True", "Ready", "2 agents connected")
    missing = c.not_provisioned("SecretNotFound", "Secret org/ca not found")
    assert c.ready(missing, c.connected_from_agents(0)).reason == "SecretNotFound"
    assert c.ready(ok, c.connected_from_agents(0)) == c.Verdict(
        "False", "NoAgentConnected", "no agent is connected"
    )
    assert c.ready(ok, c.connected_from_probe(None)).status == "Unknown"
    assert c.connected_from_agents(1).message == "1 agent connected"


def _transition_time(status: Mapping[str, Any], kind: str) -> object:
    found = c.condition(status, kind)
    assert found is not None, f"no {kind} condition in {status}"
    return found["lastTransitionTime"]


def test_transition_time_changes_only_with_the_status() -> None:
    first = c.status_patch(
        None, c.desired(c.provisioned(), c.connected_from_agents(1)), generation=1, now=T0
    )
    assert first is not None
    assert [x["type"] for x in first["conditions"]] == ["Ready", "Connected", "GatewayProvisioned"]
    assert {x["lastTransitionTime"] for x in first["conditions"]} == {"2026-01-01T00:00:00Z"}

    # Same verdicts later: nothing to write.
    same = c.desired(c.provisioned(), c.connected_from_agents(1))
    assert c.status_patch(first, same, generation=1, now=T1) is None
    # A new message, same status: written, transition time kept.
    more = c.status_patch(
        first, c.desired(c.provisioned(), c.connected_from_agents(3)), generation=1, now=T1
    )
    assert more is not None
    assert _transition_time(more, "Connected") == "2026-01-01T00:00:00Z"
    # A new generation alone is written too.
    assert c.status_patch(first, same, generation=2, now=T1) is not None
    # A status flip moves the time; conditions of other owners are kept, in place.
    foreign = {**first, "conditions": [{"type": "Other", "status": "True"}, *first["conditions"]]}
    gone = c.status_patch(
        foreign, c.desired(c.provisioned(), c.connected_from_agents(0)), generation=1, now=T1
    )
    assert gone is not None
    assert gone["conditions"][0] == {"type": "Other", "status": "True"}
    assert _transition_time(gone, "Connected") == "2026-01-01T00:05:00Z"
    assert _transition_time(gone, "GatewayProvisioned") == "2026-01-01T00:00:00Z"


def test_events_for_transitions_only() -> None:
    up = c.status_patch(
        None, c.desired(c.provisioned(), c.connected_from_agents(1)), generation=1, now=T0
    )
    down = c.status_patch(
        up, c.desired(c.provisioned(), c.connected_from_agents(0)), generation=1, now=T1
    )
    broken = c.status_patch(
        down,
        c.desired(c.not_provisioned("SecretNotFound", "gone"), c.connected_from_agents(0)),
        generation=1,
        now=T1,
    )
    assert up
    assert down
    assert broken
    assert transitions(None, up) == [EventSpec("Normal", "Connected", "1 agent connected")]
    assert transitions(up, down) == [EventSpec("Warning", "Disconnected", "no agent is connected")]
    assert transitions(down, broken) == [EventSpec("Warning", "SecretNotFound", "gone")]
    assert transitions(broken, broken) == []
    assert transitions(broken, down) == [
        EventSpec("Normal", "Provisioned", "the gateway holds this plane's credentials")
    ]


def _agent_plane(client_ca: dict[str, Any] | None) -> crd.DataPlane:
    agent: dict[str, Any] = {"enabled": True}
    if client_ca is not None:
        agent["clientCA"] = client_ca
    return crd.DataPlane.model_validate(
        {
            "metadata": {"name": "plane", "namespace": "org"},
            "spec": {
                "agent": agent,
                "gateway": {"publicVirtualHost": "a", "organizationVirtualHost": "b"},
            },
        }
    )


CA = certs.create_ca("agents")


@pytest.mark.parametrize(
    ("annotation", "default", "required"),
    [
        (None, True, True),  # the default: identity is checked
        ("false", True, False),  # the one documented opt-out
        (" False ", True, False),
        ("no", True, True),  # anything else, a typo included, keeps the check
        ("flase", True, True),
        ("", True, True),
        (None, False, False),  # a gateway run with --agent-identity optional...
        ("true", False, True),  # ...where a DataPlane can still ask for it
    ],
)
def test_only_an_explicit_false_turns_the_identity_check_off(
    annotation: str | None, default: bool, required: bool
) -> None:
    dataplane = _agent_plane({"value": CA.certificate_pem().decode()})
    if annotation is not None:
        dataplane.metadata.annotations[crd.REQUIRE_AGENT_IDENTITY_ANNOTATION] = annotation
    assert require_identity(dataplane, default=default) is required
    trust = resolve(PLANE, dataplane, {}, now=datetime.now(UTC), require_identity=required).trust
    assert trust.require_identity is required


PEM = CA.certificate_pem()
EXPIRED = certs.create_ca(
    "old", not_before=datetime.now(UTC) - timedelta(days=3), validity=timedelta(days=1)
)
LATER = certs.create_ca("later", not_before=datetime.now(UTC) + timedelta(days=3))
REF = {"secretRef": {"name": "ca", "key": "ca.crt"}}


@pytest.mark.parametrize(
    ("client_ca", "secrets", "reason"),
    [
        ({"value": PEM.decode()}, {}, None),
        ({"value": base64.b64encode(PEM).decode()}, {}, None),  # the reference's base64 form
        (REF, {ObjectRef("org", "ca"): {"ca.crt": PEM}}, None),
        (None, {}, "MissingClientCA"),
        (REF, {}, "SecretNotFound"),
        (REF, {ObjectRef("org", "ca"): {"other": PEM}}, "KeyNotFound"),
        (REF, {ObjectRef("org", "ca"): {"ca.crt": b"garbage"}}, "InvalidCertificate"),
        (
            REF,
            {ObjectRef("org", "ca"): {"ca.crt": EXPIRED.certificate_pem()}},
            "CertificateExpired",
        ),
        (
            REF,
            {ObjectRef("org", "ca"): {"ca.crt": LATER.certificate_pem()}},
            "CertificateNotYetValid",
        ),
    ],
)
def test_agent_client_ca(client_ca: Any, secrets: Any, reason: str | None) -> None:
    dataplane = _agent_plane(client_ca)
    resolution = resolve(PLANE, dataplane, secrets, now=datetime.now(UTC))
    if reason is None:
        assert resolution.problem is None
        assert resolution.trust.client_cas == (CA.certificate,)
        assert resolution.trust.accepts_agents
        assert resolution.gateway_verdict.ok
    else:
        assert resolution.problem is not None
        assert resolution.problem.reason == reason
        assert not resolution.trust.accepts_agents
        assert resolution.trust.issues[0].startswith(reason)
        assert resolution.gateway_verdict == c.Verdict("False", reason, resolution.problem.message)


def test_secret_namespace_defaults_to_the_dataplanes() -> None:
    other = {"secretRef": {"name": "ca", "namespace": "vault", "key": "ca.crt"}}
    assert secret_refs(_agent_plane(REF)) == {ObjectRef("org", "ca")}
    own = {"secretRef": {"name": "ca", "namespace": "org", "key": "ca.crt"}}
    assert secret_refs(_agent_plane(own)) == {ObjectRef("org", "ca")}
    assert secret_refs(_agent_plane(other), cross_namespace=True) == {ObjectRef("vault", "ca")}
    problem = resolve(
        PLANE, _agent_plane(other), {}, now=datetime.now(UTC), cross_namespace_secrets=True
    ).problem
    assert problem is not None
    assert "Secret vault/ca not found" in problem.message


def test_a_secret_of_another_namespace_is_refused_not_read() -> None:
    """Whoever may write a DataPlane in one namespace must not make the gateway use a Secret of
    another (a direct-mode token would be sent to the server the DataPlane names)."""
    other = {"secretRef": {"name": "ca", "namespace": "vault", "key": "ca.crt"}}
    assert secret_refs(_agent_plane(other)) == frozenset()
    present = {ObjectRef("vault", "ca"): {"ca.crt": PEM}}
    resolution = resolve(PLANE, _agent_plane(other), present, now=datetime.now(UTC))
    assert resolution.problem is not None
    assert resolution.problem.reason == "CrossNamespaceSecret"
    assert "vault/ca" in resolution.problem.message
    assert "--cross-namespace-secrets" in resolution.problem.message
    assert not resolution.trust.accepts_agents
    allowed = resolve(
        PLANE, _agent_plane(other), present, now=datetime.now(UTC), cross_namespace_secrets=True
    )
    assert allowed.problem is None


def test_direct_credentials_and_key_mismatch() -> None:
    client = certs.issue_client(CA, common_name="prober")
    stranger = certs.issue_client(CA, common_name="stranger")

    def plane(key: bytes) -> crd.DataPlane:
        return crd.DataPlane.model_validate(
            {
                "metadata": {"name": "plane", "namespace": "org"},
                "spec": {
                    "kubernetesCluster": {
                        "server": "https://10.0.0.1:6443",
                        "tls": {"ca": {"value": PEM.decode()}},
                        "auth": {
                            "mtls": {
                                "clientCert": {"value": client.certificate_pem().decode()},
                                "clientKey": {"value": key.decode()},
                            }
                        },
                    },
                    "gateway": {"publicVirtualHost": "a", "organizationVirtualHost": "b"},
                },
            }
        )

    good = resolve(PLANE, plane(client.private_key_pem()), {}, now=datetime.now(UTC))
    assert good.mode == "direct"
    assert good.problem is None
    assert good.direct is not None
    assert good.direct.auth == "mtls"
    assert "PRIVATE KEY" not in repr(good.direct)
    assert not good.trust.accepts_agents  # a direct plane accepts no agent
    bad = resolve(PLANE, plane(stranger.private_key_pem()), {}, now=datetime.now(UTC))
    assert bad.problem is not None
    assert bad.problem.reason == "KeyMismatch"
    assert bad.direct is None


def test_a_direct_plane_never_gets_a_token_of_another_namespace() -> None:
    dataplane = crd.DataPlane.model_validate(
        {
            "metadata": {"name": "plane", "namespace": "org"},
            "spec": {
                "kubernetesCluster": {
                    "server": "https://attacker.example:6443",
                    "tls": {"ca": {"value": PEM.decode()}},
                    "auth": {
                        "bearerToken": {
                            "secretRef": {"name": "admin", "namespace": "kube-system", "key": "t"}
                        }
                    },
                },
                "gateway": {"publicVirtualHost": "a", "organizationVirtualHost": "b"},
            },
        }
    )
    stolen = {ObjectRef("kube-system", "admin"): {"t": b"cluster-admin-token"}}
    assert secret_refs(dataplane) == frozenset()
    resolution = resolve(PLANE, dataplane, stolen, now=datetime.now(UTC))
    assert resolution.direct is None  # nothing to probe the server with: nothing is sent
    assert resolution.problem is not None
    assert resolution.problem.reason == "CrossNamespaceSecret"
