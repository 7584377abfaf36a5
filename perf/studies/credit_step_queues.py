"""Which credit steps keep a bounded queue: a credit ensemble's throughput and p99 per arrangement.

    .venv/bin/python -m modelrepo.perf.studies.credit_step_queues [--model credit_default_fused] [--concurrency 8] [--rounds 3]

In Triton 2.51 a queue policy turns off the dynamic batcher's payload prefetching; with one instance,
a request that arrives while it runs then waits for the batcher's 500 ms idle timeout (README
"Failure modes"). One server (explicit model control, admin key) serves the ensemble (`--model`:
credit_default_fused or the fan-out credit_default); each round loads every arrangement of its steps'
configs in turn (`load_model(config=…)`, the tuner's way) and measures it with perf_analyzer (gRPC,
batch 1, the build's perf_input.json), and reads each step's mean queue time per request from Triton's
statistics. Ratios are taken within a round; the tables give the median and range over rounds. Writes
perf/results/credit_step_queues.{json,md} (credit_default_fused) or credit_step_queues-credit_default.{json,md}.
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

GUARD = "credit_aggregate"  # the last step of every credit ensemble, bounded as shipped
MEMBERS = tuple(f"credit_member_{index}" for index in range(10))
CASCADE_GUARD = MEMBERS[0]  # credit_router's cascade calls it alone, so it must stay bounded
Configs = dict[str, ModelConfig]
Change = Callable[[Configs], Configs]


def changed(configs: Configs, steps, bounded: bool | None = None, instances: int | None = None) -> Configs:
    """Copies of `steps`' configs with the guard's bounded queue (True), none (False) or theirs (None), and
    `instances` CPU instances each (None: theirs)."""
    result = {}
    for step in steps:
        config = copy_config(configs[step])
        if bounded is True:
            config.dynamic_batching.default_queue_policy.CopyFrom(configs[GUARD].dynamic_batching.default_queue_policy)
        elif bounded is False:
            config.dynamic_batching.ClearField("default_queue_policy")
        if instances is not None:
            set_cpu_instances(config, instances)
        result[step] = config
    return result


def every_step_bounded(steps, instances: int) -> Change:
    """Every step with the guard's bounded queue (as shipped before this study), `instances` each."""
    return lambda configs: changed(configs, steps, bounded=True, instances=instances)


def guard_instances(instances: int) -> Change:
    """Only the guard bounded (as shipped), with `instances` of it; the other steps keep one each (the drift
    window lives in credit_preprocess, one per instance)."""
    return lambda configs: changed(configs, [GUARD], instances=instances)


def members(bounded: bool, instances: int, cascade_guard_instances: int | None = None) -> Change:
    """The fan-out's ten members bounded or not, `instances` each; credit_member_0 (the cascade's guard) kept
    bounded with `cascade_guard_instances` when given."""
    def change(configs: Configs) -> Configs:
        result = changed(configs, MEMBERS, bounded=bounded, instances=instances)
        if cascade_guard_instances is not None:
            result.update(changed(configs, [CASCADE_GUARD], instances=cascade_guard_instances))
        return result
    return change


FUSED_STEPS = ("credit_preprocess", "credit_members_fused", GUARD)
STUDIES: dict[str, dict[str, Change]] = {
    "credit_default_fused": {
        "every step bounded, 1 instance each (before)": every_step_bounded(FUSED_STEPS, 1),
        "only credit_aggregate bounded, 1 instance each (11ec3c9)": guard_instances(1),
        "only credit_aggregate bounded, 2 instances of it (shipped)": guard_instances(2),
        "every step bounded, 2 instances each": every_step_bounded(FUSED_STEPS, 2),
    },
    "credit_default": {
        "members bounded, 1 instance each (as shipped before this study)": members(True, 1),
        "members bounded, 2 instances each": members(True, 2),
        "credit_member_0 bounded with 2 instances, the other members unbounded, 1 each": members(False, 1, 2),
        "no member bounded, 1 instance each (the cascade unguarded)": members(False, 1),
    },
}


def queue_columns(steps: list[str]) -> dict[str, list[str]]:
    """Columns of the queue-time cell: each step, the ten members as one (their largest mean)."""
    columns: dict[str, list[str]] = {}
    for step in steps:
        columns.setdefault("members (largest)" if step in MEMBERS else step, []).append(step)
    return columns


def measure_arrangement(server: TritonServer, live: LiveModels, model: str, steps: list[str], key: str,
                        originals: Configs, change: Change, concurrency: int, folder: Path) -> dict:
    arranged = change(originals)
    for step, config in arranged.items():
        live.load(step, config)
    try:
        before = {step: live.totals(step) for step in steps}
        result = measure(model, server.grpc_url, MODEL_REPOSITORY / model / "perf_input.json", concurrency, key,
                         folder / "run.csv")
        after = {step: live.totals(step) for step in steps}
    finally:
        for step in arranged:
            live.load(step, originals[step])
    queue_ms = {step: live.queue_ms_per_request(before[step], after[step]) for step in steps}
    return {**result, "queue_ms_per_request": queue_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(STUDIES), default="credit_default_fused")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    model, arrangements = args.model, STUDIES[args.model]
    key = secrets.token_urlsafe(12)
    runs: dict[str, list[dict]] = {name: [] for name in arrangements}
    with tempfile.TemporaryDirectory() as tmp, \
            TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=key, load_models=(model,)) as server:
        live = LiveModels(grpcclient.InferenceServerClient(server.grpc_url), {GRPC_ADMIN_HEADER: key})
        steps = [step.model_name for step in live.config(model).ensemble_scheduling.step]
        originals = {step: live.config(step) for step in steps}
        for number in range(1, args.rounds + 1):
            for name, change in arrangements.items():
                runs[name].append(measure_arrangement(server, live, model, steps, key, originals, change,
                                                      args.concurrency, Path(tmp)))
                print(f"round {number}: {name}: {runs[name][-1]['throughput_infer_per_s']:.0f}/s, "
                      f"p99 {runs[name][-1]['p99_ms']:.1f} ms", flush=True)
    first, second = list(arrangements)[:2]
    columns = queue_columns(steps)

    def spread(name: str, value: Callable[[int, dict], float], digits: int) -> str:
        return Spread.of(value(index, run) for index, run in enumerate(runs[name])).text(digits)

    def queue_cell(name: str) -> str:
        return " / ".join(spread(name, lambda i, r, group=group: max(r["queue_ms_per_request"][s] for s in group), 1)
                          for group in columns.values())

    body = [
        f"`{model}` at concurrency {args.concurrency}; median (range) over {args.rounds} rounds; ÷ 1st, ÷ 2nd: "
        "throughput over the first or the second arrangement's in the same round; queue: each step's mean queue "
        f"time per request ({' / '.join(columns)}); a p99 near 500 ms is Triton 2.51's batcher wait.",
        "",
        "| arrangement | throughput (infer/s) | ÷ 1st | ÷ 2nd | p50 (ms) | p99 (ms) | queue per step (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {name} | {spread(name, lambda i, r: r['throughput_infer_per_s'], 0)} | "
          f"{spread(name, lambda i, r: r['throughput_infer_per_s'] / runs[first][i]['throughput_infer_per_s'], 2)} | "
          f"{spread(name, lambda i, r: r['throughput_infer_per_s'] / runs[second][i]['throughput_infer_per_s'], 2)} | "
          f"{spread(name, lambda i, r: r['p50_ms'], 1)} | {spread(name, lambda i, r: r['p99_ms'], 1)} | "
          f"{queue_cell(name)} |"
          for name in arrangements),
    ]
    print(record(
        "credit_step_queues" if model == "credit_default_fused" else f"credit_step_queues-{model}",
        f"{model}: which steps keep a bounded queue (Triton 2.51's batcher wait)",
        " ".join([".venv/bin/python -m modelrepo.perf.studies.credit_step_queues",
                  *(argv if argv is not None else sys.argv[1:])]).strip(),
        {"model": model, "concurrency": args.concurrency, "runs": runs},
        body,
        note="Embedded Triton 2.51.0; perf_analyzer shares the machine's cores with the server.",
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
