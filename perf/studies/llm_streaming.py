"""Streaming LLM benchmark: TTFT, TPOT and output tokens/s through `llm_bls` with perf_analyzer.

    .venv/bin/python -m modelrepo.perf.studies.llm_streaming [--concurrency 1 4 8] [--tokens 48] [--requests 200] [--runs 3]

perf_analyzer 2.51 drives the decoupled model over a gRPC stream (`--streaming`) with a fixed
number of requests per point (`--request-count`) and writes every request's send time, response
times and response texts (`--profile-export-file`); TTFT is the first text response, TPOT the mean
gap between a request's later responses. Output tokens are counted from the answers (tokenised
with the model's tokenizer, perf/studies/stream_figures.py); the engine is asked for `--tokens` tokens
(`min_length` = `max_tokens`) so every point has the same work. Each of `--runs` runs measures every
concurrency in turn; figures are the median and range over the runs. Then the semantic cache: time
of a hit through `llm_cached` (exact and paraphrase) over HTTP, `--cache-requests` each per run.
Writes perf/results/llm_streaming.{json,md} after every run (a stopped benchmark leaves the runs it
finished, labelled as such).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import command, environment, with_admin_header
from modelrepo.perf.results import Spread, record, repeat, spread_of
from modelrepo.perf.studies.stream_figures import read_export, streaming_figures, token_counter
from modelrepo.perf.workloads import PROMPTS
from modelrepo.python_backends.llm.chat import TOKENIZER_DIR, load_tokenizer
from modelrepo.triton.llm_client import generate
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "llm_bls"
MODELS = ("llm_bls", "llm", "llm_preprocessing", "llm_engine", "llm_postprocessing", "llm_cached",
          "text_embedding", "minilm_tokenizer", "minilm_encoder")
GOALS = {"ttft_p99_s_at_4": 1.0, "tokens_per_s_ratio_8_vs_1": 3.0, "cache_hit_ms": 20.0}
STREAM_FIGURES = ("ttft_p50_s", "ttft_p99_s", "tpot_mean_s", "tpot_p99_s", "output_tokens_per_request", "output_tokens_per_s")
CACHE_FIGURES = ("exact_hit_p50_ms", "exact_hit_p99_ms", "semantic_hit_p50_ms", "semantic_hit_p99_ms")


def input_data(path: Path, tokens: int) -> Path:
    entries = [
        {"text_input": [prompt], "max_tokens": [tokens], "min_length": [tokens], "stream": [True]}
        for prompt in PROMPTS
    ]
    path.write_text(json.dumps({"data": entries}))
    return path


def run_perf_analyzer(server: TritonServer, data: Path, concurrency: int, requests: int, export: Path) -> dict:
    args = [
        "-m", MODEL, "-i", "grpc", "-u", server.grpc_url, "--streaming", "--input-data", str(data),
        "--concurrency-range", str(concurrency), "--request-count", str(requests),
        "--profile-export-file", str(export),
    ]
    started = time.monotonic()
    completed = subprocess.run(command(with_admin_header(args, "bench")), capture_output=True, text=True, env=environment(), timeout=3600)
    wall = time.monotonic() - started
    if completed.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed: {completed.stdout[-1500:]}{completed.stderr[-1500:]}")
    return {"wall_s": wall, "command": " ".join(["modelrepo perf-analyzer", *args])}


CACHE_BODY = {"text_input": "What is the tallest mountain on Earth?", "max_tokens": 32}


def fill_cache(server: TritonServer) -> float:
    """Milliseconds of the miss that puts the question into llm_cached's cache."""
    started = time.perf_counter()
    status, first = generate(server.http_url, "llm_cached", CACHE_BODY)
    assert status == 200 and not first["cache_hit"], first
    return 1000 * (time.perf_counter() - started)


def cache_hits(server: TritonServer, repeats: int) -> dict:
    """Milliseconds per answer through llm_cached over HTTP generate (after `fill_cache`): exact
    repeats and a paraphrase (semantic hit: one text_embedding call)."""
    body = CACHE_BODY

    def timed(text: str) -> list[float]:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            status, answer = generate(server.http_url, "llm_cached", {**body, "text_input": text})
            times.append(1000 * (time.perf_counter() - started))
            assert status == 200 and answer["cache_hit"], answer
        return times

    exact = timed(body["text_input"])
    semantic = timed("Which is the tallest mountain on Earth?")
    return {
        "exact_hit_p50_ms": float(np.percentile(exact, 50)), "exact_hit_p99_ms": float(np.percentile(exact, 99)),
        "semantic_hit_p50_ms": float(np.percentile(semantic, 50)), "semantic_hit_p99_ms": float(np.percentile(semantic, 99)),
    }


def stream_point(server: TritonServer, data: Path, concurrency: int, requests: int, export: Path, count_tokens) -> dict:
    run = run_perf_analyzer(server, data, concurrency, requests, export)
    return {"concurrency": concurrency, **run, **streaming_figures(read_export(export), count_tokens)}


def goal_lines(points: dict[int, dict[str, Spread]], ratio: Spread | None, cache: dict[str, Spread]) -> list[str]:
    """Each goal judged on the median of the runs; the range says whether every run agreed."""
    def verdict(met_median: bool, met_all: bool) -> str:
        return "met in every run" if met_all else ("met by the median, not in every run" if met_median else "missed")

    goals = []
    if 4 in points:
        ttft = points[4]["ttft_p99_s"]
        goals.append(f"TTFT p99 at concurrency 4: {ttft.text()} s (goal < 1 s: {verdict(ttft.median < 1, ttft.high < 1)})")
    if ratio is not None:
        goals.append(f"output tokens/s at concurrency 8 / concurrency 1: {ratio.text()}x "
                     f"(goal >= 3x: {verdict(ratio.median >= 3, ratio.low >= 3)})")
    worst = Spread.of(max(e, s) for e, s in zip(cache["exact_hit_p99_ms"].runs, cache["semantic_hit_p99_ms"].runs))
    goals.append(f"cache hits: exact p99 {cache['exact_hit_p99_ms'].text(1)} ms, semantic p99 {cache['semantic_hit_p99_ms'].text(1)} ms "
                 f"(goal < 20 ms: {verdict(worst.median < 20, worst.high < 20)})")
    return goals


def report(args, runs: list[dict], miss_ms: float, command_line: str) -> str:
    concurrencies = [c for c in args.concurrency if all(c in run["points"] for run in runs)]
    points = {c: spread_of([run["points"][c] for run in runs], STREAM_FIGURES) for c in concurrencies}
    cache = spread_of([run["cache"] for run in runs], CACHE_FIGURES)
    ratio = None
    if {1, 8} <= set(points):
        ratio = Spread.of(run["points"][8]["output_tokens_per_s"] / run["points"][1]["output_tokens_per_s"] for run in runs)
    goals = goal_lines(points, ratio, cache)
    done = "" if len(runs) == args.runs else f" **Stopped early: {len(runs)} of {args.runs} runs finished.**"
    body = [
        f"SmolLM2-135M-Instruct fp32 on CPU, `{MODEL}` streaming over gRPC, {args.tokens} output tokens asked per request "
        f"(min_length = max_tokens; tokens counted from the answers), {len(PROMPTS)} prompts in rotation, "
        f"{args.requests} requests per point, {len(runs)} run(s): median (range).{done}",
        "",
        *(["| concurrency | requests per run | TTFT p50 (s) | TTFT p99 (s) | TPOT mean (ms) | TPOT p99 (ms) | tokens per answer | output tokens/s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"] if points else []),
        *[f"| {c} | {args.requests} | {p['ttft_p50_s'].text()} | {p['ttft_p99_s'].text()} | {p['tpot_mean_s'].text(0, 1000)} | "
          f"{p['tpot_p99_s'].text(0, 1000)} | {p['output_tokens_per_request'].text(1)} | {p['output_tokens_per_s'].text(1)} |"
          for c, p in points.items()],
        "",
        f"Semantic cache (`llm_cached`, HTTP generate, {args.cache_requests} requests each per run): miss {miss_ms:.0f} ms "
        f"(once); exact hit p50 {cache['exact_hit_p50_ms'].text(1)} / p99 {cache['exact_hit_p99_ms'].text(1)} ms; "
        f"paraphrase hit p50 {cache['semantic_hit_p50_ms'].text(1)} / p99 {cache['semantic_hit_p99_ms'].text(1)} ms.",
        "",
        "Goals:",
        *[f"- {goal}" for goal in goals],
        "",
    ]
    if concurrencies:
        body.append("perf_analyzer commands (per concurrency, first run): "
                    + "; ".join(f"`{runs[0]['points'][c]['command']}`" for c in concurrencies))
    else:
        body.append("No streaming point was measured in this run (`--concurrency` given no value).")
    data = {"runs": runs, "miss_ms": miss_ms, "points": {c: {k: v.as_dict() for k, v in p.items()} for c, p in points.items()},
            "cache": {k: v.as_dict() for k, v in cache.items()}, "ratio_8_vs_1": ratio.as_dict() if ratio else None,
            "goals": goals, "runs_finished": len(runs), "runs_asked": args.runs}
    return record("llm_streaming", "LLM streaming: TTFT, TPOT, tokens/s, cache hits", command_line, data, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8],
                        help="streaming points (given with no value: the cache figures only)")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency and run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-requests", type=int, default=200, help="cache hits of each kind per run")
    args = parser.parse_args(argv)
    command_line = ("python -m modelrepo.perf.studies.llm_streaming " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    count_tokens = token_counter(load_tokenizer(MODEL_REPOSITORY / "llm_preprocessing" / "1" / TOKENIZER_DIR))
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, TritonServer(
        MODEL_REPOSITORY, *free_ports(3), admin_key="bench", load_models=MODELS
    ) as server:
        data = input_data(Path(tmp) / "prompts.json", args.tokens)
        if args.concurrency:
            run_perf_analyzer(server, data, 1, 2, Path(tmp) / "warmup.json")  # first calls of every stub are slow
        miss_ms = fill_cache(server)

        def one_run(i: int) -> dict:
            points = {c: stream_point(server, data, c, args.requests, Path(tmp) / f"r{i}-c{c}.json", count_tokens)
                      for c in args.concurrency}
            runs.append({"points": points, "cache": cache_hits(server, args.cache_requests)})
            print(report(args, runs, miss_ms, command_line), flush=True)  # recorded after every run
            return runs[-1]

        repeat(args.runs, one_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
