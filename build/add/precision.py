"""`add --precision int8`: the QDQ machinery minilm_encoder uses (build/quantize.py) on the user's data.

Activation ranges come from `--calibration-data` (rows like the sample, or texts for a text model);
the nodes kept in FP32 are searched so the INT8 graph's answers on the sample stay within
`--accuracy-budget` of the FP32 graph's: mean cosine per row (`cosine=`) and, for a classifier, the
share of sample rows whose top class changes (`accuracy_drop=`). The sample is then the held-out
check: a miss refuses the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelrepo.build import quantize
from modelrepo.build.add.recipes import AddError, AddRequest, Export
from modelrepo.build.add.samples import read_arrays, read_texts
from modelrepo.build.minilm_int8 import CALIBRATION_BATCH, SEARCH_MARGIN, AccuracyBudget
from modelrepo.python_backends.onnx_runner import OnnxRunner
from modelrepo.python_backends.text_tokenizer import TextTokenizer, pack_encodings

DEFAULT_BUDGET = "cosine=0.99,accuracy_drop=0.01"


def calibration_batches(request: AddRequest, export: Export, inputs: list[str]) -> list[dict[str, np.ndarray]]:
    path = Path(request.calibration_data)
    if export.text is not None:
        tokenizer = TextTokenizer(export.text.tokenizer_dir / "tokenizer.json", max_tokens=export.text.max_tokens)
        texts = read_texts(path)
        return [pack_encodings(tokenizer.tokenizer.encode_batch(texts[start:start + CALIBRATION_BATCH]))
                for start in range(0, len(texts), CALIBRATION_BATCH)]
    rows = read_arrays(path, inputs[0] if len(inputs) == 1 else "")
    if sorted(rows) != sorted(inputs):
        raise AddError(f"the calibration data {path.name} does not fit the graph: it has {sorted(rows)}, the graph takes {inputs}")
    count = len(next(iter(rows.values())))
    return [{name: value[start:start + CALIBRATION_BATCH] for name, value in rows.items()}
            for start in range(0, count, CALIBRATION_BATCH)]


def agreement(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict:
    """Mean cosine per row over every output (flattened) and the share of rows whose top class changes."""
    ours = np.concatenate([candidate[name].reshape(len(candidate[name]), -1) for name in reference], axis=1).astype(np.float64)
    theirs = np.concatenate([value.reshape(len(value), -1) for value in reference.values()], axis=1).astype(np.float64)
    norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    cosine = np.where(norms > 0, (ours * theirs).sum(axis=1) / np.maximum(norms, 1e-30), 0.0)
    return {"mean_cosine": float(cosine.mean()), "top_class_changed": float((ours.argmax(axis=1) != theirs.argmax(axis=1)).mean())}


def int8_graph(request: AddRequest, export: Export, sample: dict[str, np.ndarray], work: Path) -> dict:
    """Replace export.graph by its INT8 QDQ graph within the budget; the report of how it was made."""
    try:
        budget = AccuracyBudget.parse(request.accuracy_budget or DEFAULT_BUDGET)
    except ValueError as err:
        raise AddError(str(err)) from None
    classifier = export.task == "classification"
    fp32 = export.graph
    reference = OnnxRunner(fp32, ragged_inputs=export.ragged_inputs).run(sample)
    prepared = quantize.preprocess(fp32, work / "fp32-preprocessed.onnx")
    if not quantize.quantizable_nodes(prepared):
        raise AddError(f"{Path(request.source).name} has no {'/'.join(quantize.QUANTIZED_OP_TYPES)} node to quantize: add it as fp32")
    cache = quantize.calibrate(prepared, calibration_batches(request, export, list(sample)), quantize.DEFAULT_METHOD,
                               work / "calibration.json")

    def measure(model: Path) -> dict:
        return agreement(reference, OnnxRunner(model, ragged_inputs=export.ragged_inputs).run(sample))

    search = quantize.BudgetSearch(prepared, cache, quantize.DEFAULT_METHOD, lambda model: measure(model)["mean_cosine"],
                                   work / "int8-trials")
    threshold = budget.min_mean_cosine + SEARCH_MARGIN * (1 - budget.min_mean_cosine)
    kept = search.fewest_kept(threshold)
    output = search.write(kept, work / "model-int8.onnx")
    verified = measure(output)
    search.close()
    missed = [f"mean cosine {verified['mean_cosine']:.4f} < {budget.min_mean_cosine}"] if verified["mean_cosine"] < budget.min_mean_cosine else []
    if classifier and verified["top_class_changed"] > budget.max_accuracy_drop:
        missed.append(f"top class changed on {verified['top_class_changed']:.2%} of the sample > {budget.max_accuracy_drop:.2%}")
    if missed:
        raise AddError(f"the INT8 graph misses the accuracy budget on the sample against FP32: {'; '.join(missed)}")
    export.graph = output
    summary = search.report(kept)
    return {
        "precision": "int8", "calibration": quantize.DEFAULT_METHOD, "calibration_data": str(Path(request.calibration_data).resolve()),
        "budget_min_mean_cosine": budget.min_mean_cosine, "budget_max_accuracy_drop": budget.max_accuracy_drop,
        "int8_vs_fp32_mean_cosine": verified["mean_cosine"], "int8_vs_fp32_top_class_changed": verified["top_class_changed"],
        "nodes_int8": summary["nodes_int8"], "nodes_total": summary["nodes_total"], "nodes_kept_fp32": summary["nodes_kept_fp32"],
        "fp32_graph_bytes": fp32.stat().st_size, **quantize.qdq_summary(output),
    }
