"""Which dynamic-batching config to try, from one measured batch-size → compute-latency curve.

Brute force measures every (instances × batch × delay) combination end to end; on 2 cores each
measurement costs seconds to tens of seconds. Instead: measure how long one instance takes to compute a
batch of b (once per b), predict throughput and p99 latency of each candidate under the offered load,
and verify only the best few with perf_analyzer.

Load models (per instance, batches of k, service time s(k) from the curve):
- closed loop, C concurrent clients: the batcher holds ≤ C requests, so each of I instances runs
  batches of k = min(b, ceil(C / I)); a request waits for its batch's turn:
  latency ≈ s(k) · ceil(C / (I·k)), throughput = C / latency. A queue delay only helps while the batch
  is not yet full, which with C ≥ I·b it always is: delay candidates are 0 and a small wait.
- open loop at R requests/s: a batch of b fills in (b - 1)/R; with a delay d it is cut at
  k = min(b, 1 + R·d). Capacity I·k/s(k) must exceed R; p99 ≈ d + s(k)·(1 + ρ/(1 - ρ)) with
  utilisation ρ (a conservative M/D/1-like inflation), so delays are derived from the rate and budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

SAFETY = 0.8  # predicted p99 must sit this far under the budget to be worth verifying


@dataclass(frozen=True, order=True)
class Candidate:
    instances: int
    preferred_batch: int
    queue_delay_us: int

    def label(self) -> str:
        if self == CURRENT:
            return "current config"
        return f"{self.instances} inst, batch {self.preferred_batch}, delay {self.queue_delay_us} us"

    def as_dict(self) -> dict:
        return asdict(self)


CURRENT = Candidate(0, 0, 0)  # the configs as the repository has them: always measured, never worse than them


@dataclass(frozen=True)
class Prediction:
    candidate: Candidate
    batch: int  # the batch size the model expects to form
    throughput_per_s: float
    p99_ms: float


def service_ms(curve: Mapping[int, float], batch: int) -> float:
    """Compute latency of a batch, interpolated linearly between measured sizes (extrapolated at the end)."""
    sizes = sorted(curve)
    if batch in curve:
        return curve[batch]
    if batch < sizes[0]:
        return curve[sizes[0]]
    for low, high in zip(sizes, sizes[1:]):
        if low < batch < high:
            return curve[low] + (curve[high] - curve[low]) * (batch - low) / (high - low)
    low, high = sizes[-2:] if len(sizes) > 1 else (sizes[0], sizes[0])
    slope = (curve[high] - curve[low]) / (high - low) if high != low else curve[high] / high
    return curve[high] + slope * (batch - high)


def predict_closed(candidate: Candidate, curve: Mapping[int, float], concurrency: int) -> Prediction:
    batch = max(1, min(candidate.preferred_batch, math.ceil(concurrency / candidate.instances)))
    service = service_ms(curve, batch)
    rounds = math.ceil(concurrency / (candidate.instances * batch))
    latency = service * rounds + (candidate.queue_delay_us / 1000 if batch < candidate.preferred_batch else 0)
    return Prediction(candidate, batch, 1000 * concurrency / latency, latency)


def predict_open(candidate: Candidate, curve: Mapping[int, float], rate_per_s: float) -> Prediction:
    delay_ms = candidate.queue_delay_us / 1000
    batch = max(1, min(candidate.preferred_batch, 1 + math.floor(rate_per_s * delay_ms / 1000)))
    service = service_ms(curve, batch)
    capacity = 1000 * candidate.instances * batch / service
    utilisation = rate_per_s / capacity
    if utilisation >= 1:
        return Prediction(candidate, batch, capacity, math.inf)
    p99 = delay_ms + service * (1 + utilisation / (1 - utilisation))
    return Prediction(candidate, batch, rate_per_s, p99)


def candidates(
    curve: Mapping[int, float],
    budget_ms: float,
    instance_options: Sequence[int],
    concurrency: int | None = None,
    rate_per_s: float | None = None,
) -> list[Candidate]:
    """Candidate configs: measured batch sizes × instance counts × delays derived from the load."""
    found = set()
    for instances in instance_options:
        for batch in sorted(curve):
            if rate_per_s:
                fill_us = 1e6 * (batch - 1) / rate_per_s  # time for a full batch to arrive
                room_us = 1000 * budget_ms * SAFETY - 1000 * service_ms(curve, batch)
                delays = {0, int(min(fill_us, max(room_us, 0)))}
            else:
                delays = {0, 100}  # closed loop: the batch is there when the instance frees; a short wait suffices
            for delay in delays:
                found.add(Candidate(instances, batch, max(0, delay)))
    return sorted(found)


def all_predictions(
    curve: Mapping[int, float],
    budget_ms: float,
    instance_options: Sequence[int],
    concurrency: int | None = None,
    rate_per_s: float | None = None,
) -> list[Prediction]:
    found = candidates(curve, budget_ms, instance_options, concurrency, rate_per_s)
    if concurrency is not None:
        return [predict_closed(c, curve, concurrency) for c in found]
    return [predict_open(c, curve, rate_per_s) for c in found]


def shortlist(
    curve: Mapping[int, float],
    budget_ms: float,
    instance_options: Sequence[int],
    concurrency: int | None = None,
    rate_per_s: float | None = None,
    keep: int = 3,
) -> list[Prediction]:
    """The `keep` candidates with the best predicted throughput whose predicted p99 fits the budget."""
    if (concurrency is None) == (rate_per_s is None):
        raise ValueError("give exactly one of concurrency or rate_per_s")
    predictions = all_predictions(curve, budget_ms, instance_options, concurrency, rate_per_s)
    fitting = [p for p in predictions if p.p99_ms <= budget_ms * SAFETY]
    # Highest throughput first; among equals the lower latency, then fewer instances and smaller batches.
    fitting.sort(key=lambda p: (-round(p.throughput_per_s, 1), p.p99_ms, p.candidate))
    distinct, seen = [], set()
    for prediction in fitting:  # configs expected to behave alike (same instances and formed batch): verify one
        behaviour = (prediction.candidate.instances, prediction.batch)
        if behaviour not in seen:
            seen.add(behaviour)
            distinct.append(prediction)
    return distinct[:keep] or sorted(predictions, key=lambda p: p.p99_ms)[:1]
