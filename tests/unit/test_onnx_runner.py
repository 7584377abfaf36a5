"""The ONNX runner on a tiny real ONNX graph: sum of ids over the unmasked positions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.batching import RAGGED_RUN_COST_TOKENS
from modelrepo.python_backends.onnx_runner import OnnxRunner


@pytest.fixture(scope="module")
def masked_sum_model(tmp_path_factory):
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axes"], ["summed"], keepdims=0),
            helper.make_node("Cast", ["summed"], ["total"], to=TensorProto.FLOAT),
        ],
        "masked_sum",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(model, path)
    return path


def test_ragged_requests_run_as_one_batch_and_split_back(masked_sum_model):
    runner = OnnxRunner(masked_sum_model, ragged_inputs=("input_ids", "attention_mask"))
    first = {"input_ids": np.array([[1, 2]]), "attention_mask": np.array([[1, 1]])}
    second = {"input_ids": np.array([[5, 5, 5], [7, 0, 0]]), "attention_mask": np.array([[1, 1, 0], [1, 0, 0]])}
    out_first, out_second = runner.execute_batch([first, second])
    np.testing.assert_array_equal(out_first["total"], [3.0])
    np.testing.assert_array_equal(out_second["total"], [10.0, 7.0])


def test_missing_input_fails_only_that_request(masked_sum_model):
    runner = OnnxRunner(masked_sum_model, ragged_inputs=("input_ids", "attention_mask"))
    ok = {"input_ids": np.array([[4]]), "attention_mask": np.array([[1]])}
    good, bad = runner.execute_batch([ok, {"input_ids": np.array([[1]]), "attention_mask": None}])
    np.testing.assert_array_equal(good["total"], [4.0])
    assert isinstance(bad, InputError) and bad.input_name == "attention_mask"


def test_from_context_reads_threads_and_ragged_inputs_from_config_parameters(masked_sum_model):
    config = {
        "parameters": {
            "intra_op_threads": {"string_value": "2"},
            "ragged_inputs": {"string_value": "input_ids,attention_mask"},
        }
    }
    runner = OnnxRunner.from_context(ModelContext("m", masked_sum_model.parent, config))
    assert runner.ragged_inputs == ("input_ids", "attention_mask")
    assert runner.session.get_session_options().intra_op_num_threads == 2


def test_a_batch_of_short_requests_and_a_long_one_runs_in_two_sessions_with_the_same_answers(masked_sum_model):
    runner = OnnxRunner(masked_sum_model, ragged_inputs=("input_ids", "attention_mask"))
    short = [{"input_ids": np.array([[i, 1]]), "attention_mask": np.array([[1, 1]])} for i in range(4)]
    long = {"input_ids": np.arange(100)[None, :], "attention_mask": np.ones((1, 100), dtype=np.int64)}
    requests = [short[0], long, *short[1:]]
    runs = []
    run = runner.run
    runner.run = lambda joined: runs.append(joined["input_ids"].shape) or run(joined)
    answers = runner.execute_batch(requests)
    assert runs == [(4, 2), (1, 100)]  # not (5, 100): the queries are not padded to the review's length
    assert [a["total"].tolist() for a in answers] == [[1.0], [4950.0], [2.0], [3.0], [4.0]]
    runs.clear()
    runner.ragged_run_cost_tokens = 1_000_000
    assert [a["total"].tolist() for a in runner.execute_batch(requests)] == [[1.0], [4950.0], [2.0], [3.0], [4.0]]
    assert runs == [(5, 100)]


def test_the_ragged_run_cost_comes_from_the_config_and_is_checked(masked_sum_model):
    def runner(**parameters):
        config = {"parameters": {key: {"string_value": value} for key, value in parameters.items()}}
        return OnnxRunner.from_context(ModelContext("m", masked_sum_model.parent, config))

    assert runner().ragged_run_cost_tokens == RAGGED_RUN_COST_TOKENS
    assert runner(ragged_run_cost_tokens="25").ragged_run_cost_tokens == 25.0
    with pytest.raises(ValueError, match="ragged_run_cost_tokens '-3' must be a number of tokens ≥ 0"):
        runner(ragged_run_cost_tokens="-3")
