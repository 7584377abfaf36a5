"""A model with a known batch-latency curve, for testing and calibrating the tuner.

Each dynamic batch of b rows takes `base_ms + per_row_ms * b` (a sleep: instances really run in
parallel and no core is busy, so the curve holds under load), then echoes INPUT as OUTPUT.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from modelrepo.python_backends.batching import Tensors, answer_each, concat_requests, required, split_rows
from modelrepo.python_backends.context import ModelContext


class SyntheticLatency:
    def __init__(self, base_ms: float, per_row_ms: float):
        self.base_ms, self.per_row_ms = base_ms, per_row_ms

    @classmethod
    def from_context(cls, context: ModelContext) -> "SyntheticLatency":
        return cls(context.float_parameter("base_ms", 20.0), context.float_parameter("per_row_ms", 2.0))

    def latency_ms(self, rows: int) -> float:
        return self.base_ms + self.per_row_ms * rows

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, lambda request: {"INPUT": required(request, "INPUT")}, self.run)

    def run(self, requests: list[Tensors]) -> list[Tensors]:
        joined, sizes = concat_requests(requests, ["INPUT"])
        time.sleep(self.latency_ms(len(joined["INPUT"])) / 1000)
        return split_rows({"OUTPUT": joined["INPUT"]}, sizes)
