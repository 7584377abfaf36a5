"""k8s/: every kustomize overlay renders, validates and lints offline, and has the properties we rely on.

Per rendering (base, each overlay, and compositions with the components no overlay uses):
- `kubectl kustomize` renders it;
- `kubernetes-validate --strict` against pins().kubernetes checks every built-in kind. For a kind it has
  no schema for (our CRDs: ServiceMonitor, ScaledObject, HTTPRoute, GRPCRoute) it only prints a WARN and
  passes, so a mistyped apiVersion of a built-in kind would pass unchecked too. The test therefore parses
  its report: each object must be either "passed" or one of SCHEMALESS_KINDS, and those are checked
  here instead (test_custom_resources: allowed fields, references to objects that exist);
- checkov (kubernetes framework, offline) with no failed check; the skips are exactly EXPECTED_SKIPS,
  each an annotation with its reason in base/deployment.yaml;
- yamllint with k8s/.yamllint, on the sources and on the rendered YAML;
- concrete properties: probes, grace period vs Triton's exit timeout, non-root, GPU requests, route
  weights, autoscaler targets, secrets only by reference.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from modelrepo.paths import REPO_ROOT
from modelrepo.pins import pins
from modelrepo.tools import system_tool, venv_tool
from modelrepo.gateway.settings import DEFAULT_PORT as OPENAI_PORT
from modelrepo.triton.flags import DEFAULT_PORTS, EXIT_TIMEOUT_S

K8S = REPO_ROOT / "k8s"
YAMLLINT_CONFIG = K8S / ".yamllint"
NAMESPACE = "modelrepo"
APP_LABEL = {"app.kubernetes.io/name": "modelrepo"}
PORTS = {**DEFAULT_PORTS, "openai": OPENAI_PORT}  # Triton's and the OpenAI gateway's

# Directories rendered as they are.
DIRECTORIES = {
    "base": "base",
    "cpu": "overlays/cpu",
    "gpu": "overlays/gpu",
    "llm": "overlays/llm",
    "canary": "overlays/canary",
    # The HPA's custom-metric rule, applied to the adapter's namespace (not part of an overlay).
    "prometheus-adapter": "components/autoscaling-hpa/prometheus-adapter",
}
# Components no overlay uses by default, rendered through a temporary kustomization:
# name -> (resources, components), relative to k8s/.
COMPOSITIONS = {
    "cpu-s3": (["overlays/cpu"], ["components/s3-model-repository"]),
    "canary-s3": (["overlays/canary"], ["components/s3-model-repository"]),
    "cpu-keda": (["base"], ["components/cpu-resources", "components/autoscaling-keda"]),
}
RENDERINGS = [*DIRECTORIES, *COMPOSITIONS]
# The renderings of the application (all but the adapter rule).
APP_RENDERINGS = [n for n in RENDERINGS if n != "prometheus-adapter"]
# Those that include k8s/monitoring (the overlays and what is built on them).
WITH_MONITORING = {"cpu", "gpu", "llm", "canary", "cpu-s3", "canary-s3"}

# kubernetes-validate has no schema for these (custom resources); test_custom_resources checks them.
SCHEMALESS_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),  # from k8s/monitoring (its own tests run promtool)
}
# checkov checks skipped by annotation on the Deployment (reasons in k8s/base/deployment.yaml).
EXPECTED_SKIPS = {"CKV_K8S_43", "CKV_K8S_35", "CKV_K8S_40"}
# Image tag suffix each overlay deploys (Dockerfile build-arg variants).
IMAGE_VARIANT = {"cpu": "-cpu", "gpu": "-tensorrt", "llm": "-llm", "canary": "-cpu"}
GPU_RENDERINGS = {"gpu", "llm"}
IMAGE = "ghcr.io/example/modelrepo"


@dataclass
class Rendering:
    name: str
    path: Path  # the rendered multi-document YAML
    objects: list[dict] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> dict | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)


def kustomize(directory: Path) -> str:
    done = subprocess.run(
        [system_tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return done.stdout


def composition_dir(root: Path, name: str) -> Path:
    """A kustomization under `root` using k8s/ paths (kustomize refuses absolute ones)."""
    resources, components = COMPOSITIONS[name]
    directory = root / name
    directory.mkdir()
    rel = lambda p: os.path.relpath(K8S / p, directory)  # noqa: E731
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [rel(p) for p in resources],
                "components": [rel(p) for p in components],
            }
        )
    )
    return directory


@pytest.fixture(scope="module")
def renderings(tmp_path_factory) -> dict[str, Rendering]:
    out = tmp_path_factory.mktemp("k8s-rendered")
    compositions = tmp_path_factory.mktemp("k8s-compositions")
    result = {}
    for name in RENDERINGS:
        source = K8S / DIRECTORIES[name] if name in DIRECTORIES else composition_dir(compositions, name)
        text = kustomize(source)
        path = out / f"{name}.yaml"
        path.write_text(text)
        objects = [o for o in yaml.safe_load_all(text) if o]
        assert objects, f"{name}: rendered nothing"
        result[name] = Rendering(name, path, objects)
    return result


def deployments(r: Rendering) -> list[dict]:
    deps = r.of_kind("Deployment")
    assert deps, f"{r.name}: no Deployment"
    return deps


def triton(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["triton"], deployment["metadata"]["name"]
    return containers[0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def subset(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def quantity(value) -> float:
    """Kubernetes quantity -> number (bytes or cores)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    return float(match[1]) * units.get(match[2], 1)


# ---------------------------------------------------------------------------------------- tools


@pytest.mark.parametrize("name", RENDERINGS)
def test_kubernetes_validate_strict(renderings, name):
    r = renderings[name]
    version = pins().kubernetes
    done = subprocess.run(
        [venv_tool("deploy", "kubernetes-validate"), "--strict", "--kubernetes-version", version, str(r.path)],
        capture_output=True, text=True, timeout=300,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"{name}: kubernetes-validate --strict failed:\n{report}"
    passed = set(re.findall(r"passed for resource (\S+) against version", report))
    no_schema = set(re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+) for", report))
    for o in r.objects:
        kind, api = o["kind"], o["apiVersion"]
        if (api, kind) in SCHEMALESS_KINDS:
            assert (kind, api) in no_schema, f"{name}: expected no schema for {api} {kind}; report:\n{report}"
        else:
            ident = f"{kind.lower()}/{o['metadata']['name']}"
            assert ident in passed, f"{name}: {api} {kind} was not validated against a schema:\n{report}"
    unexpected = {(api, kind) for kind, api in no_schema} - SCHEMALESS_KINDS
    assert not unexpected, f"{name}: kinds without a schema that nothing else checks: {unexpected}"


def test_checkov(renderings):
    """One offline run over every rendering: nothing fails, and the only skips are the documented ones.

    (No --quiet: with it checkov leaves the skipped checks out of its JSON report.)
    """
    directory = next(iter(renderings.values())).path.parent
    done = subprocess.run(
        [
            venv_tool("deploy", "checkov"), "-d", str(directory), "--framework", "kubernetes",
            "--skip-download", "--compact", "--output", "json",
        ],
        capture_output=True, text=True, timeout=600,
    )
    report = json.loads(done.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in results["failed_checks"]]
    assert not failed, f"checkov failed checks: {failed}"
    assert not results["parsing_errors"], results["parsing_errors"]
    assert done.returncode == 0, done.stderr[-2000:]
    scanned = {Path(c["file_path"]).stem for c in results["passed_checks"]}
    assert scanned == set(renderings), f"checkov scanned {scanned}"
    skipped = {}
    for check in results["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert check["resource"].startswith("Deployment."), check["resource"]
        assert len(reason) > 60, f"{check['check_id']} skipped without a real reason: {reason!r}"
        skipped.setdefault(check["check_id"], set()).add(check["resource"])
    assert set(skipped) == EXPECTED_SKIPS, f"checkov skips {sorted(skipped)}, documented {sorted(EXPECTED_SKIPS)}"
    # Every Deployment carries every skip (they come from base), and nothing else is skipped.
    all_deployments = {
        f"Deployment.{d['metadata']['namespace']}.{d['metadata']['name']}"
        for r in renderings.values() for d in r.of_kind("Deployment")
    }
    for check_id, resources in skipped.items():
        assert resources == all_deployments, (check_id, resources)


# Rendered YAML is kustomize's output (its line breaks, embedded dashboards and rules): lint it for
# YAML problems, not for layout.
RENDERED_YAMLLINT = (
    "{extends: default, rules: {document-start: disable, line-length: disable,"
    " indentation: {spaces: 2, indent-sequences: whatever}}}"
)


def test_yamllint(renderings):
    # Our sources with k8s/.yamllint (k8s/monitoring/ has its own checks), then every rendering.
    for config, paths in (
        (["-c", str(YAMLLINT_CONFIG)], [str(K8S / d) for d in ("base", "components", "overlays")]),
        (["-d", RENDERED_YAMLLINT], [str(r.path) for r in renderings.values()]),
    ):
        done = subprocess.run(
            [venv_tool("deploy", "yamllint"), "--strict", *config, *paths], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------------------ custom resources

# The fields each custom resource's spec may have (a strict check of our own, top level only).
CR_SPEC_FIELDS = {
    "ServiceMonitor": {"selector", "endpoints", "namespaceSelector", "podTargetLabels", "targetLabels", "jobLabel"},
    "ScaledObject": {
        "scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
        "idleReplicaCount", "advanced", "triggers", "fallback",
    },
    "HTTPRoute": {"parentRefs", "hostnames", "rules"},
    "GRPCRoute": {"parentRefs", "hostnames", "rules"},
    "PrometheusRule": {"groups"},
}


def check_service_monitor(r: Rendering, sm: dict) -> None:
    spec = sm["spec"]
    services = [
        s for s in r.of_kind("Service")
        if s["metadata"]["namespace"] == sm["metadata"]["namespace"]
        and subset(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))
    ]
    assert services, f"{r.name}: ServiceMonitor selects no Service"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"}, endpoint
        for s in services:
            assert endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}, (s["metadata"]["name"], endpoint)
    # Series carry the track label so canary and stable can be told apart.
    assert "track" in spec.get("podTargetLabels", [])


def check_scaled_object(r: Rendering, so: dict) -> None:
    spec = so["spec"]
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert r.named("Deployment", target["name"]), f"{r.name}: ScaledObject targets missing {target['name']}"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    check_behavior(behavior)
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        assert set(metadata) <= {"serverAddress", "query", "threshold", "ignoreNullValues", "activationThreshold"}
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA trigger metadata values are strings"
        assert metadata["serverAddress"].startswith("http")
        assert "nv_inference_pending_request_count" in metadata["query"]
        assert f'namespace="{so["metadata"]["namespace"]}"' in metadata["query"]
        assert float(metadata["threshold"]) > 0


def check_route(r: Rendering, route: dict, port_name: str) -> None:
    spec = route["spec"]
    assert spec["parentRefs"], "a route needs a Gateway"
    for rule in spec["rules"]:
        refs = rule["backendRefs"]
        for ref in refs:
            service = r.named("Service", ref["name"])
            assert service, f"{r.name}: {route['kind']} routes to missing Service {ref['name']}"
            ports = {p["port"]: p["name"] for p in service["spec"]["ports"]}
            assert ports.get(ref["port"]) == port_name, (route["kind"], ref)
        if len(refs) > 1:
            weights = [ref["weight"] for ref in refs]
            assert sum(weights) == 100, f"{route['kind']} weights {weights} do not sum to 100"
            tracks = {r.named("Service", ref["name"])["spec"]["selector"]["track"] for ref in refs}
            assert tracks == {"stable", "canary"}, tracks


def check_prometheus_rule(rule: dict) -> None:
    """Shape only: k8s/monitoring's own tests check the rules' content (promtool)."""
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"], group.get("name")
        for r in group["rules"]:
            assert r["expr"] and (("record" in r) != ("alert" in r)), r


def test_custom_resources(renderings):
    """What kubernetes-validate cannot check (SCHEMALESS_KINDS), checked here; lists what was checked."""
    checked = []
    for r in renderings.values():
        for o in r.objects:
            if (o["apiVersion"], o["kind"]) not in SCHEMALESS_KINDS:
                continue
            assert o["metadata"].get("namespace") == NAMESPACE, (r.name, o["kind"])
            assert set(o["spec"]) <= CR_SPEC_FIELDS[o["kind"]], (r.name, o["kind"], set(o["spec"]))
            if o["kind"] == "PrometheusRule":
                check_prometheus_rule(o)
            elif o["kind"] == "ServiceMonitor":
                check_service_monitor(r, o)
            elif o["kind"] == "ScaledObject":
                check_scaled_object(r, o)
            else:
                check_route(r, o, "http" if o["kind"] == "HTTPRoute" else "grpc")
            checked.append(f"{r.name}:{o['kind']}/{o['metadata']['name']}")
    kinds = {c.split(":")[1].split("/")[0] for c in checked}
    assert kinds == {kind for _, kind in SCHEMALESS_KINDS}, checked


# ---------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("name", APP_RENDERINGS)
def test_deployment_contract(renderings, name):
    r = renderings[name]
    for d in deployments(r):
        label = f"{name}:{d['metadata']['name']}"
        pod = d["spec"]["template"]["spec"]
        c = triton(d)
        assert d["metadata"]["namespace"] == NAMESPACE, label
        assert c["image"].startswith(f"{IMAGE}:"), (label, c["image"])
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == PORTS, label
        assert env_of(c)["MODELREPO_OPENAI_PORT"]["value"] == str(OPENAI_PORT), label

        # Probes: start-up on /v2/health/ready, liveness on /v2/health/live; readiness on the gateway's
        # /health (200 only while Triton is ready), so a pod serves once both answer.
        for probe, path in (("startupProbe", "ready"), ("livenessProbe", "live")):
            assert c[probe]["httpGet"] == {"path": f"/v2/health/{path}", "port": "http"}, (label, probe)
        assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "openai"}, label
        startup = c["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 180, f"{label}: start-up budget < 3 min"

        # Shutdown: endpoint removal (preStop) + Triton's exit timeout fit in the grace period.
        pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + EXIT_TIMEOUT_S + 5, label

        # Security.
        for context in (pod["securityContext"], c["securityContext"]):
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000, label
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, label
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, label
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, label
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, label
        assert pod["automountServiceAccountToken"] is False, label
        account = r.named("ServiceAccount", pod["serviceAccountName"])
        assert account and account["automountServiceAccountToken"] is False, label

        # Writable paths on a read-only root filesystem, and a sized /dev/shm.
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert {"/tmp", "/home/modelrepo", "/dev/shm"} <= set(mounts), label
        for path in ("/tmp", "/home/modelrepo", "/dev/shm"):
            assert "sizeLimit" in volumes[mounts[path]]["emptyDir"], (label, path)
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory", label
        limits, requests = c["resources"]["limits"], c["resources"]["requests"]
        assert quantity(limits["memory"]) >= quantity(shm["sizeLimit"]) + quantity(requests["memory"]) // 2, label
        for resource in ("cpu", "memory"):
            assert quantity(requests[resource]) <= quantity(limits[resource]), (label, resource)

        # Secrets only by reference: the admin key (and any credential) never as a literal value.
        env = env_of(c)
        assert env["MODELREPO_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "admin-key", label
        for var in env.values():
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD", var["name"]):
                assert "value" not in var, f"{label}: {var['name']} has a literal value"
        assert not r.of_kind("Secret"), f"{name}: a Secret is rendered (create it in the cluster instead)"

        # Spread over zones and nodes.
        assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} >= {
            "topology.kubernetes.io/zone", "kubernetes.io/hostname"
        }, label


@pytest.mark.parametrize("name", APP_RENDERINGS)
def test_services_and_disruption_budgets(renderings, name):
    r = renderings[name]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments(r)}
    for d in deployments(r):
        assert subset(d["spec"]["selector"]["matchLabels"], pods[d["metadata"]["name"]])
    services = r.of_kind("Service")
    assert len(services) == len(pods), f"{name}: one Service per Deployment"
    for s in services:
        matched = [n for n, labels in pods.items() if subset(s["spec"]["selector"], labels)]
        assert len(matched) == 1, f"{name}: Service {s['metadata']['name']} selects {matched}"
        assert {p["name"]: p["port"] for p in s["spec"]["ports"]} == PORTS, s["metadata"]["name"]
    for policy in r.of_kind("NetworkPolicy"):  # inference from anywhere in the cluster, the gateway included
        from_anywhere = {p["port"] for rule in policy["spec"]["ingress"] if "from" not in rule for p in rule["ports"]}
        assert from_anywhere == {"http", "grpc", "openai"}, policy["metadata"]["name"]
    budgets = r.of_kind("PodDisruptionBudget")
    assert len(budgets) == len(pods), f"{name}: one PodDisruptionBudget per Deployment"
    for pdb in budgets:
        matched = [n for n, labels in pods.items() if subset(pdb["spec"]["selector"]["matchLabels"], labels)]
        assert len(matched) == 1, f"{name}: PDB {pdb['metadata']['name']} selects {matched}"


@pytest.mark.parametrize("name", RENDERINGS)
def test_namespaces_and_monitoring(renderings, name):
    r = renderings[name]
    expected = "monitoring" if name == "prometheus-adapter" else NAMESPACE
    for o in r.objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == expected, f"{name}: {o['kind']}/{o['metadata']['name']}"
    if name in WITH_MONITORING:
        assert len(r.of_kind("PrometheusRule")) == 1, name
        dashboards = [c for c in r.of_kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
        assert len(dashboards) == 1, name


def check_behavior(behavior: dict) -> None:
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 180 > up["stabilizationWindowSeconds"], behavior
    assert up["policies"] and down["policies"]


@pytest.mark.parametrize("name", APP_RENDERINGS)
def test_autoscaling(renderings, name):
    r = renderings[name]
    targets: dict[str, list[str]] = {}
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert r.named("Deployment", spec["scaleTargetRef"]["name"]), f"{name}: HPA targets a missing Deployment"
        targets.setdefault(spec["scaleTargetRef"]["name"], []).append("HPA")
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        check_behavior(spec["behavior"])
        (metric,) = spec["metrics"]
        assert metric["type"] == "Pods"
        # The metric is the one the prometheus-adapter rule shipped alongside produces.
        adapter = renderings["prometheus-adapter"].named("ConfigMap", "prometheus-adapter-modelrepo-rules")
        assert adapter, f"{name}: HPA without its prometheus-adapter rule"
        (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
        assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
        assert "nv_inference_queue_duration_us" in rule["seriesQuery"]
        query = rule["metricsQuery"]
        assert "nv_inference_request_success" in query and "<<.LabelMatchers>>" in query and "rate(" in query
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    for so in r.of_kind("ScaledObject"):
        targets.setdefault(so["spec"]["scaleTargetRef"]["name"], []).append("ScaledObject")
    # At most one autoscaler per Deployment (KEDA's HPA and ours would fight over replicas)...
    assert all(len(v) == 1 for v in targets.values()), f"{name}: {targets}"
    # ...and an autoscaled Deployment leaves spec.replicas to it; the others state theirs.
    for d in deployments(r):
        autoscaled = d["metadata"]["name"] in targets
        assert ("replicas" in d["spec"]) != autoscaled, f"{name}: {d['metadata']['name']} replicas vs autoscaler"
    if name in ("cpu", "gpu", "canary"):
        assert set(sum(targets.values(), [])) == {"HPA"}, name
    if name in ("llm", "cpu-keda"):
        assert set(sum(targets.values(), [])) == {"ScaledObject"}, name


@pytest.mark.parametrize("name", sorted(IMAGE_VARIANT))
def test_overlay_variants(renderings, name):
    r = renderings[name]
    for d in deployments(r):
        c = triton(d)
        pod = d["spec"]["template"]["spec"]
        if d["metadata"]["labels"]["track"] == "stable":
            assert c["image"].endswith(IMAGE_VARIANT[name]), (name, c["image"])
        resources = c["resources"]
        if name in GPU_RENDERINGS:
            assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
            assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        else:
            assert "nvidia.com/gpu" not in resources.get("limits", {}), name
    if name == "llm":
        llm, cpu = triton(deployments(r)[0]), triton(deployments(renderings["cpu"])[0])
        budget = lambda c: c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]  # noqa: E731
        assert budget(llm) > budget(cpu)
        shm = lambda r: next(  # noqa: E731
            v["emptyDir"]["sizeLimit"] for v in deployments(r)[0]["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "dshm"
        )
        assert quantity(shm(r)) > quantity(shm(renderings["gpu"])) > quantity(shm(renderings["cpu"]))
        assert quantity(llm["resources"]["limits"]["memory"]) > quantity(cpu["resources"]["limits"]["memory"])


def test_canary(renderings):
    r = renderings["canary"]
    by_track = {d["metadata"]["labels"]["track"]: d for d in deployments(r)}
    assert set(by_track) == {"stable", "canary"}
    stable, canary = triton(by_track["stable"]), triton(by_track["canary"])
    assert stable["image"] != canary["image"], "the canary runs another release"
    assert {s["spec"]["selector"]["track"] for s in r.of_kind("Service")} == {"stable", "canary"}
    # The stable half is the cpu overlay's Deployment, so switching overlays replaces nothing.
    cpu = deployments(renderings["cpu"])[0]
    assert by_track["stable"]["metadata"]["name"] == cpu["metadata"]["name"]
    assert by_track["stable"]["spec"]["selector"] == cpu["spec"]["selector"]
    routes = r.of_kind("HTTPRoute") + r.of_kind("GRPCRoute")
    assert {o["kind"] for o in routes} == {"HTTPRoute", "GRPCRoute"}
    splits = []
    for route in routes:
        for rule in route["spec"]["rules"]:
            if len(rule["backendRefs"]) > 1:
                splits.append({ref["name"]: ref["weight"] for ref in rule["backendRefs"]})
    assert splits and all(s == splits[0] for s in splits), f"HTTP and gRPC splits differ: {splits}"
    assert len(r.of_kind("ServiceMonitor")) == 1 and len(r.of_kind("Namespace")) == 1


@pytest.mark.parametrize("name", ["cpu-s3", "canary-s3"])
def test_s3_model_repository(renderings, name):
    for d in deployments(renderings[name]):
        env = env_of(triton(d))
        assert env["MODEL_REPOSITORY"]["value"].startswith("s3://")
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "modelrepo-s3-credentials" and ref["key"] == var
        assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
        assert env["AWS_DEFAULT_REGION"]["value"]
        assert "MODELREPO_ADMIN_KEY" in env  # merged into, not replacing, base's environment
