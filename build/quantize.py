"""INT8 post-training quantization to a QDQ ONNX graph, kept inside an accuracy budget.

The path TensorRT supports from 10.1 on (implicit calibrators are deprecated, gone in 11): explicit
QuantizeLinear/DequantizeLinear pairs — symmetric int8 activations, per-channel symmetric int8
weights — that a strongly typed TensorRT network, onnxruntime and the CPU runner all execute as is.

Steps, each usable alone:
1. `calibrate`: collect activation ranges once per method (max, entropy, percentile) with
   onnxruntime's calibrators, saved as a calibration cache. Entropy is run with 2048 histogram bins
   itself: onnxruntime's quantize_static default (128) makes it collapse to max.
2. `quantize`: a QDQ model from the cache, with any nodes kept out (left in FP32).
3. `sensitivity`: quantize one node at a time and score each model: which nodes hurt most.
4. `BudgetSearch`: keep the most sensitive nodes in FP32, fewest first, until the score meets the
   budget (a binary search over "how many of the worst"); the caller verifies on held-out data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx

METHODS = ("max", "entropy", "percentile")
DEFAULT_METHOD = "percentile"
QUANTIZED_OP_TYPES = ("MatMul",)
ENTROPY_BINS = 2048
PERCENTILE = 99.999

Batch = dict[str, np.ndarray]
Scorer = Callable[[Path], float]  # model path -> score, higher is better (e.g. mean cosine vs FP32)


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    try:
        return {
            "max": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method]
    except KeyError:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}") from None


def _quiet_onnxruntime_quantization() -> None:
    # It logs a pre-processing hint per call; we pre-process once in `preprocess`.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))


def preprocess(source: Path, destination: Path) -> Path:
    """onnxruntime's quantization pre-processing (graph optimisation + shape inference).

    Symbolic shape inference is skipped: it cannot finish on graphs with dynamic batch and sequence
    axes through attention reshapes, and ONNX shape inference is enough for MatMul quantization.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(destination), skip_symbolic_shape=True)
    return destination


def quantizable_nodes(model_path: Path, op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> list[str]:
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in op_types]


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of input batches."""

    def __init__(self, batches: Sequence[Batch]):
        self._iterator = iter(batches)

    def get_next(self) -> Batch | None:
        return next(self._iterator, None)


def calibrate(
    model_path: Path,
    batches: Sequence[Batch],
    method: str,
    cache_path: Path,
    op_types: Sequence[str] = QUANTIZED_OP_TYPES,
) -> Path:
    """Activation ranges of the tensors feeding `op_types`, written as onnxruntime's calibration cache."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater, create_calibrator, save_tensors_data

    options = {"symmetric": True}
    if method == "entropy":
        options.update(num_bins=ENTROPY_BINS, num_quantized_bins=128)
    if method == "percentile":
        options.update(num_bins=ENTROPY_BINS, percentile=PERCENTILE)
    with tempfile.TemporaryDirectory(prefix="modelrepo-calib-") as scratch:
        calibrator = create_calibrator(
            Path(model_path),
            list(op_types),
            augmented_model_path=str(Path(scratch) / "augmented.onnx"),
            calibrate_method=_ort_method(method),
            extra_options=options,
        )
        if isinstance(calibrator, HistogramCalibrater):  # entropy / percentile: histograms on every core
            calibrator.collector = _parallel_histogram_collector(calibrator)
        # One batch per call: the calibrators stack a call's outputs into one array, which fails for
        # batches of different sequence lengths (percentile); ranges/histograms accumulate across calls.
        for batch in batches:
            calibrator.collect_data(_Batches([batch]))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache_path)
    return cache_path


def _parallel_histogram_collector(calibrator):
    """onnxruntime's HistogramCollector, on several tensors at once and without sorting: the same histograms.

    onnxruntime 1.32 counts every batch after the first with np.histogram over the bin edges it has,
    which sorts every activation (200 of the 514 s the INT8 encoder build took on 2 cores, one of them
    idle). Here each tensor is its own task (numpy releases the GIL), and a later batch of the
    percentile method is counted into those same edges by `count_into_edges`, exactly.
    """
    from onnxruntime.quantization.calibrate import HistogramCollector

    class ParallelHistogramCollector(HistogramCollector):
        def collect_absolute_value(self, name_to_arr):
            self._each_tensor(self._absolute_value_of_one, name_to_arr)

        def collect_value(self, name_to_arr):
            self._each_tensor(self._value_of_one, name_to_arr)

        def _value_of_one(self, tensor, values):  # entropy: onnxruntime's uniform-range bins, unchanged
            super().collect_value({tensor: values})

        def _absolute_value_of_one(self, tensor, values):
            if tensor not in self.histogram_dict:  # first batch: onnxruntime's uniform bins (no sort)
                super().collect_absolute_value({tensor: values})
                return
            # A later batch, as onnxruntime merges it: extend the edges by whole bins up to the new
            # maximum, count into them, add the old counts; the range kept is of the raw values.
            old_counts, edges, old_min, old_max = self.histogram_dict[tensor]
            flat = np.asarray(values).ravel()
            magnitudes = np.absolute(flat)
            top = np.nanmax(magnitudes)
            if top > edges[-1]:
                width = edges[1] - edges[0]
                edges = np.hstack((edges, np.arange(edges[-1] + width, top + width, width)))
            counts = count_into_edges(magnitudes, edges)
            counts[: len(old_counts)] += old_counts
            self.histogram_dict[tensor] = (counts, edges.astype(magnitudes.dtype),
                                           min(old_min, np.nanmin(flat)), max(old_max, np.nanmax(flat)))

        @staticmethod
        def _each_tensor(collect_one, name_to_arr):
            # Each task reads and writes only its own tensor's entry of histogram_dict.
            with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
                list(pool.map(lambda item: collect_one(*item), name_to_arr.items()))

    return ParallelHistogramCollector(
        method=calibrator.method,
        symmetric=calibrator.symmetric,
        num_bins=calibrator.num_bins,
        num_quantized_bins=calibrator.num_quantized_bins,
        percentile=calibrator.percentile,
        scenario=calibrator.scenario,
    )


def count_into_edges(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(values, bins=edges)[0]`, exactly, in linear time for near-uniform edges.

    Bin i holds edges[i] <= v < edges[i+1], the last bin also v == edges[-1]; values outside the edges
    and NaN are not counted. Each value's bin is computed as if the edges were uniform, then moved
    until the comparisons with the real edges hold; np.histogram itself (it sorts) is the fallback.
    """
    values = np.asarray(values).ravel()
    last = len(edges) - 1
    inside = (values >= edges[0]) & (values <= edges[-1])  # NaN compares false
    values = values[inside]
    index = np.clip(((values - edges[0]) * (last / (edges[-1] - edges[0]))).astype(np.intp), 0, last - 1)
    for _ in range(4):
        below = values < edges[index]
        above = (values >= edges[index + 1]) & (index < last - 1)
        if not (below.any() or above.any()):
            return np.bincount(index, minlength=last)
        index += above.astype(np.intp) - below
    return np.histogram(values, bins=edges)[0]


def quantize(
    model_path: Path,
    cache_path: Path,
    method: str,
    output_path: Path,
    keep_fp32: Iterable[str] = (),
    only: Sequence[str] | None = None,
    op_types: Sequence[str] = QUANTIZED_OP_TYPES,
) -> Path:
    """QDQ model: symmetric int8 activations (scale from the cache), per-channel symmetric int8 weights."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    _quiet_onnxruntime_quantization()
    quantize_static(
        str(model_path),
        str(output_path),
        None,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types),
        nodes_to_quantize=list(only) if only else None,
        nodes_to_exclude=list(keep_fp32),
        calibrate_method=_ort_method(method),
        calibration_cache_path=str(cache_path),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return output_path


def sensitivity(
    model_path: Path,
    cache_path: Path,
    method: str,
    nodes: Sequence[str],
    score: Scorer,
    scratch: Path,
    progress: bool = False,
    workers: int = 1,
) -> dict[str, float]:
    """Score with exactly one node quantized, for every node: the lower, the more that node hurts.

    Each trial is independent, so with `workers` > 1 they run in that many processes (the score
    must then be picklable); onnxruntime's quantizer is single-threaded Python, the larger part.
    """
    trials = [(model_path, cache_path, method, node, score, scratch / f"single-node-{index}.onnx")
              for index, node in enumerate(nodes)]
    with _trial_map(workers) as mapping:
        results: Iterable[float] = mapping(_single_node_score, trials)
        if progress:
            from rich.progress import track

            results = track(results, total=len(nodes), description=f"sensitivity of {len(nodes)} nodes")
        return dict(zip(nodes, results))


def _single_node_score(trial: tuple) -> float:
    model_path, cache_path, method, node, score, output_path = trial
    # quantize_static writes its shape-inferred copy beside its input, named after it: a link of the
    # trial's own keeps concurrent trials from sharing (and deleting) one such file.
    own_input = output_path.with_name(f"{output_path.stem}-input.onnx")
    own_input.symlink_to(Path(model_path).resolve())
    try:
        return score(quantize(own_input, cache_path, method, output_path, only=[node]))
    finally:
        own_input.unlink()
        output_path.unlink(missing_ok=True)


@contextlib.contextmanager
def _trial_map(workers: int):
    """`map` in order: the built-in one, or a pool of spawned processes (no fork of a threaded parent)."""
    if workers <= 1:
        yield map
        return
    import multiprocessing

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool.map


class BudgetSearch:
    """Find the fewest nodes to keep in FP32 for a score threshold; every trial is measured and kept.

    Nodes are ranked by single-node sensitivity (computed once, only if quantizing every node misses
    the threshold); "keep the k worst in FP32" is bisected on k. Bisection assumes keeping more nodes
    in FP32 does not lower the score much; the chosen k's score is a measurement, not that assumption.
    """

    def __init__(self, model_path: Path, cache_path: Path, method: str, score: Scorer, scratch: Path, progress=False,
                 workers: int = 1):
        self.model_path, self.cache_path, self.method = model_path, cache_path, method
        self.score, self.scratch, self.progress, self.workers = score, scratch, progress, workers
        scratch.mkdir(parents=True, exist_ok=True)
        self.nodes = quantizable_nodes(model_path)
        self.ranking = list(self.nodes)
        self.single_node: dict[str, float] = {}
        self.trials: dict[int, float] = {}  # kept-in-FP32 count -> score

    def write(self, kept: int, output_path: Path) -> Path:
        return quantize(self.model_path, self.cache_path, self.method, output_path, keep_fp32=self.ranking[:kept])

    def score_kept(self, kept: int) -> float:
        if kept not in self.trials:
            self.trials[kept] = self.score(self.write(kept, self.scratch / "trial.onnx"))
        return self.trials[kept]

    def rank(self) -> None:
        if not self.single_node:
            self.single_node = sensitivity(
                self.model_path, self.cache_path, self.method, self.nodes, self.score, self.scratch, self.progress,
                self.workers,
            )
            self.ranking = sorted(self.nodes, key=lambda node: self.single_node[node])
            self.trials = {0: self.trials[0]} if 0 in self.trials else {}

    def fewest_kept(self, threshold: float, at_least: int = 0) -> int:
        """Smallest k ≥ at_least with score_kept(k) ≥ threshold (k = all nodes means plain FP32)."""
        if at_least == 0 and self.score_kept(0) >= threshold:
            return 0
        self.rank()
        low, high = max(at_least, 1) - 1, len(self.nodes)  # score_kept(high) meets it: nothing is quantized
        while high - low > 1:
            middle = (low + high) // 2
            if self.score_kept(middle) >= threshold:
                high = middle
            else:
                low = middle
        return high

    def close(self) -> None:
        for stale in self.scratch.iterdir():
            stale.unlink()
        self.scratch.rmdir()

    def report(self, kept: int) -> dict:
        return {
            "calibration": self.method,
            "score_every_node_int8": self.trials.get(0),
            "nodes_total": len(self.nodes),
            "nodes_int8": len(self.nodes) - kept,
            "nodes_kept_fp32": self.ranking[:kept],
            "budget_search": [{"kept_fp32": k, "score": s} for k, s in sorted(self.trials.items())],
            "sensitivity_only_this_node_int8": self.single_node,
        }


def qdq_summary(model_path: Path) -> dict:
    """What the QDQ graph holds: counts of Q/DQ nodes and of int8 initializers (the stored weights)."""
    model = onnx.load(str(model_path))
    ops = [node.op_type for node in model.graph.node]
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    return {
        "quantize_linear_nodes": ops.count("QuantizeLinear"),
        "dequantize_linear_nodes": ops.count("DequantizeLinear"),
        "int8_weight_tensors": len(int8_weights),
        "file_bytes": Path(model_path).stat().st_size,
    }
