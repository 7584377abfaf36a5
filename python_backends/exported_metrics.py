"""Custom metrics kept in the stub and sent to Triton every few seconds, instead of one IPC per call.

In Triton 2.51's Python backend every increment, set and observe is a round trip to the server. A model
that observes two histograms per scored row makes three or more per request, about as many as the
request itself costs: on a busy machine that is CPU the server does not have (perf/results/
credit_fused_vs_fanout_c8.md; moving the same calls to a thread of the stub's own gained nothing, the
cores are the limit). Here counters add up, gauges keep their last value, and histograms count their
buckets in the stub; a thread sends what changed every `interval_s` seconds: a few calls per metric
per interval, whatever the request rate. A model opts in with the config parameter
`metrics_export_interval_s` (METRICS_EXPORT_INTERVAL).

What a scrape sees is the same series as before, at most `interval_s` late:
- a counter or gauge: the same family;
- a histogram: its `<name>_bucket` (label `le`, cumulative), `<name>_sum` and `<name>_count` series,
  each a counter family of that name, which `histogram_quantile` and the dashboards read unchanged.
  Observations must be non-negative (a counter never goes down): probabilities, spreads, latencies.
  Every model that exports a given histogram must do it this way, or the server would expose the same
  series name twice (credit_aggregate and credit_default_onehop share one setting, see build/credit.py).
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from modelrepo.python_backends.context import non_negative_parameter
from modelrepo.python_backends.metrics import COUNTER, GAUGE, HISTOGRAM, LabelledFamily

METRICS_EXPORT_INTERVAL = "metrics_export_interval_s"
Call = tuple[Callable[[float], Any], float]


def export_interval(value: str) -> float:
    """The parameter's seconds; a clear error for anything but a finite number ≥ 0 (0: each call at once)."""
    return non_negative_parameter(METRICS_EXPORT_INTERVAL, value, "seconds", "0: every metric call goes to the server at once")


def bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else format(bound, "g")


class ExportedCounter:
    def __init__(self, target: Any, lock: threading.Lock):
        self.target, self.lock = target, lock
        self.pending = 0.0

    def increment(self, amount: float) -> None:
        with self.lock:
            self.pending += amount

    def take(self) -> list[Call]:
        amount, self.pending = self.pending, 0.0
        return [(self.target.increment, amount)] if amount else []


class ExportedGauge:
    def __init__(self, target: Any, lock: threading.Lock):
        self.target, self.lock = target, lock
        self.latest: float | None = None

    def set(self, value: float) -> None:
        with self.lock:
            self.latest = value

    def take(self) -> list[Call]:
        value, self.latest = self.latest, None
        return [] if value is None else [(self.target.set, value)]


class ExportedHistogram:
    """Bucket counts, sum and count since the last export; `le` counters are cumulative, as Prometheus's."""

    def __init__(self, bounds: Sequence[float], bucket_counters: Sequence[Any], sum_counter: Any, count_counter: Any,
                 lock: threading.Lock):
        self.lock = lock
        self.bounds = list(bounds)
        self.bucket_counters = list(bucket_counters)  # the server's: one per bound, then +Inf
        self.sum_counter, self.count_counter = sum_counter, count_counter
        self.counts = [0] * (len(self.bounds) + 1)  # pending: observations per bucket (not cumulative)
        self.sum = 0.0  # pending: sum of those observations

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)  # le is inclusive: value <= bound
        with self.lock:
            self.counts[index] += 1
            self.sum += value

    def take(self) -> list[Call]:
        counts, self.counts = self.counts, [0] * len(self.counts)
        total, self.sum = self.sum, 0.0
        cumulative = list(itertools.accumulate(counts))
        if not cumulative[-1]:
            return []
        calls = [(counter.increment, float(n)) for counter, n in zip(self.bucket_counters, cumulative) if n]
        return calls + [(self.sum_counter.increment, total), (self.count_counter.increment, float(cumulative[-1]))]


class ExportedFamily(LabelledFamily):
    def __init__(self, registry: "ExportingRegistry", name: str, description: str, kind: str):
        super().__init__()
        self.registry, self.name, self.description, self.kind = registry, name, description, kind

    def create(self, labels: dict[str, str], buckets: Sequence[float] | None) -> Any:
        target, lock = self.registry.target, self.registry.lock
        if self.kind == COUNTER:
            metric = ExportedCounter(target.family(self.name, self.description, COUNTER).metric(labels), lock)
        elif self.kind == GAUGE:
            metric = ExportedGauge(target.family(self.name, self.description, GAUGE).metric(labels), lock)
        else:
            bounds = sorted(buckets or [])
            per_bucket = target.family(f"{self.name}_bucket", f"{self.description} (cumulative, by upper bound le)", COUNTER)
            metric = ExportedHistogram(
                bounds,
                [per_bucket.metric({**labels, "le": bucket_label(bound)}) for bound in [*bounds, float("inf")]],
                target.family(f"{self.name}_sum", f"{self.description} (sum of observations)", COUNTER).metric(labels),
                target.family(f"{self.name}_count", f"{self.description} (observations)", COUNTER).metric(labels),
                lock,
            )
        self.registry.register(metric)
        return metric


class ExportingRegistry:
    """A registry whose metrics send their changes to `target` (a TritonRegistry, or an InMemoryRegistry
    in tests) every `interval_s` seconds from a thread of their own; `export()` sends them now."""

    def __init__(self, target: Any, interval_s: float, start: bool = True):
        self.target = target
        self.interval_s = interval_s
        self._families: dict[str, ExportedFamily] = {}
        self._metrics: list[Any] = []
        # Held by a metric call and while taking what changed, never across a call to the server.
        self.lock = threading.Lock()
        self._stop = threading.Event()
        if start:
            threading.Thread(target=self._run, name="metrics-export", daemon=True).start()

    def family(self, name: str, description: str, kind: str) -> ExportedFamily:
        if kind not in (COUNTER, GAUGE, HISTOGRAM):
            raise ValueError(f"metric family {name}: unknown kind {kind!r}")
        return self._families.setdefault(name, ExportedFamily(self, name, description, kind))

    def register(self, metric: Any) -> None:
        with self.lock:
            self._metrics.append(metric)

    def export(self) -> None:
        with self.lock:
            calls = [call for metric in self._metrics for call in metric.take()]
        for send, value in calls:
            try:
                send(value)
            except Exception as err:  # a metric must never take the model down, nor keep the others from the server
                print(f"metrics export: {send!r} failed: {err}", flush=True)

    def close(self) -> None:
        """Stop the thread and send what is left (the model's finalize)."""
        self._stop.set()
        self.export()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.export()
