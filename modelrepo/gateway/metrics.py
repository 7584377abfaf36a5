"""The gateway's own Prometheus metrics (its /metrics; Triton's stay on Triton's metrics port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class GatewayMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("openai_requests_total", "Requests by route, model and HTTP status",
                                ["route", "model", "status"], registry=self.registry)
        self.errors = Counter("openai_errors_total", "Error responses by route and OpenAI error code",
                              ["route", "code"], registry=self.registry)
        self.latency = Histogram("openai_request_duration_seconds", "Time until the response starts (a stream: after its first chunk)",
                                 ["route", "model"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.first_token = Histogram("openai_time_to_first_token_seconds", "Streamed requests: time to the first chunk",
                                     ["model"], registry=self.registry,
                                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.tokens = Counter("openai_tokens_total", "Tokens by model and kind (prompt, completion, embedding input)",
                              ["model", "kind"], registry=self.registry)
        self.cancelled = Counter("openai_cancelled_streams_total", "Streams whose client went away before the end",
                                 ["model"], registry=self.registry)

    def count_tokens(self, model: str, prompt: int, completion: int = 0) -> None:
        self.tokens.labels(model, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(model, "completion").inc(completion)
