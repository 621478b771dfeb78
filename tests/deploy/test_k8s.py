"""deploy/k8s: the Kustomize base and the gpu and cpu overlays, checked without a cluster.

`kubectl kustomize` renders each of them; kubernetes-validate checks every core object against the
Kubernetes OpenAPI schemas in strict mode (unknown fields fail); the custom resources (KEDA ScaledObject,
Prometheus Operator ServiceMonitor) are checked against the trimmed schemas in k8s_schemas/ and the
controllers' own admission rules. The autoscaler queries and the probes are checked against the real
service: the metrics and label values they read are the ones /metrics exports, promtool evaluates the
queries on made-up series, and the probe paths answer as the probes need.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    AUTO_LABELS,
    REPO,
    exported_metrics,
    find_tool,
    missing_tool,
    promql_metric_names,
    run,
)

K8S = REPO / "deploy" / "k8s"
VARIANTS = ("base", "gpu", "cpu")
OVERLAYS = ("gpu", "cpu")
SCHEMAS = Path(__file__).parent / "k8s_schemas"
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "scaledobject.keda.sh.v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor.monitoring.coreos.com.v1.json",
}
# The oldest Kubernetes these manifests claim (docs/deploy.md) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# Target labels the Prometheus Operator adds to every series scraped through a ServiceMonitor.
OPERATOR_LABELS = {"namespace", "service", "pod", "container", "endpoint"}
DOC = REPO / "docs" / "deploy.md"

Manifest = dict[str, Any]
Render = Callable[[str], list[Manifest]]


# -- rendering ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kubectl() -> str:
    tool = find_tool("kubectl")
    if tool is None:
        missing_tool("kubectl", "python3 deploy/k8s/install_kubectl.py, as .ci/run does")
    assert tool is not None
    return tool


@pytest.fixture(scope="session")
def render(kubectl: str) -> Render:
    """``render(variant)``: the objects `kubectl kustomize` builds for the base or an overlay."""
    cache: dict[str, list[Manifest]] = {}

    def _render(variant: str) -> list[Manifest]:
        if variant not in cache:
            folder = K8S / "base" if variant == "base" else K8S / "overlays" / variant
            result = run([kubectl, "kustomize", str(folder)])
            assert result.returncode == 0, result.stderr
            cache[variant] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return copy.deepcopy(cache[variant])

    return _render


def one(objects: list[Manifest], kind: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def container(objects: list[Manifest]) -> Manifest:
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def settings_of(objects: list[Manifest]) -> dict[str, str]:
    """The WINGMARK_* environment of the container (the generated ConfigMap it reads with envFrom)."""
    (source,) = container(objects)["envFrom"]
    name = source["configMapRef"]["name"]
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    data: dict[str, str] = config["data"]
    return data


def triggers(objects: list[Manifest]) -> list[Manifest]:
    found: list[Manifest] = one(objects, "ScaledObject")["spec"]["triggers"]
    return found


def queries(objects: list[Manifest]) -> dict[str, str]:
    return {t["name"]: t["metadata"]["query"] for t in triggers(objects)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_every_object_into_one_namespace(render: Render, variant: str) -> None:
    objects = render(variant)
    kinds = sorted(o["kind"] for o in objects)
    expected = ["ConfigMap", "Deployment", "Namespace", "PodDisruptionBudget", "ScaledObject", "Service"]
    expected += ["ServiceMonitor"] + (["PersistentVolumeClaim"] if variant == "gpu" else [])
    assert kinds == sorted(expected)
    namespace = one(objects, "Namespace")["metadata"]["name"]
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == namespace, o["kind"]


# -- schemas -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_core_objects_validate_in_strict_mode(render: Render, variant: str, version: str) -> None:
    import kubernetes_validate

    for o in render(variant):
        if (o["apiVersion"], o["kind"]) in CUSTOM_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{variant}: {o['kind']}/{o['metadata']['name']} at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{variant}: {exc.message}: not a core object, and no schema in k8s_schemas/")


def test_strict_validation_refuses_a_misspelt_field(render: Render) -> None:
    """The check above can fail: a field the API does not know is an error, not silently dropped."""
    import kubernetes_validate

    deployment = one(render("gpu"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {"periodSeconds": 5}
    with pytest.raises(kubernetes_validate.ValidationError, match="readynessProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def custom_validator(o: Manifest) -> Any:
    import jsonschema

    schema = json.loads(CUSTOM_SCHEMAS[(o["apiVersion"], o["kind"])].read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_match_their_schemas(render: Render, variant: str) -> None:
    custom = [o for o in render(variant) if (o["apiVersion"], o["kind"]) in CUSTOM_SCHEMAS]
    assert sorted(o["kind"] for o in custom) == ["ScaledObject", "ServiceMonitor"]
    for o in custom:
        errors = sorted(custom_validator(o).iter_errors(o), key=str)
        assert not errors, f"{o['kind']}: " + "; ".join(e.message for e in errors)


@pytest.mark.parametrize(
    ("kind", "path", "field", "value"),
    [
        ("ScaledObject", ["spec"], "minReplicas", 1),  # HPA's name, not KEDA's minReplicaCount
        ("ScaledObject", ["spec", "triggers", 0, "metadata"], "threshold", 20),  # KEDA wants strings
        ("ScaledObject", ["spec", "triggers", 0], "metricType", "Average"),
        ("ServiceMonitor", ["spec", "endpoints", 0], "interval", "15 seconds"),
        ("ServiceMonitor", ["spec"], "endpoint", []),
    ],
)
def test_custom_schemas_refuse_wrong_fields(
    render: Render, kind: str, path: list[str | int], field: str, value: Any
) -> None:
    o = one(render("gpu"), kind)
    node: Any = o
    for key in path:
        node = node[key]
    node[field] = value
    assert list(custom_validator(o).iter_errors(o)), f"{kind}: {field}={value!r} was accepted"


@pytest.mark.parametrize("variant", VARIANTS)
def test_scaledobject_passes_kedas_admission_rules(render: Render, variant: str) -> None:
    objects = render(variant)
    spec = one(objects, "ScaledObject")["spec"]
    deployment = one(objects, "Deployment")
    ref = spec["scaleTargetRef"]
    assert (ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment"), ref["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    names = [t["name"] for t in spec["triggers"]]
    assert len(names) == len(set(names))
    for t in spec["triggers"]:
        assert t["type"] == "prometheus"
        if "fallback" in spec:  # KEDA refuses a fallback unless every trigger is AverageValue
            assert t["metricType"] == "AverageValue", t["name"]
        assert float(t["metadata"]["threshold"]) > 0
        # An empty answer must be an error (the HPA holds), not a 0 that scales down to the minimum.
        assert t["metadata"]["ignoreNullValues"] == "false"
        assert t["metadata"]["serverAddress"].startswith("http")
    # The Deployment leaves the replica count to the HPA KEDA creates.
    assert "replicas" not in deployment["spec"]


# -- what the autoscaler reads ---------------------------------------------------------------------------

_STRING = r'"(?:[^"\\]|\\.)*"'


def label_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) of every matcher in ``metric{...}`` selectors, histogram suffixes
    removed from the metric name."""
    out = []
    for metric, body in re.findall(r"\b(wingmark_[A-Za-z0-9_]+)\s*\{([^}]*)\}", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if metric.endswith(suffix):
                metric = metric[: -len(suffix)]
                break
        for label, op, value in re.findall(rf"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*({_STRING})", body):
            out.append((metric, label, op, json.loads(value)))
    return out


def exported_label_values() -> dict[tuple[str, str], set[str]]:
    """(family, label) -> the values the service exports from the start (its zero-valued series)."""
    from service.metrics import Metrics

    values: dict[tuple[str, str], set[str]] = {}
    for family in Metrics().registry.collect():
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault((family.name, label), set()).add(value)
    return values


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaler_queries_read_only_exported_metrics_and_labels(render: Render, variant: str) -> None:
    exported = exported_metrics()
    values = exported_label_values()
    for name, expr in queries(render(variant)).items():
        names = promql_metric_names(expr)
        assert names, f"trigger {name!r} reads no wingmark metric"
        assert names <= set(exported), f"trigger {name!r} reads {sorted(names - set(exported))}"
        for metric, label, op, value in label_matchers(expr):
            own = exported[metric]
            assert label in own | AUTO_LABELS | OPERATOR_LABELS, f"{name}: {metric} has no label {label!r}"
            if label in own and op == "=":
                assert value in values[(metric, label)], f"{name}: {metric} never has {label}={value!r}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaler_queries_select_this_deployments_series(render: Render, variant: str) -> None:
    """The Prometheus Operator labels every scraped series with the target's namespace and, as job, the
    Service's name (no jobLabel): each query selects exactly those."""
    objects = render(variant)
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    assert "jobLabel" not in monitor["spec"]
    for name, expr in queries(objects).items():
        selectors = re.findall(r"\bwingmark_[A-Za-z0-9_]+\s*\{[^}]*\}", expr)
        assert selectors and len(selectors) == expr.count("wingmark_"), f"{name}: a metric without selector"
        for selector in selectors:
            matchers = {(label, op): value for _, label, op, value in label_matchers(selector)}
            assert matchers.get(("namespace", "=")) == service["metadata"]["namespace"], (name, selector)
            assert matchers.get(("job", "=")) == service["metadata"]["name"], (name, selector)


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaler_queries_parse_as_promql(
    promtool: str, render: Render, variant: str, tmp_path: Path
) -> None:
    rules = [
        {"record": f"keda:{name.replace('-', '_')}", "expr": q}
        for name, q in queries(render(variant)).items()
    ]
    path = tmp_path / "keda_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def _series(labels: dict[str, str], values: str) -> dict[str, str]:
    name = labels.pop("__name__")
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _queue_series(pod: str, namespace: str, stage: str, sum_step: float, count_step: int) -> list[Any]:
    common = {
        "namespace": namespace,
        "job": "wingmark",
        "pod": pod,
        "instance": f"{pod}:8000",
        "stage": stage,
    }
    return [
        _series({"__name__": "wingmark_stage_duration_seconds_sum", **common}, f"0+{sum_step}x20"),
        _series({"__name__": "wingmark_stage_duration_seconds_count", **common}, f"0+{count_step}x20"),
    ]


def _depth_series(pod: str, namespace: str, values: str) -> dict[str, str]:
    labels = {"__name__": "wingmark_queue_depth", "namespace": namespace, "job": "wingmark", "pod": pod}
    return _series(labels, values)


def test_autoscaler_queries_evaluate_per_replica(promtool: str, render: Render, tmp_path: Path) -> None:
    """promtool evaluates the gpu overlay's queries on made-up scrapes (every 15 s) of two replicas:

    - queue wait: replica a waits 0.5 s over 10 requests per scrape (mean 50 ms), replica b is idle (0, not
      NaN: 0/0 would poison the sum), so the query gives 0.05 and the HPA's per-replica value is 0.025;
      another namespace and other stages are ignored; with no replica scraped the answer is empty, which
      KEDA (ignoreNullValues: "false") reports as an error instead of a zero;
    - queue depth: the per-replica means add up (40 + 24 = 64), other namespaces ignored.
    """
    q = queries(render("gpu"))
    ns = one(render("gpu"), "Service")["metadata"]["namespace"]
    busy = [
        *_queue_series("a", ns, "queue", 0.5, 10),
        *_queue_series("b", ns, "queue", 0, 0),
        *_queue_series("a", ns, "decode", 9, 10),  # another stage of the same histogram
        *_queue_series("x", "elsewhere", "queue", 9, 10),  # another namespace
        _depth_series("a", ns, "40x20"),
        _depth_series("b", ns, "24x20"),
        _depth_series("x", "elsewhere", "1000x20"),
    ]
    idle = [*_queue_series("a", ns, "queue", 0, 0), *_queue_series("b", ns, "queue", 0, 0)]
    rules = tmp_path / "empty_rules.yml"
    rules.write_text(yaml.safe_dump({"groups": []}))

    def case(series: list[Any], expr: str, value: float | None) -> dict[str, Any]:
        expected = [] if value is None else [{"labels": "{}", "value": value}]
        return {
            "interval": "15s",
            "input_series": series,
            "promql_expr_test": [{"expr": expr, "eval_time": "4m", "exp_samples": expected}],
        }

    tests = [
        case(busy, q["queue-wait"], 0.05),
        case(idle, q["queue-wait"], 0.0),
        case([_depth_series("x", "elsewhere", "5x20")], q["queue-wait"], None),
        case(busy, q["queue-depth"], 64.0),
        case([_depth_series("x", "elsewhere", "5x20")], q["queue-depth"], None),
    ]
    path = tmp_path / "keda_queries.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [rules.name], "tests": tests}, sort_keys=False))
    result = run([promtool, "test", "rules", path.name], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- probes and the real service -----------------------------------------------------------------------


def probe_paths(c: Manifest) -> dict[str, str]:
    return {p: c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_and_scrape_reach_the_container_port(render: Render, variant: str) -> None:
    objects = render(variant)
    c = container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": int(settings_of(objects)["WINGMARK_PORT"])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ports, probe
    service = one(objects, "Service")
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    # Readiness on model state, liveness on the process: a replica that is building engines is alive.
    paths = probe_paths(c)
    assert paths["startupProbe"] == paths["readinessProbe"] != paths["livenessProbe"]


@pytest.fixture(scope="module")
def real_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The real app, twice: with the packaged models (it becomes ready) and with an empty model store (it
    never does). Its GET routes, /metrics text and the answers to every path, by state."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    empty = tmp_path_factory.mktemp("empty-store")
    out: dict[str, Any] = {}
    for state, settings in (
        ("ready", Settings(detector="none", ort_threads=1)),
        ("failed", Settings(detector="none", model_root=empty)),
    ):
        app = create_app(settings)
        out["routes"] = {path for path, ops in app.openapi()["paths"].items() if "get" in ops}
        with TestClient(app) as client:
            service = app.state.service
            deadline = time.monotonic() + 120
            while service.state == "loading" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert service.state == state
            out[state] = {path: client.get(path).status_code for path in out["routes"]}
            if state == "ready":
                out["metrics"] = client.get("/metrics").text
    yield out


@pytest.mark.parametrize("variant", VARIANTS)
def test_probe_paths_answer_as_the_probes_need(
    render: Render, variant: str, real_service: dict[str, Any]
) -> None:
    """Startup and readiness turn 200 only with the models ready (503 while loading or failed); liveness
    answers 200 in both states, so a replica that is still loading (or building engines) is not killed;
    the ServiceMonitor scrapes a path that serves the metrics."""
    objects = render(variant)
    paths = probe_paths(container(objects))
    for probe, path in paths.items():
        assert path in real_service["routes"], f"{probe}: the service has no GET {path}"
    for probe in ("startupProbe", "readinessProbe"):
        assert real_service["ready"][paths[probe]] == 200, probe
        assert real_service["failed"][paths[probe]] == 503, probe
    assert real_service["ready"][paths["livenessProbe"]] == 200
    assert real_service["failed"][paths["livenessProbe"]] == 200
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["path"] in real_service["routes"]
    assert real_service["ready"][endpoint["path"]] == 200


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaler_reads_series_the_running_service_exposes(
    render: Render, variant: str, real_service: dict[str, Any]
) -> None:
    """Each selector of each query matches a series on the real service's /metrics (before any request:
    the series exist from the start, so the queries answer 0, not nothing, on an idle replica)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for f in text_string_to_metric_families(real_service["metrics"]) for s in f.samples]
    for name, expr in queries(render(variant)).items():
        for selector in re.findall(r"\bwingmark_[A-Za-z0-9_]+\s*\{[^}]*\}", expr):
            metric = selector.split("{")[0].strip()
            own = {
                (label, value)
                for _, label, op, value in label_matchers(selector)
                if op == "=" and label not in AUTO_LABELS | OPERATOR_LABELS
            }
            assert any(s.name == metric and own <= set(s.labels.items()) for s in samples), (name, selector)


# -- settings, security, shutdown ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_settings_are_real_settings(render: Render, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable of the settings ConfigMap is a WINGMARK_* setting (the service ignores unknown
    ones, so a misspelt name would silently do nothing) and the values validate."""
    from runtime.backends.tensorrt import CACHE_ENV
    from service.settings import Settings

    env = settings_of(render(variant))
    known = {f"WINGMARK_{field.upper()}" for field in Settings.model_fields} | {CACHE_ENV}
    assert set(env) <= known, f"not settings: {sorted(set(env) - known)}"
    for key in [k for k in os.environ if k.startswith("WINGMARK_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    expected = {"base": "onnxruntime", "gpu": "tensorrt", "cpu": "onnxruntime"}[variant]
    assert settings.backend == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_meet_the_restricted_pod_security_standard(render: Render, variant: str) -> None:
    objects = render(variant)
    labels = one(objects, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the images' user
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc.get("privileged", False) is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    # Service links would set WINGMARK_PORT=tcp://... for the Service named wingmark.
    assert pod["enableServiceLinks"] is False
    # Everything the service writes lies on a volume: /tmp, and the engine cache where there is one.
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts
    cache = settings_of(objects).get("WINGMARK_ENGINE_CACHE")
    if cache is not None:
        assert cache in mounts


@pytest.mark.parametrize("variant", VARIANTS)
def test_requests_and_limits_are_set(render: Render, variant: str) -> None:
    resources = container(render(variant))["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"], kind
    # Guaranteed QoS: limits equal requests, so a replica's latency does not depend on its neighbours.
    assert resources["requests"] == resources["limits"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_shutdown_drains_within_the_grace_period(render: Render, variant: str) -> None:
    """preStop sleep, then uvicorn's graceful shutdown (WINGMARK_GRACEFUL_TIMEOUT_S) must end before the
    kubelet's SIGKILL; and the graceful window covers a request's whole deadline."""
    objects = render(variant)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    command = container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    env = settings_of(objects)
    graceful = float(env["WINGMARK_GRACEFUL_TIMEOUT_S"])
    assert pre_stop >= 5, "endpoints need a few seconds to drop a terminating pod"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful + 5
    assert graceful >= float(env["WINGMARK_DEADLINE_MS"]) / 1000


def startup_budget_s(c: Manifest) -> int:
    probe = c["startupProbe"]
    budget: int = probe["failureThreshold"] * probe["periodSeconds"]
    return budget


def test_gpu_overlay_runs_one_gpu_per_replica_on_gpu_nodes(render: Render) -> None:
    objects = render("gpu")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["image"].endswith(":gpu")
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = settings_of(objects)
    assert env["WINGMARK_DEVICE"] == "cuda:0"
    # The first start builds the TensorRT engines: at least 20 minutes before the startup probe gives up
    # (docker/Dockerfile.gpu's health check allows 10).
    assert startup_budget_s(c) >= 20 * 60
    # The engine cache is the shared claim, mounted where the backend looks.
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == env["WINGMARK_ENGINE_CACHE"]]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = one(objects, "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    threads = int(env["WINGMARK_DECODE_THREADS"])
    assert threads <= int(c["resources"]["limits"]["cpu"])


def test_cpu_overlay_needs_no_gpu_and_pins_onnxruntime_threads(render: Render) -> None:
    objects = render("cpu")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert c["image"].endswith(":cpu")
    assert not any("nvidia" in key for r in c["resources"].values() for key in r)
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    env = settings_of(objects)
    assert env["WINGMARK_DEVICE"] == "cpu"
    # 0 would start one ONNX Runtime thread per core of the node, whatever the container's limit.
    assert int(env["WINGMARK_ORT_THREADS"]) == int(c["resources"]["limits"]["cpu"])
    assert 60 <= startup_budget_s(c) < startup_budget_s(container(render("gpu")))


@pytest.mark.parametrize("variant", VARIANTS)
def test_selectors_connect_the_objects(render: Render, variant: str) -> None:
    objects = render(variant)
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = one(objects, "Service")
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(
        one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
    )
    for constraint in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"]["matchLabels"], pod_labels)
    # A PDB that forbids every eviction would block node drains with a single replica.
    assert "maxUnavailable" in one(objects, "PodDisruptionBudget")["spec"]


# -- docs ------------------------------------------------------------------------------------------------


def test_docs_show_the_autoscaling_queries_as_deployed(render: Render) -> None:
    text = DOC.read_text()
    assert "## Kubernetes" in text
    flat = " ".join(text.split())
    for name, expr in queries(render("gpu")).items():
        assert " ".join(expr.split()) in flat, f"docs/deploy.md does not show the {name} query as deployed"
    for overlay in OVERLAYS:
        assert f"kubectl apply -k deploy/k8s/overlays/{overlay}" in text
        # The thresholds table: | overlay | queue-wait | queue-depth (why) | min to max |
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {overlay} |")]
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        spec = one(render(overlay), "ScaledObject")["spec"]
        thresholds = {t["name"]: t["metadata"]["threshold"] for t in spec["triggers"]}
        assert cells[1] == thresholds["queue-wait"], (overlay, cells)
        assert cells[2].split()[0] == thresholds["queue-depth"], (overlay, cells)
        assert cells[3] == f"{spec['minReplicaCount']} to {spec['maxReplicaCount']}", (overlay, cells)


def test_docs_example_overlays_render_and_validate(kubectl: str, tmp_path: Path) -> None:
    """The docs' own overlay (registry, a setting) and its no-ReadWriteMany patches, applied on top of the
    gpu overlay from a checkout beside it, render into valid objects that do what the docs say."""
    import kubernetes_validate

    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    (example,) = [b for b in blocks if b.startswith("# my-wingmark/kustomization.yaml")]
    (no_rwx,) = [b for b in blocks if b.startswith("patches:")]
    (tmp_path / "wingmark").symlink_to(REPO)
    mine = tmp_path / "my-wingmark"
    mine.mkdir()
    for shared, text in ((True, example), (False, example + no_rwx)):
        (mine / "kustomization.yaml").write_text(text)
        result = run([kubectl, "kustomize", str(mine)])
        assert result.returncode == 0, result.stderr
        objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        for o in objects:
            if (o["apiVersion"], o["kind"]) not in CUSTOM_SCHEMAS:
                kubernetes_validate.validate(o, KUBERNETES_VERSIONS[-1], strict=True)
        assert container(objects)["image"] == "registry.example.com/ml/wingmark:gpu"
        env = settings_of(objects)
        assert env["WINGMARK_MODELS"] == "cnn67-ibug68" and env["WINGMARK_BACKEND"] == "tensorrt"
        volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
        claims = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
        if shared:
            assert "persistentVolumeClaim" in volumes["engines"] and claims
        else:
            assert set(volumes["engines"]) == {"name", "emptyDir"} and not claims
