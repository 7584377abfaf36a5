"""Run an ONNX model with onnxruntime for a dynamic batch of requests (the CPU engine target).

Inputs listed in the model's `ragged_inputs` parameter (e.g. token ids of different lengths) are
right-padded to the batch's longest before one session.run; outputs are split back per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from modelrepo.python_backends.batching import Tensors, answer_each, concat_requests, required, split_rows
from modelrepo.python_backends.context import ModelContext

MODEL_FILENAME = "model.onnx"


class OnnxRunner:
    def __init__(self, model_path: Path, intra_op_threads: int = 1, ragged_inputs: Sequence[str] = ()):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]
        self.ragged_inputs = tuple(ragged_inputs)

    @classmethod
    def from_context(cls, context: ModelContext) -> "OnnxRunner":
        ragged = [name for name in context.parameter("ragged_inputs", "").split(",") if name]
        return cls(
            context.version_dir / context.parameter("onnx_file", MODEL_FILENAME),
            intra_op_threads=context.int_parameter("intra_op_threads", 1),
            ragged_inputs=ragged,
        )

    def run(self, inputs: Tensors) -> Tensors:
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.check_inputs, self.run_requests)

    def check_inputs(self, request: Tensors) -> Tensors:
        return {name: required(request, name) for name in self.input_names}

    def run_requests(self, requests: list[Tensors]) -> list[Tensors]:
        joined, sizes = concat_requests(requests, self.input_names, self.ragged_inputs)
        return split_rows(self.run(joined), sizes)
