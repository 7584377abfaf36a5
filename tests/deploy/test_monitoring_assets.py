"""k8s/monitoring/: the rules, their unit tests, the Alertmanager routing and the Grafana dashboard.

- prometheus-rules.yaml is a PrometheusRule whose `spec` is a rule file: promtool checks it and runs
  rules-tests.yaml against it (every alert tested firing and quiet);
- alertmanager.yaml passes `amtool check-config`, and `amtool config routes test` sends each severity
  where the file says;
- every PromQL expression of the dashboard and of the rules parses (promtool) and names only metrics
  the server exports (Triton's own, listed here and checked against a real scrape in
  tests/integration/test_prometheus_alerts.py; the Python backends' own, read from their
  `metrics.family(...)` declarations) or that the rules record;
- `kubectl kustomize k8s/monitoring` renders the rule and the dashboard ConfigMap for Grafana's sidecar.

The helpers without a `test_` prefix are shared with the integration test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelrepo.paths import REPO_ROOT
from modelrepo.tools import system_tool

MONITORING = REPO_ROOT / "k8s" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULES_TESTS = MONITORING / "rules-tests.yaml"
ALERTMANAGER = MONITORING / "alertmanager.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
# rules-tests.yaml's rule_files entry: the name the extracted `spec` is written under.
EXTRACTED_RULES_NAME = "rules.yaml"

# What tritonserver 2.51 exports that the rules or the dashboard use (a real scrape confirms each in
# the integration test), plus Prometheus's own per-target `up` and the ALERTS series.
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_pending_request_count",
    "nv_inference_request_summary_us", "nv_inference_queue_summary_us",
    "nv_cpu_utilization", "nv_cpu_memory_used_bytes", "nv_cpu_memory_total_bytes",
}
PROMETHEUS_SERIES = {"up", "ALERTS"}

# The thresholds the rules promise (README-level facts; changing one is a decision, not a typo).
LATENCY_BUDGETS_S = {
    "credit_default": 0.1, "credit_default_fused": 0.1, "credit_default_onehop": 0.1, "credit_candidate": 0.1, "credit_router": 0.15,
    "text_embedding": 0.3, "review_sentiment": 0.3,
}
ALERT_THRESHOLDS = {
    ("CreditFeatureDrift", "warning"): "feature:credit_feature_psi:max > 0.25",
    ("LLMTimeToFirstTokenHigh", "warning"): "model:llm_time_to_first_token_seconds:p99_5m > 1",
}
KEY_RECORDINGS = {
    "model:nv_inference_request:rate5m", "model:nv_inference_request_error:ratio_rate5m",
    "model:nv_inference_queue_duration_seconds:mean_rate5m", "model:nv_inference_request_duration_seconds:p99_1m",
    "model:nv_inference_pending_request_count:sum", "model:llm_time_to_first_token_seconds:p99_5m",
    "model:llm_cache_hit:ratio_rate5m", "feature:credit_feature_psi:max", "modelrepo:latency_p99_budget_seconds",
    "route:openai_requests:rate5m", "route:openai_request_error:ratio_rate5m", "route:openai_request_duration_seconds:p99_5m",
    "model:openai_time_to_first_token_seconds:p99_5m", "model_kind:openai_tokens:rate5m",
}

_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                    "offset", "bool", "inf", "nan", "atan2"}


# --------------------------------------------------------------------------- shared helpers

def rules_spec() -> dict:
    document = yaml.safe_load(RULES.read_text())
    return document["spec"]


def write_rule_file(directory: Path, name: str = EXTRACTED_RULES_NAME) -> Path:
    """prometheus-rules.yaml's `spec` as a plain Prometheus rule file."""
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(rules_spec(), sort_keys=False))
    return path


def all_rules() -> list[dict]:
    return [rule for group in rules_spec()["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in all_rules() if "record" in rule}


def alert_names() -> set[str]:
    return {rule["alert"] for rule in all_rules() if "alert" in rule}


def custom_metric_names() -> dict[str, str]:
    """name -> kind of every metric family the Python backends declare (metrics.family(name, help, KIND))."""
    declared = {}
    pattern = re.compile(r'family\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"\s*,\s*"[^"]*"\s*,\s*(COUNTER|GAUGE|HISTOGRAM)\b')
    for source in (REPO_ROOT / "python_backends").rglob("*.py"):
        for name, kind in pattern.findall(source.read_text()):
            declared[name] = kind
    return declared


def gateway_series_names() -> set[str]:
    """The series the OpenAI gateway's /metrics exposes, from its own prometheus_client registry."""
    from modelrepo.gateway.metrics import GatewayMetrics

    names = set()
    for family in GatewayMetrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def exported_series_names() -> set[str]:
    """Every series name a dashboard or rule may read: Triton's, the backends' (histograms with their
    _bucket/_sum/_count and summaries with _sum/_count series), the OpenAI gateway's, and Prometheus's own."""
    names = set(PROMETHEUS_SERIES) | gateway_series_names()
    for name in TRITON_METRICS:
        names.add(name)
        if name.endswith("_summary_us"):
            names |= {f"{name}_sum", f"{name}_count"}
    for name, kind in custom_metric_names().items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "HISTOGRAM" else {name}
    return names


def substitute_grafana_variables(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$model", ".*")


def promql_metric_names(expr: str) -> set[str]:
    """The series names an expression selects (Grafana variables substituted first)."""
    text = substitute_grafana_variables(expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text):
        word = match.group(1)
        if word.lower() not in _PROMQL_KEYWORDS:
            names.add(word)
    return names


def series_read_by_monitoring(among: set[str]) -> set[str]:
    """The names in `among` that some rule or dashboard query reads."""
    exprs = [rule["expr"] for rule in all_rules()] + [expr for _, expr in dashboard_exprs()]
    return set().union(*(promql_metric_names(expr) & among for expr in exprs))


def exposition_series_names(exposition: str) -> set[str]:
    """The series names in a Prometheus text exposition, as written (prometheus_client's parser renames
    counters that lack the _total suffix)."""
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0) for line in exposition.splitlines()
            if line and not line.startswith("#")}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return [p for p in panels if p.get("type") != "row"]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every query: panel targets, annotations, and the template variables' label_values."""
    exprs = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in dashboard_panels() for t in p.get("targets", [])]
    exprs += [(f"annotation {a['name']!r}", a["expr"]) for a in dashboard()["annotations"]["list"] if a.get("expr")]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            exprs.append((f"variable {variable['name']!r}", inner.group(1) if inner else query))
    return exprs


def run_tool(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- rules

def test_rules_file_is_a_prometheus_rule_whose_spec_is_a_rule_file_promtool_accepts(tmp_path):
    document = yaml.safe_load(RULES.read_text())
    assert (document["apiVersion"], document["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert set(document["spec"]) == {"groups"}
    result = run_tool([system_tool("promtool"), "check", "rules", str(write_rule_file(tmp_path))])
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(tmp_path):
    shutil.copy(RULES_TESTS, tmp_path / RULES_TESTS.name)
    write_rule_file(tmp_path)
    result = run_tool([system_tool("promtool"), "test", "rules", RULES_TESTS.name], cwd=tmp_path)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_quiet_and_key_recordings_have_values():
    tests = yaml.safe_load(RULES_TESTS.read_text())
    assert tests["rule_files"] == [EXTRACTED_RULES_NAME]
    fired, quiet, tested_exprs = {}, set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            if check["exp_alerts"]:
                fired.setdefault(check["alertname"], set()).update(a["exp_labels"]["severity"] for a in check["exp_alerts"])
            else:
                quiet.add(check["alertname"])
        tested_exprs |= {check["expr"].split("{")[0] for check in case.get("promql_expr_test", [])}
    severities = {}
    for rule in all_rules():
        if "alert" in rule:
            severities.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    assert fired == severities, "each alert at each severity must be tested firing"
    assert quiet == alert_names(), "each alert must be tested staying quiet"
    assert KEY_RECORDINGS <= tested_exprs


def test_alerts_have_severity_duration_and_annotations():
    for rule in all_rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert re.fullmatch(r"\d+m", rule["for"]), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_thresholds_and_budgets_are_the_stated_ones():
    budgets = {r["labels"]["model"]: float(r["expr"].removeprefix("vector(").removesuffix(")"))
               for r in all_rules() if r.get("record") == "modelrepo:latency_p99_budget_seconds"}
    assert budgets == LATENCY_BUDGETS_S
    exprs = {(r["alert"], r["labels"]["severity"]): " ".join(r["expr"].split()) for r in all_rules() if "alert" in r}
    for key, expr in ALERT_THRESHOLDS.items():
        assert exprs[key] == expr


def test_rule_expressions_only_read_exported_or_recorded_series():
    known = exported_series_names() | recorded_names()
    for rule in all_rules():
        names = promql_metric_names(rule["expr"])
        assert names <= known, (rule.get("record") or rule.get("alert"), names - known)
        if not rule["expr"].startswith("vector("):
            assert names, rule


# --------------------------------------------------------------------------- alertmanager

def test_alertmanager_config_is_valid_and_routes_by_severity():
    amtool = system_tool("amtool")
    result = run_tool([amtool, "check-config", str(ALERTMANAGER)])
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    expected = {
        ("severity=critical", "alertname=ModelErrorRatioHigh", "model=credit_default"): "ml-platform-pager,ml-platform-channel",
        ("severity=warning", "alertname=ModelQueueSaturated", "model=minilm_encoder"): "ml-platform-channel",
        ("severity=warning", "alertname=CreditFeatureDrift", "feature=balance"): "credit-model-owners",
    }
    for labels, receivers in expected.items():
        routed = run_tool([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", f"--verify.receivers={receivers}", *labels])
        assert routed.returncode == 0, (labels, routed.stdout, routed.stderr)
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert "model" in config["route"]["group_by"]
    assert {
        "source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'], "equal": ["alertname", "model", "track"],
    } in config["inhibit_rules"]


# --------------------------------------------------------------------------- dashboard

def test_the_backends_declare_the_metrics_the_dashboard_shows():
    declared = custom_metric_names()
    assert declared["credit_feature_psi"] == "GAUGE"
    assert declared["credit_default_probability"] == declared["credit_uncertainty"] == "HISTOGRAM"
    assert declared["llm_time_to_first_token_seconds"] == declared["llm_decode_batch_size"] == "HISTOGRAM"
    assert declared["llm_cache_requests_total"] == "COUNTER"


def test_dashboard_queries_only_read_exported_or_recorded_series():
    known = exported_series_names() | recorded_names()
    used = set()
    for where, expr in dashboard_exprs():
        names = promql_metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= known, f"{where}: unknown {sorted(names - known)} in {expr!r}"
        used |= names
    # What the dashboard is for, by the series it reads.
    for needed in ("model:nv_inference_request_success:rate5m", "model:nv_inference_request_error:ratio_rate5m",
                   "model:nv_inference_request_duration_seconds:p99_1m", "modelrepo:latency_p99_budget_seconds",
                   "model:nv_inference_queue_duration_seconds:mean_rate5m", "model:nv_inference_pending_request_count:sum",
                   "credit_default_probability_bucket", "credit_uncertainty_bucket", "feature:credit_feature_psi:max",
                   "model:llm_time_to_first_token_seconds:p99_5m", "model:llm_time_per_output_token_seconds:p99_5m",
                   "llm_decode_batch_size_bucket", "model:llm_cache_hit:ratio_rate5m", "up",
                   "route:openai_requests:rate5m", "route:openai_request_error:ratio_rate5m",
                   "route:openai_request_duration_seconds:p99_5m", "model_kind:openai_tokens:rate5m"):
        assert needed in used, needed


def test_the_gateway_exports_what_the_rules_and_dashboard_read_from_it():
    assert {"openai_requests_total", "openai_errors_total", "openai_tokens_total", "openai_cancelled_streams_total",
            "openai_request_duration_seconds_bucket", "openai_time_to_first_token_seconds_bucket"} <= gateway_series_names()
    jobs = {expr for _, expr in dashboard_exprs() if "up{" in expr}
    assert jobs == {'up{job=~"modelrepo.*"}'}, "the scrape-target panel reads the ServiceMonitor's jobs"


def test_dashboard_queries_parse(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)} for i, (_, expr) in enumerate(dashboard_exprs())
    ]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = run_tool([system_tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_templated_on_datasource_and_model():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["type"] == "query" and variables["model"]["includeAll"] and variables["model"]["multi"]
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            model_labelled = any(n.startswith(("model:", "nv_inference_", "llm_")) or n == "modelrepo:latency_p99_budget_seconds"
                                 for n in promql_metric_names(target["expr"]))
            if model_labelled:
                assert 'model=~"$model"' in target["expr"], (panel["title"], target["expr"])
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- kustomize

def test_kustomize_renders_the_rule_and_the_dashboard_configmap():
    result = run_tool([system_tool("kubectl"), "kustomize", str(MONITORING)])
    assert result.returncode == 0, result.stderr
    objects = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    assert set(objects) == {"PrometheusRule", "ConfigMap"}
    assert objects["PrometheusRule"]["spec"] == rules_spec()
    configmap = objects["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["grafana-dashboard.json"]) == dashboard()


@pytest.mark.parametrize("expr, names", [
    ('sum by (model, le) (rate(llm_x_bucket{model=~"$model", le!="1"}[$__rate_interval]))', {"llm_x_bucket"}),
    ("a:b:c / ignoring (reason) group_left () d_total offset 1h > 1e6", {"a:b:c", "d_total"}),
    ("absent(up{job=~\"m.*\"}) and on (model) vector(1)", {"up"}),
])
def test_promql_metric_names(expr, names):
    assert promql_metric_names(expr) == names


def test_yaml_sources_and_rendering_pass_yamllint(tmp_path):
    from modelrepo.tools import venv_tool

    rendered = tmp_path / "monitoring.yaml"
    rendered.write_text(run_tool([system_tool("kubectl"), "kustomize", str(MONITORING)]).stdout)
    config = REPO_ROOT / "k8s" / ".yamllint"
    result = run_tool([venv_tool("deploy", "yamllint"), "-c", str(config), "--strict", str(MONITORING), str(rendered)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_added_models_budget_rule_is_what_the_latency_alerts_read(tmp_path):
    from modelrepo.build.add.monitoring import BUDGET_SERIES, budget_rule

    document = budget_rule("my_model", 40)
    assert (document["apiVersion"], document["kind"]) == (yaml.safe_load(RULES.read_text())["apiVersion"], "PrometheusRule")
    (rule,) = document["spec"]["groups"][0]["rules"]
    assert rule == {"record": BUDGET_SERIES, "expr": "vector(0.04)", "labels": {"model": "my_model"}}
    budget_alerts = [r for r in all_rules() if r.get("alert", "").startswith("ModelLatencyP99")]
    assert budget_alerts and all(BUDGET_SERIES in r["expr"] for r in budget_alerts)
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(document["spec"], sort_keys=False))
    result = run_tool([system_tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
