"""The DataPlane resource (`openchoreo.dev/v1alpha1`) as pydantic models.

These models are the one source of truth for the resource: the CRD's OpenAPI schema is generated
from them (`crd.manifest`), and the reconciler parses what it reads from the API server with them.
Rules that a schema cannot say are written once, in `RULES`, and enforced twice from that one
place: as CEL `x-kubernetes-validations` by the API server at `kubectl apply` time, and by the
model validators here (for objects stored before a rule existed). Field descriptions follow the
reference documentation users read.

This module never talks to a cluster.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crd.names import API_VERSION, KIND

_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a pattern for key names


class Rule(BaseModel):
    """A cross-field rule: its CEL expression (for the API server) and the message users see."""

    model_config = ConfigDict(frozen=True)

    cel: str
    message: str

    def as_validation(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message}


class RULES:
    """Every cross-field rule of the resource, by the object it applies to."""

    value_from_exactly_one = Rule(
        cel="has(self.secretRef) != has(self.value)",
        message="exactly one of secretRef or value must be set",
    )
    auth_exactly_one = Rule(
        cel="has(self.mtls) != has(self.bearerToken)",
        message="exactly one of mtls or bearerToken must be set",
    )
    cluster_or_agent = Rule(
        cel="has(self.kubernetesCluster) || (has(self.agent) && self.agent.enabled)",
        message="kubernetesCluster is required unless agent.enabled is true",
    )
    server_is_https_url = Rule(
        cel="isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''",
        message="server must be an https:// URL with a host, such as https://10.0.0.1:6443",
    )

    @classmethod
    def all(cls) -> tuple[Rule, ...]:
        return tuple(value for value in vars(cls).values() if isinstance(value, Rule))


def _schema_extra(*rules: Rule) -> dict[str, Any]:
    return {"x-kubernetes-validations": [rule.as_validation() for rule in rules]}


class _Model(BaseModel):
    # Unknown fields are ignored rather than refused: the API server prunes them from what it
    # stores, and a newer CRD must not make an older reconciler fail to read the object.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class SecretKeyReference(_Model):
    """Reference to a specific key in a Kubernetes secret."""

    name: str = Field(
        description="Name of the secret", min_length=1, max_length=253, pattern=_NAME_PATTERN
    )
    namespace: str | None = Field(
        default=None,
        description="Namespace of the secret (defaults to the namespace of the DataPlane)",
        min_length=1,
        max_length=63,
        pattern=_NAME_PATTERN,
    )
    key: str = Field(
        description="Key within the secret",
        min_length=1,
        max_length=253,
        pattern=_SECRET_KEY_PATTERN,
    )


class ValueFrom(_Model):
    """A value given inline or read from a secret; exactly one of the two."""

    model_config = ConfigDict(json_schema_extra=_schema_extra(RULES.value_from_exactly_one))

    secret_ref: SecretKeyReference | None = Field(
        default=None, alias="secretRef", description="Reference to a secret key"
    )
    value: str | None = Field(
        default=None,
        description="Inline value (not recommended for sensitive data)",
        min_length=1,
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ValueFrom:
        if (self.secret_ref is None) == (self.value is None):
            raise ValueError(RULES.value_from_exactly_one.message)
        return self


class AgentConfig(_Model):
    """Configuration for agent-based communication with the downstream cluster."""

    enabled: bool = Field(default=False, description="Whether agent-based communication is enabled")
    client_ca: ValueFrom | None = Field(
        default=None,
        alias="clientCA",
        description="CA certificate to verify the agent's client certificate (PEM)",
    )


class KubernetesTLS(_Model):
    """TLS configuration for the Kubernetes connection."""

    ca: ValueFrom = Field(description="CA certificate")


class MTLSAuth(_Model):
    """Certificate-based authentication (mTLS) configuration."""

    client_cert: ValueFrom = Field(alias="clientCert", description="Client certificate")
    client_key: ValueFrom = Field(alias="clientKey", description="Client private key")


class KubernetesAuth(_Model):
    """Authentication to the cluster: exactly one of mtls or bearerToken."""

    model_config = ConfigDict(json_schema_extra=_schema_extra(RULES.auth_exactly_one))

    mtls: MTLSAuth | None = Field(
        default=None, description="Certificate-based authentication (mTLS)"
    )
    bearer_token: ValueFrom | None = Field(
        default=None, alias="bearerToken", description="Bearer token authentication"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> KubernetesAuth:
        if (self.mtls is None) == (self.bearer_token is None):
            raise ValueError(RULES.auth_exactly_one.message)
        return self


class KubernetesClusterSpec(_Model):
    """Target Kubernetes cluster configuration (optional when agent.enabled is true)."""

    server: str = Field(
        description="URL of the Kubernetes API server",
        min_length=1,
        max_length=2048,
        json_schema_extra=_schema_extra(RULES.server_is_https_url),
    )
    tls: KubernetesTLS = Field(description="TLS configuration for the connection")
    auth: KubernetesAuth = Field(description="Authentication configuration")

    @model_validator(mode="after")
    def _https_server(self) -> KubernetesClusterSpec:
        # Mirrors the CEL rule: what the API server would refuse, the reconciler refuses too.
        parts = urlsplit(self.server)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(RULES.server_is_https_url.message)
        return self


class SecretStoreRef(_Model):
    """Reference to an External Secrets Operator ClusterSecretStore."""

    name: str = Field(description="Name of the ClusterSecretStore in the DataPlane", min_length=1)


class GatewaySpec(_Model):
    """Gateway configuration for the DataPlane."""

    public_virtual_host: str = Field(
        alias="publicVirtualHost",
        description="Public virtual host for external traffic",
        min_length=1,
        max_length=253,
    )
    organization_virtual_host: str = Field(
        alias="organizationVirtualHost",
        description="Organization-specific virtual host for internal traffic",
        min_length=1,
        max_length=253,
    )


class BasicAuth(_Model):
    """Basic authentication credentials."""

    username: str = Field(description="Username for basic authentication", min_length=1)
    password: str = Field(description="Password for basic authentication", min_length=1)


class ObserverAuthentication(_Model):
    """Authentication for the Observer API."""

    basic_auth: BasicAuth = Field(alias="basicAuth", description="Basic authentication")


class ObserverAPI(_Model):
    """Configuration for Observer API integration."""

    url: str = Field(description="Base URL of the Observer API", min_length=1)
    authentication: ObserverAuthentication = Field(
        description="Authentication for the Observer API"
    )


class DataPlaneSpec(_Model):
    """The desired state of a DataPlane."""

    model_config = ConfigDict(json_schema_extra=_schema_extra(RULES.cluster_or_agent))

    gateway: GatewaySpec = Field(description="API gateway configuration for this DataPlane")
    agent: AgentConfig | None = Field(
        default=None, description="Agent-based communication configuration (recommended)"
    )
    kubernetes_cluster: KubernetesClusterSpec | None = Field(
        default=None,
        alias="kubernetesCluster",
        description="Target Kubernetes cluster configuration (optional when agent is enabled)",
    )
    image_pull_secret_refs: list[str] | None = Field(
        default=None,
        alias="imagePullSecretRefs",
        description="References to SecretReference resources for image pull secrets",
    )
    secret_store_ref: SecretStoreRef | None = Field(
        default=None,
        alias="secretStoreRef",
        description="Reference to External Secrets Operator ClusterSecretStore in the DataPlane",
    )
    observer: ObserverAPI | None = Field(
        default=None, description="Observer API integration for monitoring and logging"
    )

    @property
    def agent_enabled(self) -> bool:
        return self.agent is not None and self.agent.enabled

    @model_validator(mode="after")
    def _cluster_or_agent(self) -> DataPlaneSpec:
        if self.kubernetes_cluster is None and not self.agent_enabled:
            raise ValueError(RULES.cluster_or_agent.message)
        return self


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: str = Field(description="Type of condition in CamelCase", min_length=1, max_length=316)
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown")
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        ge=0,
        description="The .metadata.generation the condition was set from",
    )
    last_transition_time: datetime = Field(
        alias="lastTransitionTime",
        description="Last time the condition changed from one status to another",
    )
    reason: str = Field(
        description="Machine-readable CamelCase reason for the last transition",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(
        description="Human-readable details about the transition", max_length=32768
    )


class DataPlaneStatus(_Model):
    """The observed state of a DataPlane."""

    observed_generation: int = Field(
        default=0,
        alias="observedGeneration",
        ge=0,
        description="The generation observed by the controller",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Standard Kubernetes conditions tracking the DataPlane state",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


class ObjectMeta(_Model):
    """The parts of metadata planelink reads."""

    name: str
    namespace: str
    generation: int = 0
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    uid: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class DataPlane(_Model):
    """A data-plane cluster and how the control plane reaches it."""

    api_version: Literal["openchoreo.dev/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["DataPlane"] = KIND
    metadata: ObjectMeta
    spec: DataPlaneSpec
    status: DataPlaneStatus = Field(default_factory=DataPlaneStatus)
