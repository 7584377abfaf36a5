"""genai-perf, unchanged, against `llm_bls`: the TensorRT-LLM client tooling works on this repository.

    .venv/bin/python -m modelrepo.perf.studies.genai_perf_check [--concurrency 4] [--requests 200] [--runs 3]

genai-perf (pinned in pyproject, installed into .cache/genai-perf-venv: it has its own dependency
set) runs its `--backend tensorrtllm --endpoint-type kserve --streaming` profile with synthetic
prompts and deterministic output lengths (it sends `min_length` and `exclude_input_in_output`),
the tokenizer `modelrepo build` saved for llm_preprocessing, and the bundled perf_analyzer 2.51.
genai-perf counts output tokens itself (it re-tokenises the answers). `--runs` profiles on one server,
one after the other; each figure is recorded as the median and range over the runs in
perf/results/genai_perf_llm_bls.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import tool_venv, wrapper_script
from modelrepo.perf.studies.llm_streaming import MODELS
from modelrepo.perf.results import Spread, record, repeat
from modelrepo.pins import pins
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "llm_bls"
TOKENIZER = MODEL_REPOSITORY / "llm_preprocessing" / "1" / "tokenizer"


def genai_perf_binary() -> Path:
    return tool_venv("genai-perf-venv", f"genai-perf=={pins().genai_perf}") / "genai-perf"


KEPT = ("time_to_first_token", "inter_token_latency", "request_latency", "output_token_throughput",
        "output_sequence_length", "input_sequence_length", "request_throughput")
STATISTICS = ("avg", "p50", "p99")


def genai_arguments(args, url: str, artifacts: Path) -> list[str]:
    return [
        "profile", "-m", MODEL, "--endpoint-type", "kserve", "--backend", "tensorrtllm", "--streaming",
        "--url", url, "--tokenizer", str(TOKENIZER), "--concurrency", str(args.concurrency),
        "--request-count", str(args.requests), "--synthetic-input-tokens-mean", str(args.input_tokens),
        "--synthetic-input-tokens-stddev", "0", "--output-tokens-mean", str(args.output_tokens),
        "--output-tokens-mean-deterministic", "--artifact-dir", str(artifacts),
    ]


def profile(binary: Path, genai_args: list[str], folder: Path) -> dict:
    """One genai-perf run: its figures (metric -> {unit, avg, p50, p99, ...}) for the kept metrics."""
    env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}  # genai-perf runs `perf_analyzer`
    done = subprocess.run([str(binary), *genai_args], capture_output=True, text=True, env=env, timeout=3600, cwd=folder)
    if done.returncode != 0:
        raise RuntimeError(f"genai-perf failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    artifacts = Path(genai_args[genai_args.index("--artifact-dir") + 1])
    figures = json.loads(sorted(artifacts.rglob("*genai_perf.json"))[0].read_text())
    return {key: figures[key] for key in KEPT if key in figures}


def spreads(runs: list[dict]) -> dict[str, dict[str, Spread]]:
    """metric -> statistic -> Spread over the runs (statistics genai-perf gave in every run)."""
    return {key: {stat: Spread.of(run[key][stat] for run in runs) for stat in STATISTICS
                  if all(isinstance(run.get(key, {}).get(stat), (int, float)) for run in runs)}
            for key in KEPT if all(key in run for run in runs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--input-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    binary = genai_perf_binary()
    with tempfile.TemporaryDirectory() as tmp, TritonServer(MODEL_REPOSITORY, *free_ports(3), load_models=MODELS) as server:
        folder = Path(tmp)
        wrapper_script(folder)
        runs = repeat(args.runs, lambda i: profile(binary, genai_arguments(args, server.grpc_url, folder / f"artifacts-{i}"), folder))
        shown_args = " ".join(genai_arguments(args, server.grpc_url, Path("TMP/artifacts"))).replace(
            str(TOKENIZER), "model_repository/llm_preprocessing/1/tokenizer")
    figures = spreads(runs)

    def row(key: str) -> str:  # genai-perf states each metric's unit
        cells = [figures[key][stat].text(1) if stat in figures[key] else "" for stat in STATISTICS]
        return f"| {key} ({runs[0][key].get('unit', '')}) | " + " | ".join(cells) + " |"

    body = [
        f"genai-perf {pins().genai_perf}, unchanged, against `{MODEL}` (TensorRT-LLM tensor names), concurrency "
        f"{args.concurrency}, {args.requests} requests per run, {args.input_tokens} synthetic input tokens, "
        f"{args.output_tokens} output tokens asked (deterministic: genai-perf sends min_length; it counts the "
        f"tokens it receives). {len(runs)} runs: median (range) of each run's figure.",
        "",
        "| metric | avg | p50 | p99 |",
        "| --- | --- | --- | --- |",
        *[row(key) for key in KEPT if key in figures],
        "",
        f"genai-perf arguments: `genai-perf {shown_args}`",
    ]
    command = "python -m modelrepo.perf.studies.genai_perf_check " + " ".join(sys.argv[1:] if argv is None else argv)
    data = {"runs": runs, "figures": {k: {s: v.as_dict() for s, v in stats.items()} for k, stats in figures.items()},
            "args": shown_args}
    print(record("genai_perf_llm_bls", "genai-perf against llm_bls", command.strip(), data, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
