"""The Helm chart (helm/twilio-kafka-bridge): lint, render, Kubernetes schemas, the properties
that matter in production, and that the bridge accepts the configuration it renders.

Offline and quick: helm_python binds Helm's Go SDK (no helm binary, no cluster) and
kubernetes-validate ships the Kubernetes JSON schemas.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

import bridge
from bridge.config import (
    AdminSettings,
    HttpSettings,
    ProcessingSettings,
    WebhookSettings,
    load_settings,
)
from bridge.tooling.dashboard import DASHBOARD_FILE
from bridge.twilio.catalog import Catalog
from tests.helpers import CHART, ROOT, widgets_spec

KUBE_VERSION = "1.30.0"
# Custom resources: kubernetes-validate has no schema for them, and only for them.
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
OPTIONAL_KINDS = {
    "Ingress",
    "ServiceMonitor",
    "PrometheusRule",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "NetworkPolicy",
    "PodDisruptionBudget",
}
SECRET_SETTINGS = (
    "BRIDGE_CREDENTIALS__DEFAULT__AUTH_TOKEN",
    "BRIDGE_CREDENTIALS__BILLING__API_KEY_SECRET",
    "BRIDGE_KAFKA__SASL_PASSWORD",
    "BRIDGE_WEBHOOK__SHARED_KEYS__KS0123",
    "BRIDGE_ADMIN__TOKEN",
    "BRIDGE_ADMIN__ENCRYPTION_KEY",
)
# What an admin Secret holds; never given to the chart, only laid out as the kubelet would.
ADMIN_TOKEN = "t0ken-of-the-instances-api"
ADMIN_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes
ADMIN_ON: Values = {"admin": {"enabled": True, "existingSecret": "bridge-admin"}}

NOTES = "twilio-kafka-bridge/templates/NOTES.txt"

Manifest = dict[str, Any]
Values = dict[str, Any]


def ci_values(name: str) -> Values:
    return helm.values_from_yaml((CHART / "ci" / name).read_text())


VALUE_SETS: dict[str, Callable[[], Values]] = {
    "defaults": lambda: {},
    "all-on": lambda: ci_values("all-on-values.yaml"),
    "hpa": lambda: ci_values("hpa-values.yaml"),
    "admin-only": lambda: copy.deepcopy(ADMIN_ON),  # the admin Secret alone in the secrets dir
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: Values) -> list[Manifest]:
    out = chart.render(values, name="bridge", namespace="messaging", is_install=True)
    return [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def with_values(base: Values, **overrides: Any) -> Values:
    """``base`` with dotted keys set (``shutdown.graceSeconds=40``)."""
    values = copy.deepcopy(base)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def kinds(manifests: list[Manifest]) -> set[str]:
    return {m["kind"] for m in manifests}


def pod_spec(manifests: list[Manifest]) -> Manifest:
    spec: Manifest = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(manifests: list[Manifest]) -> Manifest:
    (bridge_container,) = pod_spec(manifests)["containers"]
    return dict(bridge_container)


def settings_configmap(manifests: list[Manifest]) -> Manifest:
    """The ConfigMap of the bridge's settings (the dashboard has one too)."""
    (found,) = [
        m
        for m in manifests
        if m["kind"] == "ConfigMap"
        and m["metadata"]["name"] == one(manifests, "Deployment")["metadata"]["name"]
    ]
    return found


def environment(manifests: list[Manifest]) -> dict[str, str]:
    """The container's literal environment: the ConfigMap, then ``env`` (which wins)."""
    c = container(manifests)
    configmap = settings_configmap(manifests)
    assert c["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    env = dict(configmap["data"])
    env.update({e["name"]: e["value"] for e in c["env"] if "value" in e})
    return env


def secrets_volume(manifests: list[Manifest]) -> Manifest:
    """The projected volume mounted as BRIDGE_SECRETS_DIR."""
    env = {e["name"]: e for e in container(manifests)["env"]}
    (mount,) = [
        m
        for m in container(manifests)["volumeMounts"]
        if m["mountPath"] == env["BRIDGE_SECRETS_DIR"]["value"]
    ]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == mount["name"]]
    return dict(volume)


def lay_out_secrets(volume: Manifest, secrets: dict[str, dict[str, str]], into: Path) -> None:
    """Write the files the kubelet would project from ``secrets`` (name: key: value)."""
    into.mkdir()
    for source in volume["projected"]["sources"]:
        data = secrets[source["secret"]["name"]]
        items = source["secret"].get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (into / item["path"]).write_text(data[item["key"]])


def checksum(manifests: list[Manifest]) -> str:
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations["checksum/config"]
    return value


def test_app_version_is_the_package_version(chart: helm.Chart) -> None:
    assert chart.metadata["apiVersion"] == "v2"
    assert chart.metadata["appVersion"] == bridge.__version__


def test_defaults_match_the_bridge_defaults(chart: helm.Chart) -> None:
    defaults = chart.values
    assert defaults["http"]["port"] == HttpSettings().port
    assert defaults["shutdown"]["graceSeconds"] == ProcessingSettings().shutdown_grace_s
    # The margin covers the webhooks answered (each within the ack timeout, +1 s) before
    # the requests drain.
    assert defaults["shutdown"]["marginSeconds"] > WebhookSettings().ack_timeout_s + 1
    admin = AdminSettings()
    assert defaults["admin"]["enabled"] is admin.enabled is False
    assert defaults["admin"]["topic"] == admin.topic
    assert defaults["admin"]["auditTopic"] == admin.audit_topic
    assert defaults["admin"]["writeTimeoutSeconds"] == admin.write_timeout_s


def test_schema_defaults_are_the_values_defaults(chart: helm.Chart) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["admin"]

    def defaults(node: Manifest) -> Any:
        if "default" in node:
            return node["default"]
        return {k: defaults(v) for k, v in node["properties"].items()}

    assert defaults(schema) == chart.values["admin"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict_passes(value_set: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[value_set](), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; 1 (info, "icon is recommended") is fine.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_manifests_validate_against_kubernetes(chart: helm.Chart, value_set: str) -> None:
    manifests = render(chart, VALUE_SETS[value_set]())
    unknown = set()
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add((manifest["apiVersion"], manifest["kind"]))
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{manifest['kind']} does not validate at {path}: {exc.message}")
    assert unknown <= CRDS


def test_defaults_render_only_the_core_objects(chart: helm.Chart) -> None:
    assert kinds(render(chart, {})) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
    }


def test_the_ci_values_render_every_optional_kind(chart: helm.Chart) -> None:
    all_on = kinds(render(chart, ci_values("all-on-values.yaml")))
    hpa = kinds(render(chart, ci_values("hpa-values.yaml")))
    # KEDA manages its own HPA, so the chart's HPA is rendered by the hpa values file instead.
    assert all_on >= OPTIONAL_KINDS - {"HorizontalPodAutoscaler"}
    assert "HorizontalPodAutoscaler" in hpa
    assert all_on | hpa >= OPTIONAL_KINDS
    assert "Secret" not in all_on | hpa  # secrets are only ever referenced


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pod_is_locked_down(chart: helm.Chart, value_set: str) -> None:
    manifests = render(chart, VALUE_SETS[value_set]())
    pod = pod_spec(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(manifests)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # A writable /tmp despite the read-only root filesystem.
    assert {"name": "tmp", "mountPath": "/tmp"} in container(manifests)["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_use_the_bridge_endpoints(chart: helm.Chart, value_set: str) -> None:
    manifests = render(chart, VALUE_SETS[value_set]())
    c = container(manifests)
    (port,) = c["ports"]
    assert port["name"] == "http"
    assert str(port["containerPort"]) == environment(manifests)["BRIDGE_HTTP__PORT"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_startup_probe_can_be_turned_off(chart: helm.Chart) -> None:
    manifests = render(chart, {"startupProbe": {"enabled": False}})
    assert "startupProbe" not in container(manifests)
    assert "livenessProbe" in container(manifests)


def test_http_port_follows_the_value(chart: helm.Chart) -> None:
    manifests = render(chart, {"http": {"port": 9000}})
    assert container(manifests)["ports"][0]["containerPort"] == 9000
    assert environment(manifests)["BRIDGE_HTTP__PORT"] == "9000"
    assert one(manifests, "Service")["spec"]["ports"][0]["targetPort"] == "http"


def test_tracing_is_off_until_an_endpoint_is_set(chart: helm.Chart) -> None:
    assert not [n for n in environment(render(chart, {})) if n.startswith("OTEL_")]
    endpoint = "http://otel-collector.observability:4318"
    env = environment(render(chart, {"tracing": {"endpoint": endpoint, "samplerArg": "0.5"}}))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.5"
    assert env["OTEL_SERVICE_NAME"] == "bridge-twilio-kafka-bridge"


@pytest.mark.parametrize(("grace", "drain", "margin"), [(25, 5, 15), (0, 0, 1), (120, 10, 20)])
def test_termination_grace_covers_the_shutdown_grace(
    chart: helm.Chart, grace: int, drain: int, margin: int
) -> None:
    shutdown = {"graceSeconds": grace, "drainDelaySeconds": drain, "marginSeconds": margin}
    manifests = render(chart, {"shutdown": shutdown})
    termination = pod_spec(manifests)["terminationGracePeriodSeconds"]
    env = environment(manifests)
    passed = float(env["BRIDGE_PROCESSING__SHUTDOWN_GRACE_S"])
    delay = float(env["BRIDGE_HTTP__DRAIN_DELAY_S"])
    assert (passed, delay) == (grace, drain)
    assert termination == drain + grace + margin
    assert termination > delay + passed
    # The bridge delays its own port closing: no hook that needs a sleep binary in the image.
    assert container(manifests).get("lifecycle") is None


def test_shutdown_grace_cannot_be_overridden_from_config(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="set by the chart"):
        render(chart, {"config": {"BRIDGE_PROCESSING__SHUTDOWN_GRACE_S": 300}})


def test_checksum_is_the_configmaps_and_follows_config(chart: helm.Chart) -> None:
    out = chart.render({}, name="bridge", namespace="messaging", is_install=True)
    configmap_text = out["twilio-kafka-bridge/templates/configmap.yaml"]
    base = render(chart, {})
    assert checksum(base) == hashlib.sha256(configmap_text.encode()).hexdigest()
    assert checksum(render(chart, {})) == checksum(base)  # deterministic
    assert checksum(render(chart, {"replicaCount": 5})) == checksum(base)
    free_form = render(chart, {"config": {"BRIDGE_PROCESSING__MAX_IN_FLIGHT": 64}})
    structured = render(chart, {"kafka": {"bootstrapServers": "kafka:9092"}})
    assert checksum(free_form) != checksum(base)
    assert checksum(structured) != checksum(base)
    assert checksum(free_form) != checksum(structured)


def test_config_renders_into_the_configmap(chart: helm.Chart) -> None:
    values = {
        "config": {
            "BRIDGE_KAFKA__MAX_REQUEST_SIZE": 10485760,
            "BRIDGE_RATE_LIMIT__REQUESTS_PER_SECOND": 12.5,
            "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER": False,
        },
        "kafka": {
            "bootstrapServers": "a:9092,b:9092",
            "requestTopics": ["t1", "t2"],
            "groupId": "g",
        },
        "webhook": {"publicUrl": "https://hooks.example.com"},
    }
    data = settings_configmap(render(chart, values))["data"]
    assert data == {
        "BRIDGE_KAFKA__MAX_REQUEST_SIZE": "10485760",  # not 1.048576e+07
        "BRIDGE_RATE_LIMIT__REQUESTS_PER_SECOND": "12.5",
        "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER": "false",
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "a:9092,b:9092",
        "BRIDGE_KAFKA__REQUEST_TOPICS": "t1,t2",
        "BRIDGE_KAFKA__GROUP_ID": "g",
        "BRIDGE_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
        "BRIDGE_WEBHOOK__PUBLIC_URL": "https://hooks.example.com",
    }


@pytest.mark.parametrize("name", SECRET_SETTINGS)
def test_secrets_are_refused_in_the_configmap(chart: helm.Chart, name: str) -> None:
    with pytest.raises(helm.HelmRenderError) as refused:
        render(chart, {"config": {name: "s3cr3t-sentinel"}})
    assert "secret" in str(refused.value) or "set by the chart" in str(refused.value)
    assert "s3cr3t-sentinel" not in str(refused.value)


def test_secrets_are_only_referenced(chart: helm.Chart) -> None:
    manifests = render(chart, ci_values("all-on-values.yaml"))
    data = settings_configmap(manifests)["data"]
    secretish = ("AUTH_TOKEN", "API_KEY_SECRET", "SASL_PASSWORD", "SHARED_KEYS")
    assert not [name for name in data if any(s in name for s in secretish)]
    env = {e["name"]: e for e in container(manifests)["env"]}
    password = env["BRIDGE_KAFKA__SASL_PASSWORD"]
    assert password == {
        "name": "BRIDGE_KAFKA__SASL_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "kafka-sasl", "key": "password"}},
    }
    assert "value" not in env["BRIDGE_CREDENTIALS__BILLING__AUTH_TOKEN"]
    # The Twilio and admin Secrets are the secrets directory; the TLS files sit in their own
    # mount.
    mounts = {m["name"]: m for m in container(manifests)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert [s["secret"]["name"] for s in secrets_volume(manifests)["projected"]["sources"]] == [
        "twilio-credentials",
        "twilio-bridge-admin",
    ]
    tls_dir = mounts["kafka-tls"]["mountPath"]
    assert mounts["kafka-tls"]["readOnly"] is True
    assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-tls"
    assert {
        env[f"BRIDGE_KAFKA__SSL_{name}"]["value"] for name in ("CAFILE", "CERTFILE", "KEYFILE")
    } == {f"{tls_dir}/ca.crt", f"{tls_dir}/tls.crt", f"{tls_dir}/tls.key"}


def test_no_secret_mounts_without_secrets(chart: helm.Chart) -> None:
    manifests = render(chart, {})
    names = {e["name"] for e in container(manifests)["env"]}
    assert not names & {"BRIDGE_SECRETS_DIR", "BRIDGE_KAFKA__SASL_PASSWORD"}
    assert [v["name"] for v in pod_spec(manifests)["volumes"]] == ["tmp"]


def test_the_bridge_accepts_the_rendered_configuration(
    chart: helm.Chart, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(chart, ci_values("all-on-values.yaml"))
    env = environment(manifests)
    # What the kubelet would provide: the Twilio and admin Secrets, with the keys the chart's
    # values.yaml documents, projected as the Deployment says, and the SASL password.
    secrets = tmp_path / "secrets"
    twilio = {
        "credentials__default__account_sid": "AC" + "0" * 32,
        "credentials__default__auth_token": "token",
    }
    admin = {"token": ADMIN_TOKEN, "instances-key": ADMIN_KEY}
    lay_out_secrets(
        secrets_volume(manifests),
        {"twilio-credentials": twilio, "twilio-bridge-admin": admin},
        secrets,
    )
    env["BRIDGE_SECRETS_DIR"] = str(secrets)
    env["BRIDGE_KAFKA__SASL_PASSWORD"] = "password"
    env["BRIDGE_CREDENTIALS__BILLING__ACCOUNT_SID"] = "AC" + "1" * 32
    env["BRIDGE_CREDENTIALS__BILLING__AUTH_TOKEN"] = "token"
    for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.kafka.request_topics == ["twilio.requests", "twilio.requests.bulk"]
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.ssl_keyfile == Path("/etc/twilio-bridge/kafka-tls/tls.key")
    assert settings.processing.shutdown_grace_s == 40
    assert settings.processing.max_in_flight == 512
    assert settings.webhook.public_url == "https://hooks.example.com"
    assert set(settings.credentials) == {"default", "billing"}
    assert settings.admin.enabled is True
    assert settings.admin.token is not None
    assert settings.admin.token.get_secret_value() == ADMIN_TOKEN
    assert settings.admin.encryption_key is not None
    assert settings.admin.encryption_key.get_secret_value() == ADMIN_KEY
    assert settings.admin.topic == "twilio.instances.prod"
    assert settings.admin.audit_topic == "twilio.instances.prod.audit"
    assert settings.admin.write_timeout_s == 15
    assert settings.catalog.spec_dir == Path("/etc/twilio-bridge/specs")


def lay_out_config_map(files: dict[str, str], into: Path) -> None:
    """Write a ConfigMap volume as the kubelet does: a hidden timestamped directory, a hidden
    ``..data`` link to it, and one link per key."""
    stamped = into / "..2026_04_14_09_30_05.000000001"
    stamped.mkdir(parents=True)
    (into / "..data").symlink_to(stamped.name)
    for name, text in files.items():
        (stamped / name).write_text(text)
        (into / name).symlink_to(f"..data/{name}")


def test_a_specs_config_map_becomes_the_catalogs_spec_dir(
    chart: helm.Chart, tmp_path: Path
) -> None:
    assert "BRIDGE_CATALOG__SPEC_DIR" not in environment(render(chart, {}))
    manifests = render(chart, {"catalog": {"specsConfigMap": "twilio-specs"}})
    spec_dir = environment(manifests)["BRIDGE_CATALOG__SPEC_DIR"]
    mounts = [m for m in container(manifests)["volumeMounts"] if m["name"] == "specs"]
    assert mounts == [{"name": "specs", "mountPath": spec_dir, "readOnly": True}]
    (volume,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == "specs"]
    assert volume["configMap"] == {"name": "twilio-specs", "defaultMode": 0o444}
    # What the kubelet mounts there is a directory the bridge reads.
    mounted = tmp_path / "specs"
    lay_out_config_map({"twilio_widgets_v1.json": json.dumps(widgets_spec())}, mounted)
    catalog = Catalog.load(mounted)
    assert catalog.resolve("CreateWidget").host == "https://widgets.twilio.com"


def test_ingress_exposes_only_the_webhooks(chart: helm.Chart) -> None:
    ingress = one(render(chart, ci_values("all-on-values.yaml")), "Ingress")
    service = one(render(chart, ci_values("all-on-values.yaml")), "Service")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/webhooks/twilio", "Prefix")]
    assert paths[0]["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": "http"},
    }


def test_scaled_object_scales_on_the_groups_lag(chart: helm.Chart) -> None:
    manifests = render(chart, ci_values("all-on-values.yaml"))
    scaled = one(manifests, "ScaledObject")
    assert (
        scaled["spec"]["scaleTargetRef"]["name"] == one(manifests, "Deployment")["metadata"]["name"]
    )
    assert "replicas" not in one(manifests, "Deployment")["spec"]  # KEDA owns the count
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"] == {
        "bootstrapServers": "kafka-0.kafka.svc:9093,kafka-1.kafka.svc:9093",
        "consumerGroup": "twilio-bridge-prod",
        "lagThreshold": "200",
        "offsetResetPolicy": "earliest",  # the bridge's auto_offset_reset
    }  # two request topics: no single topic, so every topic of the group counts
    one_topic = with_values(ci_values("all-on-values.yaml"), **{"kafka.requestTopics": ["t"]})
    (trigger,) = one(render(chart, one_topic), "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["topic"] == "t"


def test_pdb_takes_min_available_or_max_unavailable(chart: helm.Chart) -> None:
    assert one(render(chart, {}), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    pdb = one(
        render(chart, {"podDisruptionBudget": {"minAvailable": "50%"}}), "PodDisruptionBudget"
    )
    assert pdb["spec"]["minAvailable"] == "50%"
    assert "maxUnavailable" not in pdb["spec"]
    off = render(chart, {"podDisruptionBudget": {"enabled": False}})
    assert "PodDisruptionBudget" not in kinds(off)


def test_network_policy_restricts_egress_only_when_asked(chart: helm.Chart) -> None:
    policy = one(render(chart, {"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    restricted = one(render(chart, ci_values("all-on-values.yaml")), "NetworkPolicy")
    assert restricted["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {"port": 53, "protocol": "UDP"} in restricted["spec"]["egress"][0]["ports"]


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": "two"},
        {"replicas": 2},
        {"kafka": {"securityProtocol": "TLS"}},
        {"kafka": {"sasl": {"mechanism": "GSSAPI"}}},
        {"config": {"kafka__group_id": "lower-case"}},
        {"shutdown": {"graceSeconds": -1}},
        {"http": {"port": 80}},
        {"image": {"registry": "elsewhere"}},
        {"admin": {"enabled": "true"}},
        {"admin": {"writeTimeoutSeconds": "10s"}},
        {"admin": {"writeTimeoutSeconds": 0}},
        {"admin": {"topic": ""}},
        {"admin": {"existingSecret": "Not_A_Secret_Name"}},
        {"admin": {"secretKeys": {"token": ""}}},
        {"admin": {"allowedFrom": {"namespaceSelector": {}}}},
        {"catalog": {"specsConfigMap": "Not_A_ConfigMap"}},
        {"catalog": {"specDir": "/specs"}},
        {"tracing": {"endpoint": "collector:4318"}},
        {"tracing": {"sampler": "sometimes"}},
        {"tracing": {"samplerArg": "2"}},
    ],
    ids=repr,
)
def test_schema_rejects_wrong_values(chart: helm.Chart, values: Values) -> None:
    with pytest.raises(helm.HelmValuesError, match="schema"):
        render(chart, values)
    assert helm.lint(CHART, values, strict=True)["errors"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"autoscaling.enabled": True}, "exclude each other"),
        ({"kafka.securityProtocol": "SSL"}, "kafka.sasl.existingSecret needs"),
        ({"kafka.securityProtocol": "SASL_PLAINTEXT"}, "kafka.tls.existingSecret needs"),
        ({"webhook.publicUrl": ""}, "ingress.enabled needs webhook.publicUrl"),
        ({"config.BRIDGE_KAFKA__GROUP_ID": "other"}, "also given by a structured value"),
        ({"keda.bootstrapServers": "", "kafka.bootstrapServers": ""}, "keda.enabled needs"),
        ({"admin.existingSecret": ""}, "admin.enabled needs admin.existingSecret"),
        ({"config.BRIDGE_ADMIN__ENABLED": False}, "set by the chart"),
        ({"config.BRIDGE_ADMIN__TOPIC": "other"}, "set by the chart"),
        ({"config.BRIDGE_CATALOG__SPEC_DIR": "/specs"}, "set by the chart"),
    ],
)
def test_template_refuses_contradictions(
    chart: helm.Chart, overrides: dict[str, Any], message: str
) -> None:
    values = with_values(ci_values("all-on-values.yaml"), **overrides)
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, values)


def test_admin_is_off_by_default_and_leaves_no_trace(chart: helm.Chart) -> None:
    base = render(chart, {})
    assert not [name for name in settings_configmap(base)["data"] if "ADMIN" in name]
    # The admin block's other values mean nothing while it is off: no roll on upgrade.
    off = {"admin": {"topic": "other", "existingSecret": "bridge-admin"}}
    assert render(chart, off) == base
    assert "/instances" not in chart.render({}, name="bridge")[NOTES]


def test_admin_renders_settings_and_mounts_the_secret_as_files(chart: helm.Chart) -> None:
    values = with_values(ADMIN_ON, **{"admin.writeTimeoutSeconds": 2.5})
    manifests = render(chart, values)
    env = environment(manifests)
    assert {k: v for k, v in env.items() if k.startswith("BRIDGE_ADMIN__")} == {
        "BRIDGE_ADMIN__ENABLED": "true",
        "BRIDGE_ADMIN__TOPIC": "twilio.instances",
        "BRIDGE_ADMIN__AUDIT_TOPIC": "twilio.instances.audit",
        "BRIDGE_ADMIN__WRITE_TIMEOUT_S": "2.5",
    }
    # No Twilio Secret: the secrets directory holds the admin Secret's two keys alone, as the
    # files the bridge reads (the settings' names without BRIDGE_, lower case).
    volume = secrets_volume(manifests)
    assert volume["projected"]["defaultMode"] == 0o440
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "bridge-admin",
                "items": [
                    {"key": "admin-token", "path": "admin__token"},
                    {"key": "encryption-key", "path": "admin__encryption_key"},
                ],
            }
        }
    ]
    (source,) = volume["projected"]["sources"]
    fields = {item["path"].removeprefix("admin__") for item in source["secret"]["items"]}
    assert fields <= set(AdminSettings.model_fields)
    # The key names are configurable; the file names are not.
    keys = {"token": "api-token", "encryptionKey": "sealing.key"}
    custom = render(chart, with_values(ADMIN_ON, **{"admin.secretKeys": keys}))
    (source,) = secrets_volume(custom)["projected"]["sources"]
    assert source["secret"]["items"] == [
        {"key": "api-token", "path": "admin__token"},
        {"key": "sealing.key", "path": "admin__encryption_key"},
    ]
    # Secrets are referenced, never rendered.
    assert "Secret" not in kinds(manifests)


def test_admin_and_twilio_secrets_share_the_secrets_dir(chart: helm.Chart) -> None:
    values = with_values(ADMIN_ON, **{"twilio.existingSecret": "twilio-credentials"})
    manifests = render(chart, values)
    sources = secrets_volume(manifests)["projected"]["sources"]
    assert sources[0] == {"secret": {"name": "twilio-credentials"}}  # every key
    assert sources[1]["secret"]["name"] == "bridge-admin"
    mounts = [m["mountPath"] for m in container(manifests)["volumeMounts"]]
    assert mounts.count(environment(manifests)["BRIDGE_SECRETS_DIR"]) == 1


def test_admin_checksum_follows_its_settings(chart: helm.Chart) -> None:
    base = render(chart, {})
    on = render(chart, ADMIN_ON)
    assert checksum(on) != checksum(base)
    topic = render(chart, with_values(ADMIN_ON, **{"admin.topic": "instances.v2"}))
    assert checksum(topic) != checksum(on)
    # Another Secret changes the pod template itself (its volume), not the ConfigMap.
    other = render(chart, with_values(ADMIN_ON, **{"admin.existingSecret": "other-admin"}))
    assert checksum(other) == checksum(on)
    assert pod_spec(other) != pod_spec(on)


@pytest.mark.parametrize("field", ["token", "encryptionKey", "encryption_key", "tokenValue"])
def test_admin_secret_values_are_refused_in_values(chart: helm.Chart, field: str) -> None:
    values = with_values(ADMIN_ON, **{f"admin.{field}": "s3cr3t-sentinel-0123456789"})
    with pytest.raises(helm.HelmValuesError, match="schema") as refused:
        render(chart, values)
    assert "s3cr3t-sentinel" not in str(refused.value)


@pytest.mark.parametrize("name", ["BRIDGE_ADMIN__TOKEN", "BRIDGE_ADMIN__ENCRYPTION_KEY"])
def test_admin_secrets_are_refused_as_literal_extra_env(chart: helm.Chart, name: str) -> None:
    literal = with_values(ADMIN_ON, extraEnv=[{"name": name, "value": "s3cr3t-sentinel"}])
    with pytest.raises(helm.HelmRenderError, match="is a secret") as refused:
        render(chart, literal)
    assert "s3cr3t-sentinel" not in str(refused.value)
    reference = {"secretKeyRef": {"name": "elsewhere", "key": "k"}}
    from_secret = with_values(ADMIN_ON, extraEnv=[{"name": name, "valueFrom": reference}])
    env = {e["name"]: e for e in container(render(chart, from_secret))["env"]}
    assert env[name] == {"name": name, "valueFrom": reference}


def test_ingress_never_routes_the_admin_api(chart: helm.Chart) -> None:
    def routed(path: Manifest, url: str) -> bool:
        if path["pathType"] == "Exact":
            return bool(url == path["path"])
        if path["pathType"] == "Prefix":  # by whole path elements
            return url == path["path"] or url.startswith(path["path"].rstrip("/") + "/")
        return url.startswith(path["path"])  # ImplementationSpecific: the widest reading

    values = with_values(ci_values("all-on-values.yaml"), **{"ingress.hosts": ["a", "b"]})
    assert values["admin"]["enabled"] is True
    for ingress_values in (values, with_values(values, **{"ingress.hosts": []})):
        ingress = one(render(chart, ingress_values), "Ingress")
        paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
        assert paths
        for url in ("/instances", "/instances/default", "/openapi.json", "/metrics"):
            assert not [p for p in paths if routed(p, url)], url
        assert all(routed(p, "/webhooks/twilio/messages") for p in paths)
        assert "defaultBackend" not in ingress["spec"]


def test_network_policy_lets_the_admin_callers_in(chart: helm.Chart) -> None:
    values = ci_values("all-on-values.yaml")
    policy = one(render(chart, values), "NetworkPolicy")
    webhooks, admin = policy["spec"]["ingress"]
    assert webhooks["from"] == values["networkPolicy"]["ingressFrom"]
    assert admin == {
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": values["admin"]["allowedFrom"],
    }
    # Admin off: the webhooks' rule alone. The port open to anyone: nothing to add (a rule
    # with only the admin callers would not narrow it, but says what is not so).
    off = one(render(chart, with_values(values, **{"admin.enabled": False})), "NetworkPolicy")
    assert off["spec"]["ingress"] == [webhooks]
    anyone = with_values(values, **{"networkPolicy.ingressFrom": []})
    policy = one(render(chart, anyone), "NetworkPolicy")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


def test_notes_tell_how_to_call_the_admin_api(chart: helm.Chart) -> None:
    values = with_values(ADMIN_ON, **{"admin.secretKeys.token": "api.token", "service.port": 80})
    notes = chart.render(values, name="bridge", namespace="messaging")[NOTES]
    assert "kubectl -n messaging port-forward svc/bridge-twilio-kafka-bridge 8080:80" in notes
    assert "get secret bridge-admin -o jsonpath='{.data.api\\.token}' | base64 -d" in notes
    assert 'curl -sS -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/instances' in notes
    assert "echo $TOKEN" not in notes
    # Accounts may come from instances: no warning about the missing Twilio Secret.
    assert "twilio.existingSecret is not set" not in notes
    assert "WARNING: service.type" not in notes
    exposed = chart.render(with_values(values, **{"service.type": "LoadBalancer"}), name="b")
    assert "WARNING: service.type is LoadBalancer" in exposed[NOTES]


RULES_FILE = CHART / "rules" / "alerts.yaml"
RUNBOOK_BASE = "https://github.com/twilio-kafka-bridge/twilio-kafka-bridge/blob/main/README.md"


def test_dashboard_and_rules_are_off_by_default(chart: helm.Chart) -> None:
    manifests = render(chart, {})
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap"] == [
        "bridge-twilio-kafka-bridge"
    ]
    assert chart.values["grafanaDashboard"]["enabled"] is False
    assert chart.values["prometheusRule"]["enabled"] is False
    assert chart.values["prometheusRule"]["runbookBaseUrl"] == RUNBOOK_BASE


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(chart: helm.Chart) -> None:
    manifests = render(chart, {"grafanaDashboard": {"enabled": True}})
    (dashboard,) = [m for m in manifests if m["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["kind"] == "ConfigMap"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in dashboard["metadata"]
    assert "namespace" not in dashboard["metadata"]  # the release's
    shipped = json.loads((ROOT / DASHBOARD_FILE).read_text())
    assert json.loads(dashboard["data"]["twilio-kafka-bridge.json"]) == shipped
    # The bridge's settings are still the Deployment's one ConfigMap.
    assert environment(manifests)["BRIDGE_HTTP__PORT"] == "8080"


def test_dashboard_label_folder_and_namespace_follow_the_values(chart: helm.Chart) -> None:
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "label": "dashboards.example.com/grafana",
            "labelValue": "bridge",
            "folder": "Messaging",
            "folderAnnotation": "k8s-sidecar-target-directory",
            "namespace": "monitoring",
        }
    }
    (dashboard,) = [
        m for m in render(chart, values) if m["metadata"]["name"].endswith("-dashboard")
    ]
    metadata = dashboard["metadata"]
    assert metadata["labels"]["dashboards.example.com/grafana"] == "bridge"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"k8s-sidecar-target-directory": "Messaging"}
    assert metadata["namespace"] == "monitoring"


def test_prometheus_rule_holds_the_tested_rule_file(chart: helm.Chart) -> None:
    values = {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}
    rule = one(render(chart, values), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    # The very groups promtool checks and tests, nothing added or lost.
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())


def test_prometheus_rule_rebases_the_runbook_links(chart: helm.Chart) -> None:
    base = "https://git.example.com/ops/bridge/-/blob/v1/README.md"
    values = {"prometheusRule": {"enabled": True, "runbookBaseUrl": base}}
    rule = one(render(chart, values), "PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert alerts
    for alert in alerts:
        anchor = alert["annotations"]["runbook_url"].removeprefix(base)
        assert anchor == "#" + alert["alert"].lower(), alert["alert"]
    assert RUNBOOK_BASE not in json.dumps(rule)
