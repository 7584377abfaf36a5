"""genai-perf, unchanged, against `llm_bls`: the TensorRT-LLM client tooling works on this repository.

    .venv/bin/python -m modelrepo.perf.genai_perf_check [--concurrency 4] [--requests 16]

genai-perf (pinned in pyproject, installed into .cache/genai-perf-venv: it has its own dependency
set) runs its `--backend tensorrtllm --endpoint-type kserve --streaming` profile with synthetic
prompts and deterministic output lengths (it sends `min_length` and `exclude_input_in_output`),
the tokenizer `modelrepo build` saved for llm_preprocessing, and the bundled perf_analyzer 2.51.
Records genai-perf's own TTFT / inter-token latency / output token throughput in
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
from modelrepo.perf.llm_streaming import MODELS
from modelrepo.perf.results import record
from modelrepo.pins import pins
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "llm_bls"
TOKENIZER = MODEL_REPOSITORY / "llm_preprocessing" / "1" / "tokenizer"


def genai_perf_binary() -> Path:
    return tool_venv("genai-perf-venv", f"genai-perf=={pins().genai_perf}") / "genai-perf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--input-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    binary = genai_perf_binary()
    with tempfile.TemporaryDirectory() as tmp, TritonServer(MODEL_REPOSITORY, *free_ports(3), load_models=MODELS) as server:
        folder = Path(tmp)
        wrapper_script(folder)
        genai_args = [
            "profile", "-m", MODEL, "--endpoint-type", "kserve", "--backend", "tensorrtllm", "--streaming",
            "--url", server.grpc_url, "--tokenizer", str(TOKENIZER), "--concurrency", str(args.concurrency),
            "--request-count", str(args.requests), "--synthetic-input-tokens-mean", str(args.input_tokens),
            "--synthetic-input-tokens-stddev", "0", "--output-tokens-mean", str(args.output_tokens),
            "--output-tokens-mean-deterministic", "--artifact-dir", str(folder / "artifacts"),
        ]
        env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}  # genai-perf runs `perf_analyzer`
        done = subprocess.run([str(binary), *genai_args], capture_output=True, text=True, env=env, timeout=1200, cwd=folder)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return 1
        exports = sorted((folder / "artifacts").rglob("*genai_perf.json"))
        figures = json.loads(exports[0].read_text())
    keep = ("time_to_first_token", "inter_token_latency", "request_latency", "output_token_throughput",
            "output_sequence_length", "input_sequence_length", "request_throughput")
    stats = {key: figures[key] for key in keep if key in figures}

    def row(key: str) -> str:  # genai-perf states each metric's unit
        values = stats.get(key, {})
        cells = [f"{values[p]:.1f}" if isinstance(values.get(p), (int, float)) else "" for p in ("avg", "p50", "p99")]
        return f"| {key} ({values.get('unit', '')}) | " + " | ".join(cells) + " |"

    body = [
        f"genai-perf {pins().genai_perf}, unchanged, against `{MODEL}` (TensorRT-LLM tensor names), concurrency "
        f"{args.concurrency}, {args.requests} requests, {args.input_tokens} synthetic input tokens, "
        f"{args.output_tokens} output tokens (deterministic: genai-perf sends min_length).",
        "",
        "| metric | avg | p50 | p99 |",
        "| --- | --- | --- | --- |",
        *[row(key) for key in keep if key in stats],
        "",
        "genai-perf arguments: `genai-perf "
        + " ".join(genai_args).replace(str(TOKENIZER), "model_repository/llm_preprocessing/1/tokenizer").replace(tmp, "TMP")
        + "`",
    ]
    command = "python -m modelrepo.perf.genai_perf_check " + " ".join(sys.argv[1:] if argv is None else argv)
    print(record("genai_perf_llm_bls", "genai-perf against llm_bls", command.strip(), {"genai_perf": stats, "args": genai_args}, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
