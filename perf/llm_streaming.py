"""Streaming LLM benchmark: TTFT, TPOT and output tokens/s through `llm_bls` with perf_analyzer.

    .venv/bin/python -m modelrepo.perf.llm_streaming [--concurrency 1 4 8] [--tokens 48] [--requests 3]

perf_analyzer 2.51 drives the decoupled model over a gRPC stream (`--streaming`) with a fixed
number of requests per concurrency (`--request-count`, `--requests` per concurrent user) and writes
every request's send time and response times (`--profile-export-file`); TTFT is the first response,
TPOT the mean gap between a request's later responses (each response here is one text chunk, i.e.
one token except where a character spans tokens). Every answer is exactly `--tokens` tokens
(`min_length` = `max_tokens`), so tokens/s = requests x tokens / wall time of the run.
Then the semantic cache: time of a hit through `llm_cached` (exact and paraphrase) over HTTP.
Writes perf/results/llm_streaming.{json,md}.
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
from modelrepo.perf.results import record
from modelrepo.triton.llm_client import generate
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "llm_bls"
MODELS = ("llm_bls", "llm", "llm_preprocessing", "llm_engine", "llm_postprocessing", "llm_cached",
          "text_embedding", "minilm_tokenizer", "minilm_encoder")
PROMPTS = [
    "Write a short poem about the sea.", "Explain how a rainbow forms.", "Give three tips for learning to cook.",
    "Describe a busy train station.", "What is photosynthesis?", "Tell me about the history of tea.",
    "Why do cats purr?", "Summarise the plot of a detective story.",
]
GOALS = {"ttft_p99_s_at_4": 1.0, "tokens_per_s_ratio_8_vs_1": 3.0, "cache_hit_ms": 20.0}


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
    completed = subprocess.run(command(with_admin_header(args, "bench")), capture_output=True, text=True, env=environment(), timeout=900)
    wall = time.monotonic() - started
    if completed.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed: {completed.stdout[-1500:]}{completed.stderr[-1500:]}")
    return {"wall_s": wall, "command": " ".join(["modelrepo perf-analyzer", *args])}


def streaming_figures(export: Path, tokens: int) -> dict:
    """TTFT and TPOT per request from perf_analyzer's profile export (nanosecond timestamps)."""
    experiments = json.loads(export.read_text())["experiments"]
    requests = [r for experiment in experiments for r in experiment["requests"]]
    ttft, tpot, first_send, last_done = [], [], None, None
    for request in requests:
        sent = request["timestamp"]
        # the final response of a decoupled stream is empty: it closes the stream, carries no token
        stamps, outputs = request["response_timestamps"], request.get("response_outputs")
        times = stamps[:-1] if outputs is None else [t for t, out in zip(stamps, outputs) if out]
        if not times:
            continue
        ttft.append((times[0] - sent) / 1e9)
        if len(times) > 1:
            tpot.append((times[-1] - times[0]) / 1e9 / (len(times) - 1))
        first_send = sent if first_send is None else min(first_send, sent)
        last_done = times[-1] if last_done is None else max(last_done, times[-1])
    span = (last_done - first_send) / 1e9
    return {
        "requests": len(ttft),
        "ttft_p50_s": float(np.percentile(ttft, 50)),
        "ttft_p99_s": float(np.percentile(ttft, 99)),
        "tpot_mean_s": float(np.mean(tpot)),
        "tpot_p99_s": float(np.percentile(tpot, 99)),
        "output_tokens_per_s": len(ttft) * tokens / span,
        "span_s": span,
    }


def cache_hits(server: TritonServer, repeats: int = 20) -> dict:
    """Milliseconds per answer through llm_cached over HTTP generate: the miss that fills the cache,
    then exact repeats and a paraphrase (semantic hit: one text_embedding call)."""
    body = {"text_input": "What is the tallest mountain on Earth?", "max_tokens": 32}
    started = time.perf_counter()
    status, first = generate(server.http_url, "llm_cached", body)
    miss_ms = 1000 * (time.perf_counter() - started)
    assert status == 200 and not first["cache_hit"], first

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
        "miss_ms": miss_ms,
        "exact_hit_p50_ms": float(np.percentile(exact, 50)), "exact_hit_p99_ms": float(np.percentile(exact, 99)),
        "semantic_hit_p50_ms": float(np.percentile(semantic, 50)), "semantic_hit_p99_ms": float(np.percentile(semantic, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=4, help="requests per concurrent user")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp, TritonServer(
        MODEL_REPOSITORY, *free_ports(3), admin_key="bench", load_models=MODELS
    ) as server:
        data = input_data(Path(tmp) / "prompts.json", args.tokens)
        run_perf_analyzer(server, data, 1, 2, Path(tmp) / "warmup.json")  # first calls of every stub are slow
        for concurrency in args.concurrency:
            export = Path(tmp) / f"c{concurrency}.json"
            run = run_perf_analyzer(server, data, concurrency, concurrency * args.requests, export)
            runs.append({"concurrency": concurrency, **run, **streaming_figures(export, args.tokens)})
            print(json.dumps(runs[-1]), flush=True)
        cache = cache_hits(server)
    by_c = {r["concurrency"]: r for r in runs}
    ratio = by_c[8]["output_tokens_per_s"] / by_c[1]["output_tokens_per_s"] if {1, 8} <= set(by_c) else None
    goals = []
    if 4 in by_c:
        goals.append(f"TTFT p99 at concurrency 4: {by_c[4]['ttft_p99_s']:.2f} s (goal < 1 s: {'met' if by_c[4]['ttft_p99_s'] < 1 else 'missed'})")
    if ratio is not None:
        goals.append(f"output tokens/s at concurrency 8 / concurrency 1: {ratio:.2f}x (goal >= 3x: {'met' if ratio >= 3 else 'missed'})")
    worst_hit = max(cache["exact_hit_p99_ms"], cache["semantic_hit_p99_ms"])
    goals.append(f"cache hits: exact p99 {cache['exact_hit_p99_ms']:.1f} ms, semantic p99 {cache['semantic_hit_p99_ms']:.1f} ms "
                 f"(goal < 20 ms: {'met' if worst_hit < 20 else 'missed'})")
    body = [
        f"SmolLM2-135M-Instruct fp32 on CPU, `{MODEL}` streaming over gRPC, {args.tokens} output tokens per request "
        f"(min_length = max_tokens), {len(PROMPTS)} prompts in rotation, {args.requests} requests per concurrent user.",
        "",
        "| concurrency | requests | TTFT p50 (s) | TTFT p99 (s) | TPOT mean (ms) | TPOT p99 (ms) | output tokens/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {r['concurrency']} | {r['requests']} | {r['ttft_p50_s']:.2f} | {r['ttft_p99_s']:.2f} | "
          f"{1000 * r['tpot_mean_s']:.0f} | {1000 * r['tpot_p99_s']:.0f} | {r['output_tokens_per_s']:.1f} |" for r in runs],
        "",
        f"Semantic cache (`llm_cached`, HTTP generate, 20 requests each): miss {cache['miss_ms']:.0f} ms; exact hit p50 "
        f"{cache['exact_hit_p50_ms']:.1f} / p99 {cache['exact_hit_p99_ms']:.1f} ms; paraphrase hit p50 "
        f"{cache['semantic_hit_p50_ms']:.1f} / p99 {cache['semantic_hit_p99_ms']:.1f} ms.",
        "",
        "Goals:",
        *[f"- {goal}" for goal in goals],
        "",
        "perf_analyzer commands (per concurrency): " + "; ".join(f"`{r['command']}`" for r in runs),
    ]
    command_line = "python -m modelrepo.perf.llm_streaming " + " ".join(sys.argv[1:] if argv is None else argv)
    print(record("llm_streaming", "LLM streaming: TTFT, TPOT, tokens/s, cache hits", command_line.strip(),
                 {"runs": runs, "cache": cache, "goals": goals}, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
