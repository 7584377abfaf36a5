"""Triton 2.51's dynamic batcher under a burst: how often a burst of N concurrent requests has some
held back in steps of ~500 ms, per configuration of the text pipelines' steps.

    .venv/bin/python -m modelrepo.perf.studies.dynamic_batcher_stall [--rounds 30] [--runs 3] [--burst 11 --burst 24]

One server (explicit model control, admin key) serves text_embedding and review_sentiment; each
variant is loaded with `load_model(config=…)` (the tuner's way), then for each pipeline and burst size
N it runs `--runs` independent runs of `--rounds` rounds: N threads, one gRPC client each, send one
short text at the same moment (sync infer) and the round waits for all. A round is *stalled* when
its slowest request took longer than STALL_S (an unstalled burst of 24 short texts takes < 0.2 s here).
Per run: stalled rounds, p50 / p99 / max of the per-request latency (rounds x N samples) and each
step's mean queue time from Triton's statistics; across runs: median and range.
Writes perf/results/dynamic_batcher_stall.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import secrets
import threading
import time
from collections.abc import Callable

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import text_format

from tritonclient.utils import InferenceServerException

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.results import Spread, record
from modelrepo.perf.tune import LiveModels
from modelrepo.perf.workloads import short_texts
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.model_config import ModelConfig, copy_config, set_cpu_instances
from modelrepo.triton.server import TritonServer, free_ports

STALL_S = 0.3
TOKENIZER, HEAD = "minilm_tokenizer", "sentiment_head"
PIPELINES = {
    "text_embedding": ("minilm_tokenizer", "minilm_encoder"),
    "review_sentiment": ("minilm_tokenizer", "minilm_encoder", "sentiment_head"),
}
Configs = dict[str, ModelConfig]


# The tokenizer's batcher as main shipped it before this study (the "batched" variants restore it).
TOKENIZER_BATCHER = """
preferred_batch_size: 1
priority_levels: 2
default_priority_level: 2
default_queue_policy { default_timeout_microseconds: 2000000 allow_timeout_override: true max_queue_size: 64 }
"""


def _tokenizer(batched: bool, instances: int = 1, unbatched_head: bool = False, batcher: str = TOKENIZER_BATCHER
               ) -> Callable[[Configs], Configs]:
    """The repository's configs with the tokenizer batched (by default as before) or not, and its
    instance count; `unbatched_head`: sentiment_head without its batcher too."""
    def change(configs: Configs) -> Configs:
        tokenizer = copy_config(configs[TOKENIZER])
        tokenizer.ClearField("dynamic_batching")
        if batched:
            tokenizer.dynamic_batching.SetInParent()  # present even when `batcher` sets nothing
            text_format.Parse(batcher, tokenizer.dynamic_batching)
        set_cpu_instances(tokenizer, instances)
        changed = {TOKENIZER: tokenizer}
        if unbatched_head:
            changed[HEAD] = copy_config(configs[HEAD])
            changed[HEAD].ClearField("dynamic_batching")
        return changed
    return change


VARIANTS: dict[str, Callable[[Configs], Configs]] = {
    "tokenizer batched, 1 instance (before)": _tokenizer(batched=True),
    "tokenizer batched, 2 instances": _tokenizer(batched=True, instances=2),
    # shipped: a batcher without queue policy or priority levels (which in 2.51 turn off the batcher's
    # payload prefetching); the recorded run named it "... or priorities" and the unbatched one "(shipped)"
    "tokenizer batched, no queue policy or priorities (shipped)": _tokenizer(batched=True, batcher=""),
    "tokenizer unbatched, 1 instance": _tokenizer(batched=False),
    "tokenizer and sentiment_head unbatched": _tokenizer(batched=False, unbatched_head=True),
}
REFUSALS = {"queue full": "Exceeds maximum queue size", "queue timeout": "Request timeout expired"}


def burst_round(clients: list, model: str, texts: list[str]) -> tuple[list[float], list[str]]:
    """Every client sends one short text at the same moment: each request's seconds (answered or
    refused), and each refusal's reason (a REFUSALS key, or the message)."""
    seconds = [0.0] * len(clients)
    refused: list[str] = []
    start = threading.Barrier(len(clients))

    def call(index: int) -> None:
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[texts[index % len(texts)].encode()]], dtype=object))
        start.wait()
        began = time.perf_counter()
        try:
            clients[index].infer(model, [tensor])
        except InferenceServerException as err:
            refused.append(next((k for k, text in REFUSALS.items() if text in str(err)), str(err)))
        seconds[index] = time.perf_counter() - began

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seconds, refused


def one_run(url: str, live: LiveModels, model: str, burst: int, rounds: int, texts: list[str]) -> dict:
    clients = [grpcclient.InferenceServerClient(url) for _ in range(burst)]
    steps = PIPELINES[model]
    before = {step: live.totals(step) for step in steps}
    load = os.getloadavg()[0]
    worst, samples, refused = [], [], []
    for _ in range(rounds):
        seconds, refusals = burst_round(clients, model, texts)
        worst.append(max(seconds))
        samples += seconds
        refused += refusals
    after = {step: live.totals(step) for step in steps}
    for client in clients:
        client.close()
    queue_ms = {step: live.queue_ms_per_request(before[step], after[step]) for step in steps}
    ms = np.array(samples) * 1000
    return {"stalled_rounds": sum(w > STALL_S for w in worst), "rounds": rounds, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "samples": len(samples),
            **{reason: refused.count(reason) for reason in REFUSALS}, "other_errors": sorted(set(refused) - set(REFUSALS)),
            "queue_ms_per_request": queue_ms, "load_1min": load}


def measure_variant(url: str, live: LiveModels, originals: Configs, change, bursts: list[int], runs: int, rounds: int) -> list[dict]:
    changed = change(originals)
    texts = short_texts()
    for name, config in changed.items():
        live.load(name, config)
    results = []
    try:
        for model in PIPELINES:
            burst_round([grpcclient.InferenceServerClient(url) for _ in range(4)], model, texts)  # warm the path
            for burst in bursts:
                per_run = [one_run(url, live, model, burst, rounds, texts) for _ in range(runs)]
                results.append({"model": model, "burst": burst, "runs": per_run})
                print(model, burst, [r["stalled_rounds"] for r in per_run], flush=True)
    finally:
        for name in changed:
            live.load(name, originals[name])
    return results


def summary_row(variant: str, entry: dict) -> str:
    runs = entry["runs"]
    def spread(key: str, digits: int = 0) -> str:
        return Spread.of(r[key] for r in runs).text(digits)
    queue = " / ".join(f"{Spread.of(r['queue_ms_per_request'][s] for r in runs).text(1)}" for s in PIPELINES[entry["model"]])
    loads = Spread.of(r["load_1min"] for r in runs).text(1)
    return (f"| {variant} | {entry['model']} | {entry['burst']} | {spread('stalled_rounds')} of {runs[0]['rounds']} | "
            f"{spread('queue full')} | {spread('queue timeout')} | {spread('p50_ms')} | {spread('p99_ms')} | {spread('max_ms')} | {queue} | {loads} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burst", type=int, action="append", help="concurrent requests per round (repeatable; default 11 and 24)")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), help="default: all")
    args = parser.parse_args(argv)
    bursts = args.burst or [11, 24]
    variants = args.variant or list(VARIANTS)
    key = secrets.token_urlsafe(12)
    results = {}
    with TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=key, load_models=tuple(PIPELINES)) as server:
        live = LiveModels(grpcclient.InferenceServerClient(server.grpc_url), {GRPC_ADMIN_HEADER: key})
        originals = {name: live.config(name) for name in {s for steps in PIPELINES.values() for s in steps}}
        for variant in variants:
            print("variant:", variant, flush=True)
            results[variant] = measure_variant(server.grpc_url, live, originals, VARIANTS[variant], bursts, args.runs, args.rounds)
    command = (".venv/bin/python -m modelrepo.perf.studies.dynamic_batcher_stall "
               f"--rounds {args.rounds} --runs {args.runs} " + " ".join(f"--burst {b}" for b in bursts)
               + "".join(f" --variant '{v}'" for v in (args.variant or [])))
    body = [
        f"Each run: {args.rounds} rounds of N concurrent short-text requests (N threads, one gRPC client each, "
        f"sync infer); a round is stalled when its slowest request took > {STALL_S * 1000:.0f} ms. "
        f"Figures: median (range) over {args.runs} runs; latencies over rounds x N requests per run; queue = each "
        "step's mean queue time per request from Triton's statistics (steps in pipeline order). Refused: requests "
        "answered \"Exceeds maximum queue size\" (the overload guard: a burst of 24 is more than minilm_encoder's 16 "
        "queued + 2 running) or \"Request timeout expired\" (held past the queue timeout), their time counted "
        "in the latencies.",
        "",
        "| variant | pipeline | N | stalled rounds | refused: queue full | refused: queue timeout | p50 (ms) | p99 (ms) | max (ms) "
        "| queue per step (ms) | load (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(summary_row(variant, entry) for variant, entries in results.items() for entry in entries),
    ]
    note = "Shared 2-core machine (other jobs running: see the load column); figures are noisy, the stall counts less so."
    print(record("dynamic_batcher_stall", "Triton 2.51 dynamic batcher: burst stalls per configuration", command,
                 {"stall_s": STALL_S, "results": results}, body, note))


if __name__ == "__main__":
    main()
