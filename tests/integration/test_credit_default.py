"""credit_default (fan-out), credit_default_fused and credit_default_onehop against each other and an
in-process reference,
input validation, the classification extension, and the pipeline's custom metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelrepo.build.credit import MEMBERS, dataset, member_name, request_arrays
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.python_backends.credit_features import FEATURES_FILENAME, FeatureSpec
from modelrepo.python_backends.ensemble_stats import DecisionPolicy, summarise
from modelrepo.python_backends.onnx_runner import OnnxRunner
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from tests.integration.triton_calls import InferenceServerException, scrape_metrics, scrape_metrics_until

OUTPUTS = ["DEFAULT_PROBABILITY", "UNCERTAINTY", "INTERVAL", "DECISION", "CLASS_PROBABILITIES"]


def reference(raw: np.ndarray) -> dict[str, np.ndarray]:
    """The same computation in process: shipped statistics, each member's ONNX, the documented stats."""
    spec = FeatureSpec.load(MODEL_REPOSITORY / "credit_preprocess" / "1" / FEATURES_FILENAME)
    features = spec.standardise(raw.astype(np.float32).astype(np.float64))
    members = np.stack(
        [
            OnnxRunner(MODEL_REPOSITORY / member_name(i) / "1" / "model.onnx").run({"FEATURES": features})["PROBABILITY"][:, 0]
            for i in range(MEMBERS)
        ],
        axis=1,
    )
    stats = summarise(members.astype(np.float64), 0.9)
    return {**stats, "decision": DecisionPolicy().decide(stats["mean"], stats["std"])}


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return dataset()["x_test"][:40]


def test_fan_out_equals_fused_and_onehop_and_the_in_process_reference(caller, sample):
    fan_out = caller.infer("credit_default", request_arrays(sample), OUTPUTS)
    for variant in ("credit_default_fused", "credit_default_onehop"):
        answer = caller.infer(variant, request_arrays(sample), OUTPUTS)
        for name in OUTPUTS:
            if name == "DECISION":
                assert fan_out[name].tolist() == answer[name].tolist(), variant
            else:
                np.testing.assert_allclose(fan_out[name], answer[name], atol=1e-5, err_msg=variant)
    expected = reference(sample)
    np.testing.assert_allclose(fan_out["DEFAULT_PROBABILITY"][:, 0], expected["mean"], atol=1e-5)
    np.testing.assert_allclose(fan_out["UNCERTAINTY"][:, 0], expected["std"], atol=1e-5)
    np.testing.assert_allclose(fan_out["INTERVAL"], expected["interval"], atol=1e-5)
    assert [d.decode() for d in fan_out["DECISION"][:, 0]] == expected["decision"].tolist()
    assert (fan_out["INTERVAL"][:, 0] <= fan_out["DEFAULT_PROBABILITY"][:, 0] + 1e-7).all()


def test_classification_extension_on_class_probabilities(caller, sample):
    out = caller.infer("credit_default", request_arrays(sample[:3]), ["CLASS_PROBABILITIES"], class_count=1)
    plain = caller.infer("credit_default", request_arrays(sample[:3]), ["DEFAULT_PROBABILITY"])["DEFAULT_PROBABILITY"]
    for (entry,), p in zip(out["CLASS_PROBABILITIES"], plain[:, 0]):
        score, index, label = entry.decode().split(":")
        assert label == ("default" if p >= 0.5 else "no_default") and int(index) == int(p >= 0.5)
        assert float(score) == pytest.approx(max(p, 1 - p), abs=1e-5)


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("STUDENT", np.array([[b"maybe"]], dtype=object), "must be 'Yes' or 'No'"),
        ("BALANCE", np.array([[np.nan]], dtype=np.float32), "must be a finite number"),
        ("INCOME", np.array([[np.inf]], dtype=np.float32), "must be a finite number"),
        ("INCOME", np.array([[-10.0]], dtype=np.float32), "must be >= 0"),
    ],
)
@pytest.mark.parametrize("model", ["credit_default", "credit_default_fused", "credit_default_onehop"])
def test_validation_names_the_field_and_the_rule(server, caller, model, field, value, rule):
    inputs = request_arrays(np.array([[0.0, 500.0, 30000.0]]))
    inputs[field] = value
    with pytest.raises(InferenceServerException) as raised:
        caller.infer(model, inputs, ["DECISION"])
    assert f"input '{field}'" in raised.value.message() and rule in raised.value.message()
    assert raised.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    assert server.is_ready()


def test_a_missing_field_is_refused_by_name(caller):
    inputs = request_arrays(np.array([[0.0, 500.0, 30000.0]]))
    del inputs["INCOME"]
    with pytest.raises(InferenceServerException, match="INCOME"):
        caller.infer("credit_default", inputs, ["DECISION"])


def test_metrics_are_exported_and_move_under_drifted_traffic(server, grpc_client):
    from tests.integration.triton_calls import Caller, settled_counter

    caller = Caller("grpc", grpc_client)
    data = dataset()["x_test"]
    rng = np.random.default_rng(1)
    for _ in range(5):  # fill the drift window with training-like traffic
        caller.infer("credit_default", request_arrays(data[rng.choice(len(data), 200)]), ["DECISION"])
    before = scrape_metrics(server)
    calm = before["credit_feature_psi"][(("feature", "balance"),)]
    drifted = data[rng.choice(len(data), 200)].copy()
    drifted[:, 1] *= 2.5  # balances shift up: the drift gauge must notice
    for _ in range(6):
        caller.infer("credit_default", request_arrays(drifted), ["DECISION"])

    def scored(samples):  # credit_aggregate sends its per-row metrics every second (metrics_export_interval_s)
        return samples["credit_default_probability_count"][()] >= before["credit_default_probability_count"][()] + 1200

    after = scrape_metrics_until(server, scored)
    assert calm < 0.1
    assert after["credit_feature_psi"][(("feature", "balance"),)] > 0.25
    assert after["credit_feature_psi"][(("feature", "income"),)] < 0.1
    assert scored(after)
    assert after["credit_uncertainty_count"][()] > before["credit_uncertainty_count"][()]
    assert sum(after["credit_decisions_total"].values()) >= sum(before["credit_decisions_total"].values()) + 1200
    # exported as a histogram's series: cumulative le buckets, the last one every row
    buckets = after["credit_default_probability_bucket"]
    assert buckets[(("le", "+Inf"),)] == after["credit_default_probability_count"][()]
    assert buckets[(("le", "0.1"),)] <= buckets[(("le", "0.5"),)] <= buckets[(("le", "+Inf"),)]
    key = (("field", "STUDENT"), ("reason", "unknown_category"))
    refused_before = settled_counter(server, "credit_rejected_inputs_total", key)
    bad = request_arrays(data[:1])
    bad["STUDENT"] = np.array([[b"perhaps"]], dtype=object)
    with pytest.raises(InferenceServerException):
        caller.infer("credit_default", bad, ["DECISION"])
    assert scrape_metrics(server)["credit_rejected_inputs_total"][key] == refused_before + 1


def test_a_reload_sends_the_metrics_the_old_instance_still_held(server, grpc_client, admin_key):
    """credit_aggregate exports every interval: with a long one, only the old instance's finalize can
    have sent the rows it scored before a reload."""
    from tests.integration.triton_calls import Caller

    headers = {GRPC_ADMIN_HEADER: admin_key}
    original = grpc_client.get_model_config("credit_aggregate", as_json=True, headers=headers)["config"]
    slow = json.loads(json.dumps(original))
    slow["parameters"]["metrics_export_interval_s"] = {"string_value": "600"}
    count = ("credit_default_probability_count", ())
    grpc_client.load_model("credit_aggregate", config=json.dumps(slow), headers=headers)
    try:
        before = scrape_metrics(server)[count[0]][count[1]]
        Caller("grpc", grpc_client).infer("credit_default", request_arrays(dataset()["x_test"][:30]), ["DECISION"])
        assert scrape_metrics(server)[count[0]][count[1]] == before  # held in the stub
    finally:
        grpc_client.load_model("credit_aggregate", config=json.dumps(original), headers=headers)
    # only the old instance's finalize can send them within 15 s (Triton may unload it just after the call)
    after = scrape_metrics_until(server, lambda samples: samples[count[0]][count[1]] >= before + 30)
    assert after[count[0]][count[1]] == before + 30
