"""INT8 vs FP32 MiniLM served through Triton: text_embedding throughput and latency with perf_analyzer.

    .venv/bin/python -m modelrepo.perf.studies.int8_vs_fp32 [--concurrency 1 8] [--rounds 3]

FP32: the project's repository. INT8: `modelrepo build minilm_encoder --target cpu --precision int8`
rendered into a temporary repository (same ensembles). Each round starts one server at a time (no
cross-talk on 2 cores) and alternates FP32/INT8; inputs are 64 held-out review texts.
Writes perf/results/int8_vs_fp32.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from modelrepo.build.model_build import BuildRequest, render_repository
from modelrepo.build.shipped import int8_encoder_step
from modelrepo.cpu_features import describe_int8
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.results import Spread, record
from modelrepo.perf.tune_command import default_input_data
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "text_embedding"


def int8_over_fp32(runs: list[dict]) -> dict[int, Spread]:
    """concurrency -> Spread over rounds of INT8 ÷ FP32 throughput, each ratio taken within one round."""
    fp32 = {(r["round"], r["concurrency"]): r["throughput_infer_per_s"] for r in runs if r["precision"] == "fp32"}
    ratios: dict[int, list[float]] = {}
    for r in runs:
        if r["precision"] == "int8":
            ratios.setdefault(r["concurrency"], []).append(r["throughput_infer_per_s"] / fp32[(r["round"], r["concurrency"])])
    return {concurrency: Spread.of(values) for concurrency, values in sorted(ratios.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    request = BuildRequest("minilm_encoder", "cpu", "int8")
    build = int8_encoder_step(MODEL_REPOSITORY, request).report
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        repositories = {"fp32": MODEL_REPOSITORY,
                        "int8": render_repository(MODEL_REPOSITORY, folder / "int8", request, log=lambda *_: None)}
        data = default_input_data(MODEL_REPOSITORY, MODEL, folder)
        for number in range(1, args.rounds + 1):
            for precision, repository in repositories.items():
                with TritonServer(repository, *free_ports(3), admin_key="bench") as server:
                    for concurrency in args.concurrency:
                        result = measure(MODEL, server.grpc_url, data, concurrency, "bench", folder / "run.csv")
                        runs.append({"round": number, "precision": precision, "concurrency": concurrency, **result})
    ratios = int8_over_fp32(runs)
    body = [
        f"INT8 graph: {build['nodes_int8']} of {build['nodes_total']} MatMuls in INT8 ({build['calibration']} calibration), "
        f"held-out mean cosine {build['held_out']['mean_cosine']:.4f}.",
        "",
        "| round | precision | concurrency | throughput (texts/s) | p50 (ms) | p99 (ms) |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {r['round']} | {r['precision']} | {r['concurrency']} | {r['throughput_infer_per_s']:.2f} | "
          f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |" for r in runs],
        "",
        "INT8 ÷ FP32 throughput within each round, median (range) over rounds: "
        + ", ".join(f"concurrency {c}: {ratios[c].text()}x" for c in args.concurrency) + ".",
        "",
        f"perf_analyzer command (per server): `{runs[0]['command']}`",
    ]
    print(record(
        "int8_vs_fp32",
        "INT8 vs FP32 all-MiniLM-L6-v2 served through text_embedding (embedded Triton, CPU)",
        " ".join(["python -m modelrepo.perf.studies.int8_vs_fp32", *(argv if argv is not None else sys.argv[1:])]).strip(),
        {"runs": runs, "int8_over_fp32": {c: spread.as_dict() for c, spread in ratios.items()},
         "int8_build": {k: build[k] for k in ("calibration", "nodes_int8", "nodes_total", "held_out")}},
        body,
        note=f"{describe_int8()}.",
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
