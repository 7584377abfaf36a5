"""`modelrepo tune MODEL --p99-ms B`: the best dynamic-batching config under a p99 budget, verified.

1. Start the embedded server (explicit model control) with MODEL only (an ensemble brings its steps).
2. Measure the batch-size → latency curve once: one request carrying b rows at concurrency 1, for
   b = 1, 2, 4, … up to max_batch_size, with batching knobs neutral (1 instance, no queue delay, no
   queue policy or priority levels: with either, Triton 2.51's batcher stalls one instance in 500 ms steps).
   Where a step batches requests of different lengths (allow_ragged_batch), b one-row requests at
   concurrency b, gathered into one batch, instead (`gathers_batches`).
3. Predict every candidate (instances × preferred batch × queue delay; delays derived from the load
   and the budget) with tune_search, keep the best few that fit the budget with margin.
4. Verify those end to end with perf_analyzer under the requested load, each candidate loaded with
   `load_model(config=…)` — no restart. Then re-measure the winner and the runner-up (the deciding
   measurement) and state how confident the choice is.
5. Report (CSV, PNG plots, markdown with the perf_analyzer commands), and with --apply write the
   winner into config.pbtxt through the protobuf, showing the diff.

For an ensemble the knobs go to its composing models: preferred batch and delay to every batchable
step, the instance count to the step that spends the most compute time (Triton's statistics).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from google.protobuf import json_format

from modelrepo.perf.analyzer import RequestsRefused, measure
from modelrepo.perf.tune_search import CURRENT, Candidate, Prediction, all_predictions, shortlist
from modelrepo.triton.model_config import ModelConfig, copy_config, ensemble_steps, set_cpu_instances

DEFAULT_INSTANCE_OPTIONS = (1, 2)  # 2 cores: more instances only contend
KEEP = 2  # candidates verified under load; the deciding measurement repeats the best two
FALLBACK_TRIES = 2  # if none of them meets the budget, this many more, lowest predicted latency first
CURVE_INTERVAL_MS = 300  # concurrency 1: little variance, short windows suffice (at least 10 requests each, below)
CURVE_MAX_TRIALS = 20
LOAD_REQUESTS = 100  # per perf_analyzer window under load: each p99 rests on at least 300 requests
CURVE_GATHER_US = 20_000  # a gathered curve point: the batcher waits at most this long for its b requests
DECISIVE_MARGIN = 0.25  # a runner-up this far behind the leader (throughput, or p99 in an open loop) is not measured again
KEEP_UP = 0.95  # open loop: a measurement that served less of the offered rate fell behind it


@dataclass
class Load:
    concurrency: int | None = None
    request_rate: float | None = None

    def describe(self) -> str:
        return f"concurrency {self.concurrency}" if self.concurrency else f"{self.request_rate:g} requests/s"


@dataclass(frozen=True)
class Target:
    """What a measurement must show: a p99 within the budget and, in an open loop, the offered rate served
    (KEEP_UP of it). Short of the rate, perf_analyzer sent late or requests were still waiting when its
    windows closed, so its p99 was not taken at the load asked for: a tune at 200 requests/s measured
    148.9/s with a p99 of 46 ms, which the budget alone called fitting
    (perf/results/tune-text_embedding-20261207-213225/, its baseline; then perf_analyzer's sync mode,
    which never has more than 4 requests outstanding: see analyzer.load_args)."""

    budget_ms: float
    request_rate: float | None = None

    @classmethod
    def of(cls, budget_ms: float, load: Load) -> "Target":
        return cls(budget_ms, load.request_rate)

    def miss(self, throughput_per_s: float, p99_ms: float) -> str | None:
        """None when met; else why not, in words for a report."""
        if p99_ms > self.budget_ms:
            return "over budget"
        if self.request_rate and throughput_per_s < KEEP_UP * self.request_rate:
            return f"fell behind: {throughput_per_s:.1f} of {self.request_rate:g}/s"
        return None

    def met_by(self, measurement: "Measurement") -> bool:
        return self.miss(measurement.throughput_per_s, measurement.p99_ms) is None

    def verdict(self, throughput_per_s: float, p99_ms: float) -> str:
        """A report's cell: "yes", or "no: " and why."""
        miss = self.miss(throughput_per_s, p99_ms)
        return f"no: {miss}" if miss else "yes"


@dataclass
class Measurement:
    phase: str  # curve | verify | decide | baseline
    candidate: Candidate | None
    batch_rows: int
    throughput_per_s: float
    p50_ms: float
    p99_ms: float
    queue_ms: float
    compute_ms: float
    command: str
    seconds: float = 0.0  # wall time of this step: the config load, if any, and the measurement
    rows_per_batch: float = 0.0  # rows per executed batch of the tuned step that batched least (Triton's statistics)

    def row(self) -> dict:
        return {
            "phase": self.phase,
            **(self.candidate.as_dict() if self.candidate else {"instances": "", "preferred_batch": "", "queue_delay_us": ""}),
            "batch_rows": self.batch_rows,
            "throughput_per_s": round(self.throughput_per_s, 3),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "queue_ms": self.queue_ms,
            "compute_ms": self.compute_ms,
            "rows_per_batch": round(self.rows_per_batch, 2),
            "seconds": round(self.seconds, 2),
            "command": self.command,
        }


@dataclass
class TuneResult:
    model: str
    budget_ms: float
    load: Load
    tuned_models: list[str]
    bottleneck: str
    curve: dict[int, float]
    predictions: list[Prediction]
    measurements: list[Measurement] = field(default_factory=list)
    winner: Candidate | None = None
    confidence: str = ""
    configs: dict[str, ModelConfig] = field(default_factory=dict)  # winner's config per tuned model
    curve_gathered: bool = False  # the curve's batches were one-row requests gathered (gathers_batches)
    seconds: float = 0.0

    @property
    def target(self) -> Target:
        return Target.of(self.budget_ms, self.load)


class Totals(NamedTuple):
    """A model's cumulative inference statistics (LiveModels.totals)."""

    requests: int  # successful
    queue_ns: int
    compute_ns: int  # compute_infer
    rows: int  # inference_count: rows inferred, a request of b rows counting b
    batches: int  # execution_count: batches executed


class LiveModels:
    """Read and replace model configs on a running server (explicit model control, admin key)."""

    def __init__(self, grpc_client, headers: dict[str, str]):
        self.client, self.headers = grpc_client, headers

    def config(self, model: str) -> ModelConfig:
        raw = self.client.get_model_config(model, as_json=True, headers=self.headers)["config"]
        return json_format.ParseDict(raw, ModelConfig(), ignore_unknown_fields=True)

    def load(self, model: str, config: ModelConfig) -> None:
        text = json_format.MessageToJson(config, preserving_proto_field_name=True)
        self.client.load_model(model, config=text, headers=self.headers)

    def totals(self, model: str) -> Totals:
        """A model's cumulative statistics, all versions, from one statistics call."""
        stats = self.client.get_inference_statistics(model, as_json=True, headers=self.headers)["model_stats"]
        def total(kind: str, field: str) -> int:
            return sum(int(s["inference_stats"][kind].get(field, 0)) for s in stats)
        return Totals(total("success", "count"), total("queue", "ns"), total("compute_infer", "ns"),
                      sum(int(s.get("inference_count", 0)) for s in stats),
                      sum(int(s.get("execution_count", 0)) for s in stats))

    @staticmethod
    def queue_ms_per_request(before: Totals, after: Totals) -> float:
        """Mean queue time (ms) of the requests served between two `totals` readings of one model."""
        return (after.queue_ns - before.queue_ns) / max(1, after.requests - before.requests) / 1e6

    def compute_ns_per_request(self, model: str) -> float:
        totals = self.totals(model)
        return totals.compute_ns / totals.requests if totals.requests else 0.0



def with_knobs(config: ModelConfig, candidate: Candidate | None, instances: int | None) -> ModelConfig:
    """A copy with the candidate's batching knobs. None: neutral, for the latency curve — no preferred
    size, no delay, and no queue policy or priority levels: with either, Triton 2.51's batcher stops
    prefetching and one instance waits out 500 ms steps (README "Failure modes"), which at concurrency 1
    gave the curve a p99 of 514 ms against a p50 of 13 ms and stretched its windows
    (perf/results/tune-minilm_encoder-20261202-curve-before/). The queue guards are no use to one
    request at a time; the candidates keep them."""
    tuned = copy_config(config)
    batching = tuned.dynamic_batching
    batching.ClearField("preferred_batch_size")
    batching.max_queue_delay_microseconds = 0
    if candidate is None:
        for stall_trigger in ("priority_levels", "default_priority_level", "default_queue_policy", "priority_queue_policy"):
            batching.ClearField(stall_trigger)
    else:
        batching.preferred_batch_size.append(min(candidate.preferred_batch, tuned.max_batch_size))
        batching.max_queue_delay_microseconds = candidate.queue_delay_us
    if instances is not None:
        set_cpu_instances(tuned, instances)
    return tuned


def gathers_batches(configs: list[ModelConfig]) -> bool:
    """Whether the curve must gather b one-row requests into a batch rather than send one request of b
    rows: so when a step batches requests of different lengths (an input with allow_ragged_batch). Its
    runner keeps each request's own length and splits the batch by length (length-aware batching), while
    one request of b texts is padded to its longest before it gets there: on mixed texts that measured a
    batch of 4 at 45 ms against 7 ms for one (perf/results/tune-text_embedding-20261207-213536/)."""
    return any(spec.allow_ragged_batch for config in configs for spec in config.input)


def curve_config(config: ModelConfig, rows: int) -> ModelConfig:
    """The neutral curve config (with_knobs(…, None, 1)), gathering `rows` requests into one batch."""
    gathering = with_knobs(config, None, 1)
    if rows > 1:
        gathering.dynamic_batching.preferred_batch_size.append(min(rows, gathering.max_batch_size))
        gathering.dynamic_batching.max_queue_delay_microseconds = CURVE_GATHER_US
    return gathering


def batch_sizes(max_batch_size: int) -> list[int]:
    sizes, size = [], 1
    while size <= max_batch_size:
        sizes.append(size)
        size *= 2
    return sizes


REFUSED_RETRIES = 1  # a refusal can be the host stalling (a stub exiting, a neighbour): measure once more


def measured_or_refused(run: Callable[[], dict], note: Callable[[str], None]) -> dict | None:
    """`run()`'s figures, or None when the server refused requests (its queue policy) on every try: a
    configuration that fails its budget by far (queue timeouts sit well past any p99 budget), not an error
    that ends the tuning."""
    for attempt in range(1 + REFUSED_RETRIES):
        try:
            return run()
        except RequestsRefused:
            again = attempt < REFUSED_RETRIES
            note("the server refused requests (queue policy timeout or size); "
                 + ("measuring once more" if again else "counted as over budget"))
    return None


class Tuner:
    def __init__(
        self,
        server,
        live: LiveModels,
        model: str,
        budget_ms: float,
        load: Load,
        input_data: Path,
        workdir: Path,
        admin_key: str,
        instance_options=DEFAULT_INSTANCE_OPTIONS,
        progress: Callable[[str], None] = print,
    ):
        self.server, self.live, self.model, self.budget_ms, self.load = server, live, model, budget_ms, load
        self.target = Target.of(budget_ms, load)
        self.input_data, self.workdir, self.admin_key = input_data, workdir, admin_key
        self.instance_options, self.progress = tuple(instance_options), progress
        top = live.config(model)
        self.is_ensemble = top.platform == "ensemble"
        steps = ensemble_steps(top) or [model]
        self.originals = {name: live.config(name) for name in steps}
        self.tuned_models = [name for name, cfg in self.originals.items() if cfg.HasField("dynamic_batching")]
        self.max_batch = top.max_batch_size
        self.bottleneck = self.tuned_models[0]
        self.curve_gathers = gathers_batches([self.originals[name] for name in self.tuned_models])

    def run_perf(self, phase: str, candidate: Candidate | None, rows: int, concurrency=None, rate=None,
                 interval_ms: int = CURVE_INTERVAL_MS, gathered: bool = False) -> Measurement:
        """One perf_analyzer run; queue and compute per request from Triton's statistics of every tuned
        model (for an ensemble the steps' queues are where requests wait, not the ensemble's own).
        Requests of `rows` rows; `gathered`: one-row requests, `rows` of them gathered into a batch."""
        rows_per_request = 1 if gathered else rows
        extra = ["-b", str(rows_per_request)] if rows_per_request > 1 else []
        started = time.monotonic()
        before = {name: self.live.totals(name) for name in self.tuned_models}
        curve = phase == "curve"
        result = measured_or_refused(lambda: measure(
            self.model, self.server.grpc_url, self.input_data, concurrency, self.admin_key,
            self.workdir / "last.csv", extra=extra, request_rate=rate, interval_ms=interval_ms,
            # Under load: windows of LOAD_REQUESTS requests, however long that takes (a fast model's
            # windows are short, a slow one's long enough), so every p99 rests on 3 x LOAD_REQUESTS or more.
            # The curve needs only a p50 at concurrency 1: timed windows and a stable average; waiting for
            # a stable p99 took a sub-millisecond model 16 s windows and 6 of the 6.5 minutes of its tuning.
            request_count=None if curve else LOAD_REQUESTS, percentile=None if curve else 99,
            # the first windows after a reload are warm-up: more of them before starting over with longer ones
            max_trials=CURVE_MAX_TRIALS if curve else 10,
        ), lambda note: self.progress(f"{phase}: {candidate.label() if candidate else f'batch {rows}'}: {note}"))
        if result is None and curve:
            raise RuntimeError(f"tuning {self.model}: the server refused requests at concurrency {concurrency} (batch {rows}), "
                               "twice: the host is too busy to measure a latency curve")
        if result is None:  # counted over any budget: nothing served within the queue policy's timeout
            result = {"throughput_infer_per_s": 0.0, "p50_ms": math.inf, "p99_ms": math.inf,
                      "command": "(requests refused by the queue policy, twice)"}
        queue_ms = compute_ms = 0.0
        rows_per_batch = []  # of each tuned step; the measurement keeps the least batched
        for name, start in before.items():
            end = self.live.totals(name)
            if end.requests > start.requests:
                queue_ms += (end.queue_ns - start.queue_ns) / (end.requests - start.requests) / 1e6
                compute_ms += (end.compute_ns - start.compute_ns) / (end.requests - start.requests) / 1e6
            if end.batches > start.batches:
                rows_per_batch.append((end.rows - start.rows) / (end.batches - start.batches))
        return Measurement(
            phase, candidate, rows, result["throughput_infer_per_s"] * rows_per_request, result["p50_ms"],
            result["p99_ms"], round(queue_ms, 2), round(compute_ms, 2), result["command"], time.monotonic() - started,
            min(rows_per_batch, default=0.0),
        )

    def apply(self, candidate: Candidate | None, instances_for_bottleneck: int | None) -> dict[str, ModelConfig]:
        if candidate == CURRENT:
            for name, config in self.originals.items():
                if name in self.tuned_models:
                    self.live.load(name, config)
            return {name: self.originals[name] for name in self.tuned_models}
        configs = {}
        for name in self.tuned_models:
            instances = instances_for_bottleneck if name == self.bottleneck else None
            configs[name] = with_knobs(self.originals[name], candidate, instances)
            self.live.load(name, configs[name])
        return configs

    def largest_useful_batch(self) -> int:
        """Batches never exceed the requests outstanding: the concurrency, or what arrives within the budget."""
        if self.load.concurrency:
            outstanding = self.load.concurrency
        else:
            outstanding = math.ceil(self.load.request_rate * self.budget_ms / 1000)
        return max(1, min(self.max_batch, outstanding))

    def measure_curve(self, result: TuneResult) -> dict[int, float]:
        if not self.curve_gathers:  # a gathered curve loads its config at every batch size, below
            self.apply(None, 1)
        curve = {}
        interval = CURVE_INTERVAL_MS
        for rows in batch_sizes(self.largest_useful_batch()):
            if self.curve_gathers:  # b one-row requests at once, gathered by the batcher into one batch
                for name in self.tuned_models:
                    self.live.load(name, curve_config(self.originals[name], rows))
            measurement = self.run_perf("curve", None, rows, concurrency=rows if self.curve_gathers else 1,
                                        interval_ms=interval, gathered=self.curve_gathers)
            # perf_analyzer needs several requests per window to call it stable: grow windows with latency
            interval = max(CURVE_INTERVAL_MS, int(2 * 5 * measurement.p50_ms))
            result.measurements.append(measurement)
            curve[rows] = measurement.p50_ms
            self.progress(f"curve: batch {rows:>3} -> {measurement.p50_ms:.1f} ms")
            if measurement.p50_ms > self.budget_ms:
                break  # larger batches cannot fit the budget either
        if self.is_ensemble and len(self.tuned_models) > 1:
            self.bottleneck = max(self.tuned_models, key=self.live.compute_ns_per_request)
        return curve

    def verify(self, result: TuneResult, candidate: Candidate, phase: str) -> Measurement:
        started = time.monotonic()
        self.apply(candidate, candidate.instances)
        measurement = self.run_perf(phase, candidate, 1, self.load.concurrency, self.load.request_rate)
        measurement.seconds = time.monotonic() - started
        result.measurements.append(measurement)
        fits = self.target.miss(measurement.throughput_per_s, measurement.p99_ms) or "fits"
        self.progress(f"{phase}: {candidate.label()} -> {measurement.throughput_per_s:.1f}/s, "
                      f"p99 {measurement.p99_ms:.1f} ms ({fits})")
        return measurement

    def tune(self) -> TuneResult:
        started = time.monotonic()
        result = TuneResult(self.model, self.budget_ms, self.load, self.tuned_models, self.bottleneck, {}, [],
                            curve_gathered=self.curve_gathers)
        try:
            verified = [(CURRENT, self.verify(result, CURRENT, "baseline"))]  # the bar to beat
            result.curve = self.measure_curve(result)
            result.bottleneck = self.bottleneck
            result.predictions = shortlist(result.curve, self.budget_ms, self.instance_options,
                                           self.load.concurrency, self.load.request_rate, keep=KEEP)
            verified += [(p.candidate, self.verify(result, p.candidate, "verify")) for p in result.predictions]
            if not any(self.target.met_by(m) for c, m in verified if c != CURRENT):
                # The model's tail was longer than predicted: walk towards lower predicted latency.
                tried = {c for c, _ in verified}
                by_latency = sorted(all_predictions(result.curve, self.budget_ms, self.instance_options,
                                                    self.load.concurrency, self.load.request_rate),
                                    key=lambda p: (p.p99_ms, -p.throughput_per_s))
                for prediction in [p for p in by_latency if p.candidate not in tried][:FALLBACK_TRIES]:
                    measurement = self.verify(result, prediction.candidate, "verify")
                    verified.append((prediction.candidate, measurement))
                    if self.target.met_by(measurement):
                        break
            objective = Objective.for_load(self.load)
            fitting = sorted(((objective.score(m), c) for c, m in verified if self.target.met_by(m)), reverse=True)
            if not fitting:
                result.confidence = ("none: no candidate, the current config included, met the budget when measured"
                                     + (" at the offered rate" if self.load.request_rate else ""))
                return result
            contenders = [c for _, c in fitting[:2]]
            decide = {c: [m for cc, m in verified if cc == c] for c in contenders}
            # The deciding measurement, repeated: always the leader's; the runner-up's only when the race
            # is close (within DECISIVE_MARGIN) or the leader's repeat breaks the budget.
            leader_repeat = self.verify(result, contenders[0], "decide")
            decide[contenders[0]].append(leader_repeat)
            if len(contenders) > 1 and (objective.close(fitting[1][0], fitting[0][0])
                                        or not self.target.met_by(leader_repeat)):
                decide[contenders[1]].append(self.verify(result, contenders[1], "decide"))
            best = max(contenders, key=lambda c: min(objective.score(m) for m in decide[c])
                       if all(self.target.met_by(m) for m in decide[c]) else -math.inf)
            result.winner = best
            result.confidence = confidence(decide, best, self.target, objective)
            result.configs = self.apply(best, best.instances)
        finally:
            result.seconds = time.monotonic() - started
        return result


@dataclass(frozen=True)
class Objective:
    """What a winner maximises. Closed loop: throughput. Open loop: every candidate that keeps up serves
    the offered rate, so throughputs tie by construction; the lower p99 wins (scored as -p99)."""

    open_loop: bool

    @classmethod
    def for_load(cls, load: Load) -> "Objective":
        return cls(open_loop=load.request_rate is not None)

    def score(self, measurement: Measurement) -> float:
        return -measurement.p99_ms if self.open_loop else measurement.throughput_per_s

    def close(self, runner_up: float, leader: float) -> bool:
        """The runner-up within DECISIVE_MARGIN of the leader (scores: higher is better)."""
        if self.open_loop:
            return -runner_up <= (1 + DECISIVE_MARGIN) * -leader
        return runner_up >= (1 - DECISIVE_MARGIN) * leader

    @property
    def unit(self) -> str:
        return " ms" if self.open_loop else "/s"

    def describe(self, score: float) -> str:
        return f"p99 {-score:.1f}{self.unit}" if self.open_loop else f"{score:.1f}{self.unit}"


def confidence(runs: dict[Candidate, list[Measurement]], best: Candidate, target: Target,
               objective: Objective = Objective(open_loop=False)) -> str:
    """High only if the winner's worst run beats the runner-up's best by more than the run-to-run spread."""
    mine = runs[best]
    misses = [target.miss(m.throughput_per_s, m.p99_ms) for m in mine]
    if any(misses):
        return f"low: the winner missed in a repeat ({next(filter(None, misses))})"
    others = [c for c in runs if c != best]
    if not others:
        return "high: the only candidate that met the budget"
    rival = runs[others[0]]
    rival_misses = [target.miss(m.throughput_per_s, m.p99_ms) for m in rival]
    if any(rival_misses):
        return f"high: the runner-up ({others[0].label()}) missed in a repeat ({next(filter(None, rival_misses))})"
    mine_scores, rival_scores = [objective.score(m) for m in mine], [objective.score(m) for m in rival]
    noise = max(max(r) - min(r) for r in (mine_scores, rival_scores))
    gap = min(mine_scores) - max(rival_scores)
    summary = (f"worst of {len(mine)} runs {objective.describe(min(mine_scores))} vs the runner-up's "
               f"({others[0].label()}) best of {len(rival)} {objective.describe(max(rival_scores))}; "
               f"run-to-run spread {noise:.1f}{objective.unit}")
    if gap > noise:
        return f"high: {summary}"
    return f"low: within noise ({summary}); either is a sound choice"


def predicted_vs(result: TuneResult) -> list[dict]:
    return [{"candidate": p.candidate.label(), "predicted_batch": p.batch,
             "predicted_throughput_per_s": round(p.throughput_per_s, 1),
             "predicted_p99_ms": None if math.isinf(p.p99_ms) else round(p.p99_ms, 1)} for p in result.predictions]

