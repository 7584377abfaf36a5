"""credit_router over gRPC: policies switched by config reload (no restart), sticky assignment,
shadow disagreements counted and logged, cascade agreement, and fallback when the candidate is gone."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from modelrepo.build.credit import dataset, request_arrays
from modelrepo.paths import MODEL_REPOSITORY, cache_dir
from modelrepo.python_backends.credit_features import FEATURES_FILENAME, FeatureSpec
from modelrepo.python_backends.ensemble_stats import DecisionPolicy, summarise
from modelrepo.python_backends.onnx_runner import OnnxRunner
from modelrepo.python_backends.routing import RouterPolicy, assign
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.client import reload_with_parameters
from tests.integration.triton_calls import scrape_metrics
from tests.integration.triton_calls import Caller, InferenceServerException

ROUTER = "credit_router"


class Router:
    def __init__(self, client, admin_key):
        self.caller = Caller("grpc", client)
        self.client = client
        self.headers = {GRPC_ADMIN_HEADER: admin_key}

    def configure(self, **parameters) -> dict:
        return reload_with_parameters(self.client, ROUTER, self.headers, **parameters)

    def call(self, raw: np.ndarray, user_id: str | None = None) -> dict:
        outputs = ["DEFAULT_PROBABILITY", "DECISION", "ROUTE", "UNCERTAINTY"]
        return self.caller.infer(ROUTER, request_arrays(raw), outputs, parameters={"user_id": user_id} if user_id else None)


@pytest.fixture
def router(server, grpc_client, admin_key):
    handle = Router(grpc_client, admin_key)
    yield handle
    handle.configure(mode="primary", canary_percent=10, ab_b_percent=50)


ROW = np.array([[0.0, 1700.0, 30000.0]])


def test_canary_routes_each_user_as_the_policy_says_and_sticks(router):
    router.configure(mode="canary", canary_percent=30)
    policy = RouterPolicy(mode="canary", canary_percent=30)
    users = [f"customer-{i}" for i in range(300)]
    routes = [router.call(ROW, user)["ROUTE"][0, 0].decode() for user in users]
    assert routes == [assign(policy, user) for user in users]
    share = routes.count("candidate") / len(routes)
    assert 0.2 < share < 0.4
    assert [router.call(ROW, user)["ROUTE"][0, 0].decode() for user in users[:40]] == routes[:40]
    assert router.call(ROW)["ROUTE"][0, 0] == b"primary"  # no user_id: primary


def test_policy_change_is_a_reload_not_a_restart(router, server):
    pid = server.process.pid
    router.configure(mode="canary", canary_percent=100)
    assert router.call(ROW, "someone")["ROUTE"][0, 0] == b"candidate"
    router.configure(mode="canary", canary_percent=0)
    assert router.call(ROW, "someone")["ROUTE"][0, 0] == b"primary"
    assert server.process.pid == pid and server.process.poll() is None


def test_ab_arms_are_sticky_and_counted_per_arm(router, server):
    router.configure(mode="ab", ab_b_percent=50)
    before = scrape_metrics(server).get("credit_router_requests_total", {})
    routes = [router.call(ROW, f"ab-user-{i}")["ROUTE"][0, 0].decode() for i in range(60)]
    assert set(routes) == {"arm_a", "arm_b"}
    after = scrape_metrics(server)["credit_router_requests_total"]
    for arm in ("arm_a", "arm_b"):
        key = (("policy", "ab"), ("route", arm))
        assert after[key] - before.get(key, 0.0) == routes.count(arm)


def in_process_decisions(version: int, raw: np.ndarray) -> list[str]:
    spec = FeatureSpec.load(MODEL_REPOSITORY / "credit_preprocess" / "1" / FEATURES_FILENAME)
    runner = OnnxRunner(MODEL_REPOSITORY / "credit_members_fused" / str(version) / "model.onnx")
    outputs = runner.run({"FEATURES": spec.standardise(raw.astype(np.float32).astype(np.float64))})
    members = np.stack([outputs[f"MEMBER_{i}"][:, 0] for i in range(10)], axis=1).astype(np.float64)
    stats = summarise(members, 0.9)
    return DecisionPolicy().decide(stats["mean"], stats["std"]).tolist()


def test_shadow_counts_and_logs_every_disagreement(router, server):
    data = dataset()["x_test"]
    primary, candidate = in_process_decisions(1, data), in_process_decisions(2, data)
    differ = [i for i in range(len(data)) if primary[i] != candidate[i]]
    agree = [i for i in range(len(data)) if primary[i] == candidate[i]][:20]
    assert differ, "the candidate version must differ somewhere for this test to mean anything"
    log = cache_dir() / "logs" / f"{ROUTER}_shadow.jsonl"
    lines_before = len(log.read_text().splitlines()) if log.exists() else 0
    router.configure(mode="shadow")
    before = scrape_metrics(server)
    for index in differ[:30] + agree:
        out = router.call(data[index : index + 1], f"shadow-{index}")
        assert out["ROUTE"][0, 0] == b"primary" and out["DECISION"][0, 0].decode() == primary[index]
    expected = len(differ[:30])
    key = ()
    compared_before = before.get("credit_shadow_comparisons_total", {}).get(key, 0)
    # The client is answered before the candidate runs: wait (bounded) for the last comparisons.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        after = scrape_metrics(server)
        if after.get("credit_shadow_comparisons_total", {}).get(key, 0) - compared_before >= expected + len(agree):
            break
        time.sleep(0.2)
    assert after["credit_shadow_disagreements_total"][key] - before.get("credit_shadow_disagreements_total", {}).get(key, 0) == expected
    assert after["credit_shadow_comparisons_total"][key] - before.get("credit_shadow_comparisons_total", {}).get(key, 0) == expected + len(agree)
    logged = [json.loads(line) for line in log.read_text().splitlines()[lines_before:]]
    assert len(logged) == expected
    assert {entry["user_id"] for entry in logged} == {f"shadow-{i}" for i in differ[:30]}


def test_cascade_agrees_with_always_full_and_short_circuits_most(router):
    data = dataset()["x_test"][:600]
    router.configure(mode="primary")
    full = [router.call(data[i : i + 1])["DECISION"][0, 0] for i in range(len(data))]
    router.configure(mode="cascade")
    routed = [router.call(data[i : i + 1]) for i in range(len(data))]
    agreement = np.mean([out["DECISION"][0, 0] == expected for out, expected in zip(routed, full)])
    short = np.mean([out["ROUTE"][0, 0] == b"cascade_short" for out in routed])
    assert agreement >= 0.995
    assert short > 0.5


def test_missing_candidate_falls_back_to_primary_and_is_counted(router, server, grpc_client, admin_key):
    headers = {GRPC_ADMIN_HEADER: admin_key}
    router.configure(mode="canary", canary_percent=100)
    grpc_client.unload_model("credit_candidate", headers=headers)
    try:
        before = scrape_metrics(server).get("credit_router_fallbacks_total", {})
        outs = [router.call(ROW, f"fallback-{i}") for i in range(5)]
        assert all(out["ROUTE"][0, 0] == b"candidate_fallback" for out in outs)
        assert all(out["DECISION"][0, 0] in (b"approve", b"review", b"decline") for out in outs)
        after = scrape_metrics(server)["credit_router_fallbacks_total"]
        key = (("candidate", "credit_candidate"), ("reason", "candidate_error"))
        assert after[key] - before.get(key, 0.0) == 5
    finally:
        grpc_client.load_model("credit_candidate", headers=headers)
    assert router.call(ROW, "fallback-0")["ROUTE"][0, 0] == b"candidate"


def test_invalid_input_through_the_router_names_the_field(router):
    bad = np.array([[0.0, -3.0, 30000.0]])
    with pytest.raises(InferenceServerException) as raised:
        router.call(bad, "u")
    assert "input 'BALANCE'" in raised.value.message() and "must be >= 0" in raised.value.message()
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_router_over_http_with_a_user_id_parameter(router, http_client):
    router.configure(mode="canary", canary_percent=50)
    policy = RouterPolicy(mode="canary", canary_percent=50)
    caller = Caller("http", http_client)
    for user in (f"http-user-{i}" for i in range(12)):
        out = caller.infer(ROUTER, request_arrays(ROW), ["ROUTE", "DECISION"], parameters={"user_id": user})
        assert out["ROUTE"][0, 0].decode() == assign(policy, user)
        assert out["DECISION"][0, 0] in (b"approve", b"review", b"decline")
