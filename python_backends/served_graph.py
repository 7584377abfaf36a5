"""An added model's ONNX graph (`modelrepo add`), run by onnxruntime with every input checked first.

Rules, from the model's own config (so they always agree with what Triton was told): each input is
sent, has the declared dtype and, per batch item, the declared dims (-1: any size); floating-point
values are finite. A refusal names the input, the batch item and the rule, and is counted in
modelrepo_model_rejected_inputs_total{model,input}. Requests whose variable dims differ are run in
separate groups (inputs listed in `ragged_inputs` are padded instead, see onnx_runner).

Drift: when the version folder has drift.json (written by `add` from the sample), each listed
input feature / output column feeds a sliding-window PSI gauge, modelrepo_model_psi{model,tensor,column}.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelrepo.python_backends.batching import Tensors, answer_each, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.drift import DriftReference, DriftWindow
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.metrics import COUNTER, GAUGE, InMemoryRegistry
from modelrepo.python_backends.onnx_runner import OnnxRunner

DRIFT_FILENAME = "drift.json"
TRITON_TO_NUMPY = {
    "TYPE_FP32": np.float32, "TYPE_FP64": np.float64, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64,
    "TYPE_INT32": np.int32, "TYPE_INT16": np.int16, "TYPE_INT8": np.int8, "TYPE_UINT8": np.uint8,
    "TYPE_BOOL": np.bool_, "TYPE_STRING": np.object_,
}


def tensor_rules(config: dict) -> dict[str, tuple[np.dtype, list[int]]]:
    """input name -> (numpy dtype, dims per batch item, as the model sees them: after any `reshape`)."""
    return {
        spec["name"]: (np.dtype(TRITON_TO_NUMPY[spec["data_type"]]),
                       [int(d) for d in (spec["reshape"]["shape"] if "reshape" in spec else spec.get("dims", []))])
        for spec in config.get("input", [])
    }


def check_tensor(name: str, value: np.ndarray, dtype: np.dtype, dims: Sequence[int]) -> np.ndarray:
    """One input of one request, [batch, *dims]; raises InputError naming the rule it broke."""
    if value.dtype != dtype:
        raise InputError(name, f"must be {dtype.name}, got {value.dtype.name}")
    if value.ndim != len(dims) + 1 or any(d not in (-1, s) for d, s in zip(dims, value.shape[1:])):
        expected = ", ".join("any" if d == -1 else str(d) for d in dims)
        raise InputError(name, f"each batch item must have shape [{expected}], got {list(value.shape[1:])}")
    if value.dtype.kind == "f":
        bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
        if bad.any():
            raise InputError(name, "must contain only finite numbers (no NaN or inf)", int(np.flatnonzero(bad)[0]))
    return value


def load_drift(path: Path) -> dict[str, dict[str, DriftReference]]:
    """drift.json: {tensor: {column: {inner_edges, proportions}}}; none when the file is absent."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {tensor: {column: DriftReference(**ref) for column, ref in columns.items()} for tensor, columns in data.items()}


def save_drift(path: Path, references: dict[str, dict[str, DriftReference]]) -> None:
    payload = {
        tensor: {column: {"inner_edges": ref.inner_edges, "proportions": ref.proportions} for column, ref in columns.items()}
        for tensor, columns in references.items()
    }
    path.write_text(json.dumps(payload, indent=2))


class DriftMonitor:
    """Sliding-window PSI per (tensor, column) against the references, published as one gauge family."""

    def __init__(self, model: str, references: dict[str, dict[str, DriftReference]], metrics, window: int = 1000):
        self.model = model
        self.gauge = metrics.family("modelrepo_model_psi", "PSI of an input feature or output over a sliding window vs the sample", GAUGE)
        self.windows = {
            (tensor, column): DriftWindow(ref, window) for tensor, columns in references.items() for column, ref in columns.items()
        }

    def observe(self, tensors: Tensors) -> None:
        for (tensor, column), window in self.windows.items():
            if tensor not in tensors:
                continue
            values = tensors[tensor].reshape(len(tensors[tensor]), -1)
            window.add(values[:, int(column)])
            window.publish_if_due(self.gauge.metric({"model": self.model, "tensor": tensor, "column": column}))


class ServedGraph:
    def __init__(self, model: str, runner: OnnxRunner, rules: dict[str, tuple[np.dtype, list[int]]],
                 drift: DriftMonitor | None = None, metrics=None):
        self.model = model
        self.runner = runner
        self.rules = rules
        metrics = metrics or InMemoryRegistry()
        self.drift = drift or DriftMonitor(model, {}, metrics)
        self.rejections = metrics.family(
            "modelrepo_model_rejected_inputs_total", "Requests an added model refused by input validation", COUNTER
        )

    @classmethod
    def from_context(cls, context: ModelContext) -> "ServedGraph":
        references = load_drift(context.version_dir / DRIFT_FILENAME)
        model = context.parameter("public_model", context.name)  # an ensemble's step reports as the ensemble
        drift = DriftMonitor(model, references, context.metrics, context.int_parameter("drift_window", 1000))
        return cls(model, OnnxRunner.from_context(context), tensor_rules(context.config), drift, context.metrics)

    def check_inputs(self, request: Tensors) -> Tensors:
        try:
            checked = {name: check_tensor(name, required(request, name), *rule) for name, rule in self.rules.items()}
        except InputError as err:
            self.rejections.metric({"model": self.model, "input": err.input_name}).increment(1.0)
            raise
        rows = {len(value) for value in checked.values()}
        if len(rows) > 1:
            raise InputError(next(iter(checked)), f"every input must have the same batch size, got {sorted(rows)}")
        return checked

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.check_inputs, self.run_requests)

    def run_requests(self, requests: list[Tensors]) -> list[Tensors]:
        """Requests whose non-ragged inputs agree in shape run together; others in their own group."""
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            key = tuple(value.shape[1:] for name, value in request.items() if name not in self.runner.ragged_inputs)
            groups.setdefault(key, []).append(index)
        results: list[Tensors] = [{}] * len(requests)
        for members in groups.values():
            for index, outputs in zip(members, self.runner.run_requests([requests[i] for i in members])):
                results[index] = outputs
        for request, outputs in zip(requests, results):
            self.drift.observe({**request, **outputs})
        return results
