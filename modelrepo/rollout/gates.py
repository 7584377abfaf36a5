"""The gates a rollout step must pass, computed from two scrapes of the metrics endpoint (the step's
start and its end): the router's per-version counters and latency histogram, its shadow comparisons
and its PSI gauge (python_backends/rollout_router.py)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Snapshot = dict[str, dict[tuple, float]]  # name -> {sorted label items: value}, as scrape_metrics answers


@dataclass(frozen=True)
class GateLimits:
    p99_budget_ms: float = 1000.0
    max_error_ratio: float = 0.01
    max_disagreement: float = 0.05  # share of shadowed rows whose answers disagree
    max_psi: float = 0.25  # the usual "drifted" threshold
    min_calls: int = 20  # candidate calls a step needs before its gates mean anything


@dataclass(frozen=True)
class GateResult:
    gate: str
    value: float | None  # None: not measured in this step (e.g. no shadow comparisons in a canary)
    limit: float
    passed: bool
    unit: str = ""

    def describe(self) -> str:
        if self.value is None:
            return f"{self.gate}: not measured (limit {self.limit:g}{self.unit})"
        if self.gate == "candidate_calls":
            verdict = "ok" if self.passed else f"FAILED: {self.limit - self.value:g} short"
            return f"{self.gate} {self.value:g} >= {self.limit:g}: {verdict}"
        verdict = "ok" if self.passed else f"FAILED by {self.value - self.limit:.4g}{self.unit}"
        return f"{self.gate} {self.value:.4g}{self.unit} <= {self.limit:g}{self.unit}: {verdict}"

    def record(self) -> dict:
        return asdict(self)


def value(snapshot: Snapshot, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for key, v in snapshot.get(name, {}).items() if wanted <= set(key))


def delta(before: Snapshot, after: Snapshot, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def bucket_increments(before: Snapshot, after: Snapshot, name: str, **labels: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count added in the step) of a histogram's buckets, by bound."""
    wanted = set(labels.items())
    totals: dict[float, float] = {}
    for key, count in after.get(f"{name}_bucket", {}).items():
        if wanted <= set(key):
            bound = float(dict(key)["le"])
            totals[bound] = totals.get(bound, 0.0) + count - before.get(f"{name}_bucket", {}).get(key, 0.0)
    return sorted(totals.items())


def histogram_quantile(q: float, before: Snapshot, after: Snapshot, name: str, **labels: str) -> float | None:
    """Prometheus' histogram_quantile over the step's bucket increments (linear within a bucket), in the
    histogram's unit; None without observations. Beyond the last finite bucket: that bucket's bound."""
    counts = bucket_increments(before, after, name, **labels)
    if not counts or counts[-1][1] <= 0:
        return None
    rank = q * counts[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in counts:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below) if count > below else bound
        lower, below = bound, count
    return lower


def step_gates(before: Snapshot, after: Snapshot, model: str, candidate: int, limits: GateLimits) -> list[GateResult]:
    labels = {"model": model, "version": str(candidate)}
    calls = delta(before, after, "rollout_calls_total", **labels)
    errors = delta(before, after, "rollout_call_errors_total", **labels)
    p99 = histogram_quantile(0.99, before, after, "rollout_call_latency_seconds", **labels)
    compared = delta(before, after, "rollout_shadow_comparisons_total", model=model)
    disagreed = delta(before, after, "rollout_shadow_disagreements_total", model=model)
    psi = value(after, "rollout_prediction_psi", model=model) if "rollout_prediction_psi" in after else -1.0
    results = [GateResult("candidate_calls", calls, limits.min_calls, calls >= limits.min_calls)]
    results.append(GateResult("p99_latency", None if p99 is None else p99 * 1000, limits.p99_budget_ms,
                              p99 is None or p99 * 1000 <= limits.p99_budget_ms, " ms"))
    ratio = errors / calls if calls else None
    results.append(GateResult("error_ratio", ratio, limits.max_error_ratio, ratio is None or ratio <= limits.max_error_ratio))
    share = disagreed / compared if compared else None
    results.append(GateResult("shadow_disagreement", share, limits.max_disagreement,
                              share is None or share <= limits.max_disagreement))
    measured = psi if psi >= 0 else None
    results.append(GateResult("prediction_psi", measured, limits.max_psi, measured is None or measured <= limits.max_psi))
    return results


def version_figures(before: Snapshot, after: Snapshot, model: str, version: int) -> dict:
    """One version's traffic in a step (the timeline's numbers): calls, errors, p99 ms."""
    labels = {"model": model, "version": str(version)}
    p99 = histogram_quantile(0.99, before, after, "rollout_call_latency_seconds", **labels)
    return {"calls": delta(before, after, "rollout_calls_total", **labels),
            "errors": delta(before, after, "rollout_call_errors_total", **labels),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3)}
