"""deploy/kubernetes/: every manifest validates offline against the Kubernetes API schemas (kubernetes-validate,
strict: unknown fields fail; KServe's InferenceService, a custom resource, through its pod spec; KEDA's ScaledObject, the
Prometheus Operator's PodMonitor, the Inference Extension's InferencePool and the Gateway API's HTTPRoute against JSON
schemas written from their CRDs, tests/deploy/schemas/), and the manifests say what the service needs (probes on both
ports, GPU resource, scaling on queue length, scraping, the endpoint picker reading our metrics' names, ...)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client import generate_latest

from server.observability import Metrics

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="test dependency kubernetes-validate missing")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.37.0"  # the schemas shipped with kubernetes-validate 1.37.0; no network needed
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
KSERVE_API = "serving.kserve.io/v1beta1"
# A KServe predictor is a pod spec plus these fields of KServe's own (the ones our manifest uses).
PREDICTOR_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric"}
# Custom resources with no schema in kubernetes-validate: JSON schemas written from their CRDs, by apiVersion and kind.
SCHEMAS = {(d["properties"]["apiVersion"]["const"], d["properties"]["kind"]["const"]): d
           for d in (json.loads(p.read_text()) for p in (Path(__file__).parent / "schemas").glob("*.json"))}
# What kustomization.yaml may not list: these need custom resources (KServe, KEDA, the Prometheus Operator, the
# Gateway API Inference Extension) that a plain cluster lacks.
NEEDS_CRDS = {"inferenceservice.yaml", "scaledobject.yaml", "podmonitor.yaml", "inferencepool.yaml"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resource(kind: str, name: str, path: Path | None = None) -> dict:
    for p in [path] if path else MANIFESTS:
        for doc in documents(p):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise LookupError(f"no {kind} {name}")


def validate(doc: dict) -> None:
    """Raises kubernetes_validate.ValidationError or jsonschema.ValidationError when `doc` is not a valid resource."""
    if (doc["apiVersion"], doc["kind"]) in SCHEMAS:
        jsonschema.validate(doc, SCHEMAS[doc["apiVersion"], doc["kind"]])
        behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior is not None:  # a ScaledObject's HPA behavior: the HorizontalPodAutoscaler's own schema
            hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
                   "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1,
                            "behavior": behavior}}
            kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
        return
    if doc["apiVersion"] == KSERVE_API:  # no schema for a custom resource: its pod spec, as a Pod
        spec = {k: v for k, v in doc["spec"]["predictor"].items() if k not in PREDICTOR_FIELDS}
        doc = {"apiVersion": "v1", "kind": "Pod", "metadata": doc["metadata"], "spec": spec}
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path):
    docs = documents(path)
    assert docs
    for doc in docs:
        validate(doc)


def test_validator_rejects_a_broken_manifest():
    """The check above has teeth: a typo'd field and a wrong type are refused."""
    doc = resource("Deployment", "llm-server", DEPLOY / "deployment.yaml")
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    doc = resource("Deployment", "llm-server", DEPLOY / "deployment.yaml")
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("kind", "name", "path", "change"), [
    ("ScaledObject", "llm-server", ("spec", "triggers", 0, "metadata", "threshold"), 4),  # KEDA wants strings
    ("ScaledObject", "llm-server", ("spec", "minReplicas"), 2),  # the HPA's name, not KEDA's
    ("ScaledObject", "llm-server", ("spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown",
                                    "stabilizationWindow"), 300),  # checked by the HPA's own schema
    ("PodMonitor", "llm-server", ("spec", "podMetricsEndpoints", 0, "interval"), "15 seconds"),
    ("InferencePool", "llm-server", ("spec", "targetPortNumber"), 8000),  # v1alpha2's field, gone in v1
    ("InferencePool", "llm-server", ("spec", "endpointPickerRef", "failureMode"), "Closed"),
    ("HTTPRoute", "llm-server", ("spec", "rules", 0, "backendRefs", 0, "port"), 0),
])
def test_validator_rejects_broken_custom_resources(kind, name, path, change):
    """The custom resources' checks have teeth too: a wrong type, a field of another version, a bad enumeration."""
    doc = resource(kind, name)
    validate(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = change
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(doc)


def test_kustomization_lists_existing_files():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (DEPLOY / name).is_file(), name
    # not there: they need custom resources in the cluster
    assert not NEEDS_CRDS & set(kustomization["resources"])


@pytest.mark.parametrize("filename", ["deployment.yaml", "deployment-gpu.yaml"])
def test_deployment_serves_the_model_with_probes_on_both_ports(filename):
    deployment = resource("Deployment", "llm-server", DEPLOY / filename)
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["ports"] == [{"name": "grpc", "containerPort": 9000, "protocol": "TCP"},
                                  {"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert not any(e["name"] == "HTTP_PORT" for e in container["env"])  # HTTP is on by default, on 8000
    assert "--http-port" not in container["args"]
    assert container["args"][container["args"].index("--served-model-name") + 1] == SERVED_NAME
    annotations = pod["metadata"]["annotations"]  # scraping by annotation: the HTTP port's /metrics
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8000", "prometheus.io/path": "/metrics"}
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 9000}, probe
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading needs minutes"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/workspace"]["name"]]["configMap"]["name"] == "llm-servable"
    claim = volumes[mounts["/model"]["name"]]["persistentVolumeClaim"]["claimName"]
    resource("PersistentVolumeClaim", claim)
    assert mounts["/model"]["readOnly"] is True
    # The server drains for --grace-seconds (30) on SIGTERM; Kubernetes must wait longer before SIGKILL.
    assert spec["terminationGracePeriodSeconds"] > 30
    # The image `make docker-build` tags, used as loaded into the node (kind load / minikube image load).
    image = re.search(r"^IMAGE \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert container["image"] == f"{image}:latest" and container["imagePullPolicy"] == "IfNotPresent"


def test_gpu_variant_requests_an_intel_gpu_and_uses_it():
    container = resource("Deployment", "llm-server", DEPLOY / "deployment-gpu.yaml")["spec"]["template"]["spec"][
        "containers"][0]
    assert container["resources"]["limits"]["gpu.intel.com/i915"] == 1
    assert {"name": "DEVICE", "value": "GPU"} in container["env"]
    cpu = resource("Deployment", "llm-server", DEPLOY / "deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert not any(k.startswith("gpu.intel.com/") for k in cpu["resources"]["limits"])


def test_services_select_the_pods_on_the_grpc_and_http_ports():
    labels = resource("Deployment", "llm-server", DEPLOY / "deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    for name in ("llm-server", "llm-server-headless"):
        service = resource("Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"] == [
            {"name": "grpc", "port": 9000, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
            {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}]
    assert resource("Service", "llm-server-headless")["spec"]["clusterIP"] == "None"


def test_hpa_scales_the_deployment_on_cpu():
    hpa = resource("HorizontalPodAutoscaler", "llm-server")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm-server"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_configmap_is_the_stream_servable():
    data = resource("ConfigMap", "llm-servable")["data"]["config.json"]
    assert json.loads(data) == json.loads((ROOT / "servable_stream" / "config.json").read_text())


def test_kserve_inference_service_runs_the_same_server_on_kserve_s_port():
    isvc = resource("InferenceService", "llm-server", DEPLOY / "inferenceservice.yaml")
    assert isvc["apiVersion"] == KSERVE_API
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    http = container["ports"][0]["containerPort"]  # KServe's Service fronts the first port
    args = container["args"]
    assert args[args.index("--http-port") + 1] == str(http) == "8080"
    assert args[args.index("--served-model-name") + 1] == isvc["metadata"]["name"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": http}
    assert container["startupProbe"]["grpc"] == container["livenessProbe"]["grpc"] == {"port": 9000}
    assert predictor["terminationGracePeriodSeconds"] > 30
    # the same image, servable and model volume as the Deployment
    deployment = resource("Deployment", "llm-server", DEPLOY / "deployment.yaml")["spec"]["template"]["spec"]
    assert container["image"] == deployment["containers"][0]["image"]
    assert predictor["volumes"] == deployment["volumes"]
    assert container["volumeMounts"] == deployment["containers"][0]["volumeMounts"]


# --- scaling on queue length, scraping, the Inference Extension's pool ---------------------------------------------

SERVED_NAME = "smollm2-135m-instruct"  # the Deployment's --served-model-name: the model_name label of vllm:* series


def exported_names() -> set[str]:
    """The metric names the server exports, from its real registry."""
    text = generate_latest(Metrics(SERVED_NAME).registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def pod_template() -> dict:
    return resource("Deployment", "llm-server", DEPLOY / "deployment.yaml")["spec"]["template"]


def test_keda_scales_the_deployment_on_requests_waiting():
    scaled = resource("ScaledObject", "llm-server", DEPLOY / "scaledobject.yaml")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm-server"}
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    query = trigger["metadata"]["query"]
    assert query == f'sum(vllm:num_requests_waiting{{model_name="{SERVED_NAME}"}})'
    assert "vllm:num_requests_waiting" in exported_names()
    assert float(trigger["metadata"]["threshold"]) > 0
    # It takes over hpa.yaml's HPA (KEDA refuses a second HPA on the same Deployment).
    hpa = resource("HorizontalPodAutoscaler", "llm-server")
    assert scaled["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["name"] == hpa["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == spec["scaleTargetRef"]["name"]


def test_podmonitor_scrapes_the_pods_http_port():
    monitor = resource("PodMonitor", "llm-server", DEPLOY / "podmonitor.yaml")["spec"]
    pod = pod_template()
    assert monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports[endpoint["port"]] == 8000 and endpoint["path"] == "/metrics"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["http"])


def test_inference_pool_routes_to_the_pods_through_a_picker_that_reads_our_metrics():
    pool = resource("InferencePool", "llm-server", DEPLOY / "inferencepool.yaml")["spec"]
    pod = pod_template()
    assert pool["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert pool["targetPorts"] == [{"number": ports["http"]}]  # the OpenAI API and /metrics
    # The picker: its Service on the pool's port, its pods, its rights, and the metric names it reads are ours.
    picker = pool["endpointPickerRef"]
    service = resource("Service", picker["name"], DEPLOY / "inferencepool.yaml")
    assert picker["port"]["number"] in [p["port"] for p in service["spec"]["ports"]]
    epp = resource("Deployment", picker["name"], DEPLOY / "inferencepool.yaml")["spec"]
    assert service["spec"]["selector"].items() <= epp["template"]["metadata"]["labels"].items()
    args = epp["template"]["spec"]["containers"][0]["args"]
    flags = dict(zip(args[::2], args[1::2]))
    assert flags["--pool-name"] == "llm-server"
    read = {flags["--total-queued-requests-metric"], flags["--kv-cache-usage-percentage-metric"]}
    assert read == {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} and read <= exported_names()
    assert flags["--lora-info-metric"] == ""  # no LoRA: nothing to read
    account = epp["template"]["spec"]["serviceAccountName"]
    binding = resource("RoleBinding", account, DEPLOY / "inferencepool.yaml")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    rules = resource("Role", binding["roleRef"]["name"], DEPLOY / "inferencepool.yaml")["rules"]
    assert {r for rule in rules for r in rule["resources"]} >= {"inferencepools", "pods"}
    # A Gateway's route sends the OpenAI API to the pool.
    route = resource("HTTPRoute", "llm-server", DEPLOY / "inferencepool.yaml")["spec"]
    (rule,) = route["rules"]
    assert rule["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                    "name": "llm-server"}]
