"""INT8 calibration, QDQ quantization and the sensitivity/budget search on a small known graph.

The graph: X[N,8] -> MatMul "first" -> Mul by [500, 1, 1, ...] -> MatMul "second" -> Y. Channel 0 of
the second MatMul's input is 500x larger than the rest but barely reaches Y, so one int8 scale for
that input crushes the channels that matter: "second" is the sensitive node, "first" is harmless.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelrepo.build import quantize
from modelrepo.build.minilm_int8 import AccuracyBudget, embedding_agreement

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("quant")
    w1 = RNG.normal(size=(8, 16)).astype(np.float32)
    outlier = np.ones(16, dtype=np.float32)
    outlier[0] = 500.0
    w2 = RNG.normal(size=(16, 4)).astype(np.float32)
    w2[0, :] = 1e-4
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["H"], name="first"),
        helper.make_node("Mul", ["H", "outlier"], ["R"], name="outlier_channel"),
        helper.make_node("MatMul", ["R", "W2"], ["Y"], name="second"),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "two_matmuls",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
            [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (w2, "W2"), (outlier, "outlier"))],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = folder / "fp32.onnx"
    onnx.save(model, str(path))
    batches = [{"X": RNG.normal(size=(32, 8)).astype(np.float32)} for _ in range(4)]
    return path, batches, folder


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]


class CosineToFp32:
    """Mean cosine of a candidate's outputs to the FP32 graph's on `x`; picklable, for worker processes."""

    def __init__(self, fp32_path, x):
        self.x, self.reference = x, run(fp32_path, x)

    def __call__(self, candidate) -> float:
        return embedding_agreement(self.reference, run(candidate, self.x))["mean_cosine"]


@pytest.mark.parametrize("method", quantize.METHODS)
def test_each_method_calibrates_and_writes_a_symmetric_per_channel_qdq_graph(graph, method):
    path, batches, folder = graph
    cache = quantize.calibrate(path, batches, method, folder / f"{method}.json")
    out = quantize.quantize(path, cache, method, folder / f"{method}.onnx")
    model = onnx.load(str(out))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [v for k, v in initializers.items() if "zero_point" in k]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric int8
    weight_scales = [v for k, v in initializers.items() if k.startswith(("W1", "W2")) and "scale" in k]
    assert sorted(s.size for s in weight_scales) == [4, 16]  # one scale per output channel
    assert quantize.qdq_summary(out)["int8_weight_tensors"] == 2
    x = batches[0]["X"]
    assert run(out, x).shape == run(path, x).shape


def test_entropy_and_percentile_clip_ranges_that_max_keeps(graph):
    path, batches, folder = graph
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = {m: load_tensors_data(quantize.calibrate(path, batches, m, folder / f"r-{m}.json")) for m in quantize.METHODS}
    high = {m: float(np.max(np.abs(ranges[m].data["R"].range_value))) for m in quantize.METHODS}
    assert high["percentile"] < high["max"] and high["entropy"] <= high["max"]


def test_sensitivity_ranks_the_outlier_node_first_and_the_budget_keeps_only_it(graph):
    path, batches, folder = graph
    cache = quantize.calibrate(path, batches, "max", folder / "budget.json")
    score = CosineToFp32(path, RNG.normal(size=(256, 8)).astype(np.float32))
    search = quantize.BudgetSearch(path, cache, "max", score, folder / "trials")
    assert search.score_kept(0) < 0.99  # every node int8 misses the budget
    kept = search.fewest_kept(0.99)
    assert search.ranking[:kept] == ["second"], (search.trials, search.single_node)
    assert search.single_node["second"] < search.single_node["first"]
    final = search.write(kept, folder / "final.onnx")
    assert score(final) >= 0.99
    report = search.report(kept)
    assert report["nodes_kept_fp32"] == ["second"] and report["nodes_int8"] == 1
    assert {"kept_fp32": 0, "score": search.trials[0]} in report["budget_search"]
    search.close()
    assert not (folder / "trials").exists()


def test_sensitivity_in_worker_processes_scores_as_in_one(graph):
    path, batches, folder = graph
    cache = quantize.calibrate(path, batches, "max", folder / "workers.json")
    score = CosineToFp32(path, RNG.normal(size=(64, 8)).astype(np.float32))
    scratch = folder / "sensitivity"
    scratch.mkdir()
    in_one = quantize.sensitivity(path, cache, "max", ["second", "first"], score, scratch)
    in_two = quantize.sensitivity(path, cache, "max", ["second", "first"], score, scratch, workers=2)
    assert in_two == in_one and list(in_two) == ["second", "first"]
    assert in_one["second"] < in_one["first"]
    assert not any(scratch.iterdir())  # each trial's model is removed once scored


def test_a_met_budget_needs_no_sensitivity_run(graph):
    path, batches, folder = graph
    cache = quantize.calibrate(path, batches, "max", folder / "loose.json")
    search = quantize.BudgetSearch(path, cache, "max", CosineToFp32(path, batches[0]["X"]), folder / "loose")
    assert search.fewest_kept(0.0) == 0 and search.single_node == {}


def test_accuracy_budget_parsing():
    assert AccuracyBudget.parse("cosine=0.995") == AccuracyBudget(0.995, 0.01)
    assert AccuracyBudget.parse("accuracy_drop=0.02,cosine=0.98") == AccuracyBudget(0.98, 0.02)
    for bad in ("cos=0.9", "cosine", "cosine=2", "accuracy_drop=-1"):
        with pytest.raises(ValueError, match="accuracy-budget"):
            AccuracyBudget.parse(bad)


def test_embedding_agreement_counts_neighbours_and_cosines():
    reference = np.eye(4, dtype=np.float32) + 0.1
    same = embedding_agreement(reference, reference * 3)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["nn_agreement_at_1"] == 1.0
    shuffled = embedding_agreement(reference, reference[[1, 0, 3, 2]])
    assert shuffled["min_cosine"] < 0.9


@pytest.mark.parametrize("method", quantize.METHODS)
def test_calibration_accepts_batches_of_different_sequence_lengths(tmp_path, method):
    """Token batches differ in length; every method must take them (percentile once did not)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"], name="only")],
        "ragged",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", "sequence", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", "sequence", 2])],
        [numpy_helper.from_array(RNG.normal(size=(4, 2)).astype(np.float32), "W")],
    )
    path = tmp_path / "ragged.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    batches = [{"X": RNG.normal(size=(2, length, 4)).astype(np.float32)} for length in (3, 7, 5)]
    cache = quantize.calibrate(path, batches, method, tmp_path / "cache.json")
    assert quantize.qdq_summary(quantize.quantize(path, cache, method, tmp_path / "q.onnx"))["int8_weight_tensors"] == 1


def test_histograms_collected_on_every_core_equal_onnxruntimes_own(graph, tmp_path, monkeypatch):
    """Percentile: the default, and the method whose later batches onnxruntime counts by sorting.

    Later batches hold larger values than the first, so onnxruntime also extends the bins. (Entropy
    shares the mechanism; its threshold search takes ~8 s per run here, so it is left to the other tests.)
    """
    method = "percentile"
    path, _, _ = graph
    batches = [{"X": (scale * RNG.normal(size=(64, 8))).astype(np.float32)} for scale in (1, 1.1, 1.05, 1.2)]
    parallel = quantize.calibrate(path, batches, method, tmp_path / "parallel.json")
    from onnxruntime.quantization.calibrate import HistogramCollector

    def onnxruntimes_own(calibrator):
        return HistogramCollector(calibrator.method, calibrator.symmetric, calibrator.num_bins,
                                  calibrator.num_quantized_bins, calibrator.percentile, calibrator.scenario)

    monkeypatch.setattr(quantize, "_parallel_histogram_collector", onnxruntimes_own)
    serial = quantize.calibrate(path, batches, method, tmp_path / "serial.json")
    ranges = [json.loads(cache.read_text())["data"] for cache in (parallel, serial)]
    assert ranges[0] == ranges[1]
    assert {"X", "R"} <= set(ranges[0])  # the two MatMuls' activation inputs


def test_count_into_edges_equals_numpys_histogram():
    first = np.histogram(np.abs(RNG.normal(size=5000)).astype(np.float32), bins=2048)[1].astype(np.float32)
    width = first[1] - first[0]
    extended = np.hstack((first, np.arange(first[-1] + width, 9 + width, width))).astype(np.float32)
    values = np.abs(RNG.normal(scale=2, size=200_000)).astype(np.float32)
    on_edges = extended[RNG.integers(0, len(extended), 500)]  # exactly on an edge, the last one included
    values = np.concatenate([values, on_edges, [np.nan, -1.0, 50.0, extended[-1], extended[0]]]).astype(np.float32)
    for edges in (first, extended, np.array([0.0, 0.5, 3.0, 3.1, 20.0], dtype=np.float32)):  # last: far from uniform
        expected = np.histogram(values, bins=edges)[0]
        np.testing.assert_array_equal(quantize.count_into_edges(values, edges), expected)
