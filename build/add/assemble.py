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
from modelrepo.build.add.monitoring import state_budget
from modelrepo.build.add.precision import int8_graph
from modelrepo.build.add.recipes import (
    MAX_PROBABILITY_DIFF,
    MAX_RELATIVE_DIFF,
    MIN_EMBEDDING_COSINE,
    TOKEN_CLASSIFICATION,
    AddError,
    AddRequest,
    Export,
)
from modelrepo.build.add.text import TOKEN_CLASS
from modelrepo.build.reports import write_report
from modelrepo.python_backends.classifier_output import CONFIDENCE, SCORES, ClassifierOutput
from modelrepo.python_backends.drift import DriftReference
from modelrepo.python_backends.onnx_runner import MODEL_FILENAME, OnnxRunner
from modelrepo.python_backends.served_graph import DRIFT_FILENAME, TRITON_TO_NUMPY, ServedGraph, save_drift
from modelrepo.python_backends.text_tokenizer import DEFAULT_MAX_TEXT_BYTES, TextTokenizer
from modelrepo.python_backends.token_labels import OUTPUTS as TOKEN_OUTPUTS
from modelrepo.python_backends.token_labels import TOKEN_LABELS, TOKEN_PROBABILITIES, TOKENIZER_FILE, TOKENS, TokenLabels
from modelrepo.triton.model_config import write_config

TOKEN_TENSORS = ("input_ids", "attention_mask")  # what TextTokenizer answers
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


def parity(export: Export, served: dict[str, np.ndarray], strict: bool = True) -> dict:
    """The served answers against the source framework's on the sample; a failure refuses the model.
    Not `strict` (an INT8 graph): measured and reported only, its accuracy budget has been checked."""
    report = {}
    for name, theirs in export.reference.items():
        if name == TOKEN_CLASS:  # compared as labels in token_label_agreement
            continue
        ours = served[name]
        theirs = np.asarray(theirs, dtype=np.float64).reshape(ours.shape)
        if export.task == "embedding":
            cosine = (ours * theirs).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
            value, limit, ok = float(cosine.min()), MIN_EMBEDDING_COSINE, cosine.min() >= MIN_EMBEDDING_COSINE
            report[f"parity_{name}_min_cosine"] = value
        else:
            diff = float(np.abs(ours - theirs).max())
            probabilities = name in ("PROBABILITIES", TOKEN_PROBABILITIES)
            limit = MAX_PROBABILITY_DIFF if probabilities else MAX_RELATIVE_DIFF * max(1.0, float(np.abs(theirs).max()))
            value, ok = diff, diff <= limit
            report[f"parity_{name}_max_abs_diff"] = value
        report[f"parity_{name}_limit"] = limit
        if strict and not ok:
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


def text_front_end(export: Export, staged: Path, request: AddRequest) -> tuple[tuple, dict[str, np.ndarray]]:
    """The tokenizer model (TEXT -> input_ids, attention_mask): its ensemble step and the sample texts through it."""
    name = f"{request.name}_tokenizer"
    model_dir = staged / name
    config = layout.python_model_config(
        name, [TensorSpec(TEXT, "TYPE_STRING", (1,))],
        [TensorSpec(tensor, "TYPE_INT64", (-1,)) for tensor in TOKEN_TENSORS],
        request.max_batch_size, request.instances,
    )
    config.parameters["max_tokens"].string_value = str(export.text.max_tokens)
    config.parameters["max_text_bytes"].string_value = str(DEFAULT_MAX_TEXT_BYTES)
    texts = np.array([t.encode("utf-8") for t in export.text.texts], dtype=object).reshape(-1, 1)
    layout.add_warmup(config, model_dir, {TEXT: texts[0]})
    version = layout.write_python_model(model_dir, config, TextTokenizer, f"{request.name}: TEXT -> token ids (modelrepo add)")
    shutil.copytree(export.text.tokenizer_dir, version / "tokenizer")
    tokenizer = TextTokenizer(version / "tokenizer" / "tokenizer.json", max_tokens=export.text.max_tokens)
    step = (name, {TEXT: TEXT}, {tensor: tensor for tensor in TOKEN_TENSORS})
    return step, {TEXT: texts, **serve_in_process(tokenizer, {TEXT: texts}, export.graph)}


@dataclass
class Served:
    """The graph step as it will serve: its name, IO, the sample as it takes it and its answers."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sample: dict[str, np.ndarray]
    answers: dict[str, np.ndarray]


def serve_and_compare(request: AddRequest, export: Export, served: Served) -> dict:
    """The sample through the serving code (graph, then labels for a classifier); parity and latency."""
    source = Path(request.source)
    graph = ServedGraph(served.name, OnnxRunner(export.graph, intra_op_threads=1, ragged_inputs=export.ragged_inputs),
                        rules_of(served.inputs))
    answers = serve_in_process(graph, served.sample, source)
    served.answers = {spec.name: answers[spec.name] for spec in served.outputs}
    report = {"source": str(source.resolve()), "task": export.task, "graph_bytes": export.graph.stat().st_size,
              "sample_rows": int(len(next(iter(served.sample.values())))), **export.notes}
    if export.task == "classification":
        scores = served.answers[SCORES]
        if scores.shape[1] != len(export.labels):
            raise AddError(f"{len(export.labels)} labels for {scores.shape[1]} classes: --labels must name each class once")
        served.answers.update(ClassifierOutput(request.name, export.labels, export.scores).classify(scores))
        report["top_label_agreement"] = float(
            (served.answers["PROBABILITIES"].argmax(axis=1) == np.asarray(export.reference["PROBABILITIES"]).argmax(axis=1)).mean())
    if export.task == TOKEN_CLASSIFICATION:
        served.answers.update(label_tokens(request, export, served))
        report["token_label_agreement"] = token_label_agreement(export, served.answers[TOKEN_LABELS])
    report.update(parity(export, served.answers, strict=request.precision == "fp32"))
    report.update(latency(graph, {name: value[:1] for name, value in served.sample.items()}, 1))
    report.update(latency(graph, served.sample, request.max_batch_size))
    return report


def label_tokens(request: AddRequest, export: Export, served: Served) -> dict[str, np.ndarray]:
    """The sample's per-token scores through the token-labels step, as it will serve."""
    labeller = TokenLabels.from_files(request.name, export.text.tokenizer_dir, export.labels, export.scores)
    tensors = {SCORES: served.answers[SCORES], **{name: served.sample[name] for name in TOKEN_TENSORS}}
    return serve_in_process(labeller, tensors, Path(request.source))


def token_label_agreement(export: Export, served_labels: np.ndarray) -> float:
    """Share of the sample's text tokens whose served label is the source framework's."""
    classes = np.asarray(export.reference[TOKEN_CLASS])
    kept = classes >= 0
    if served_labels.shape != classes.shape:
        raise AddError(f"parity failure: the served tokens {list(served_labels.shape)} are not the source's {list(classes.shape)}")
    expected = np.array([label.encode("utf-8") for label in export.labels], dtype=object)[classes[kept]]
    return float((served_labels[kept] == expected).mean())


def write_graph_model(request: AddRequest, export: Export, served: Served, staged: Path) -> tuple:
    model_dir = staged / served.name
    config = layout.python_model_config(served.name, served.inputs, served.outputs, request.max_batch_size, request.instances)
    for spec in config.input:
        spec.allow_ragged_batch = spec.name in export.ragged_inputs
    config.parameters["onnx_file"].string_value = MODEL_FILENAME
    config.parameters["intra_op_threads"].string_value = "1"
    config.parameters["public_model"].string_value = request.name  # the model label of its metrics
    if export.ragged_inputs:
        config.parameters["ragged_inputs"].string_value = ",".join(export.ragged_inputs)
    layout.add_warmup(config, model_dir, {name: value[0] for name, value in served.sample.items()})
    comment = f"{request.name}: {export.task} graph from {Path(request.source).name} (modelrepo add)"
    version = layout.write_python_model(model_dir, config, ServedGraph, comment)
    shutil.copy2(export.graph, version / MODEL_FILENAME)
    if export.text is None:  # token ids are not monitored per column
        outputs = {} if export.task == "classification" else {spec.name: served.answers[spec.name] for spec in served.outputs}
        save_drift(version / DRIFT_FILENAME, feature_references(served.sample, outputs))
    return served.name, {spec.name: spec.name for spec in served.inputs}, {spec.name: spec.name for spec in served.outputs}


def write_labels_model(request: AddRequest, export: Export, served: Served, staged: Path) -> tuple:
    name = f"{request.name}_labels"
    config = layout.labels_config(name, request.name, len(export.labels), request.max_batch_size, request.instances,
                                  export.scores)
    version = layout.write_python_model(staged / name, config, ClassifierOutput,
                                        f"{request.name}: class scores -> LABEL, PROBABILITIES (modelrepo add)")
    layout.write_labels(version, export.labels)
    confidence = served.answers["PROBABILITIES"].max(axis=1).astype(np.float64)
    save_drift(version / DRIFT_FILENAME, {CONFIDENCE: {"0": DriftReference.from_training(confidence)}})
    return name, {SCORES: SCORES}, {"LABEL": "LABEL", "PROBABILITIES": "PROBABILITIES"}


def write_token_labels_model(request: AddRequest, export: Export, served: Served, staged: Path) -> tuple:
    name = f"{request.name}_labels"
    classes = len(export.labels)
    inputs = [TensorSpec(SCORES, "TYPE_FP32", (-1, classes))] + [TensorSpec(t, "TYPE_INT64", (-1,)) for t in TOKEN_TENSORS]
    config = layout.python_model_config(name, inputs, token_outputs(), request.max_batch_size, request.instances)
    for spec in config.input:
        spec.allow_ragged_batch = True  # each request keeps its own token count; handled request by request
    config.parameters["scores"].string_value = export.scores
    config.parameters["public_model"].string_value = request.name
    version = layout.write_python_model(staged / name, config, TokenLabels,
                                        f"{request.name}: per-token scores -> TOKENS, TOKEN_LABELS, TOKEN_PROBABILITIES (modelrepo add)")
    layout.write_labels(version, export.labels)
    shutil.copy2(export.text.tokenizer_dir / TOKENIZER_FILE, version / TOKENIZER_FILE)
    confidence = served.answers[TOKEN_PROBABILITIES][served.answers[TOKEN_LABELS] != b""].astype(np.float64)
    save_drift(version / DRIFT_FILENAME, {CONFIDENCE: {"0": DriftReference.from_training(confidence)}})
    return name, {tensor: tensor for tensor in (SCORES, *TOKEN_TENSORS)}, {output: output for output in TOKEN_OUTPUTS}


def token_outputs() -> list[TensorSpec]:
    """TOKENS and TOKEN_LABELS (BYTES) and TOKEN_PROBABILITIES (FP32), one value per text token."""
    return [TensorSpec(TOKENS, "TYPE_STRING", (-1,)), TensorSpec(TOKEN_LABELS, "TYPE_STRING", (-1,)),
            TensorSpec(TOKEN_PROBABILITIES, "TYPE_FP32", (-1,))]


def manifest_of(request: AddRequest, export: Export, models: list[str]) -> dict:
    return {
        "name": request.name, "task": export.task, "models": models, "labels": export.labels,
        "max_batch_size": request.max_batch_size, "instances": request.instances,
        "sample": str(Path(request.sample).resolve()) if request.sample else None,
        "tolerances": {"probabilities_max_abs_diff": MAX_PROBABILITY_DIFF, "embedding_min_cosine": MIN_EMBEDDING_COSINE,
                       "relative_max_abs_diff": MAX_RELATIVE_DIFF},
        "target": "cpu (onnxruntime in a Python model)", "precision": request.precision,
    }


def assemble(request: AddRequest, export: Export, staged: Path) -> Plan:
    """Steps: [tokenizer ->] graph [-> labels]; one step alone is the model NAME, more are the ensemble NAME."""
    source = Path(request.source)
    inputs, outputs = layout.graph_io(export.graph)
    classifier = export.task == "classification"
    token_classifier = export.task == TOKEN_CLASSIFICATION
    if classifier or token_classifier:
        outputs = [spec for spec in outputs if spec.name == SCORES]
    unbatched = [spec.name for spec in inputs + outputs if not spec.batched]
    if unbatched:
        raise AddError(f"{source.name} has no batch dimension on {unbatched[0]!r}: its first axis must be dynamic "
                       f"(export it with a dynamic batch axis)")
    single = not (classifier or export.text)
    steps, public_inputs, public_sample, sample = [], inputs, None, export.sample
    if export.text:
        step, tokenized = text_front_end(export, staged, request)
        steps.append(step)
        sample = {name: tokenized[name] for name in step[2]}
        public_inputs, public_sample = [TensorSpec(TEXT, "TYPE_STRING", (1,))], {TEXT: tokenized[TEXT]}
    served = Served(request.name if single else f"{request.name}_model", inputs, outputs, fit_sample(inputs, sample, source), {})
    int8 = int8_graph(request, export, served.sample, export.graph.parent) if request.precision == "int8" else {}
    report = {**serve_and_compare(request, export, served), **int8}
    steps.append(write_graph_model(request, export, served, staged))
    public_outputs = served.outputs
    if classifier:
        steps.append(write_labels_model(request, export, served, staged))
        public_outputs = [TensorSpec("LABEL", "TYPE_STRING", (1,)), TensorSpec("PROBABILITIES", "TYPE_FP32", (len(export.labels),))]
    if token_classifier:
        steps.append(write_token_labels_model(request, export, served, staged))
        public_outputs = token_outputs()
    models = [step[0] for step in steps]
    public_dir = staged / request.name
    if not single:
        (public_dir / "1").mkdir(parents=True)
        write_config(public_dir, layout.ensemble_config(request.name, public_inputs, public_outputs, request.max_batch_size, steps))
        if classifier or token_classifier:
            layout.write_labels(public_dir, export.labels)
        models.insert(0, request.name)
    state_budget(public_dir, request.name, request.latency_budget_ms)
    report["latency_budget_ms"] = request.latency_budget_ms
    layout.write_json(public_dir / layout.SAMPLE_INPUT_DATA, layout.perf_analyzer_data(public_sample or served.sample))
    write_report(public_dir, f"{request.name}: modelrepo add", report, REPORT_NOTES)
    return Plan(models, manifest_of(request, export, models), report)
