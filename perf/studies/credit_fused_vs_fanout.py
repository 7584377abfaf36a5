"""credit_default (10 member models in parallel) vs credit_default_fused (one graph), same load.

    .venv/bin/python -m modelrepo.perf.studies.credit_fused_vs_fanout [--concurrency 8] [--batch 1]

Both measured by perf_analyzer over gRPC against one embedded server, in the same run.
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
from modelrepo.perf.results import record
from modelrepo.triton.server import TritonServer, free_ports

MODELS = ("credit_default", "credit_default_fused")


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
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two models this many times")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {model: [] for model in MODELS}
    with tempfile.TemporaryDirectory() as tmp, TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key="bench") as server:
        data = input_file(Path(tmp), 64)
        for _ in range(args.rounds):
            for model in MODELS:
                results[model].append(
                    measure(model, server.grpc_url, data, args.concurrency, "bench", Path(tmp) / f"{model}.csv")
                )
    best = {model: max(r["throughput_infer_per_s"] for r in runs) for model, runs in results.items()}
    ratio = best["credit_default_fused"] / best["credit_default"]
    command = f".venv/bin/python -m modelrepo.perf.studies.credit_fused_vs_fanout --concurrency {args.concurrency} --rounds {args.rounds}"
    body = ["| model | round | throughput (infer/s) | p50 (ms) | p99 (ms) |", "| --- | --- | --- | --- | --- |"]
    for model, runs in results.items():
        for number, run in enumerate(runs, 1):
            body.append(f"| {model} | {number} | {run['throughput_infer_per_s']:.1f} | {run['p50_ms']:.1f} | {run['p99_ms']:.1f} |")
    body += ["", f"**Fused / fan-out throughput: {ratio:.2f}×** (goal ≥ 5×).", "",
             "perf_analyzer command per model (gRPC, batch 1):", "", f"`{results['credit_default'][0]['command']}`"]
    note = (
        "Embedded Triton 2.51.0, Python-backend onnxruntime members. One server, models measured "
        "alternately; ratio of the best round of each."
    )
    print(record(f"credit_fused_vs_fanout_c{args.concurrency}", "credit_default_fused vs credit_default (fan-out)",
                 command, {"runs": results, "best": best, "ratio": ratio}, body, note))


if __name__ == "__main__":
    main()
