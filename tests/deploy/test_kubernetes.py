"""deploy/kubernetes: every rendered manifest against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail), the ServiceMonitor structurally (a CRD), and
the cross-references a cluster would only reveal at run time: probe paths, ports, selectors,
volumes, the HPA metric, the drain timing. No cluster here: validated, never run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml


from .kustomize import containers, render

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["gpu", "cpu"]
K8S_VERSIONS = ["1.30.0", "1.37.0"]  # the oldest still common, and the newest the package knows
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, dict[tuple[str, str], dict]]:
    objects = render(K8S / "overlays" / request.param)
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(by_kind) == len(objects), "two objects share a kind and name"
    return request.param, by_kind


def _one(objs: dict, kind: str) -> dict:
    (obj,) = [o for (k, _), o in objs.items() if k == kind]
    return obj


def _service_container(objs) -> dict:
    return _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(overlay, version):
    _, objs = overlay
    for obj in objs.values():
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_overlays_hold_every_part(overlay):
    _, objs = overlay
    kinds = {k for k, _ in objs}
    assert {"Namespace", "PersistentVolumeClaim", "Job", "Deployment", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "ServiceMonitor"} <= kinds


def test_servicemonitor_is_well_formed_and_scrapes_the_service(overlay):
    _, objs = overlay
    mon, svc = _one(objs, "ServiceMonitor"), _one(objs, "Service")
    assert set(mon) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(mon["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["namespace"] in mon["spec"]["namespaceSelector"]["matchNames"]
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in mon["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert ep["port"] in port_names and ep["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", ep["interval"]) and re.fullmatch(r"\d+s", ep["scrapeTimeout"])


def test_probes_ask_routes_the_app_has_on_its_named_port(overlay):
    _, objs = overlay
    paths = set(yaml.safe_load((ROOT / "openapi.yaml").read_text())["paths"])  # equal to the app's (test_openapi_file)
    c = _service_container(objs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for name, probe in probes.items():
        assert probe["path"] in paths, f"{name} asks {probe['path']}, not a route of the app"
        assert probe["port"] in ports
    assert probes["readinessProbe"]["path"] == "/health/ready"
    assert probes["livenessProbe"]["path"] == "/health/live"  # stays true while loading and draining
    args = c["args"]
    assert int(args[args.index("--port") + 1]) == ports["http"]
    assert args[args.index("--host") + 1] == "0.0.0.0"


def test_service_pdb_and_deployment_select_the_pods(overlay):
    _, objs = overlay
    dep, svc, pdb = _one(objs, "Deployment"), _one(objs, "Service"), _one(objs, "PodDisruptionBudget")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (dep["spec"]["selector"]["matchLabels"], svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    port_names = {p["name"] for p in _service_container(objs)["ports"]}
    assert all(p["targetPort"] in port_names for p in svc["spec"]["ports"])


def test_hpa_scales_the_deployment_on_a_metric_the_service_exports(overlay):
    from service.core.metrics import Metrics

    _, objs = overlay
    hpa, dep = _one(objs, "HorizontalPodAutoscaler"), _one(objs, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2  # with the PDB's maxUnavailable 1, a drain never empties the service
    exported = {m.name for m in Metrics().registry.collect()}
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name in exported, f"the HPA scales on {name}, which the service does not export"
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"]
    served = [r for r in rules if r["name"]["as"] == name]
    assert served, "no prometheus-adapter rule serves the HPA's metric"
    series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", served[0]["seriesQuery"]).group(1)
    assert series in exported and re.fullmatch(served[0]["name"]["matches"], series)


def test_termination_grace_outlasts_prestop_and_drain(overlay):
    _, objs = overlay
    pod = _one(objs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep"
    env = _env(c)
    from service.config import Settings

    defaults = Settings.model_fields
    delay = float(env.get("SINDER_DRAIN_DELAY_S") or defaults["drain_delay_s"].default)
    grace = float(env.get("SINDER_DRAIN_GRACE_S") or defaults["drain_grace_s"].default)
    assert pod["terminationGracePeriodSeconds"] > float(pre[1]) + delay + grace


def test_settings_are_real_service_settings(overlay):
    from service.config import Settings

    _, objs = overlay
    fields = set(Settings.model_fields)
    names = [n for c in containers(list(objs.values())) for n in _env(c) if n.startswith("SINDER_")]
    unknown = [n for n in names if n.removeprefix("SINDER_").lower() not in fields]
    assert names and not unknown, f"unknown service settings {unknown}"


def test_pods_run_non_root_with_a_read_only_root_filesystem(overlay):
    _, objs = overlay
    for kind in ("Deployment", "Job"):
        pod = _one(objs, kind)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "memory" in c["resources"]["limits"], f"{kind}/{c['name']} has no memory limit"


def test_the_images_use_uid_10001():
    for name in ("Dockerfile.gpu", "Dockerfile.cpu", "Dockerfile.tool"):
        text = (ROOT / "docker" / name).read_text()
        assert "--uid 10001" in text, f"{name}: the manifests run as 10001"


def test_the_model_volume_is_filled_by_the_job_and_read_only_for_the_service(overlay):
    _, objs = overlay
    pvc = _one(objs, "PersistentVolumeClaim")["metadata"]["name"]

    def mounts(pod):
        claims = {v["name"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v}
        return claims, {m["mountPath"]: m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] in claims}

    job = _one(objs, "Job")["spec"]["template"]["spec"]
    claims, by_path = mounts(job)
    assert claims[by_path["/models"]["name"]]["persistentVolumeClaim"]["claimName"] == pvc
    assert not by_path["/models"].get("readOnly")
    args = job["containers"][0]["args"]
    assert args[0] == "build" and args[args.index("--model-repo") + 1] == "/models"
    assert job["containers"][0]["image"].startswith("sinder-tool")
    dep = _one(objs, "Deployment")["spec"]["template"]["spec"]
    claims, by_path = mounts(dep)
    assert claims[by_path["/models"]["name"]]["persistentVolumeClaim"]["claimName"] == pvc
    assert by_path["/models"]["readOnly"] is True
    c = _service_container(objs)
    assert c["args"][c["args"].index("--model-repo") + 1] == "/models"


def test_gpu_and_cpu_variants_differ_where_they_must(overlay):
    name, objs = overlay
    c = _service_container(objs)
    env = _env(c)
    images = {x["image"] for x in containers([_one(objs, "Deployment")])}
    if name == "gpu":
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert env["SINDER_REQUIRE_GPU"] == "true" and env["SINDER_PROVIDERS"].startswith("cuda")
        # one front-end process per requested core, not per node core (auto would count the node's)
        assert int(env["SINDER_WORKERS"]) == int(c["resources"]["requests"]["cpu"])
        assert images == {"sinder-serve:gpu"}
    else:
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
        assert "tolerations" not in _one(objs, "Deployment")["spec"]["template"]["spec"]
        assert env["SINDER_REQUIRE_GPU"] == "false" and env["SINDER_PROVIDERS"] == "cpu"
        assert env["SINDER_WORKERS"] == "1"
        assert images == {"sinder-serve:cpu"}
