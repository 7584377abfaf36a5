"""Rollout gates from two metric scrapes, and the append-only history (no server)."""

from __future__ import annotations

import pytest

from modelrepo.rollout.gates import GateLimits, histogram_quantile, step_gates
from modelrepo.rollout.store import RolloutStore

BOUNDS = ("0.01", "0.1", "1.0", "+Inf")


def scrape(calls=0.0, errors=0.0, buckets=(0, 0, 0, 0), compared=0.0, disagreed=0.0, psi=None, version="2") -> dict:
    labels = (("model", "m"), ("version", version))
    snapshot = {
        "rollout_calls_total": {labels: calls},
        "rollout_call_errors_total": {labels: errors},
        "rollout_call_latency_seconds_bucket": {
            tuple(sorted((*labels, ("le", le)))): count for le, count in zip(BOUNDS, buckets)},
        "rollout_shadow_comparisons_total": {(("model", "m"),): compared},
        "rollout_shadow_disagreements_total": {(("model", "m"),): disagreed},
    }
    if psi is not None:
        snapshot["rollout_prediction_psi"] = {(("model", "m"),): psi}
    return snapshot


def by_gate(results) -> dict:
    return {result.gate: result for result in results}


def test_quantile_interpolates_within_the_steps_bucket_increments():
    before = scrape(buckets=(10, 10, 10, 10))
    after = scrape(buckets=(10, 110, 110, 110))  # the step's 100 calls all between 10 and 100 ms
    assert histogram_quantile(0.5, before, after, "rollout_call_latency_seconds", model="m") == pytest.approx(0.055)
    assert histogram_quantile(0.99, before, after, "rollout_call_latency_seconds", model="m") == pytest.approx(0.0991)
    assert histogram_quantile(0.99, after, after, "rollout_call_latency_seconds", model="m") is None
    slow = scrape(buckets=(10, 10, 10, 110))  # beyond the last finite bucket: its bound
    assert histogram_quantile(0.99, before, slow, "rollout_call_latency_seconds", model="m") == 1.0


def test_a_healthy_step_passes_every_gate():
    before = scrape()
    after = scrape(calls=100, buckets=(90, 100, 100, 100), compared=100, disagreed=1, psi=0.02)
    gates = by_gate(step_gates(before, after, "m", 2, GateLimits(p99_budget_ms=100, min_calls=20)))
    assert all(g.passed for g in gates.values()), [g.describe() for g in gates.values()]
    assert gates["shadow_disagreement"].value == pytest.approx(0.01)
    assert gates["prediction_psi"].value == 0.02 and gates["p99_latency"].value == pytest.approx(91.0)


def test_each_failing_gate_says_by_how_much():
    before = scrape()
    after = scrape(calls=100, errors=5, buckets=(0, 0, 100, 100), compared=50, disagreed=25, psi=0.9)
    gates = by_gate(step_gates(before, after, "m", 2, GateLimits(p99_budget_ms=100, max_error_ratio=0.01)))
    assert not gates["p99_latency"].passed and gates["p99_latency"].value == pytest.approx(991.0)
    assert "FAILED by 891 ms" in gates["p99_latency"].describe()
    assert not gates["error_ratio"].passed and "FAILED by 0.04" in gates["error_ratio"].describe()
    assert not gates["shadow_disagreement"].passed and gates["shadow_disagreement"].value == 0.5
    assert not gates["prediction_psi"].passed


def test_too_few_candidate_calls_fail_and_unmeasured_gates_pass():
    gates = by_gate(step_gates(scrape(), scrape(calls=3, buckets=(3, 3, 3, 3), psi=-1.0), "m", 2, GateLimits(min_calls=20)))
    assert not gates["candidate_calls"].passed and "17 short" in gates["candidate_calls"].describe()
    assert gates["shadow_disagreement"].value is None and gates["shadow_disagreement"].passed
    assert gates["prediction_psi"].value is None and gates["prediction_psi"].passed


def test_other_versions_do_not_count_for_the_candidate():
    after = scrape(calls=100, errors=100, buckets=(0, 0, 0, 100), version="1")
    gates = by_gate(step_gates(scrape(version="1"), after, "m", 2, GateLimits(min_calls=0)))
    assert gates["error_ratio"].value is None and gates["p99_latency"].value is None


def test_history_is_appended_and_read_per_model(tmp_path):
    store = RolloutStore(tmp_path, who="alice")
    store.record("a", "start", candidate=2)
    store.record("b", "start", candidate=3)
    store.record("a", "rollback", reason="p99")
    assert [e["event"] for e in store.history("a")] == ["start", "rollback"]
    assert len(store.history()) == 3 and store.history("a")[0]["who"] == "alice"
    store.save("a", {"phase": "running"})
    assert store.state("a") == {"phase": "running"} and store.state("c") is None
