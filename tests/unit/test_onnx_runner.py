"""The ONNX runner on a tiny real ONNX graph: sum of ids over the unmasked positions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
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
