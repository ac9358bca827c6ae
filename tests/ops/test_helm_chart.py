"""The Helm chart (helm/twilio-kafka-bridge): lint, render, Kubernetes schemas, the properties
that matter in production, and that the bridge accepts the configuration it renders.

Offline and quick: helm_python binds Helm's Go SDK (no helm binary, no cluster) and
kubernetes-validate ships the Kubernetes JSON schemas.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

import bridge
from bridge.settings import (
    HttpSettings,
    ProcessingSettings,
    WebhookSettings,
    load_settings,
)

CHART = Path(__file__).resolve().parents[2] / "helm" / "twilio-kafka-bridge"
KUBE_VERSION = "1.30.0"
# Custom resources: kubernetes-validate has no schema for them, and only for them.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("keda.sh/v1alpha1", "ScaledObject")}
OPTIONAL_KINDS = {
    "Ingress",
    "ServiceMonitor",
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
)

Manifest = dict[str, Any]
Values = dict[str, Any]


def ci_values(name: str) -> Values:
    return helm.values_from_yaml((CHART / "ci" / name).read_text())


VALUE_SETS: dict[str, Callable[[], Values]] = {
    "defaults": lambda: {},
    "all-on": lambda: ci_values("all-on-values.yaml"),
    "hpa": lambda: ci_values("hpa-values.yaml"),
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


def environment(manifests: list[Manifest]) -> dict[str, str]:
    """The container's literal environment: the ConfigMap, then ``env`` (which wins)."""
    c = container(manifests)
    configmap = one(manifests, "ConfigMap")
    assert c["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    env = dict(configmap["data"])
    env.update({e["name"]: e["value"] for e in c["env"] if "value" in e})
    return env


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
    data = one(render(chart, values), "ConfigMap")["data"]
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
    data = one(manifests, "ConfigMap")["data"]
    secretish = ("AUTH_TOKEN", "API_KEY_SECRET", "SASL_PASSWORD", "SHARED_KEYS")
    assert not [name for name in data if any(s in name for s in secretish)]
    env = {e["name"]: e for e in container(manifests)["env"]}
    password = env["BRIDGE_KAFKA__SASL_PASSWORD"]
    assert password == {
        "name": "BRIDGE_KAFKA__SASL_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "kafka-sasl", "key": "password"}},
    }
    assert "value" not in env["BRIDGE_CREDENTIALS__BILLING__AUTH_TOKEN"]
    # The Twilio Secret is the secrets directory; the TLS files sit in their own mount.
    mounts = {m["name"]: m for m in container(manifests)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert env["BRIDGE_SECRETS_DIR"]["value"] == mounts["twilio-secrets"]["mountPath"]
    assert volumes["twilio-secrets"]["secret"]["secretName"] == "twilio-credentials"
    assert mounts["twilio-secrets"]["readOnly"] is True
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
    # What the kubelet would provide: the mounted Twilio Secret, laid out as the chart's
    # values.yaml documents it, and the SASL password from its Secret.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "credentials__default__account_sid").write_text("AC" + "0" * 32)
    (secrets / "credentials__default__auth_token").write_text("token")
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
    ],
)
def test_template_refuses_contradictions(
    chart: helm.Chart, overrides: dict[str, Any], message: str
) -> None:
    values = with_values(ci_values("all-on-values.yaml"), **overrides)
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, values)
