"""How one decode step of SmolLM2 scales with batch size and torch threads on this CPU (no server).

    .venv/bin/python -m modelrepo.perf.studies.llm_engine_scaling [--batches 1 2 4 8] [--threads 1 2] [--steps 200] [--runs 3]

The ceiling for in-flight batching here: tokens/s of a batch of B sequences is B / step time.
Each step: B new tokens against an 80-token cache (the new token dropped after every step, so every
step does the same work); a run's figure is the median of `--steps` steps after 2 warm-up steps,
and each point is reported as the median and range over `--runs` runs.
Writes perf/results/llm_engine_scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.results import Spread, record, repeat
from modelrepo.python_backends.llm.engine import WEIGHTS_DIR, load_model

CONTEXT = 80


WARMUP_STEPS = 2


def step_seconds(model, batch: int, steps: int) -> float:
    """Median seconds of one decode step of `batch` sequences against a CONTEXT-token cache."""
    ids = torch.randint(0, 1000, (batch, CONTEXT))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        mask = torch.ones(batch, CONTEXT + 1, dtype=torch.long)
        position = torch.full((batch, 1), CONTEXT)
        times = []
        for _ in range(steps + WARMUP_STEPS):
            started = time.perf_counter()
            model(input_ids=ids[:, :1], attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - started)
            cache.crop(-1)  # drop the token this step added: the next step sees CONTEXT tokens again
    return statistics.median(times[WARMUP_STEPS:])


def measure_points(model, threads: list[int], batches: list[int], steps: int) -> dict[tuple[int, int], float]:
    """(threads, batch) -> median step seconds, every point once."""
    points = {}
    for count in threads:
        torch.set_num_threads(count)
        for batch in batches:
            points[(count, batch)] = step_seconds(model, batch, steps)
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=200, help="decode steps per point and run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    model = load_model(MODEL_REPOSITORY / "llm_engine" / "1" / WEIGHTS_DIR)
    runs = repeat(args.runs, lambda _: measure_points(model, args.threads, args.batches, args.steps))
    rows, smallest = [], min(args.batches)
    for key in runs[0]:
        step = Spread.of(run[key] for run in runs)
        tokens = Spread.of(key[1] / run[key] for run in runs)
        base = Spread.of((key[1] / run[key]) / (smallest / run[(key[0], smallest)]) for run in runs)
        rows.append({"threads": key[0], "batch": key[1], "step_s": step, "tokens_per_s": tokens, "vs_smallest_batch": base})
    body = [
        f"{args.steps} decode steps per point and run, {len(runs)} run(s): median (range) over the runs.",
        "",
        f"| torch threads | batch | decode step (ms) | tokens/s | vs batch {min(args.batches)} |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r['threads']} | {r['batch']} | {r['step_s'].text(0, 1000)} | {r['tokens_per_s'].text(1)} | "
          f"{r['vs_smallest_batch'].text()}x |" for r in rows],
        "",
        "A step reads all 0.54 GB of fp32 weights whatever the batch (memory-bound at batch 1); larger",
        "batches add matmul work. This is the upper bound of what in-flight batching can gain here.",
    ]
    data = {"rows": [{k: v.as_dict() if isinstance(v, Spread) else v for k, v in r.items()} for r in rows],
            "runs": [{f"{t}x{b}": s for (t, b), s in run.items()} for run in runs]}
    command = "python -m modelrepo.perf.studies.llm_engine_scaling " + " ".join(sys.argv[1:] if argv is None else argv)
    print(record("llm_engine_scaling", "SmolLM2 decode step vs batch size and threads (CPU)", command.strip(), data, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
