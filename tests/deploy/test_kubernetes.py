"""deploy/kubernetes/: every manifest validates offline against the Kubernetes API schemas (kubernetes-validate,
strict: unknown fields fail; KServe's InferenceService, a custom resource, through its pod spec), and the manifests
say what the service needs (probes on both ports, GPU resource, ...)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="test dependency kubernetes-validate missing")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.37.0"  # the schemas shipped with kubernetes-validate 1.37.0; no network needed
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
KSERVE_API = "serving.kserve.io/v1beta1"
# A KServe predictor is a pod spec plus these fields of KServe's own (the ones our manifest uses).
PREDICTOR_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resource(kind: str, name: str, path: Path | None = None) -> dict:
    for p in [path] if path else MANIFESTS:
        for doc in documents(p):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise LookupError(f"no {kind} {name}")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path):
    docs = documents(path)
    assert docs
    for doc in docs:
        if doc["apiVersion"] == KSERVE_API:  # no schema for a custom resource: its pod spec, as a Pod
            spec = {k: v for k, v in doc["spec"]["predictor"].items() if k not in PREDICTOR_FIELDS}
            doc = {"apiVersion": "v1", "kind": "Pod", "metadata": doc["metadata"], "spec": spec}
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError


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


def test_kustomization_lists_existing_files():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (DEPLOY / name).is_file(), name


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
    assert {"name": "HTTP_PORT", "value": "8000"} in container["env"]  # the server's HTTP front doors on
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
    # not in the kustomization: it needs KServe's custom resources in the cluster
    assert "inferenceservice.yaml" not in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
