"""One instance or two for a model `modelrepo add` puts in: the batcher's 500 ms idle wait.

A LightGBM regressor (made as tests/added_models.py makes it, on scikit-learn's diabetes data) added
with `--instances 1` and with `--instances 2`, everything else as `add` writes it (bounded queue,
500 us queue delay); each served alone and measured with perf_analyzer at every concurrency, three
runs of at least 300 requests each, median (range). Writes perf/results/added_model_instances.{json,md}.

    python -m modelrepo.perf.studies.added_model_instances
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from modelrepo.cli import main as modelrepo
from modelrepo.perf.model_bench import bench, spreads_of
from modelrepo.perf.results import record

MODEL = "diabetes"


def added_repository(folder: Path, instances: int) -> Path:
    from tests import added_models  # the same model the tests add

    made = added_models.lightgbm_regressor(folder)
    repository = folder / f"repository-{instances}"
    repository.mkdir()
    argv = ["add", MODEL, str(made.source), "--sample", str(made.sample), "--max-batch-size", "32",
            "--instances", str(instances), "--model-repository", str(repository)]
    if modelrepo(argv) != 0:
        raise SystemExit(f"modelrepo {' '.join(argv)} failed")
    return repository


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    rows, data = [], {}
    with tempfile.TemporaryDirectory(prefix="added-instances-") as tmp:
        for instances in (1, 2):
            repository = added_repository(Path(tmp), instances)
            workdir = Path(tmp) / f"bench-{instances}"
            workdir.mkdir()
            runs = bench(repository, MODEL, args.concurrency, args.runs, args.requests,
                         str(repository / MODEL / "perf_input.json"), workdir)
            for concurrency, figures in spreads_of(runs).items():
                rows.append(f"| {instances} | {concurrency} | {figures['throughput_infer_per_s'].text(0)} | "
                            f"{figures['p50_ms'].text(1)} | {figures['p99_ms'].text(1)} |")
                data[f"instances={instances},concurrency={concurrency}"] = {
                    "runs": runs[concurrency], **{f: s.as_dict() for f, s in figures.items()}}
    body = [
        f"`{MODEL}` (LightGBM regressor, ONNX via onnxmltools, onnxruntime backend, 1 intra-op thread per "
        f"instance), as `modelrepo add` writes it but for `--instances`; perf_analyzer over gRPC, closed loop, "
        f"{args.runs} runs per point of at least {args.requests} requests; median (range).",
        "",
        "| instances | concurrency | throughput (/s) | p50 (ms) | p99 (ms) |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        "With one instance the p99 sits at ~500 ms from concurrency 1 on: Triton 2.51's dynamic batcher, with a "
        "queue policy (payload prefetching off), wakes for a queued request only when an instance is idle at that "
        "moment, else after its 500 ms idle timeout (README \"Failure modes\"); a closed-loop client's next request "
        "can arrive before the instance that answered it is free again. `modelrepo add` now writes two instances by "
        "default.",
    ]
    print(record("added_model_instances", "Added models: one instance or two behind a bounded queue",
                 " ".join(["python -m modelrepo.perf.studies.added_model_instances", *(argv or sys.argv[1:])]).strip(),
                 data, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
