"""genai-perf, unchanged, against `llm_bls`: the TensorRT-LLM client tooling works on this repository.

    .venv/bin/python -m modelrepo.perf.studies.genai_perf_check [--concurrency 4] [--requests 200] [--runs 3]
        [--openai]

genai-perf (pinned in pyproject, installed into .cache/genai-perf-venv: it has its own dependency
set) runs its `--backend tensorrtllm --endpoint-type kserve --streaming` profile with synthetic
prompts and deterministic output lengths (it sends `min_length` and `exclude_input_in_output`),
the tokenizer `modelrepo build` saved for llm_preprocessing, and the bundled perf_analyzer 2.51.
genai-perf counts output tokens itself (it re-tokenises the answers). `--runs` profiles on one server,
one after the other; each figure is recorded as the median and range over the runs in
perf/results/genai_perf_llm_bls.{json,md}.

`--openai`: the same genai-perf, in its OpenAI mode, against the OpenAI gateway (started as `modelrepo
serve` starts it): `--endpoint-type chat --streaming` on llm_bls, then `--endpoint-type embeddings` on
text_embedding; recorded in perf/results/genai_perf_openai.{json,md}.
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
from modelrepo.perf.openai_gateway import start_gateway
from modelrepo.perf.studies.llm_streaming import MODELS
from modelrepo.perf.results import Spread, record, repeat
from modelrepo.pins import pins
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "llm_bls"
EMBEDDING_MODEL = "text_embedding"
TOKENIZER = MODEL_REPOSITORY / "llm_preprocessing" / "1" / "tokenizer"


def genai_perf_binary() -> Path:
    return tool_venv("genai-perf-venv", f"genai-perf=={pins().genai_perf}") / "genai-perf"


KEPT = ("time_to_first_token", "inter_token_latency", "request_latency", "output_token_throughput",
        "output_sequence_length", "input_sequence_length", "request_throughput")
STATISTICS = ("avg", "p50", "p99")
ADMIN_KEY = "genai-perf"  # the gateway reads the model list with it
OPENAI_KEY = "genai-perf-openai-key"
TITLES = {
    "kserve": f"{MODEL} over Triton's gRPC stream (TensorRT-LLM tensor names; output length deterministic: "
              "genai-perf sends min_length)",
    "chat": f"/v1/chat/completions through the OpenAI gateway ({MODEL}, streamed; max_tokens asked, an answer may "
            "end earlier at the model's end token)",
    "embeddings": f"/v1/embeddings through the OpenAI gateway ({EMBEDDING_MODEL}, one text per request)",
}


def genai_arguments(args, url: str, artifacts: Path, endpoint: str = "kserve") -> list[str]:
    """genai-perf's arguments for one profile: `kserve` (llm_bls over Triton's gRPC stream, TensorRT-LLM
    tensor names), or through the OpenAI gateway: `chat` (llm_bls, streamed) or `embeddings` (text_embedding)."""
    common = ["--url", url, "--concurrency", str(args.concurrency), "--request-count", str(args.requests),
              "--artifact-dir", str(artifacts)]
    if endpoint != "kserve":  # the gateway runs with an API key, as in the image
        common += ["--header", f"Authorization:Bearer {OPENAI_KEY}"]
    if endpoint == "embeddings":  # genai-perf makes the texts (--batch-size 1: one text per request)
        return ["profile", "-m", EMBEDDING_MODEL, "--endpoint-type", "embeddings", "--tokenizer", str(TOKENIZER),
                "--synthetic-input-tokens-mean", str(args.input_tokens), "--synthetic-input-tokens-stddev", "0",
                *common]
    lengths = ["--tokenizer", str(TOKENIZER), "--synthetic-input-tokens-mean", str(args.input_tokens),
               "--synthetic-input-tokens-stddev", "0", "--output-tokens-mean", str(args.output_tokens)]
    if endpoint == "chat":  # max_tokens asked; the answer may end earlier at the model's end token
        return ["profile", "-m", MODEL, "--endpoint-type", "chat", "--streaming", *lengths, *common]
    return ["profile", "-m", MODEL, "--endpoint-type", "kserve", "--backend", "tensorrtllm", "--streaming", *lengths,
            "--output-tokens-mean-deterministic", *common]


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
    parser.add_argument("--openai", action="store_true",
                        help="profile the OpenAI gateway (chat, then embeddings) instead of Triton's gRPC stream")
    args = parser.parse_args(argv)
    binary = genai_perf_binary()
    endpoints = ("chat", "embeddings") if args.openai else ("kserve",)
    # The admin key only with the gateway (it reads the repository index and configs, as in the image);
    # the kserve profile's perf_analyzer reads llm_bls's config without one.
    admin = ADMIN_KEY if args.openai else None
    with tempfile.TemporaryDirectory() as tmp, TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=admin,
                                                            load_models=MODELS) as server:
        folder = Path(tmp)
        wrapper_script(folder)
        gateway, url = start_gateway(server, "httptools", OPENAI_KEY) if args.openai else (None, server.grpc_url)
        try:
            host_port = url.removeprefix("http://")
            runs = repeat(args.runs, lambda i: {
                endpoint: profile(binary, genai_arguments(args, host_port, folder / f"artifacts-{endpoint}-{i}", endpoint),
                                  folder) for endpoint in endpoints})
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(timeout=30)
        shown = {endpoint: " ".join(genai_arguments(args, "HOST:PORT", Path("TMP/artifacts"), endpoint)).replace(
            str(TOKENIZER), "model_repository/llm_preprocessing/1/tokenizer") for endpoint in endpoints}
    figures = {endpoint: spreads([run[endpoint] for run in runs]) for endpoint in endpoints}

    def row(endpoint: str, key: str) -> str:  # genai-perf states each metric's unit
        cells = [figures[endpoint][key][stat].text(1) if stat in figures[endpoint][key] else "" for stat in STATISTICS]
        return f"| {key} ({runs[0][endpoint][key].get('unit', '')}) | " + " | ".join(cells) + " |"

    body = [f"genai-perf {pins().genai_perf}, unchanged, concurrency {args.concurrency}, {args.requests} requests per "
            f"run, {args.input_tokens} synthetic input tokens; {len(runs)} runs: median (range) of each run's figure. "
            "genai-perf counts the tokens it receives (it re-tokenises the answers)."]
    for endpoint in endpoints:
        body += ["", f"### {TITLES[endpoint]}", "", "| metric | avg | p50 | p99 |", "| --- | --- | --- | --- |",
                 *[row(endpoint, key) for key in KEPT if key in figures[endpoint]],
                 "", f"genai-perf arguments: `genai-perf {shown[endpoint]}`"]
    command = "python -m modelrepo.perf.studies.genai_perf_check " + " ".join(sys.argv[1:] if argv is None else argv)
    data = {"runs": runs, "args": shown,
            "figures": {endpoint: {k: {s: v.as_dict() for s, v in stats.items()} for k, stats in figures[endpoint].items()}
                        for endpoint in endpoints}}
    name, title = (("genai_perf_openai", "genai-perf's OpenAI mode against the gateway") if args.openai
                   else ("genai_perf_llm_bls", "genai-perf against llm_bls"))
    print(record(name, title, command.strip(), data, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
