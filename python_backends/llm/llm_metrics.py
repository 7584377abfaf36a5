"""The engine's Prometheus metrics, on Triton's metrics port (pb_utils.MetricFamily in the stub).

TTFT is measured from the engine receiving the request to its first sampled token; TPOT is the mean
time between later tokens of one sequence. `llm_decode_batch_size` shows in-flight batching at work:
how many sequences each decode step advanced together.
"""

from __future__ import annotations

from modelrepo.python_backends.llm.scheduler import FINISH_CANCELLED, SchedulerEvents, Sequence
from modelrepo.python_backends.metrics import COUNTER, GAUGE, HISTOGRAM

TTFT_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0]
BATCH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16]


class EngineMetrics(SchedulerEvents):
    def __init__(self, registry, model: str):
        labels = {"model": model}
        family = registry.family
        self.ttft = family("llm_time_to_first_token_seconds", "Time from request to first token", HISTOGRAM).metric(labels, TTFT_BUCKETS)
        self.tpot = family("llm_time_per_output_token_seconds", "Mean time between a sequence's later tokens", HISTOGRAM).metric(labels, TPOT_BUCKETS)
        self.batch = family("llm_decode_batch_size", "Sequences advanced together by one decode step", HISTOGRAM).metric(labels, BATCH_BUCKETS)
        self.generated = family("llm_generated_tokens_total", "Tokens generated", COUNTER).metric(labels)
        self.prompt = family("llm_prompt_tokens_total", "Prompt tokens prefilled", COUNTER).metric(labels)
        self.active_gauge = family("llm_active_sequences", "Sequences in the running batch", GAUGE).metric(labels)
        self.queue_gauge = family("llm_queue_size", "Requests waiting for a batch slot", GAUGE).metric(labels)
        self.cancelled = family("llm_cancellations_total", "Sequences stopped because the client cancelled", COUNTER).metric(labels)
        self._finished = family("llm_requests_finished_total", "Finished sequences by reason", COUNTER)
        self._labels = labels

    def queue_size(self, waiting: int) -> None:
        self.queue_gauge.set(waiting)

    def active(self, sequences: int) -> None:
        self.active_gauge.set(sequences)

    def decode_step(self, batch_size: int, seconds: float) -> None:
        self.batch.observe(batch_size)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def finished(self, sequence: Sequence) -> None:
        self._finished.metric({**self._labels, "reason": sequence.finish_reason}).increment(1)
        self.generated.increment(len(sequence.generated))
        self.prompt.increment(len(sequence.prompt_ids))
        if sequence.finish_reason == FINISH_CANCELLED:
            self.cancelled.increment(1)
        if sequence.first_token_at is not None and len(sequence.generated) > 1:
            self.tpot.observe((sequence.finished_at - sequence.first_token_at) / (len(sequence.generated) - 1))
