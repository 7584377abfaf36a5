from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelrepo.python_backends.credit_features import CreditFeatures, FeatureSpec
from modelrepo.python_backends.drift import DriftReference, DriftWindow, histogram, psi
from modelrepo.python_backends.ensemble_stats import DecisionPolicy, EnsembleAggregate, summarise
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.metrics import InMemoryRegistry

RNG = np.random.default_rng(0)
TRAIN = np.stack([RNG.integers(0, 2, 2000), RNG.gamma(2, 400, 2000), RNG.normal(33000, 13000, 2000).clip(1)], axis=1)


def credit_request(student=("No",), balance=(800.0,), income=(40000.0,)) -> dict:
    return {
        "STUDENT": np.array([s.encode() if isinstance(s, str) else s for s in student], dtype=object).reshape(-1, 1),
        "BALANCE": np.array(balance, dtype=np.float32).reshape(-1, 1),
        "INCOME": np.array(income, dtype=np.float32).reshape(-1, 1),
    }


@pytest.fixture
def features(tmp_path):
    FeatureSpec.fit(TRAIN).save(tmp_path / "features.json")
    registry = InMemoryRegistry()
    return CreditFeatures(FeatureSpec.load(tmp_path / "features.json"), registry, drift_window=200), registry


def test_standardisation_uses_the_shipped_training_statistics(features):
    handler, _ = features
    (out,) = handler.execute_batch([credit_request(("Yes", "No"), (1000.0, 0.0), (20000.0, 50000.0))])
    raw = np.array([[1.0, 1000.0, 20000.0], [0.0, 0.0, 50000.0]])
    expected = (raw - TRAIN.mean(axis=0)) / TRAIN.std(axis=0)
    np.testing.assert_allclose(out["FEATURES"], expected, rtol=1e-5)


@pytest.mark.parametrize(
    "request_kwargs, field, reason, rule",
    [
        ({"student": ("maybe",)}, "STUDENT", "unknown_category", "must be 'Yes' or 'No'"),
        ({"student": (b"\xff",)}, "STUDENT", "not_utf8", "UTF-8"),
        ({"balance": (float("nan"),)}, "BALANCE", "not_finite", "finite"),
        ({"income": (float("inf"),)}, "INCOME", "not_finite", "finite"),
        ({"balance": (-5.0,)}, "BALANCE", "negative", "must be >= 0"),
    ],
)
def test_each_rule_names_the_field_and_is_counted(features, request_kwargs, field, reason, rule):
    handler, registry = features
    good, bad = handler.execute_batch([credit_request(), credit_request(**request_kwargs)])
    assert good["FEATURES"].shape == (1, 3)
    assert isinstance(bad, InputError) and bad.input_name == field and rule in str(bad)
    assert registry.value("credit_rejected_inputs_total", field=field, reason=reason) == 1


def test_missing_field_is_refused(features):
    handler, _ = features
    request = credit_request()
    request["INCOME"] = None
    (result,) = handler.execute_batch([request])
    assert isinstance(result, InputError) and result.input_name == "INCOME" and "required" in str(result)


def test_psi_is_small_for_training_like_traffic_and_large_after_a_shift(features):
    handler, registry = features
    rows = TRAIN[RNG.choice(len(TRAIN), 200)]
    students = ["Yes" if s else "No" for s in rows[:, 0]]
    handler.execute_batch([credit_request(students, rows[:, 1], rows[:, 2])])
    assert registry.value("credit_feature_psi", feature="balance") < 0.1
    handler.execute_batch([credit_request(students, rows[:, 1] * 3, rows[:, 2])])
    assert registry.value("credit_feature_psi", feature="balance") > 0.25
    assert registry.value("credit_feature_psi", feature="income") < 0.1


def test_psi_definition_and_window():
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    expected = 0.2 * np.log(0.7 / 0.5) + (-0.2) * np.log(0.3 / 0.5)
    assert psi(np.array([0.7, 0.3]), np.array([0.5, 0.5])) == pytest.approx(expected)
    window = DriftWindow(DriftReference.from_training(np.arange(100.0)), size=10, min_rows=5)
    window.add(np.arange(20.0))
    assert len(window) == 10 and window.full_enough()


def test_the_window_scores_its_last_values_as_a_full_histogram_would():
    reference = DriftReference.from_training(TRAIN[:, 1])
    window, seen = DriftWindow(reference, size=250), []
    for size in (1, 7, 100, 300, 3, 64, 0, 249):  # eviction within a batch, across batches, and a batch over size
        batch = RNG.gamma(2, 600, size)
        batch[::11] = np.nan  # NaN lands in the open top bin, as np.searchsorted puts it
        window.add(batch)
        seen.extend(batch)
        last = np.array(seen[-250:])
        assert len(window) == len(last)
        assert window.score() == pytest.approx(psi(histogram(last, reference.inner_edges), np.array(reference.proportions)))


class RecordingGauge:
    def __init__(self):
        self.values: list[float] = []

    def set(self, value: float) -> None:
        self.values.append(value)


def test_the_gauge_is_set_when_enough_rows_are_new_or_after_a_quiet_second():
    now = [0.0]
    window = DriftWindow(DriftReference.from_training(TRAIN[:, 1]), size=1000, clock=lambda: now[0])
    gauge = RecordingGauge()
    window.add(TRAIN[:99, 1])
    assert not window.publish_if_due(gauge)  # under min_rows: PSI of a handful of rows is noise
    window.add(TRAIN[99:100, 1])
    assert window.publish_if_due(gauge) and gauge.values == [window.score()]
    for start in range(100, 119):  # 19 single rows within the second: under 2 % of the window
        window.add(TRAIN[start:start + 1, 1])
        assert not window.publish_if_due(gauge)
    window.add(TRAIN[119:120, 1])  # the 20th new row
    assert window.publish_if_due(gauge) and gauge.values[-1] == window.score()
    window.add(TRAIN[120:121, 1])
    assert not window.publish_if_due(gauge)
    now[0] = 1.0  # a quiet server: one row a second is published as it comes
    assert window.publish_if_due(gauge) and len(gauge.values) == 3 and gauge.values[-1] == window.score()
    now[0] = 5.0
    assert not window.publish_if_due(gauge)  # nothing new since: nothing to set

def test_summary_statistics_and_interval():
    members = np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    stats = summarise(members, interval_level=0.9)
    np.testing.assert_allclose(stats["mean"], [0.2, 0.5])
    np.testing.assert_allclose(stats["std"], [0.1, 0.0])
    np.testing.assert_allclose(stats["interval"][0], [0.2 - 1.6448536 * 0.1, 0.2 + 1.6448536 * 0.1], rtol=1e-6)
    np.testing.assert_allclose(stats["interval"][1], [0.5, 0.5])
    assert (summarise(np.array([[0.0, 0.0, 0.9]]), 0.99)["interval"] >= 0).all()


def test_decisions_follow_the_thresholds():
    policy = DecisionPolicy(approve_below=0.1, decline_at=0.5, review_above_uncertainty=0.05)
    decisions = policy.decide(np.array([0.05, 0.05, 0.3, 0.6]), np.array([0.01, 0.2, 0.01, 0.3]))
    assert decisions.tolist() == ["approve", "review", "review", "decline"]


def test_aggregate_outputs_and_metrics():
    registry = InMemoryRegistry()
    names = [f"MEMBER_{i}" for i in range(3)]
    handler = EnsembleAggregate(names, DecisionPolicy(), 0.9, registry)
    request = {name: np.array([[0.02], [0.9]], dtype=np.float32) for name in names}
    (out,) = handler.execute_batch([request])
    np.testing.assert_allclose(out["DEFAULT_PROBABILITY"], [[0.02], [0.9]], rtol=1e-6)
    np.testing.assert_allclose(out["CLASS_PROBABILITIES"], [[0.98, 0.02], [0.1, 0.9]], rtol=1e-6)
    assert [d.decode() for d in out["DECISION"][:, 0]] == ["approve", "decline"]
    assert registry.value("credit_decisions_total", decision="approve") == 1
    assert registry.value("credit_decisions_total", decision="decline") == 1
    bad = {name: np.array([[1.5]], dtype=np.float32) for name in names}
    (refused,) = handler.execute_batch([bad])
    assert isinstance(refused, InputError) and refused.input_name == "MEMBER_0"
    not_a_number = {**request, "MEMBER_2": np.array([[0.5], [np.nan]], dtype=np.float32)}
    (refused,) = handler.execute_batch([not_a_number])
    assert isinstance(refused, InputError) and refused.input_name == "MEMBER_2"
    (out,) = handler.execute_batch([{name: np.array([[0.02], [0.03], [0.9]], dtype=np.float32) for name in names}])
    assert registry.value("credit_decisions_total", decision="approve") == 3  # two more in one batch


def tiny_members_onnx(path, members: int = 3) -> None:
    """FEATURES [n, 3] -> MEMBER_i [n, 1] = sigmoid(FEATURES @ w_i): the fused members' interface."""
    import onnx
    from onnx import TensorProto, helper

    weights = [RNG.normal(size=(3, 1)).astype(np.float32) for _ in range(members)]
    nodes, initializers, outputs = [], [], []
    for index, weight in enumerate(weights):
        initializers.append(helper.make_tensor(f"w{index}", TensorProto.FLOAT, weight.shape, weight.ravel()))
        nodes += [helper.make_node("MatMul", ["FEATURES", f"w{index}"], [f"logit{index}"]),
                  helper.make_node("Sigmoid", [f"logit{index}"], [f"MEMBER_{index}"])]
        outputs.append(helper.make_tensor_value_info(f"MEMBER_{index}", TensorProto.FLOAT, ["n", 1]))
    graph = helper.make_graph(nodes, "members", [helper.make_tensor_value_info("FEATURES", TensorProto.FLOAT, ["n", 3])],
                              outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_onehop_model_chains_the_three_steps_and_answers_a_refused_request_alone(tmp_path):
    from modelrepo.python_backends.context import ModelContext
    from modelrepo.python_backends.credit_onehop import MEMBERS_FILENAME, CreditOneHop
    from modelrepo.python_backends.onnx_runner import OnnxRunner

    FeatureSpec.fit(TRAIN).save(tmp_path / "features.json")
    tiny_members_onnx(tmp_path / MEMBERS_FILENAME)
    parameters = {"decline_at": "0.6", "interval_level": "0.8", "drift_window": "200"}
    registry = InMemoryRegistry()
    context = ModelContext("credit_default_onehop", tmp_path, {"parameters": {k: {"string_value": v} for k, v in parameters.items()}},
                           metrics=registry)
    onehop = CreditOneHop.from_context(context)
    requests = [credit_request(("Yes", "No"), (1500.0, 100.0), (20000.0, 60000.0)), credit_request(("maybe",)),
                credit_request(("No",), (2500.0,), (10000.0,))]
    answers = onehop.execute_batch(requests)

    assert isinstance(answers[1], InputError) and answers[1].input_name == "STUDENT"
    assert registry.value("credit_rejected_inputs_total", field="STUDENT", reason="unknown_category") == 1
    # the same steps, one after the other, as the fused ensemble runs them
    steps = CreditFeatures(FeatureSpec.load(tmp_path / "features.json"))
    runner = OnnxRunner(tmp_path / MEMBERS_FILENAME)
    aggregate = EnsembleAggregate(runner.output_names, DecisionPolicy(decline_at=0.6), interval_level=0.8)
    for index in (0, 2):
        (expected,) = aggregate.execute_batch(runner.execute_batch(steps.execute_batch([requests[index]])))
        assert expected.keys() == answers[index].keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(answers[index][name], value, err_msg=name)
    assert answers[0]["DEFAULT_PROBABILITY"].shape == (2, 1) and answers[0]["INTERVAL"].shape == (2, 2)


def test_every_model_taking_the_credit_inputs_has_perf_analyzer_data_that_passes_validation(tmp_path):
    """`modelrepo tune credit_default_onehop` (and `bench NAME`, the studies) feed the build's sample:
    perf_analyzer's random strings would be refused by STUDENT's rule."""
    from modelrepo.build.credit import PUBLIC_INPUT_MODELS, SAMPLE_ROWS
    from modelrepo.paths import MODEL_REPOSITORY
    from modelrepo.perf.tune_command import default_input_data
    from modelrepo.python_backends.credit_features import INPUT_NAMES, validate_credit_inputs
    from modelrepo.triton.model_config import read_config
    from tests.conftest import require_built_repository

    require_built_repository()
    taking = {path.parent.name for path in MODEL_REPOSITORY.glob("*/config.pbtxt")
              if {tensor.name for tensor in read_config(path.parent).input} == set(INPUT_NAMES)}
    assert taking == set(PUBLIC_INPUT_MODELS)
    for model in PUBLIC_INPUT_MODELS:
        requests = json.loads(Path(default_input_data(MODEL_REPOSITORY, model, tmp_path)).read_text())["data"]
        assert len(requests) == SAMPLE_ROWS
        for request in requests:
            tensors = {name: np.array(request[name]["content"], dtype=object if name == "STUDENT" else np.float32)
                       for name in INPUT_NAMES}
            assert validate_credit_inputs(tensors).shape == (1, 3)


def test_the_inner_steps_have_perf_analyzer_data_from_the_same_rows_that_passes_their_rules(tmp_path):
    """`modelrepo tune credit_aggregate` (or a member) feeds hold-out rows as the step receives them, not
    perf_analyzer's random numbers: the aggregate takes probabilities in [0, 1] only."""
    from modelrepo.build.credit import MEMBER_INPUT, MEMBERS, SAMPLE_ROWS, member_name
    from modelrepo.paths import MODEL_REPOSITORY
    from modelrepo.perf.tune_command import default_input_data
    from modelrepo.python_backends.ensemble_stats import DecisionPolicy, EnsembleAggregate
    from modelrepo.triton.model_config import read_config
    from tests.conftest import require_built_repository

    require_built_repository()

    def requests(model: str) -> list[dict]:
        document = json.loads(Path(default_input_data(MODEL_REPOSITORY, model, tmp_path)).read_text())["data"]
        assert len(document) == SAMPLE_ROWS
        assert set(document[0]) == {tensor.name for tensor in read_config(MODEL_REPOSITORY / model).input}
        return [{name: np.array(tensor["content"], np.float32).reshape(tensor["shape"]) for name, tensor in request.items()}
                for request in document]

    features = [request[MEMBER_INPUT] for request in requests("credit_members_fused")]
    assert all(feature.shape == (3,) for feature in features)
    for index in range(MEMBERS):
        assert all(np.array_equal(a[MEMBER_INPUT], b) for a, b in zip(requests(member_name(index)), features))
    aggregate = EnsembleAggregate([f"MEMBER_{index}" for index in range(MEMBERS)], DecisionPolicy())
    rows = [{name: values.reshape(1, -1) for name, values in request.items()} for request in requests("credit_aggregate")]
    answers = aggregate.execute_batch(rows)
    assert not [answer for answer in answers if isinstance(answer, Exception)]
    assert len({float(answer["DEFAULT_PROBABILITY"][0, 0]) for answer in answers}) > SAMPLE_ROWS // 2  # real rows, not one repeated
