"""Run an ONNX model with onnxruntime for a dynamic batch of requests (the CPU engine target).

Inputs listed in the model's `ragged_inputs` parameter (e.g. token ids of different lengths) are
right-padded to the longest of their run; outputs are split back per request. A batch of ragged
requests runs as one session.run unless splitting it by length costs less: one run is counted as
`ragged_run_cost_tokens` padded tokens (RAGGED_RUN_COST_TOKENS unless the config sets it) plus its
rows times its longest length (batching.length_groups). Without that, a short query batched with a long
review is computed at the review's length (perf/studies/ragged_split.py measures both).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from modelrepo.python_backends.batching import (RAGGED_RUN_COST, RAGGED_RUN_COST_TOKENS, Tensors, answer_each, concat_requests,
                                               length_groups, required, run_cost_tokens, split_rows)
from modelrepo.python_backends.context import ModelContext

MODEL_FILENAME = "model.onnx"


class OnnxRunner:
    def __init__(self, model_path: Path, intra_op_threads: int = 1, ragged_inputs: Sequence[str] = (),
                 ragged_run_cost_tokens: float = RAGGED_RUN_COST_TOKENS):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]
        self.ragged_inputs = tuple(ragged_inputs)
        self.ragged_run_cost_tokens = ragged_run_cost_tokens

    @classmethod
    def from_context(cls, context: ModelContext) -> "OnnxRunner":
        ragged = [name for name in context.parameter("ragged_inputs", "").split(",") if name]
        return cls(
            context.version_dir / context.parameter("onnx_file", MODEL_FILENAME),
            intra_op_threads=context.int_parameter("intra_op_threads", 1),
            ragged_inputs=ragged,
            ragged_run_cost_tokens=run_cost_tokens(context.parameter(RAGGED_RUN_COST, str(RAGGED_RUN_COST_TOKENS))),
        )

    def run(self, inputs: Tensors) -> Tensors:
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.check_inputs, self.run_requests)

    def check_inputs(self, request: Tensors) -> Tensors:
        return {name: required(request, name) for name in self.input_names}

    def run_requests(self, requests: list[Tensors]) -> list[Tensors]:
        if not self.ragged_inputs or len(requests) == 1:
            return self.run_together(requests)
        lengths = [max(request[name].shape[1] for name in self.ragged_inputs) for request in requests]
        rows = [len(request[self.input_names[0]]) for request in requests]
        answers: list[Tensors] = [{}] * len(requests)
        for group in length_groups(lengths, rows, self.ragged_run_cost_tokens):
            for index, answer in zip(group, self.run_together([requests[index] for index in group])):
                answers[index] = answer
        return answers

    def run_together(self, requests: list[Tensors]) -> list[Tensors]:
        joined, sizes = concat_requests(requests, self.input_names, self.ragged_inputs)
        return split_rows(self.run(joined), sizes)
