"""`modelrepo tune` against Triton Model Analyzer on the same model, budget and load, in one run.

    .venv/bin/python -m modelrepo.perf.studies.model_analyzer_compare [--model minilm_encoder] [--p99-ms 400] [--concurrency 8] [--runs 1]

1. Model Analyzer (pinned in pyproject, installed into .cache/model-analyzer-venv: it needs numpy 2)
   in local launch mode against the embedded tritonserver, automatic brute search (instance count ×
   max_batch_size, dynamic batching on), p99 constraint = the budget, the same concurrency and input
   data, under a watchdog. Wall time measured.
2. `modelrepo tune` on the same model (timed).
3. Both winners re-measured by the same perf_analyzer command on one server, alternating, 3 times each.
`--runs N` repeats all three N times and reports each run and the median (range) of the ratios.
Writes perf/results/model_analyzer_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from modelrepo.paths import MODEL_REPOSITORY, cache_dir
from modelrepo.perf import analyzer
from modelrepo.perf.results import Spread, record, repeat
from modelrepo.perf.tune import LiveModels, Load
from modelrepo.perf.tune_command import run_tune
from modelrepo.pins import pins
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.flags import LOOPBACK
from modelrepo.triton.model_config import format_config, read_config
from modelrepo.triton.server import TritonServer, free_ports, prepare_backend_dir, tritonserver_home

WATCHDOG_S = 1800  # Model Analyzer's quick mode has been seen to loop forever here (shared notes)
TOKENS = 64
REMEASURE_ROUNDS = 3  # both winners, alternating on one server


def model_analyzer_venv() -> Path:
    return analyzer.tool_venv("model-analyzer-venv", f"triton-model-analyzer=={pins().model_analyzer}") / "model-analyzer"


def encoder_input_data(folder: Path, count: int = 64) -> Path:
    """Tokenized test reviews, cut or zero-padded to 64 tokens (attention mask 0 on padding) for
    minilm_encoder's INT64 inputs: one shape, so perf_analyzer can send batches of several rows."""
    from modelrepo.build.embedding import ServingEmbedder
    from modelrepo.build.review_data import reviews

    embedder = ServingEmbedder(MODEL_REPOSITORY / "minilm_tokenizer" / "1" / "tokenizer", None)
    entries = []
    for text in reviews("testing_data").review.tolist()[:count]:
        tensors = embedder.tokenize([text])
        ids, mask = (np.pad(tensors[k][0][:TOKENS], (0, max(0, TOKENS - tensors[k].shape[1]))) for k in ("input_ids", "attention_mask"))
        entries.append({"input_ids": {"content": ids.tolist(), "shape": [len(ids)]},
                        "attention_mask": {"content": mask.tolist(), "shape": [len(mask)]}})
    path = folder / "encoder_inputs.json"
    path.write_text(json.dumps({"data": entries}))
    return path


def single_model_repository(folder: Path, model: str) -> Path:
    repository = folder / "repository"
    shutil.copytree(MODEL_REPOSITORY / model, repository / model, ignore=shutil.ignore_patterns("__pycache__", ".build-stamp.json"))
    return repository


def run_model_analyzer(folder: Path, repository: Path, model: str, budget_ms: float, concurrency: int, data: Path) -> dict:
    http, grpc, metrics = free_ports(3)
    venv_bin = Path(sys.executable).parent  # the stub needs this project's python first on PATH
    config = {
        "model_repository": str(repository),
        "profile_models": {model: {
            "cpu_only": True,
            "parameters": {"concurrency": [concurrency], "batch_sizes": [1]},
            "perf_analyzer_flags": {"input-data": str(data), "stability-percentage": 50},
        }},
        "constraints": {"perf_latency_p99": {"max": budget_ms}},
        "objectives": {"perf_throughput": 10},
        "run_config_search_mode": "brute",
        "run_config_search_max_instance_count": 2,
        "run_config_search_max_model_batch_size": 64,
        "triton_launch_mode": "local",
        "triton_server_path": str(tritonserver_home() / "bin" / "tritonserver"),
        # Model Analyzer's own client (load/unload of each config it tries, model config, statistics)
        # sends no headers and has no option for them (1.46), so its server runs without the admin-key
        # restriction: bound to loopback instead, reachable from this machine only.
        "triton_server_flags": {"backend_directory": str(prepare_backend_dir(folder / "backends")),
                                **{f"{endpoint}_address": LOOPBACK for endpoint in ("http", "grpc", "metrics")}},
        "triton_server_environment": {"PATH": f"{venv_bin}:/usr/bin:/bin"},
        "triton_http_endpoint": f"{LOOPBACK}:{http}",
        "triton_grpc_endpoint": f"{LOOPBACK}:{grpc}",
        "triton_metrics_url": f"http://{LOOPBACK}:{metrics}/metrics",
        "client_protocol": "grpc",
        "perf_analyzer_path": str(analyzer.wrapper_script(folder)),
        "output_model_repository_path": str(folder / "ma_output_repository"),
        "override_output_model_repository": True,
        "export_path": str(folder / "ma_export"),
        "skip_summary_reports": True,
    }
    (folder / "ma_export").mkdir()
    config_path = folder / "model_analyzer.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    started = time.monotonic()
    completed = subprocess.run([str(model_analyzer_venv()), "profile", "-f", str(config_path)],
                               capture_output=True, text=True, timeout=WATCHDOG_S, cwd=folder)
    seconds = time.monotonic() - started
    (folder / "model_analyzer.log").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise RuntimeError(f"model-analyzer failed ({completed.returncode}):\n{(completed.stdout + completed.stderr)[-3000:]}")
    return {"seconds": seconds, **best_model_analyzer_config(folder, model, budget_ms)}


def best_model_analyzer_config(folder: Path, model: str, budget_ms: float) -> dict:
    """Its winner: the highest-throughput measured config within the p99 constraint, read from its
    checkpoint (its CSV export is not written with summary reports skipped)."""
    from google.protobuf import json_format

    from modelrepo.triton.model_config import ModelConfig

    checkpoint = json.loads((folder / "checkpoints" / "0.ckpt").read_text())
    variants = checkpoint["ResultManager.results"]["_results"][model]
    measured = []
    for variant, (run_config, measurements) in variants.items():
        for measurement in measurements.values():
            values = {name: data["_value"] for name, data in measurement["_model_config_measurements"][0]["_non_gpu_data"]}
            config = run_config["_model_run_configs"][0]["_model_config_variant"]["model_config"]
            measured.append((variant, values, config))
    fitting = [m for m in measured if m[1]["perf_latency_p99"] <= budget_ms]
    variant, values, raw = max(fitting, key=lambda m: m[1]["perf_throughput"])
    config = json_format.ParseDict(raw, ModelConfig(), ignore_unknown_fields=True)
    config.name = model
    return {"config_name": variant, "config": config, "measured_rows": len(measured),
            "its_throughput": values["perf_throughput"], "its_p99_ms": values["perf_latency_p99"]}


def remeasure(repository: Path, model: str, configs: dict, data: Path, concurrency: int, folder: Path,
              rounds: int = REMEASURE_ROUNDS) -> dict:
    key = secrets.token_urlsafe(12)
    results = {name: [] for name in configs}
    import tritonclient.grpc as grpcclient

    with TritonServer(repository, *free_ports(3), admin_key=key, load_models=(model,)) as server:
        live = LiveModels(grpcclient.InferenceServerClient(server.grpc_url), {GRPC_ADMIN_HEADER: key})
        for _ in range(rounds):
            for name, config in configs.items():
                live.load(model, config)
                results[name].append(analyzer.measure(model, server.grpc_url, data, concurrency, key, folder / "re.csv"))
    return results


def compare_once(args: argparse.Namespace, folder: Path) -> dict:
    """Model Analyzer, then `modelrepo tune`, each timed, then both winners re-measured on one server."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    repository = single_model_repository(folder, args.model)
    data = encoder_input_data(folder)
    print("model analyzer: profiling…", flush=True)
    theirs = run_model_analyzer(folder, repository, args.model, args.p99_ms, args.concurrency, data)
    print(f"model analyzer: {theirs['seconds']:.0f} s, winner {theirs['config_name']}", flush=True)
    started = time.monotonic()
    ours = run_tune(repository, args.model, args.p99_ms, Load(concurrency=args.concurrency), False,
                    folder / "tune-report", (1, 2), "modelrepo tune", input_data=str(data))
    our_seconds = time.monotonic() - started
    # No winner (nothing met the budget) leaves the repository's config: measure that, say so below.
    configs = {"modelrepo tune": ours.configs.get(args.model) or read_config(repository / args.model),
               "model analyzer": theirs["config"]}
    again = remeasure(repository, args.model, configs, data, args.concurrency, folder)
    ratios = Spread.of(ours_run["throughput_infer_per_s"] / theirs_run["throughput_infer_per_s"]
                       for ours_run, theirs_run in zip(again["modelrepo tune"], again["model analyzer"], strict=True))
    return {"ours_seconds": our_seconds, "theirs_seconds": theirs["seconds"], "ratio_time": our_seconds / theirs["seconds"],
            "ratio_throughput": ratios.median, "ratio_throughput_rounds": ratios.as_dict(), "remeasured": again,
            "ours_winner": ours.winner.label() if ours.winner else "none", "theirs_winner": theirs["config_name"],
            "theirs_measured": theirs["measured_rows"], "configs": configs,
            "model_analyzer_log_tail": (folder / "model_analyzer.log").read_text()[-4000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm_encoder")
    parser.add_argument("--p99-ms", type=float, default=400.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1, help="the whole comparison this many times, one after the other")
    args = parser.parse_args(argv)
    model_analyzer_venv()  # installed before any clock starts
    folder = cache_dir() / "model-analyzer-run"  # the last run's logs and exports are kept there
    runs = repeat(args.runs, lambda _: compare_once(args, folder))
    time_ratio, throughput_ratio = (Spread.of(run[key] for run in runs) for key in ("ratio_time", "ratio_throughput"))
    last = runs[-1]
    body = [
        f"Model `{args.model}`, p99 budget {args.p99_ms:g} ms, concurrency {args.concurrency}, input: 64 tokenized test "
        f"reviews (cut or padded to {TOKENS} tokens). Model Analyzer {pins().model_analyzer}: automatic brute search, instances ≤ 2, "
        "max_batch_size ≤ 64, local launch mode on the embedded tritonserver 2.51.0. Each run: Model Analyzer, then "
        f"`modelrepo tune`, each timed, then both winners re-measured {REMEASURE_ROUNDS} times alternating on one server.",
        "",
        "| run | modelrepo tune (s) | Model Analyzer (s) | wall-time ratio | our winner | its winner | "
        f"throughput ratio, median (range) of {REMEASURE_ROUNDS} rounds | p99 within budget in all (ours, its) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {i + 1} | {run['ours_seconds']:.0f} | {run['theirs_seconds']:.0f} | {run['ratio_time']:.2f} | {run['ours_winner']} | "
          f"{run['theirs_winner']} ({run['theirs_measured']} configs measured) | {Spread.of(run['ratio_throughput_rounds']['runs']).text(2)} | "
          + ", ".join(str(all(r["p99_ms"] <= args.p99_ms for r in rounds)) for rounds in run["remeasured"].values()) + " |"
          for i, run in enumerate(runs)],
        "",
        f"Over {args.runs} run(s), median (range): wall-time ratio **{time_ratio.text(2)}**, throughput ratio (ours / theirs) "
        f"**{throughput_ratio.text(2)}x** (goal: ≥ 1x throughput in ≤ 1/3 of the time).",
        "",
        f"Re-measurements of run {args.runs} (same perf_analyzer command, one server, alternating):",
        "",
        "| tuner | round | throughput (/s) | p50 (ms) | p99 (ms) |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {name} | {i + 1} | {r['throughput_infer_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
          for name, rounds in last["remeasured"].items() for i, r in enumerate(rounds)],
        "",
        f"Re-measure command: `{next(iter(last['remeasured'].values()))[0]['command']}`",
        "",
        f"Configs compared in run {args.runs}:",
        "",
        *[f"```\n# {name}\n{format_config(cfg)}```" for name, cfg in last["configs"].items()],
    ]
    print(record(
        "model_analyzer_compare",
        "modelrepo tune vs Triton Model Analyzer (same model, budget, load)",
        " ".join(["python -m modelrepo.perf.studies.model_analyzer_compare", *(argv if argv is not None else sys.argv[1:])]).strip(),
        {"runs": [{k: v for k, v in run.items() if k != "configs"} for run in runs],
         "ratio_time": time_ratio.as_dict(), "ratio_throughput": throughput_ratio.as_dict()},
        body,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
