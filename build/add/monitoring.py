"""An added model's latency budget, stated once: the `latency_budget_ms` parameter of its public model
(what `modelrepo rollout` gates a new version on) and a PrometheusRule beside it recording
modelrepo:latency_p99_budget_seconds{model=NAME}, the series k8s/monitoring's
ModelLatencyP99OverBudget / ModelLatencyP99FarOverBudget alerts compare each model's p99 with.
Its drift is already alerted on for every added model (AddedModelDrift)."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelrepo.perf.tune_report import header_comments
from modelrepo.triton.model_config import format_config, parameter, read_config

LATENCY_BUDGET_PARAMETER = "latency_budget_ms"
RULE_FILENAME = "prometheus-rule.yaml"
BUDGET_SERIES = "modelrepo:latency_p99_budget_seconds"


def budget_rule(name: str, budget_ms: float) -> dict:
    """The PrometheusRule (the same kind as k8s/monitoring/prometheus-rules.yaml) with NAME's budget."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": f"modelrepo-budget-{name.lower().replace('_', '-')}",
                     "labels": {"app.kubernetes.io/name": "modelrepo", "app.kubernetes.io/component": "monitoring",
                                "prometheus": "k8s", "role": "alert-rules"}},
        "spec": {"groups": [{"name": f"modelrepo.latency-budget.{name}", "rules": [
            {"record": BUDGET_SERIES, "expr": f"vector({budget_ms / 1000:g})", "labels": {"model": name}},
        ]}]},
    }


def state_budget(public_dir: Path, name: str, budget_ms: float) -> None:
    """The parameter on NAME's config (its header comment kept) and NAME/prometheus-rule.yaml."""
    path = public_dir / "config.pbtxt"
    header = header_comments(path.read_text())
    config = read_config(public_dir)
    config.parameters[LATENCY_BUDGET_PARAMETER].string_value = f"{budget_ms:g}"
    path.write_text(header + format_config(config))
    text = (f"# {name}'s p99 latency budget, written by `modelrepo add` (--latency-budget-ms): apply it with\n"
            f"# kubectl apply -f {RULE_FILENAME} next to k8s/monitoring's rules, which alert on it.\n")
    (public_dir / RULE_FILENAME).write_text(text + yaml.safe_dump(budget_rule(name, budget_ms), sort_keys=False))


def stated_budget_ms(repository: Path, model: str) -> float | None:
    """MODEL's `latency_budget_ms`, else its public model's (`add` states it on NAME, the model clients
    call, which for a classifier is the ensemble in front of NAME_model); None where neither states one."""
    public = parameter(read_config(repository / model), "public_model", model)
    for name in dict.fromkeys((model, public)):
        if (repository / name / "config.pbtxt").exists():
            value = parameter(read_config(repository / name), LATENCY_BUDGET_PARAMETER)
            if value:
                return float(value)
    return None
