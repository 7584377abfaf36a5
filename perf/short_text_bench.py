"""`modelrepo bench --workload short`: text_embedding on short texts (queries and titles, 3-15 tokens)
and a mixed workload, each ratio measured within one run.

1. served: perf_analyzer (gRPC) with short texts at concurrency 16 and 1;
2. the limit: tokenizer + encoder in this process with the served parallelism (as many callers, each
   its own session of the served intra-op threads: the same total threads), at each batch size in
   BATCHES; the best batch counts;
3. what users write instead: FastAPI + onnxruntime and Triton (KServe v2 JSON over HTTP) driven by the
   same Python client at concurrency 16 and 1;
4. mixed: 80 % short texts, 20 % long reviews, open loop at `--mixed-rate` requests/s (perf/fixed_rate.py,
   latency from the scheduled time), p50 / p99 per kind; the short requests' p99 against `--short-p99-ms`.
Everything is repeated `--runs` times; ratios are taken within each run and quoted as median (range).
Writes perf/results/<date>-bench-short.{json,md}.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
import secrets
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.bench import MODEL, http_client_comparison, in_process_throughput
from modelrepo.perf.embedding_sessions import served_parallelism
from modelrepo.perf.fixed_rate import FixedRateLoad
from modelrepo.perf.results import Spread, record
from modelrepo.perf.workloads import SHORT_PER_LONG, reviews, short_texts, text_input_data
from modelrepo.triton.server import TritonServer, free_ports

BATCHES = (1, 4, 16, 32)


def text_caller(grpc_url: str, texts: list[str]):
    """A FixedRateLoad factory: each worker thread its own client, cycling through `texts`."""
    def factory():
        import tritonclient.grpc as grpcclient

        client, turn = grpcclient.InferenceServerClient(grpc_url), [0]

        def call() -> str:
            tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[texts[turn[0] % len(texts)].encode()]], dtype=object))
            turn[0] += 1
            client.infer(MODEL, [tensor])
            return ""
        return call
    return factory


def mixed_workload(grpc_url: str, rate: float, seconds: float) -> dict:
    """Open loop at `rate`/s, four short requests to one long; p50 / p99 (ms) and errors per kind."""
    calls = {f"short {k}": text_caller(grpc_url, short_texts()) for k in range(SHORT_PER_LONG)}
    calls["long"] = text_caller(grpc_url, reviews())
    with FixedRateLoad(calls, rate, workers=32) as load:
        time.sleep(seconds)
    results = load.snapshot()
    figures = {"rate_per_s": rate, "unsent": load.unsent}
    for kind in ("short", "long"):
        mine = [r for r in results if r.name.startswith(kind)]
        ms = np.array([r.latency for r in mine if r.error is None]) * 1000
        figures[kind] = {"requests": len(mine), "errors": sum(r.error is not None for r in mine),
                         "error_kinds": dict(Counter(r.error for r in mine if r.error)),
                         "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
                         "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan")}
    return figures


def one_run(server: TritonServer, key: str, data: Path, folder: Path, args) -> dict:
    parallelism = served_parallelism()
    shorts = short_texts()
    load = os.getloadavg()[0]
    served = {c: measure(MODEL, server.grpc_url, data, c, key, folder / f"c{c}.csv") for c in (16, 1)}
    in_process = {b: in_process_throughput(b, parallelism, args.seconds / 2, shorts) for b in BATCHES}
    best = max(in_process, key=in_process.get)
    http = {c: http_client_comparison(server, c, args.seconds, parallelism, shorts) for c in (16, 1)}
    mixed = mixed_workload(server.grpc_url, args.mixed_rate, args.mixed_seconds)
    return {
        "load_1min": load, "served": served, "in_process_per_s": in_process, "best_batch": best, "http": http, "mixed": mixed,
        "efficiency_c16": served[16]["throughput_infer_per_s"] / in_process[best],
        "vs_fastapi_c16": http[16]["triton"]["throughput_per_s"] / http[16]["fastapi"]["throughput_per_s"],
        "p99_vs_fastapi_c16": http[16]["triton"]["p99_ms"] / http[16]["fastapi"]["p99_ms"],
        "p50_vs_fastapi_c1": http[1]["triton"]["p50_ms"] / http[1]["fastapi"]["p50_ms"],
    }


def report(runs: list[dict], args, command: str) -> str:
    def spread(value) -> Spread:
        return Spread.of(value(run) for run in runs)

    def row(label: str, value, digits: int = 1) -> str:
        return f"| {label} | {spread(value).text(digits)} |"

    budget = args.short_p99_ms
    short_p99 = spread(lambda r: r["mixed"]["short"]["p99_ms"])
    body = [
        f"Short texts: {len(short_texts())} queries of 3-15 tokens (perf/workloads.py); served parallelism "
        f"{served_parallelism().describe()}; {len(runs)} runs, median (range). Load average (1 min) at each run's start: "
        + ", ".join(f"{r['load_1min']:.1f}" for r in runs) + ".",
        "",
        "| measurement | median (range) |",
        "| --- | --- |",
        row("Triton gRPC (perf_analyzer), concurrency 16: infer/s", lambda r: r["served"][16]["throughput_infer_per_s"]),
        row("  p99 (ms)", lambda r: r["served"][16]["p99_ms"]),
        row("Triton gRPC (perf_analyzer), concurrency 1: infer/s", lambda r: r["served"][1]["throughput_infer_per_s"]),
        row("  p50 (ms)", lambda r: r["served"][1]["p50_ms"]),
        *[row(f"in-process onnxruntime, batch {b}: texts/s", lambda r, b=b: r["in_process_per_s"][b]) for b in BATCHES],
        *[row(f"{who} HTTP, concurrency {c}: {what}", lambda r, c=c, who=who, key=key: r["http"][c][who.split()[0].lower()][key])
          for c in (16, 1) for who in ("FastAPI + onnxruntime", "Triton") for what, key in (("/s", "throughput_per_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"))],
        row(f"mixed, {args.mixed_rate:g}/s open loop: short p50 (ms)", lambda r: r["mixed"]["short"]["p50_ms"]),
        row("  short p99 (ms)", lambda r: r["mixed"]["short"]["p99_ms"]),
        row("  long p50 (ms)", lambda r: r["mixed"]["long"]["p50_ms"]),
        row("  long p99 (ms)", lambda r: r["mixed"]["long"]["p99_ms"]),
        row("  errors (short + long)", lambda r: r["mixed"]["short"]["errors"] + r["mixed"]["long"]["errors"], 0),
        "",
        "| ratio (within a run) | median (range) | goal | met by every run |",
        "| --- | --- | --- | --- |",
        f"| served c16 ÷ in-process at its best batch | {spread(lambda r: r['efficiency_c16']).text(2)} | ≥ 0.85 | "
        f"{all(r['efficiency_c16'] >= 0.85 for r in runs)} |",
        f"| Triton ÷ FastAPI throughput, c16 (same client) | {spread(lambda r: r['vs_fastapi_c16']).text(2)} | ≥ 1.5 | "
        f"{all(r['vs_fastapi_c16'] >= 1.5 for r in runs)} |",
        f"| Triton ÷ FastAPI p99, c16 | {spread(lambda r: r['p99_vs_fastapi_c16']).text(2)} | < 1 | "
        f"{all(r['p99_vs_fastapi_c16'] < 1 for r in runs)} |",
        f"| Triton ÷ FastAPI p50, c1 | {spread(lambda r: r['p50_vs_fastapi_c1']).text(2)} | ≤ 1 | "
        f"{all(r['p50_vs_fastapi_c1'] <= 1 for r in runs)} |",
        f"| mixed: short p99 (ms) within {budget:g} ms | {short_p99.text(1)} | ≤ {budget:g} | "
        f"{all(r['mixed']['short']['p99_ms'] <= budget for r in runs)} |",
        "",
        f"perf_analyzer commands: `{runs[0]['served'][16]['command']}`, `{runs[0]['served'][1]['command']}`",
    ]
    return record(f"{date.today().isoformat()}-bench-short", "modelrepo bench --workload short: short texts and a mixed workload",
                  command, {"runs": runs, "short_p99_budget_ms": budget}, body,
                  "Shared 2-core machine: figures move between runs; see the load averages.")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="modelrepo bench --workload short", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP measurement (in-process: half of it per batch)")
    parser.add_argument("--mixed-rate", type=float, default=20.0, help="requests/s of the mixed open-loop workload")
    parser.add_argument("--mixed-seconds", type=float, default=30.0)
    parser.add_argument("--short-p99-ms", type=float, default=250.0, help="the short requests' p99 budget in the mixed workload")
    args = parser.parse_args(argv)
    key = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory() as tmp, \
            TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=key, load_models=(MODEL,)) as server:
        folder = Path(tmp)
        data = text_input_data(short_texts(), folder / "short.json")
        runs = [one_run(server, key, data, folder, args) for _ in range(args.runs)]
    print(report(runs, args, " ".join(["modelrepo bench --workload short", *argv])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
