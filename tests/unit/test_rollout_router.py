"""The generic rollout router without a server: routing by policy, sticky users, fallback, shadow
comparisons and the PSI gauge (BLS replaced by a function answering per version)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.metrics import InMemoryRegistry
from modelrepo.python_backends.rollout_compare import PredictionShift, disagreements, row_summary
from modelrepo.python_backends.rollout_router import NOT_MEASURED, RolloutPolicy, RolloutRouter
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS, RemoteModelError

ROW = np.array([[1.0, 2.0]], dtype=np.float32)


class Versions:
    """BLS stand-in: version -> answer function; records every call."""

    def __init__(self, answers: dict[int, object]):
        self.answers, self.calls = answers, []

    async def __call__(self, model, inputs, outputs, version=-1):
        self.calls.append((model, version))
        answer = self.answers[version]
        if isinstance(answer, Exception):
            raise answer
        return {"PREDICTION": answer(inputs["INPUT"])}


def router(policy: RolloutPolicy, answers: dict) -> tuple[RolloutRouter, Versions, InMemoryRegistry]:
    versions, metrics = Versions(answers), InMemoryRegistry()
    return RolloutRouter(policy, versions, ["INPUT"], ["PREDICTION"], metrics), versions, metrics


def send(handler: RolloutRouter, user: str | None = None, row=ROW) -> dict:
    sent = []
    request = {"INPUT": row, REQUEST_PARAMETERS: {} if user is None else {"user_id": user}}
    answer = asyncio.run(handler.execute_request_async(request, sent.append))
    assert sent and sent[0] is answer  # answered exactly once, with what execute returned
    return answer


def route(answer: dict) -> str:
    return answer["ROUTE"][0, 0].decode()


SUM = {1: lambda x: x.sum(axis=1, keepdims=True), 2: lambda x: x.sum(axis=1, keepdims=True) + 0.5}


def test_canary_share_is_sticky_per_user_and_calls_the_versions():
    handler, versions, metrics = router(RolloutPolicy(target="m", candidate_version=2, mode="canary", percent=30), SUM)
    first = {f"u{i}": route(send(handler, f"u{i}")) for i in range(400)}
    assert first == {f"u{i}": route(send(handler, f"u{i}")) for i in range(400)}
    share = list(first.values()).count("candidate") / len(first)
    assert 0.22 < share < 0.38
    assert {v for _, v in versions.calls} == {1, 2} and {m for m, _ in versions.calls} == {"m"}
    assert metrics.value("rollout_calls_total", model="m", version="2") == 2 * list(first.values()).count("candidate")


def test_answers_come_from_the_routed_version():
    handler, _, _ = router(RolloutPolicy(target="m", candidate_version=2, mode="canary", percent=100), SUM)
    assert send(handler, "u1")["PREDICTION"][0, 0] == pytest.approx(3.5)
    handler, _, _ = router(RolloutPolicy(target="m", primary_version=1), SUM)
    assert send(handler, "u1")["PREDICTION"][0, 0] == pytest.approx(3.0)


def test_a_failing_candidate_is_answered_by_the_primary_and_counted():
    broken = {**SUM, 2: RemoteModelError("m", "version 2 is not ready", client_error=False)}
    handler, _, metrics = router(RolloutPolicy(target="m", candidate_version=2, mode="canary", percent=100), broken)
    answer = send(handler, "u1")
    assert route(answer) == "candidate_fallback" and answer["PREDICTION"][0, 0] == pytest.approx(3.0)
    assert metrics.value("rollout_call_errors_total", model="m", version="2") == 1
    assert metrics.value("rollout_call_errors_total", model="m", version="1") == 0


def test_a_client_error_is_the_clients_and_not_counted_against_the_candidate():
    bad = {**SUM, 2: RemoteModelError("m", "input 'INPUT': must be finite", client_error=True)}
    handler, _, metrics = router(RolloutPolicy(target="m", candidate_version=2, mode="canary", percent=100), bad)
    with pytest.raises(RemoteModelError):
        send(handler, "u1")
    assert metrics.value("rollout_call_errors_total", model="m", version="2") == 0


def test_unknown_request_parameters_are_refused():
    handler, _, _ = router(RolloutPolicy(target="m"), SUM)
    with pytest.raises(InputError, match="useer_id"):
        asyncio.run(handler.execute_request_async({"INPUT": ROW, REQUEST_PARAMETERS: {"useer_id": "x"}}, lambda a: None))


def test_shadow_answers_with_the_primary_and_counts_disagreements():
    handler, versions, metrics = router(
        RolloutPolicy(target="m", candidate_version=2, mode="shadow", percent=100, tolerance=0.1), SUM)
    for i in range(5):
        answer = send(handler, f"u{i}")
        assert route(answer) == "primary" and answer["PREDICTION"][0, 0] == pytest.approx(3.0)
    assert [v for _, v in versions.calls] == [1, 2] * 5
    assert metrics.value("rollout_shadow_comparisons_total", model="m") == 5
    assert metrics.value("rollout_shadow_disagreements_total", model="m") == 5  # 0.5 apart > tolerance 0.1
    assert metrics.value("rollout_shadow_distance_total", model="m") == pytest.approx(2.5)


def test_the_psi_gauge_starts_unmeasured_and_rises_with_a_shifted_candidate():
    rng = np.random.default_rng(0)
    shifted = {1: lambda x: x[:, :1] * 0, 2: lambda x: x[:, :1] * 0 + 5}
    handler, _, metrics = router(RolloutPolicy(target="m", candidate_version=2, mode="shadow", percent=100), shifted)
    assert metrics.value("rollout_prediction_psi", model="m") == NOT_MEASURED
    for i in range(60):
        send(handler, f"u{i}", rng.normal(size=(1, 2)).astype(np.float32))
    assert metrics.value("rollout_prediction_psi", model="m") > 1.0


def test_policy_rules_name_the_parameter():
    for bad, word in (({"mode": "random"}, "mode"), ({"mode": "canary"}, "candidate_version"),
                      ({"percent": 101}, "percent"), ({"comparison": "cosine"}, "comparison")):
        with pytest.raises(ValueError, match=word):
            RolloutPolicy(target="m", **bad)
    with pytest.raises(ValueError, match="target"):
        RolloutPolicy()
    params = {"target": "m", "candidate_version": "3", "mode": "canary", "percent": "12.5"}
    policy = RolloutPolicy.from_parameters(lambda key, default: params.get(key, default))
    assert (policy.candidate_version, policy.percent, policy.primary_version) == (3, 12.5, 1)


def test_comparisons_label_and_distance():
    a = {"SCORES": np.array([[0.9, 0.1], [0.2, 0.8]])}
    b = {"SCORES": np.array([[0.6, 0.4], [0.7, 0.3]])}
    assert disagreements(a, b, "label", 0.0) == (1, 0.0)
    count, distance = disagreements(a, b, "distance", 0.5)
    assert count == 1 and distance == pytest.approx(np.sqrt(0.18) + np.sqrt(0.5))
    strings = {"LABEL": np.array([[b"x"], [b"y"]], dtype=object)}
    assert disagreements(strings, {"LABEL": np.array([[b"x"], [b"z"]], dtype=object)}, "label", 0) == (1, 0.0)
    assert row_summary(a, "label").tolist() == [0.0, 1.0]


def test_prediction_shift_needs_rows_on_both_sides_and_is_small_for_the_same_distribution():
    rng = np.random.default_rng(1)
    shift = PredictionShift(min_rows=30)
    shift.add("primary", rng.normal(size=500))
    assert shift.score() is None
    shift.add("candidate", rng.normal(size=500))
    assert shift.score() < 0.1
    shift.add("candidate", rng.normal(loc=2, size=1000))
    assert shift.score() > 1.0
