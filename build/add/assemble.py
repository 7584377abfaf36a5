"""From an exported graph to model folders: IO read from the graph, the sample run through the serving
code itself, parity against the source framework, latency, drift references, configs and files."""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelrepo.build.add import layout
from modelrepo.build.add.layout import TEXT, TensorSpec
from modelrepo.build.add.recipes import (
    MAX_PROBABILITY_DIFF,
    MAX_RELATIVE_DIFF,
    MIN_EMBEDDING_COSINE,
    AddError,
    AddRequest,
    Export,
)
from modelrepo.build.reports import write_report
from modelrepo.perf.tune_command import SAMPLE_INPUT_DATA
from modelrepo.python_backends.classifier_output import CONFIDENCE, SCORES, ClassifierOutput
from modelrepo.python_backends.drift import DriftReference
from modelrepo.python_backends.onnx_runner import MODEL_FILENAME, OnnxRunner
from modelrepo.python_backends.served_graph import DRIFT_FILENAME, TRITON_TO_NUMPY, ServedGraph, save_drift
from modelrepo.python_backends.text_tokenizer import DEFAULT_MAX_TEXT_BYTES, TextTokenizer

MAX_DRIFT_FEATURES = 32  # per-feature PSI for tabular inputs; wider inputs (images) are not monitored per column
LATENCY_REPEATS = 15
REPORT_NOTES = (
    "Parity: the sample through the serving code (validation, onnxruntime, post-processing) against the source "
    "framework. Latency: the graph model's serving code in process (no server, one thread), median / min / max of "
    f"{LATENCY_REPEATS} runs at batch 1 and at max_batch_size (sample rows repeated); `modelrepo tune NAME` measures it served."
)


@dataclass
class Plan:
    models: list[str]
    manifest: dict
    report: dict = field(default_factory=dict)


def rules_of(inputs: list[TensorSpec]) -> dict:
    return {spec.name: (np.dtype(TRITON_TO_NUMPY[spec.data_type]), list(spec.dims)) for spec in inputs}


def fit_sample(inputs: list[TensorSpec], sample: dict[str, np.ndarray], source: Path) -> dict[str, np.ndarray]:
    """The sample as the graph's dtypes; a refusal names what does not fit."""
    fitted = {}
    for spec in inputs:
        if spec.name not in sample:
            raise AddError(f"the sample does not fit {source.name}: it has no input {spec.name!r} (graph inputs: "
                           f"{[s.name for s in inputs]})")
        value = np.asarray(sample[spec.name])
        if value.ndim != len(spec.dims) + 1 or any(d not in (-1, s) for d, s in zip(spec.dims, value.shape[1:])):
            raise AddError(f"the sample does not fit {source.name}: input {spec.name!r} rows have shape "
                           f"{list(value.shape[1:])}, the graph takes {list(spec.dims)}")
        fitted[spec.name] = value.astype(TRITON_TO_NUMPY[spec.data_type])
    return fitted


def serve_in_process(handler, batch: dict[str, np.ndarray], source: Path) -> dict[str, np.ndarray]:
    (result,) = handler.execute_batch([batch])
    if isinstance(result, Exception):
        raise AddError(f"the sample does not fit {source.name}: {result}")
    return result


def parity(export: Export, served: dict[str, np.ndarray]) -> dict:
    """The served answers against the source framework's on the sample; a failure refuses the model."""
    report = {}
    for name, theirs in export.reference.items():
        ours = served[name]
        theirs = np.asarray(theirs, dtype=np.float64).reshape(ours.shape)
        if export.task == "embedding":
            cosine = (ours * theirs).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
            value, limit, ok = float(cosine.min()), MIN_EMBEDDING_COSINE, cosine.min() >= MIN_EMBEDDING_COSINE
            report[f"parity_{name}_min_cosine"] = value
        else:
            diff = float(np.abs(ours - theirs).max())
            limit = MAX_PROBABILITY_DIFF if name == "PROBABILITIES" else MAX_RELATIVE_DIFF * max(1.0, float(np.abs(theirs).max()))
            value, ok = diff, diff <= limit
            report[f"parity_{name}_max_abs_diff"] = value
        report[f"parity_{name}_limit"] = limit
        if not ok:
            raise AddError(f"parity failure: served {name} differs from the source framework on the sample "
                           f"({value:.3g}; the limit is {limit:.3g})")
    return report


def latency(handler, batch: dict[str, np.ndarray], rows: int) -> dict:
    """In-process latency of the serving code (validation + onnxruntime) for `rows` rows, in ms."""
    count = len(next(iter(batch.values())))
    tiled = {name: np.resize(value, (rows, *value.shape[1:])) if count != rows else value for name, value in batch.items()}
    times = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        handler.execute_batch([tiled])
        times.append((time.perf_counter() - started) * 1000)
    prefix = f"latency_batch_{rows}"
    return {f"{prefix}_median_ms": statistics.median(times), f"{prefix}_min_ms": min(times), f"{prefix}_max_ms": max(times)}


def feature_references(sample: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict:
    """PSI references from the sample: each column of a narrow numeric input, and a regressor's output."""
    references = {}
    for name, values in {**sample, **outputs}.items():
        flat = values.reshape(len(values), -1)
        if values.dtype.kind == "f" and flat.shape[1] <= MAX_DRIFT_FEATURES:
            references[name] = {str(i): DriftReference.from_training(flat[:, i].astype(np.float64)) for i in range(flat.shape[1])}
    return references


def text_front_end(export: Export, staged: Path, request: AddRequest) -> tuple[str, dict[str, np.ndarray]]:
    """The tokenizer model (TEXT -> input_ids, attention_mask) and the sample texts through it."""
    name = f"{request.name}_tokenizer"
    model_dir = staged / name
    config = layout.python_model_config(
        name, [TensorSpec(TEXT, "TYPE_STRING", (1,))],
        [TensorSpec("input_ids", "TYPE_INT64", (-1,)), TensorSpec("attention_mask", "TYPE_INT64", (-1,))],
        request.max_batch_size, request.instances,
    )
    config.parameters["max_tokens"].string_value = str(export.text.max_tokens)
    config.parameters["max_text_bytes"].string_value = str(DEFAULT_MAX_TEXT_BYTES)
    texts = np.array([t.encode("utf-8") for t in export.text.texts], dtype=object).reshape(-1, 1)
    layout.add_warmup(config, model_dir, {TEXT: texts[0]})
    version = layout.write_python_model(model_dir, config, TextTokenizer, f"{request.name}: TEXT -> token ids (modelrepo add)")
    shutil.copytree(export.text.tokenizer_dir, version / "tokenizer")
    tokenizer = TextTokenizer(version / "tokenizer" / "tokenizer.json", max_tokens=export.text.max_tokens)
    return name, {TEXT: texts, **serve_in_process(tokenizer, {TEXT: texts}, export.graph)}


def assemble(request: AddRequest, export: Export, staged: Path) -> Plan:
    source = Path(request.source)
    inputs, outputs, unbatched = layout.graph_io(export.graph)
    if unbatched:
        raise AddError(f"{source.name} has no batch dimension on {unbatched[0]!r}: its first axis must be dynamic "
                       f"(export it with a dynamic batch axis)")
    classifier = export.task == "classification"
    text = export.text is not None
    single = not (classifier or text)
    graph_name = request.name if single else f"{request.name}_model"
    models, steps, public_inputs = [], [], inputs
    sample = export.sample
    if text:
        tokenizer_name, tokenized = text_front_end(export, staged, request)
        models.append(tokenizer_name)
        sample = {name: tokenized[name] for name in ("input_ids", "attention_mask")}
        public_inputs = [TensorSpec(TEXT, "TYPE_STRING", (1,))]
        steps.append((tokenizer_name, {TEXT: TEXT}, {"input_ids": "input_ids", "attention_mask": "attention_mask"}))
    sample = fit_sample(inputs, sample, source)
    served_outputs = [spec for spec in outputs if spec.name == SCORES] if classifier else outputs
    runner = OnnxRunner(export.graph, intra_op_threads=1, ragged_inputs=export.ragged_inputs)
    graph_handler = ServedGraph(graph_name, runner, rules_of(inputs))
    answers = serve_in_process(graph_handler, sample, source)
    served = {spec.name: answers[spec.name] for spec in served_outputs}
    report = {"source": str(source.resolve()), "task": export.task, "graph_bytes": export.graph.stat().st_size,
              "sample_rows": int(len(next(iter(sample.values())))), **export.notes}
    labels_handler = None
    if classifier:
        if served[SCORES].shape[1] != len(export.labels):
            raise AddError(f"{len(export.labels)} labels for {served[SCORES].shape[1]} classes: --labels must name each class once")
        labels_handler = ClassifierOutput(request.name, export.labels, export.scores)
        served.update(labels_handler.classify(served[SCORES]))
        report["top_label_agreement"] = float(
            (served["PROBABILITIES"].argmax(axis=1) == np.asarray(export.reference["PROBABILITIES"]).argmax(axis=1)).mean())
    report.update(parity(export, served))
    report.update(latency(graph_handler, {k: v[:1] for k, v in sample.items()}, 1))
    report.update(latency(graph_handler, sample, request.max_batch_size))

    # the graph model
    model_dir = staged / graph_name
    config = layout.python_model_config(graph_name, inputs, served_outputs, request.max_batch_size, request.instances)
    for spec in config.input:
        spec.allow_ragged_batch = spec.name in export.ragged_inputs
    config.parameters["onnx_file"].string_value = MODEL_FILENAME
    config.parameters["intra_op_threads"].string_value = "1"
    config.parameters["public_model"].string_value = request.name  # the model label of its metrics
    if export.ragged_inputs:
        config.parameters["ragged_inputs"].string_value = ",".join(export.ragged_inputs)
    layout.add_warmup(config, model_dir, {name: value[0] for name, value in sample.items()})
    version = layout.write_python_model(model_dir, config, ServedGraph, f"{request.name}: {export.task} graph from {source.name} (modelrepo add)")
    shutil.copy2(export.graph, version / MODEL_FILENAME)
    if not text:
        save_drift(version / DRIFT_FILENAME, feature_references(sample, {} if classifier else served))
    models.append(graph_name)
    steps.append((graph_name, {spec.name: spec.name for spec in inputs}, {spec.name: spec.name for spec in served_outputs}))

    public_outputs = served_outputs
    if classifier:
        labels_name = f"{request.name}_labels"
        labels_dir = staged / labels_name
        labels_config = layout.labels_config(labels_name, request.name, len(export.labels), request.max_batch_size,
                                             request.instances, export.scores)
        labels_version = layout.write_python_model(labels_dir, labels_config, ClassifierOutput,
                                                    f"{request.name}: class scores -> LABEL, PROBABILITIES (modelrepo add)")
        layout.write_labels(labels_version, export.labels)
        confidence = served["PROBABILITIES"].max(axis=1).astype(np.float64)
        save_drift(labels_version / DRIFT_FILENAME, {CONFIDENCE: {"0": DriftReference.from_training(confidence)}})
        models.append(labels_name)
        steps.append((labels_name, {SCORES: SCORES}, {"LABEL": "LABEL", "PROBABILITIES": "PROBABILITIES"}))
        public_outputs = [TensorSpec("LABEL", "TYPE_STRING", (1,)), TensorSpec("PROBABILITIES", "TYPE_FP32", (len(export.labels),))]

    public_dir = staged / request.name
    if not single:
        ensemble = layout.ensemble_config(request.name, public_inputs, public_outputs, request.max_batch_size, steps)
        public_dir.mkdir()
        (public_dir / "1").mkdir()
        layout.write_config(public_dir, ensemble)
        if classifier:
            layout.write_labels(public_dir, export.labels)
        models.insert(0, request.name)
    public_sample = {TEXT: tokenized[TEXT]} if text else sample
    layout.write_json(public_dir / SAMPLE_INPUT_DATA, layout.perf_analyzer_data(public_sample))
    write_report(public_dir, f"{request.name}: modelrepo add", report, REPORT_NOTES)
    manifest = {
        "name": request.name, "task": export.task, "models": models, "labels": export.labels,
        "max_batch_size": request.max_batch_size, "instances": request.instances,
        "sample": str(Path(request.sample).resolve()) if request.sample else None,
        "tolerances": {"probabilities_max_abs_diff": MAX_PROBABILITY_DIFF, "embedding_min_cosine": MIN_EMBEDDING_COSINE,
                       "relative_max_abs_diff": MAX_RELATIVE_DIFF},
        "target": "cpu (onnxruntime in a Python model)",
    }
    return Plan(models, manifest, report)
