"""How one decode step of SmolLM2 scales with batch size and torch threads on this CPU (no server).

    .venv/bin/python -m modelrepo.perf.llm_engine_scaling [--batches 1 2 4 8] [--threads 1 2]

The ceiling for in-flight batching here: tokens/s of a batch of B sequences is B / step time.
Each step: B new tokens against an 80-token cache, median of 10 after 2 warm-up steps.
Writes perf/results/llm_engine_scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.results import record
from modelrepo.python_backends.llm.engine import WEIGHTS_DIR, load_model

CONTEXT = 80


def step_seconds(model, batch: int, steps: int = 12) -> float:
    ids = torch.randint(0, 1000, (batch, CONTEXT))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        mask = torch.ones(batch, CONTEXT, dtype=torch.long)
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.long)], dim=1)
            model(input_ids=ids[:, :1], attention_mask=mask, position_ids=mask.sum(1, keepdim=True) - 1,
                  past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - started)
    return statistics.median(times[2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    model = load_model(MODEL_REPOSITORY / "llm_engine" / "1" / WEIGHTS_DIR)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            seconds = step_seconds(model, batch)
            rows.append({"threads": threads, "batch": batch, "step_ms": 1000 * seconds, "tokens_per_s": batch / seconds})
    base = {r["threads"]: r["tokens_per_s"] for r in rows if r["batch"] == 1}
    body = [
        "| torch threads | batch | decode step (ms) | tokens/s | vs batch 1 |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r['threads']} | {r['batch']} | {r['step_ms']:.0f} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base[r['threads']]:.2f}x |" for r in rows],
        "",
        "A step reads all 0.54 GB of fp32 weights whatever the batch (memory-bound at batch 1); larger",
        "batches add matmul work. This is the upper bound of what in-flight batching can gain here.",
    ]
    command = "python -m modelrepo.perf.llm_engine_scaling " + " ".join(sys.argv[1:] if argv is None else argv)
    print(record("llm_engine_scaling", "SmolLM2 decode step vs batch size and threads (CPU)", command.strip(), {"rows": rows}, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
