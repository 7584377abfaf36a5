"""credit_default (10 member models in parallel) vs credit_default_fused (one graph, three steps) vs
credit_default_onehop (the same three steps in one Python model), same load.

    .venv/bin/python -m modelrepo.perf.studies.credit_fused_vs_fanout [--concurrency 8] [--rounds 3]

All measured by perf_analyzer over gRPC (batch 1: the single-request path) against one embedded
server, in the same run, rotating which model goes first from round to round. Every ratio is taken
within a round; the table gives the median and range over rounds.
Writes perf/results/credit_fused_vs_fanout_c<concurrency>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from modelrepo.build.credit import dataset
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.results import Spread, record
from modelrepo.triton.server import TritonServer, free_ports

FAN_OUT = "credit_default"
MODELS = (FAN_OUT, "credit_default_fused", "credit_default_onehop")


def input_file(directory: Path, rows: int) -> Path:
    raw = dataset()["x_test"][:rows]
    data = [
        {
            "STUDENT": {"content": ["Yes" if row[0] else "No"], "shape": [1]},
            "BALANCE": {"content": [float(row[1])], "shape": [1]},
            "INCOME": {"content": [float(row[2])], "shape": [1]},
        }
        for row in raw
    ]
    path = directory / "credit_inputs.json"
    path.write_text(json.dumps({"data": data}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="measure every model this many times")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {model: [] for model in MODELS}
    with tempfile.TemporaryDirectory() as tmp, TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key="bench",
                                                            load_models=MODELS) as server:
        data = input_file(Path(tmp), 64)
        for round_index in range(args.rounds):
            for model in MODELS[round_index % len(MODELS):] + MODELS[:round_index % len(MODELS)]:
                results[model].append(
                    measure(model, server.grpc_url, data, args.concurrency, "bench", Path(tmp) / f"{model}.csv")
                )
    throughput = {model: Spread.of(run["throughput_infer_per_s"] for run in runs) for model, runs in results.items()}
    ratios = {model: Spread.of(run["throughput_infer_per_s"] / fan_out["throughput_infer_per_s"]
                               for run, fan_out in zip(results[model], results[FAN_OUT], strict=True))
              for model in MODELS[1:]}
    command = f".venv/bin/python -m modelrepo.perf.studies.credit_fused_vs_fanout --concurrency {args.concurrency} --rounds {args.rounds}"
    body = ["| model | throughput (infer/s) | p50 (ms) | p99 (ms) | ÷ fan-out (same round) |", "| --- | --- | --- | --- | --- |"]
    for model, runs in results.items():
        p50, p99 = (Spread.of(run[key] for run in runs) for key in ("p50_ms", "p99_ms"))
        ratio = ratios[model].text(2) if model in ratios else "1"
        body.append(f"| {model} | {throughput[model].text(1)} | {p50.text(1)} | {p99.text(1)} | {ratio} |")
    body += ["", f"Median (range) over {args.rounds} rounds. Goal (issue 20): the fused single-request path "
             f"≥ 5× the fan-out: credit_default_fused {ratios['credit_default_fused'].text(2)}, "
             f"credit_default_onehop {ratios['credit_default_onehop'].text(2)}.", "",
             "perf_analyzer command per model (gRPC, batch 1):", "", f"`{results[FAN_OUT][0]['command']}`"]
    note = ("Embedded Triton 2.51.0 with only these models (and their steps) loaded, Python-backend onnxruntime "
            "members; perf_analyzer shares the machine's cores with the server.")
    data = {"runs": results, "throughput": {m: s.as_dict() for m, s in throughput.items()},
            "ratio_to_fan_out": {m: s.as_dict() for m, s in ratios.items()}}
    print(record(f"credit_fused_vs_fanout_c{args.concurrency}", "credit_default_fused and credit_default_onehop vs "
                 "credit_default (fan-out)", command, data, body, note))


if __name__ == "__main__":
    main()
