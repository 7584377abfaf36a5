"""The folders `add` writes: configs through Triton's protobuf, warm-up files, labels, the model.py shims.

Layouts: a graph alone is one model NAME; a classifier is the ensemble NAME (graph -> NAME_labels);
a text model is the ensemble NAME (NAME_tokenizer -> graph [-> NAME_labels]), the shape of
review_sentiment / text_embedding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.grpc.model_config_pb2 import DataType, ModelInstanceGroup

from modelrepo.build.add.recipes import AddError
from modelrepo.check import ONNX_TO_TRITON
from modelrepo.python_backends.classifier_output import LABELS_FILENAME, SCORES
from modelrepo.triton.model_config import ModelConfig, write_config

TEXT = "TEXT"
WARMUP_DIR = "warmup"
MANIFEST = "manifest.json"  # what `add` wrote for NAME: its models, labels, source, versions
QUEUE_TIMEOUT_US = 1_000_000
MAX_QUEUE_DELAY_US = 500
SHIM = '''"""Triton shim for {model} (written by `modelrepo add`); the logic is {module}.{handler}."""

from {module} import {handler}
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model({handler})
'''


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton's name, e.g. TYPE_FP32
    dims: tuple[int, ...]  # per batch item; -1 = any size
    batched: bool = True  # the graph's first axis is dynamic (the batch)


def graph_io(graph_file: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs, dims without the batch axis."""
    import onnx

    graph = onnx.load(str(graph_file), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}

    def specs(values) -> list[TensorSpec]:
        result = []
        for value in values:
            tensor_type = value.type.tensor_type
            if tensor_type.elem_type not in ONNX_TO_TRITON:
                raise AddError(f"{graph_file.name}: tensor {value.name!r} has ONNX element type {tensor_type.elem_type}, "
                               f"which Triton does not serve")
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            result.append(TensorSpec(value.name, ONNX_TO_TRITON[tensor_type.elem_type], tuple(dims[1:]),
                                     batched=bool(dims) and dims[0] == -1))
        return result

    return specs(v for v in graph.input if v.name not in initializers), specs(graph.output)


def shim(model: str, handler: type) -> str:
    return SHIM.format(model=model, module=handler.__module__, handler=handler.__name__)


def add_tensor(tensors, spec: TensorSpec, reshape: bool) -> None:
    """A config input/output. A graph tensor of shape [batch] is [1] to clients (Triton needs dims);
    with `reshape`, the model itself sees it as [batch] again."""
    tensor = tensors.add(name=spec.name, data_type=DataType.Value(spec.data_type), dims=list(spec.dims) or [1])
    if reshape and not spec.dims:
        tensor.reshape.SetInParent()  # shape: [] (a field present with no dims)


def python_model_config(name: str, inputs, outputs, max_batch_size: int, instances: int) -> ModelConfig:
    """A batched Python model with a bounded queue (`modelrepo check` requires one)."""
    config = ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    for spec in inputs:
        add_tensor(config.input, spec, reshape=True)
    for spec in outputs:
        add_tensor(config.output, spec, reshape=True)
    config.instance_group.add(count=instances, kind=ModelInstanceGroup.KIND_CPU)
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    batching.default_queue_policy.max_queue_size = 4 * max_batch_size
    batching.default_queue_policy.default_timeout_microseconds = QUEUE_TIMEOUT_US
    batching.default_queue_policy.allow_timeout_override = True
    return config


def add_warmup(config: ModelConfig, model_dir: Path, row: dict[str, np.ndarray]) -> None:
    """One warm-up request of batch 1 from the sample's first row (files under warmup/)."""
    warmup = config.model_warmup.add(name="warmup_sample_row", batch_size=1)
    (model_dir / WARMUP_DIR).mkdir(parents=True, exist_ok=True)
    for name, value in row.items():
        spec = next(t for t in config.input if t.name == name)
        entry = warmup.inputs[name]
        entry.data_type = spec.data_type
        entry.dims.extend(value.shape or (1,))
        entry.input_data_file = name
        (model_dir / WARMUP_DIR / name).write_bytes(tensor_bytes(value))


def tensor_bytes(value: np.ndarray) -> bytes:
    """Triton's raw tensor layout: little-endian values; BYTES elements each prefixed by a uint32 length."""
    if value.dtype == object:
        parts = [v if isinstance(v, bytes) else str(v).encode() for v in value.reshape(-1)]
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    return np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes()


def write_python_model(model_dir: Path, config: ModelConfig, handler: type, comment: str) -> Path:
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(shim(config.name, handler))
    write_config(model_dir, config)
    (model_dir / "config.pbtxt").write_text(f"# {comment}\n" + (model_dir / "config.pbtxt").read_text())
    return version


def labels_config(name: str, public: str, classes: int, max_batch_size: int, instances: int, scores: str) -> ModelConfig:
    config = python_model_config(
        name, [TensorSpec(SCORES, "TYPE_FP32", (classes,))],
        [TensorSpec("LABEL", "TYPE_STRING", (1,)), TensorSpec("PROBABILITIES", "TYPE_FP32", (classes,))],
        max_batch_size, instances,
    )
    config.parameters["scores"].string_value = scores
    config.parameters["public_model"].string_value = public
    return config


def write_labels(folder: Path, labels: list[str]) -> None:
    (folder / LABELS_FILENAME).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def ensemble_config(name: str, inputs, outputs, max_batch_size: int, steps: list[tuple[str, dict, dict]]) -> ModelConfig:
    """steps: (model, {step input: tensor}, {step output: tensor}); public tensors keep their names."""
    config = ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    for spec in inputs:
        add_tensor(config.input, spec, reshape=False)
    for spec in outputs:
        add_tensor(config.output, spec, reshape=False)
        output = config.output[-1]
        if spec.name == "PROBABILITIES":
            output.label_filename = LABELS_FILENAME  # Triton's classification extension
    for model, input_map, output_map in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(input_map)
        step.output_map.update(output_map)
    return config


# perf_analyzer's default input data beside a model's config: written by `modelrepo add` (the model's
# sample) and `modelrepo build` (the credit models' hold-out rows); `tune` and `bench NAME` feed it.
SAMPLE_INPUT_DATA = "perf_input.json"


def perf_analyzer_data(sample: dict[str, np.ndarray], rows: int = 64) -> dict:
    """perf_analyzer's --input-data JSON: one request per sample row (what `tune` feeds by default)."""
    count = min(rows, len(next(iter(sample.values()))))
    data = []
    for index in range(count):
        entry = {}
        for name, values in sample.items():
            row = values[index]
            content = [v.decode() if isinstance(v, bytes) else v for v in row.reshape(-1).tolist()]
            entry[name] = {"content": content, "shape": list(row.shape) or [1]}
        data.append(entry)
    return {"data": data}


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str))

