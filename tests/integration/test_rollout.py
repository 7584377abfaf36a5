"""`modelrepo rollout` on the real Triton 2.51 under a fixed-rate load through the router (10 requests/s,
40 sticky users), on one small server of its own (the session of perf/rollout_record.py): a canary
promoted, a shadowed candidate that disagrees rolled back by its gate, a candidate that cannot load, a
candidate over its latency budget rolled back by the p99 gate.
Every request must be answered. The models are made here (`modelrepo add` of small scikit-learn
regressors as versions 1-3; version 4 a corrupt copy)."""

from __future__ import annotations

from collections import Counter

import pytest

from modelrepo.perf.rollout_record import session

pytestmark = pytest.mark.slow

GATES = {"candidate_calls", "p99_latency", "error_ratio", "shadow_disagreement", "prediction_psi"}


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    return session(tmp_path_factory.mktemp("rollout"), rate=10.0, bake_s=3.0)


def routes_during(figures, name: str) -> Counter:
    started, ended = figures["phases"][name]
    return Counter(r.detail.split(":")[1] for r in figures["results"] if started <= r.scheduled <= ended and not r.error)


def test_every_request_is_answered_through_the_whole_session(rollout):
    results = rollout["results"]
    assert len(results) > 100
    assert [r.error for r in results if r.error] == []


def test_users_stay_on_their_side_within_a_canary_step(rollout):
    started, ended = rollout["phases"]["promote"]
    step = next(e for e in rollout["history"] if e["event"] == "step" and e["candidate"] == 2)
    first_gates = next(e for e in rollout["history"] if e["event"] == "gates" and e["candidate"] == 2)
    # the 50 % step, by the history's wall-clock times mapped onto the load's clock
    offset = rollout["origin"] - rollout["unix_origin"]
    window = (step["unix_time"] + offset + 0.5, first_gates["unix_time"] + offset - 0.5)
    sides: dict[str, set] = {}
    for r in rollout["results"]:
        if window[0] <= r.scheduled <= window[1] and not r.error:
            user, route = r.detail.split(":")
            sides.setdefault(user, set()).add(route)
    # users take turns across the load's workers: a 2 s window at 10/s holds ~20 of the 40
    assert len(sides) >= 10 and all(len(routes) == 1 for routes in sides.values()), sides
    assert {route for routes in sides.values() for route in routes} == {"primary", "candidate"}


def test_a_canary_steps_through_its_gates_and_is_promoted(rollout):
    assert rollout["promote"]["phase"] == "promoted" and rollout["promote"]["serving"] == 2, rollout["promote"]
    assert rollout["states"]["promote"].get("2") == "READY" and rollout["states"]["promote"].get("1") != "READY"
    events = [(e["event"], e.get("percent"), e.get("decision")) for e in rollout["history"] if e["candidate"] == 2]
    assert events == [("start", None, None), ("step", 50.0, None), ("gates", 50.0, "next_step"),
                      ("step", 100.0, None), ("gates", 100.0, "passed"), ("promote", None, "promoted")]
    gates = next(e for e in rollout["history"] if e["event"] == "gates" and e["candidate"] == 2)
    assert {g["gate"] for g in gates["gates"]} == GATES
    assert all(g["passed"] for g in gates["gates"]) and gates["who"] == "rollout_record"
    assert gates["versions"]["2"]["calls"] >= 5 and gates["versions"]["2"]["errors"] == 0


def test_a_disagreeing_shadow_candidate_is_rolled_back_by_its_gate(rollout):
    result = rollout["rollback"]
    assert result["phase"] == "rolled_back" and result["serving"] == 2 and result["automatic"] is True, result
    assert "shadow_disagreement" in result["reason"] and "FAILED by" in result["reason"]
    assert rollout["states"]["rollback"].get("2") == "READY" and rollout["states"]["rollback"].get("3") != "READY"
    assert set(routes_during(rollout, "rollback")) == {"primary"}  # shadowed: the serving version answered all
    gates = next(e for e in rollout["history"] if e["event"] == "gates" and e["candidate"] == 3)
    disagreement = next(g for g in gates["gates"] if g["gate"] == "shadow_disagreement")
    assert disagreement["passed"] is False and disagreement["value"] > 0.05 and gates["decision"] == "rollback"


def test_a_candidate_that_cannot_load_leaves_the_serving_version_alone(rollout):
    result = rollout["broken"]
    assert result["phase"] == "rolled_back" and result["serving"] == 2, result
    assert "version 4 failed to load" in result["reason"]
    assert rollout["states"]["broken"].get("2") == "READY" and rollout["states"]["broken"].get("4") != "READY"
    assert set(routes_during(rollout, "broken")) == {"primary"}
    assert [e["event"] for e in rollout["history"] if e["candidate"] == 4] == ["start", "load_failed"]


def test_a_candidate_over_its_latency_budget_is_rolled_back_by_the_p99_gate(rollout):
    result = rollout["over_budget"]  # the budget is 1 µs: no call meets it, on any machine
    assert result["phase"] == "rolled_back" and result["serving"] == 2 and result["automatic"] is True, result
    assert "p99_latency" in result["reason"] and "FAILED by" in result["reason"]
    assert rollout["states"]["over_budget"].get("2") == "READY" and rollout["states"]["over_budget"].get("1") != "READY"
    routes = routes_during(rollout, "over_budget")
    assert routes["candidate"] > 0 and set(routes) <= {"primary", "candidate"}
