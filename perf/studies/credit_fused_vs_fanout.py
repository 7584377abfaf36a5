"""credit_default (10 member models in parallel) vs credit_default_fused (one graph, three steps) vs
credit_default_onehop (the same three steps in one Python model), same load; and, as the ceiling of
any one-stub variant on this machine, credit_ceiling: a Python model with credit_default_onehop's config
(inputs, outputs, instances, batching, bounded queue) whose handler computes nothing and answers every
request with fixed outputs. What stays in it is the cost of perf_analyzer, gRPC, Triton's scheduler and
the Python backend's IPC and adapter: the fused path can be no faster. credit_ceiling_metrics is the same
plus the custom-metric calls credit_aggregate used to make per batch, each crossing the stub's IPC on its
own. credit_default_onehop_per_call is credit_default_onehop making them that way (metrics_export_interval_s
0) instead of sending them every second: what exporting them saves.

    .venv/bin/python -m modelrepo.perf.studies.credit_fused_vs_fanout [--concurrency 8] [--rounds 3]

All measured by perf_analyzer over gRPC (batch 1: the single-request path) against one embedded
server, in the same run, rotating which model goes first from round to round. Every ratio is taken
within a round; the table gives the median and range over rounds.
Writes perf/results/credit_fused_vs_fanout_c<concurrency>.{json,md}.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.results import Spread, record
from modelrepo.perf.tune_command import default_input_data
from modelrepo.python_backends.exported_metrics import METRICS_EXPORT_INTERVAL
from modelrepo.triton.model_config import read_config, write_config
from modelrepo.triton.server import TritonServer, free_ports

FAN_OUT, ONEHOP, CEILING, CEILING_METRICS = "credit_default", "credit_default_onehop", "credit_ceiling", "credit_ceiling_metrics"
ONEHOP_PER_CALL = "credit_default_onehop_per_call"
MODELS = (FAN_OUT, "credit_default_fused", ONEHOP, ONEHOP_PER_CALL, CEILING, CEILING_METRICS)
# The ceilings' shim: the shipped adapter around a handler that answers each request's rows with constants.
# With the parameter record_metrics it also makes the custom-metric calls credit_aggregate made per batch
# before it exported them every second (two histogram observations per row, one decision count), each an
# IPC round trip to the server in Triton 2.51's Python backend: what those cost, apart from any computation.
CEILING_MODEL = '''
import numpy as np

from modelrepo.python_backends.ensemble_stats import PROBABILITY_BUCKETS, UNCERTAINTY_BUCKETS
from modelrepo.python_backends.triton_adapter import triton_model


class FixedAnswer:
    def __init__(self, metrics=None):
        self.histograms, self.decisions = (), None
        if metrics is not None:
            self.histograms = (
                metrics.family("credit_ceiling_probability", "study only", "histogram").metric({}, PROBABILITY_BUCKETS),
                metrics.family("credit_ceiling_uncertainty", "study only", "histogram").metric({}, UNCERTAINTY_BUCKETS),
            )
            self.decisions = metrics.family("credit_ceiling_decisions_total", "study only", "counter").metric({"decision": "approve"})

    @classmethod
    def from_context(cls, context):
        return cls(context.metrics if context.parameter("record_metrics", "false") == "true" else None)

    def execute_batch(self, requests):
        answers = []
        for request in requests:
            rows = len(request["BALANCE"])
            for histogram in self.histograms:
                for _ in range(rows):
                    histogram.observe(0.05)
            answers.append({
                "DEFAULT_PROBABILITY": np.full((rows, 1), 0.05, np.float32),
                "UNCERTAINTY": np.full((rows, 1), 0.01, np.float32),
                "INTERVAL": np.tile(np.array([[0.03, 0.07]], np.float32), (rows, 1)),
                "DECISION": np.full((rows, 1), b"approve", dtype=object),
                "CLASS_PROBABILITIES": np.tile(np.array([[0.95, 0.05]], np.float32), (rows, 1)),
            })
        if self.decisions is not None:
            self.decisions.increment(float(sum(len(request["BALANCE"]) for request in requests)))
        return answers


TritonPythonModel = triton_model(FixedAnswer)
'''


def ceiling_repository(folder: Path) -> Path:
    """A second model repository holding the ceilings: credit_default_onehop's config, no computation."""
    repository = folder / "ceiling_repository"
    for name in (CEILING, CEILING_METRICS):
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "1" / "model.py").write_text(CEILING_MODEL)
        config = read_config(MODEL_REPOSITORY / ONEHOP)
        config.name = name
        config.ClearField("parameters")
        if name == CEILING_METRICS:
            config.parameters["record_metrics"].string_value = "true"
        for output in config.output:
            output.ClearField("label_filename")
        write_config(repository / name, config)
    # credit_default_onehop as it was before its metrics were exported every second: one IPC per call. Its
    # histograms are then Triton histograms of the same names, so the metrics page shows those series twice
    # (this study reads none of them).
    shutil.copytree(MODEL_REPOSITORY / ONEHOP, repository / ONEHOP_PER_CALL)
    config = read_config(repository / ONEHOP_PER_CALL)
    config.name = ONEHOP_PER_CALL
    config.parameters[METRICS_EXPORT_INTERVAL].string_value = "0"
    write_config(repository / ONEHOP_PER_CALL, config)
    return repository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="measure every model this many times")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {model: [] for model in MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        server = TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key="bench", load_models=MODELS,
                              extra_args=[f"--model-repository={ceiling_repository(Path(tmp))}"])
        with server:
            data = Path(default_input_data(MODEL_REPOSITORY, ONEHOP, Path(tmp)))  # the build's hold-out rows
            for round_index in range(args.rounds):
                for model in MODELS[round_index % len(MODELS):] + MODELS[:round_index % len(MODELS)]:
                    results[model].append(
                        measure(model, server.grpc_url, data, args.concurrency, "bench", Path(tmp) / f"{model}.csv")
                    )
    throughput = {model: Spread.of(run["throughput_infer_per_s"] for run in runs) for model, runs in results.items()}
    ratios = {model: Spread.of(run["throughput_infer_per_s"] / fan_out["throughput_infer_per_s"]
                               for run, fan_out in zip(results[model], results[FAN_OUT], strict=True))
              for model in MODELS[1:]}
    onehop_share = Spread.of(run["throughput_infer_per_s"] / ceiling["throughput_infer_per_s"]
                             for run, ceiling in zip(results[ONEHOP], results[CEILING], strict=True))
    exported_gain = Spread.of(run["throughput_infer_per_s"] / per_call["throughput_infer_per_s"]
                              for run, per_call in zip(results[ONEHOP], results[ONEHOP_PER_CALL], strict=True))
    command = f".venv/bin/python -m modelrepo.perf.studies.credit_fused_vs_fanout --concurrency {args.concurrency} --rounds {args.rounds}"
    body = ["| model | throughput (infer/s) | p50 (ms) | p99 (ms) | ÷ fan-out (same round) |", "| --- | --- | --- | --- | --- |"]
    for model, runs in results.items():
        p50, p99 = (Spread.of(run[key] for run in runs) for key in ("p50_ms", "p99_ms"))
        ratio = ratios[model].text(2) if model in ratios else "1"
        body.append(f"| {model} | {throughput[model].text(1)} | {p50.text(1)} | {p99.text(1)} | {ratio} |")
    body += ["", f"Median (range) over {args.rounds} rounds. Goal (issue 20): the fused single-request path "
             f"≥ 5× the fan-out: credit_default_fused {ratios['credit_default_fused'].text(2)}, "
             f"credit_default_onehop {ratios['credit_default_onehop'].text(2)}; "
             f"the ceiling of any one-stub variant here (credit_ceiling, no computation) {ratios[CEILING].text(2)}, "
             f"credit_default_onehop at {onehop_share.text(2)} of it; the ceiling with the aggregate's metric calls "
             f"(credit_ceiling_metrics) {ratios[CEILING_METRICS].text(2)}. Metrics exported every second against "
             f"one IPC per call (credit_default_onehop ÷ {ONEHOP_PER_CALL}, same round): {exported_gain.text(2)}.", "",
             "perf_analyzer command per model (gRPC, batch 1):", "", f"`{results[FAN_OUT][0]['command']}`"]
    note = ("Embedded Triton 2.51.0 with only these models (and their steps) loaded, Python-backend onnxruntime "
            "members; perf_analyzer shares the machine's cores with the server. The ceilings are served from a second "
            "model repository (a temporary folder) by the same server.")
    data = {"runs": results, "throughput": {m: s.as_dict() for m, s in throughput.items()},
            "ratio_to_fan_out": {m: s.as_dict() for m, s in ratios.items()},
            "onehop_to_ceiling": onehop_share.as_dict(), "onehop_exported_to_per_call": exported_gain.as_dict()}
    print(record(f"credit_fused_vs_fanout_c{args.concurrency}", "credit_default_fused and credit_default_onehop vs "
                 "credit_default (fan-out)", command, data, body, note))


if __name__ == "__main__":
    main()
