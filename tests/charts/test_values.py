"""The charts' values: what values.schema.json refuses (and with which message), and the common
override values a Helm user expects, each rendered and checked where it lands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from planelink import agent_cli, cli, gateway_cli
from planelink.logs import LOG_SETTINGS
from tests.charts.chart_kit import (
    AGENT_VALUES,
    CHARTS,
    SERVICE_MONITOR_API,
    Docs,
    container_env,
    full_values,
    kinds,
    main_container,
    pod_spec,
    render,
    run_helm,
    the,
)
from tests.kit.dockerfile import entrypoint

GATEWAY = "planelink-gateway"
AGENT = "planelink-agent"
REQUIRED = {GATEWAY: [], AGENT: AGENT_VALUES}
"""Per chart, the values it cannot render without."""
SCHEMA_REFUSED = "values don't meet the specifications of the schema(s)"

# (chart, a value given with --set, what Helm's schema check says about it)
BAD_VALUES = [
    (AGENT, "plane=prod", "- plane: Does not match pattern"),
    (AGENT, "plane=My-Org/prod", "- plane: Does not match pattern"),
    (AGENT, "plane=my-org/prod/extra", "- plane: Does not match pattern"),
    (AGENT, f"plane=my-org/{'p' * 64}", "- plane: Does not match pattern"),
    (AGENT, "gateway.url=https://gateway.example:8443", "- gateway.url: Does not match pattern"),
    (AGENT, "gateway.url=gateway.example:8443", "- gateway.url: Does not match pattern"),
    (AGENT, "gateway.url=wss://gateway.example:8443/?x=1", "- gateway.url: Does not match pattern"),
    (AGENT, "replicaCount=0", "- replicaCount: Must be greater than or equal to 1"),
    (AGENT, "maxStreams=0", "- maxStreams: Must be greater than or equal to 1"),
    (AGENT, "upstreamHttp2=maybe", "- upstreamHttp2: Invalid type. Expected: boolean"),
    (AGENT, "rbac.exce=true", "- rbac: Additional property exce is not allowed"),
    (AGENT, "rbac.rules[0].resources={pods}", "- rbac.rules.0: verbs is required"),
    (AGENT, "heartbeat.interval=0", "- heartbeat.interval: Must be greater than 0"),
    (AGENT, "heartbeat.timeout=soon", "- heartbeat.timeout: Does not match pattern"),
    (AGENT, "platne=my-org/prod", "- (root): Additional property platne is not allowed"),
    # The boolean pod annotations switch is metrics.scrapeAnnotations (podAnnotations is a map).
    (AGENT, "metrics.podAnnotations=true", "- metrics: Additional property podAnnotations"),
    (GATEWAY, "logLevel=verbose", '- logLevel: logLevel must be one of the following: "debug"'),
    (GATEWAY, "logFormat=text", '- logFormat: logFormat must be one of the following: "json"'),
    (GATEWAY, "eventLoop=trio", '- eventLoop: eventLoop must be one of the following: "auto"'),
    (AGENT, "eventLoop=uv", '- eventLoop: eventLoop must be one of the following: "auto"'),
    (GATEWAY, "replicaCount=two", "- replicaCount: Invalid type. Expected: integer"),
    (GATEWAY, "workers=0", "- workers: Must be greater than or equal to 1"),
    (GATEWAY, "podAntiAffinity=sometimes", "- podAntiAffinity: podAntiAffinity must be one of"),
    (
        GATEWAY,
        "service.agentPort=70000",
        "- service.agentPort: Must be less than or equal to 65535",
    ),
    (GATEWAY, "service.callerPort=0", "- service.callerPort: Must be greater than or equal to 1"),
    (GATEWAY, "service.type=Ingress", "- service.type: service.type must be one of"),
    (GATEWAY, "peers.port=65536", "- peers.port: Must be less than or equal to 65535"),
    (GATEWAY, "callers.auth=password", "- callers.auth: callers.auth must be one of"),
    (GATEWAY, "reconcile.namespaces={Org-A}", "- reconcile.namespaces.0: Does not match pattern"),
    (GATEWAY, "tls.secretName=My_Secret", "- tls.secretName: Does not match pattern"),
    (GATEWAY, "resources.limits.memory=lots", "- resources.limits.memory: Does not match pattern"),
    (GATEWAY, "resources.limit.memory=1Gi", "- resources: Additional property limit is not"),
    (GATEWAY, "image.pullPolicy=always", "- image.pullPolicy: image.pullPolicy must be one of"),
    (GATEWAY, "imagePullSecrets[0].nam=registry", "- imagePullSecrets.0: name is required"),
    (GATEWAY, "podLabels.team=1", "- podLabels.team: Invalid type. Expected: string"),
    (GATEWAY, "commonLabels.team=two words", "- commonLabels.team: Does not match pattern"),
    (GATEWAY, "podAnnotations.owner=1", "- podAnnotations.owner: Invalid type. Expected: string"),
    (GATEWAY, "nameOverride=Gateway", "- nameOverride: Does not match pattern"),
    (GATEWAY, "extraEnv[0].value=x", "- extraEnv.0: name is required"),
    (GATEWAY, "extraVolumeMounts[0].name=x", "- extraVolumeMounts.0: mountPath is required"),
    (GATEWAY, "topologySpreadConstraints[0].maxSkew=1", "- topologySpreadConstraints.0: topolo"),
    (GATEWAY, "priorityClassName=High", "- priorityClassName: Does not match pattern"),
    (GATEWAY, "podDisruptionBudget.minAvailable=half", "- podDisruptionBudget.minAvailable:"),
    (GATEWAY, "metrics.serviceMonitor.interval=30", "- metrics.serviceMonitor.interval: Invalid"),
    (GATEWAY, "metrics.grafanaDashboard.enabeld=true", "- metrics.grafanaDashboard: Additional"),
    (GATEWAY, "metrics.prometheusRule.certificateExpiryDays=0", "Must be greater than or equal"),
    (GATEWAY, "operator.tokenSecret.key=a/b", "- operator.tokenSecret.key: Does not match"),
]


@pytest.mark.parametrize(("chart", "value", "message"), BAD_VALUES)
def test_a_bad_value_fails_with_a_message_naming_it(
    helm: Path, chart: str, value: str, message: str
) -> None:
    refused = run_helm(
        helm, "template", "pl", str(CHARTS / chart), *REQUIRED[chart], "--set", value
    )
    assert refused.returncode != 0, refused.stdout
    assert SCHEMA_REFUSED in refused.stderr
    assert message in refused.stderr


# Values at the edges of what the schema allows, each of which the charts must render.
GOOD_VALUES = [
    (AGENT, f"plane={'o' * 63}/{'p' * 63}"),
    (AGENT, "plane=0rg/prod-1"),
    (AGENT, "gateway.url=wss://[fd00::1]:8443"),
    (AGENT, "gateway.url=wss://gateway.example/tunnels"),
    (AGENT, "heartbeat.interval=2.5"),
    (AGENT, "podDisruptionBudget.minAvailable=50%"),
    (GATEWAY, "image.tag=20240101"),
    (GATEWAY, "resources.limits.cpu=2"),
    (GATEWAY, "resources.requests.ephemeral-storage=1Gi"),
    (GATEWAY, "service.type=NodePort"),
    (GATEWAY, "logFormat=auto"),
    (GATEWAY, "callers.requestTimeout=0.5"),
    (GATEWAY, "commonLabels.app\\.kubernetes\\.io/part-of=openchoreo"),
]


@pytest.mark.parametrize(("chart", "value"), GOOD_VALUES)
def test_a_value_at_the_edge_of_the_schema_renders(helm: Path, chart: str, value: str) -> None:
    docs = render(helm, chart, "planelink", *REQUIRED[chart], "--set", value)
    assert "Deployment" in kinds(docs)


def test_the_schemas_are_draft_07_and_closed() -> None:
    """Helm reads draft-07; a closed schema is what turns a typo into an error."""
    for chart in (GATEWAY, AGENT):
        schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        assert schema["additionalProperties"] is False
        values = (CHARTS / chart / "values.yaml").read_text()
        top_level = {line.split(":")[0] for line in values.splitlines() if line[:1].isalpha()}
        assert top_level == set(schema["properties"]), top_level ^ set(schema["properties"])


def test_the_charts_define_their_shared_values_alike() -> None:
    """A chart ships alone, so each schema carries its own copy of the shared definitions
    (ports, names, labels, quantities...): the copies must not drift apart."""
    gateway, agent = (
        json.loads((CHARTS / chart / "values.schema.json").read_text())
        for chart in (GATEWAY, AGENT)
    )
    assert gateway["definitions"] == agent["definitions"]
    shared = set(gateway["properties"]) & set(agent["properties"])
    assert "metrics" in shared
    for name in shared - {"metrics"}:
        assert gateway["properties"][name] == agent["properties"][name], name


def _full(helm: Path, chart: str, *extra: str) -> Docs:
    return render(helm, chart, "planelink", *full_values(chart), *extra)


@pytest.mark.parametrize("chart", [GATEWAY, AGENT])
def test_names_and_labels_follow_the_overrides(helm: Path, chart: str) -> None:
    docs = _full(helm, chart)
    fullname = "edge-gateway" if chart == GATEWAY else "prod-agent"
    short_name = "gw" if chart == GATEWAY else "agent"
    for doc in docs:
        metadata = doc["metadata"]
        if doc["kind"] != "ServiceAccount":  # serviceAccount.name names that one
            assert metadata["name"].startswith(fullname), metadata["name"]
        labels = metadata["labels"]
        assert labels["team"] == "platform"
        assert labels["app.kubernetes.io/part-of"] == "openchoreo"
        assert labels["app.kubernetes.io/name"] == short_name
        assert labels["app.kubernetes.io/instance"] == "pl"
    account = yaml.safe_load(Path(full_values(chart)[1]).read_text())["serviceAccount"]["name"]
    assert the(docs, "ServiceAccount")["metadata"]["name"] == account
    assert pod_spec(docs)["serviceAccountName"] == account


@pytest.mark.parametrize("chart", [GATEWAY, AGENT])
def test_pod_labels_and_annotations_never_change_the_selector(helm: Path, chart: str) -> None:
    docs = render(
        helm,
        chart,
        "planelink",
        *REQUIRED[chart],
        "--set",
        "podLabels.app\\.kubernetes\\.io/instance=other",
        "--set",
        "commonLabels.app\\.kubernetes\\.io/name=other",
        "--set",
        "podLabels.tier=edge",
        "--set",
        "podAnnotations.prometheus\\.io/path=/other",
        "--set",
        "podAnnotations.example\\.com/owner=me",
    )
    deployment = the(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": chart, "app.kubernetes.io/instance": "pl"}
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"] == {**selector, "tier": "edge"}
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == chart
    annotations = template["annotations"]
    assert annotations["example.com/owner"] == "me"
    assert annotations["prometheus.io/path"] == "/other"  # podAnnotations win
    assert annotations["prometheus.io/scrape"] == "true"
    # metrics.scrapeAnnotations=false leaves only the pod annotations asked for, or none.
    plain = render(
        helm, chart, "planelink", *REQUIRED[chart], "--set", "metrics.scrapeAnnotations=false"
    )
    assert "annotations" not in the(plain, "Deployment")["spec"]["template"]["metadata"]
    full = _full(helm, chart)
    full_template = the(full, "Deployment")["spec"]["template"]["metadata"]
    assert full_template["annotations"] == {"example.com/owner": "platform-team"}


@pytest.mark.parametrize("chart", [GATEWAY, AGENT])
def test_extra_env_and_volumes_come_after_the_charts_own(helm: Path, chart: str) -> None:
    default = render(helm, chart, "planelink", *REQUIRED[chart])
    docs = _full(helm, chart)
    container = main_container(docs)
    env_names = [item["name"] for item in container["env"]]
    assert env_names[-1] == "HTTPS_PROXY"
    assert env_names[-2].startswith("PLANELINK_")
    assert set(container_env(default)) < set(env_names)
    assert container_env(docs)["HTTPS_PROXY"] is None  # valueFrom, as given
    (env_from,) = container["envFrom"]
    assert set(env_from) == ({"configMapRef"} if chart == GATEWAY else {"secretRef"})
    assert "envFrom" not in main_container(default)
    assert container["volumeMounts"][-1] == {"name": "scratch", "mountPath": "/var/scratch"}
    assert pod_spec(docs)["volumes"][-1] == {"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}
    # Nothing of the chart's own is lost for them.
    own_mounts = main_container(default)["volumeMounts"]
    assert all(mount in container["volumeMounts"] for mount in own_mounts if "tls" in mount["name"])


@pytest.mark.parametrize("chart", [GATEWAY, AGENT])
def test_scheduling_values_reach_the_pod(helm: Path, chart: str) -> None:
    default = pod_spec(render(helm, chart, "planelink", *REQUIRED[chart]))
    for absent in ("priorityClassName", "topologySpreadConstraints", "nodeSelector", "tolerations"):
        assert absent not in default
    docs = _full(helm, chart)
    pod = pod_spec(docs)
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    (spread,) = pod["topologySpreadConstraints"]
    # Without a labelSelector of its own, a constraint spreads this release's pods.
    selector = the(docs, "Deployment")["spec"]["selector"]
    assert spread["labelSelector"] == selector
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    given = {"matchLabels": {"tier": "edge"}}
    chosen = render(
        helm,
        chart,
        "planelink",
        *REQUIRED[chart],
        "--set-json",
        'topologySpreadConstraints=[{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",'
        ' "whenUnsatisfiable": "DoNotSchedule", "labelSelector": ' + json.dumps(given) + "}]",
    )
    (own,) = pod_spec(chosen)["topologySpreadConstraints"]
    assert own["labelSelector"] == given


@pytest.mark.parametrize(("chart", "command"), [(GATEWAY, "gateway"), (AGENT, "agent")])
@pytest.mark.parametrize(("level", "log_format"), [("info", "json"), ("debug", "console")])
def test_log_level_and_format_are_what_planelink_reads(
    helm: Path, chart: str, command: str, level: str, log_format: str
) -> None:
    docs = render(
        helm,
        chart,
        "planelink",
        *REQUIRED[chart],
        "--set",
        f"logLevel={level}",
        "--set",
        f"logFormat={log_format}",
    )
    program, *options = entrypoint()
    assert program == "planelink"
    args = cli.build_parser(command).parse_args([*options, *main_container(docs)["args"]])
    assert args.command == command
    logging = LOG_SETTINGS.resolve(args, {})
    assert (logging.log_level, logging.log_format) == (level, log_format)


@pytest.mark.parametrize(("chart", "command"), [(GATEWAY, "gateway"), (AGENT, "agent")])
@pytest.mark.parametrize("loop", ["auto", "asyncio", "uvloop"])
def test_the_event_loop_value_is_what_planelink_reads(
    helm: Path, chart: str, command: str, loop: str
) -> None:
    settings = gateway_cli.SETTINGS if chart == GATEWAY else agent_cli.SETTINGS
    values = () if loop == "auto" else ("--set", f"eventLoop={loop}")  # auto: the default
    docs = render(helm, chart, "planelink", *REQUIRED[chart], *values)
    environ = {name: value for name, value in container_env(docs).items() if value is not None}
    _, *options = entrypoint()
    args = cli.build_parser(command).parse_args([*options, *main_container(docs)["args"]])
    assert args.command == command
    assert settings.resolve(args, environ).event_loop == loop


def _service_monitors(helm: Path, chart: str, *values: str) -> list[dict[str, Any]]:
    docs = render(helm, chart, "planelink", *REQUIRED[chart], *values)
    return [doc for doc in docs if doc["kind"] == "ServiceMonitor"]


@pytest.mark.parametrize("chart", [GATEWAY, AGENT])
def test_the_service_monitor_needs_asking_and_a_cluster_that_serves_it(
    helm: Path, chart: str
) -> None:
    served = ["--api-versions", SERVICE_MONITOR_API]
    enabled = ["--set", "metrics.serviceMonitor.enabled=true"]
    assert _service_monitors(helm, chart, *served) == []
    assert _service_monitors(helm, chart, *enabled) == []
    (monitor,) = _service_monitors(
        helm, chart, *enabled, *served, "--set", "metrics.serviceMonitor.labels.release=kps"
    )
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/name"] == chart
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"


def test_the_gateway_schema_takes_the_monitoring_values_as_decided(helm: Path) -> None:
    """The metrics helper's values (templates/monitoring.yaml), at their defaults."""
    dashboard = {"enabled": False, "labels": {"grafana_dashboard": "1"}, "annotations": {}}
    rule = {"enabled": False, "labels": {}, "certificateExpiryDays": 30}
    docs = render(
        helm,
        GATEWAY,
        "planelink",
        "--set-json",
        f"metrics.grafanaDashboard={json.dumps(dashboard)}",
        "--set-json",
        f"metrics.prometheusRule={json.dumps(rule)}",
    )
    assert "Deployment" in kinds(docs)
