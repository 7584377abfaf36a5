"""Which credit steps keep a bounded queue: credit_default_fused's throughput and p99 per arrangement.

    .venv/bin/python -m modelrepo.perf.studies.credit_step_queues [--concurrency 8] [--rounds 3]

In Triton 2.51 a queue policy turns off the dynamic batcher's payload prefetching; with one instance,
a request that arrives while it runs then waits for the batcher's 500 ms idle timeout (README
"Failure modes"). One server (explicit model control, admin key) serves credit_default_fused; each
round loads every arrangement of its three steps' configs in turn (`load_model(config=…)`, the
tuner's way) and measures it with perf_analyzer (gRPC, batch 1, the build's perf_input.json), and
reads each step's mean queue time per request from Triton's statistics. Ratios are taken within a
round; the tables give the median and range over rounds. Writes perf/results/credit_step_queues.{json,md}.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import tritonclient.grpc as grpcclient

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.results import Spread, record
from modelrepo.perf.tune import LiveModels
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.model_config import ModelConfig, copy_config, set_cpu_instances
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "credit_default_fused"
STEPS = ("credit_preprocess", "credit_members_fused", "credit_aggregate")
GUARD = STEPS[-1]
Configs = dict[str, ModelConfig]


def every_step_bounded(instances: int) -> Callable[[Configs], Configs]:
    """Every step with the guard's bounded queue (as shipped before this study), `instances` each."""
    def change(configs: Configs) -> Configs:
        changed = {}
        for step in STEPS:
            config = copy_config(configs[step])
            config.dynamic_batching.default_queue_policy.CopyFrom(configs[GUARD].dynamic_batching.default_queue_policy)
            set_cpu_instances(config, instances)
            changed[step] = config
        return changed
    return change


def guard_instances(instances: int) -> Callable[[Configs], Configs]:
    """Only the guard bounded (as shipped), with `instances` of it; the other steps keep one each (the drift
    window lives in credit_preprocess, one per instance)."""
    def change(configs: Configs) -> Configs:
        config = copy_config(configs[GUARD])
        set_cpu_instances(config, instances)
        return {GUARD: config}
    return change


ARRANGEMENTS: dict[str, Callable[[Configs], Configs]] = {
    "every step bounded, 1 instance each (before)": every_step_bounded(1),
    "only credit_aggregate bounded, 1 instance each (11ec3c9)": guard_instances(1),
    "only credit_aggregate bounded, 2 instances of it (shipped)": guard_instances(2),
    "every step bounded, 2 instances each": every_step_bounded(2),
}


def measure_arrangement(server: TritonServer, live: LiveModels, key: str, originals: Configs, change, concurrency: int,
                        folder: Path) -> dict:
    changed = change(originals)
    for step, config in changed.items():
        live.load(step, config)
    try:
        before = {step: live.totals(step) for step in STEPS}
        result = measure(MODEL, server.grpc_url, MODEL_REPOSITORY / MODEL / "perf_input.json", concurrency, key,
                         folder / "run.csv")
        after = {step: live.totals(step) for step in STEPS}
    finally:
        for step in changed:
            live.load(step, originals[step])
    queue_ms = {step: live.queue_ms_per_request(before[step], after[step]) for step in STEPS}
    return {**result, "queue_ms_per_request": queue_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    key = secrets.token_urlsafe(12)
    runs: dict[str, list[dict]] = {name: [] for name in ARRANGEMENTS}
    with tempfile.TemporaryDirectory() as tmp, \
            TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=key, load_models=(MODEL,)) as server:
        live = LiveModels(grpcclient.InferenceServerClient(server.grpc_url), {GRPC_ADMIN_HEADER: key})
        originals = {step: live.config(step) for step in STEPS}
        for number in range(1, args.rounds + 1):
            for name, change in ARRANGEMENTS.items():
                runs[name].append(measure_arrangement(server, live, key, originals, change, args.concurrency, Path(tmp)))
                print(f"round {number}: {name}: {runs[name][-1]['throughput_infer_per_s']:.0f}/s, "
                      f"p99 {runs[name][-1]['p99_ms']:.1f} ms", flush=True)
    before, one_guard = list(ARRANGEMENTS)[:2]

    def spread(name: str, value: Callable[[int, dict], float], digits: int) -> str:
        return Spread.of(value(index, run) for index, run in enumerate(runs[name])).text(digits)

    body = [
        f"`{MODEL}` at concurrency {args.concurrency}; median (range) over {args.rounds} rounds; ÷ before, ÷ one guard: "
        "throughput over the first or the second arrangement's in the same round; queue: each step's mean queue time "
        "per request (steps in pipeline order).",
        "",
        "| arrangement | throughput (infer/s) | ÷ before | ÷ one guard | p50 (ms) | p99 (ms) | queue per step (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {name} | {spread(name, lambda i, r: r['throughput_infer_per_s'], 0)} | "
          f"{spread(name, lambda i, r: r['throughput_infer_per_s'] / runs[before][i]['throughput_infer_per_s'], 2)} | "
          f"{spread(name, lambda i, r: r['throughput_infer_per_s'] / runs[one_guard][i]['throughput_infer_per_s'], 2)} | "
          f"{spread(name, lambda i, r: r['p50_ms'], 1)} | {spread(name, lambda i, r: r['p99_ms'], 1)} | "
          + " / ".join(spread(name, lambda i, r, s=step: r["queue_ms_per_request"][s], 1) for step in STEPS) + " |"
          for name in ARRANGEMENTS),
    ]
    print(record(
        "credit_step_queues",
        "credit_default_fused: which steps keep a bounded queue (Triton 2.51's batcher wait)",
        " ".join([".venv/bin/python -m modelrepo.perf.studies.credit_step_queues",
                  *(argv if argv is not None else sys.argv[1:])]).strip(),
        {"concurrency": args.concurrency, "runs": runs},
        body,
        note="Embedded Triton 2.51.0; perf_analyzer shares the machine's cores with the server.",
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
