"""Length-aware batching in the encoder's runner: a dynamic batch split by length against one padded run.

    .venv/bin/python -m modelrepo.perf.studies.ragged_split [--repeats 15] [--rate 150] [--seconds 30] [--rounds 3] [--concurrency 16]

1. In this process, one onnxruntime session of the served encoder with the served intra-op threads:
   - the cost of a run: the median time of `--repeats` runs of rows x length padded tokens, fitted as
     a + b x rows x length; a / b is what one session.run costs in padded tokens, the runner's
     default `ragged_run_cost_tokens`;
   - dynamic batches as the encoder receives them (each request a text tokenized alone): short texts
     with one long review, run padded to the longest (one run) and split by length (the runner's
     default), alternating; the embeddings of both compared (cosine).
2. Served: text_embedding on one server (explicit model control, admin key), minilm_encoder as shipped
   and with splitting turned off (`ragged_run_cost_tokens` 1000000), loaded in turn
   (`load_model(config=…)`), `--rounds` times: the mixed workload of `modelrepo bench --workload short`
   (80 % short texts, 20 % long reviews, open loop at `--rate`/s; p50 / p99 per kind), then the 64
   reviews of `modelrepo bench` alone, closed loop (perf_analyzer gRPC, concurrency `--concurrency`).
Writes perf/results/ragged_split.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.embedding_sessions import ENCODER, embedder, served_parallelism
from modelrepo.perf.results import Spread, record
from modelrepo.perf.short_text_bench import mixed_workload
from modelrepo.perf.tune import LiveModels
from modelrepo.perf.workloads import reviews, short_texts, text_input_data
from modelrepo.python_backends.batching import RAGGED_RUN_COST
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.model_config import copy_config
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "text_embedding"
ROWS, LENGTHS = (1, 4), (8, 16, 32, 64, 128, 256)
FIT_TOKENS = 256  # the fit takes rows x length up to this: longer runs cost more than linearly (attention), so
                  # a linear fit over them would understate what padding a short text to a long one costs
MIXES = ((4, 1), (8, 1), (16, 1), (16, 0))  # (short texts, long reviews) per dynamic batch
NEVER_SPLIT = "1000000"


def elapsed_ms(run) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def median_ms(run, repeats: int) -> float:
    run()  # warm
    return statistics.median(elapsed_ms(run) for _ in range(repeats))


def run_cost(session, repeats: int) -> dict:
    """Median ms per (rows, length) and the least-squares fit ms = a + b x rows x length."""
    (tokens,) = session.tokenize([" ".join(reviews(8))])["input_ids"]  # truncated to 256 tokens
    points = []
    for rows in ROWS:
        for length in LENGTHS:
            ids = np.tile(tokens[:length], (rows, 1))
            batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            points.append({"rows": rows, "length": length, "ms": median_ms(lambda: session.runner.run(batch), repeats)})
    fitted = [p for p in points if p["rows"] * p["length"] <= FIT_TOKENS]
    slope, intercept = np.polyfit([p["rows"] * p["length"] for p in fitted], [p["ms"] for p in fitted], 1)
    return {"points": points, "intercept_ms": float(intercept), "ms_per_token": float(slope),
            "run_cost_tokens": float(intercept / slope)}


def quartile_reviews(session) -> list[str]:
    """The reviews of the served workload's 64 at the 25th, 50th and 75th percentile of token length."""
    longs = reviews(64)
    order = np.argsort([session.tokenize([text])["input_ids"].shape[1] for text in longs], kind="stable")
    return [longs[order[len(order) * quarter // 4]] for quarter in (1, 2, 3)]


def mixed_batches(session, repeats: int) -> list[dict]:
    """For each mix and three batches of it (one long review at each quartile of length): one padded run
    against the runner's split."""
    shorts, longs = short_texts(64), quartile_reviews(session)
    runner = session.runner
    results = []
    for n_short, n_long in MIXES:
        for turn in range(3):
            texts = shorts[turn * 16:turn * 16 + n_short] + longs[turn:turn + n_long]
            requests = [session.tokenize([text]) for text in texts]
            padded = np.concatenate([answer["embedding"] for answer in runner.run_together(requests)])
            split = np.concatenate([answer["embedding"] for answer in runner.run_requests(requests)])
            times = {"padded": [], "split": []}
            for _ in range(repeats):  # alternating
                times["padded"].append(elapsed_ms(lambda: runner.run_together(requests)))  # warmed above
                times["split"].append(elapsed_ms(lambda: runner.run_requests(requests)))
            results.append({
                "short": n_short, "long": n_long, "longest": max(r["input_ids"].shape[1] for r in requests),
                "padded_ms": statistics.median(times["padded"]), "split_ms": statistics.median(times["split"]),
                "lowest_cosine": float(np.min(np.sum(padded * split, axis=1)
                                              / np.linalg.norm(padded, axis=1) / np.linalg.norm(split, axis=1))),
            })
            print(f"{n_short} short + {n_long} long: padded {results[-1]['padded_ms']:.1f} ms, "
                  f"split {results[-1]['split_ms']:.1f} ms", flush=True)
    return results


def served(rate: float, seconds: float, rounds: int, concurrency: int) -> dict[str, list[dict]]:
    key = secrets.token_urlsafe(12)
    runs: dict[str, list[dict]] = {"split by length (shipped)": [], "never split": []}
    with tempfile.TemporaryDirectory() as tmp, \
            TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=key, load_models=(MODEL,)) as server:
        folder = Path(tmp)
        long_texts = text_input_data(reviews(64), folder / "reviews.json")
        live = LiveModels(grpcclient.InferenceServerClient(server.grpc_url), {GRPC_ADMIN_HEADER: key})
        shipped = live.config(ENCODER)
        never = copy_config(shipped)
        never.parameters[RAGGED_RUN_COST].string_value = NEVER_SPLIT
        configs = {"split by length (shipped)": shipped, "never split": never}
        for number in range(1, rounds + 1):
            for name, config in configs.items():
                live.load(ENCODER, config)
                try:
                    mixed = mixed_workload(server.grpc_url, rate, seconds)
                    closed = measure(MODEL, server.grpc_url, long_texts, concurrency, key, folder / "reviews.csv")
                finally:
                    live.load(ENCODER, shipped)
                runs[name].append({**mixed, "reviews": closed})
                print(f"round {number}: {name}: short p99 {mixed['short']['p99_ms']:.1f} ms, "
                      f"long p99 {mixed['long']['p99_ms']:.1f} ms; reviews closed loop "
                      f"{closed['throughput_infer_per_s']:.1f}/s", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rate", type=float, default=150.0, help="requests/s of the served mixed workload")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16, help="of the reviews' closed loop")
    args = parser.parse_args(argv)
    threads = served_parallelism().threads_per_session
    session = embedder(threads)
    cost = run_cost(session, args.repeats)
    print(f"one run costs {cost['run_cost_tokens']:.1f} padded tokens", flush=True)
    mixes = mixed_batches(session, args.repeats)
    del session
    load = os.getloadavg()[0]
    runs = served(args.rate, args.seconds, args.rounds, args.concurrency)

    def spread(name: str, kind: str, field: str) -> str:
        return Spread.of(run[kind][field] for run in runs[name]).text(1)

    body = [
        f"**The cost of a run** (one session, {threads} thread(s); median of {args.repeats} runs each): fitted "
        f"ms = {cost['intercept_ms']:.2f} + {cost['ms_per_token']:.4f} × rows × length (rows × length ≤ {FIT_TOKENS}), so one session.run costs "
        f"as much as **{cost['run_cost_tokens']:.1f} padded tokens**.",
        "",
        "| rows × length | " + " | ".join(str(length) for length in LENGTHS) + " |",
        "| --- | " + " | ".join("---" for _ in LENGTHS) + " |",
        *(f"| {rows} | " + " | ".join(f"{p['ms']:.1f}" for p in cost["points"] if p["rows"] == rows) + " ms |"
          for rows in ROWS),
        "",
        f"**Dynamic batches of short texts and long reviews** (each request tokenized alone, as the encoder "
        f"receives them; median of {args.repeats} alternating runs; three batches per mix, the long review at the "
        "25th, 50th and 75th percentile of the served workload's reviews by length):",
        "",
        "| batch | longest (tokens) | one padded run (ms) | split by length (ms) | padded ÷ split | lowest cosine |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {m['short']} short + {m['long']} long | {m['longest']} | {m['padded_ms']:.1f} | {m['split_ms']:.1f} | "
          f"{m['padded_ms'] / m['split_ms']:.2f} | {m['lowest_cosine']:.7f} |" for m in mixes),
        "",
        f"**Served** (`{MODEL}`, the mixed workload open loop at {args.rate:g} requests/s for {args.seconds:g} s, "
        f"median (range) of {args.rounds} rounds, the two encoder configs in turn on one server; load average "
        f"{load:.1f} before):",
        "",
        "| minilm_encoder | short p50 (ms) | short p99 (ms) | long p50 (ms) | long p99 (ms) | errors | unsent |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {name} | {spread(name, 'short', 'p50_ms')} | {spread(name, 'short', 'p99_ms')} | "
          f"{spread(name, 'long', 'p50_ms')} | {spread(name, 'long', 'p99_ms')} | "
          f"{sum(run['short']['errors'] + run['long']['errors'] for run in runs[name])} | "
          f"{Spread.of(run['unsent'] for run in runs[name]).text(0)} |" for name in runs),
        "",
        f"unsent: requests due when the load stopped, never sent (the load generator's 32 workers all waiting). "
        f"Then the 64 reviews alone, closed loop (perf_analyzer gRPC, concurrency {args.concurrency}), same rounds:",
        "",
        "| minilm_encoder | infer/s | ÷ never split (same round) | p50 (ms) | p99 (ms) |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {name} | {spread(name, 'reviews', 'throughput_infer_per_s')} | "
          + Spread.of(run["reviews"]["throughput_infer_per_s"] / other["reviews"]["throughput_infer_per_s"]
                      for run, other in zip(runs[name], runs["never split"])).text(2)
          + f" | {spread(name, 'reviews', 'p50_ms')} | {spread(name, 'reviews', 'p99_ms')} |" for name in runs),
    ]
    print(record(
        "ragged_split", "Length-aware batching in the encoder's runner",
        " ".join([".venv/bin/python -m modelrepo.perf.studies.ragged_split",
                  *(argv if argv is not None else sys.argv[1:])]).strip(),
        {"threads": threads, "run_cost": cost, "mixed_batches": mixes, "rate": args.rate, "seconds": args.seconds,
         "served": runs},
        body,
        note="Embedded Triton 2.51.0; the load generator shares the machine's cores with the server.",
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
