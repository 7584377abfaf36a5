"""The OpenAI gateway's overhead: streaming chat and embeddings through it against direct gRPC.

    .venv/bin/python -m modelrepo.perf.openai_gateway [--concurrency 1 4 8] [--requests-per-client 2]
        [--max-tokens 32] [--embedding-requests 40] [--embedding-batch 16] [--runs 3]

Chat: `--concurrency` clients, each streaming `--requests-per-client` prompts of llm_bls (greedy,
`--max-tokens`), once over a direct gRPC stream (tritonclient) and once through the gateway's
/v1/chat/completions SSE (httpx), alternating which goes first from run to run. A request's TTFT is
its first text chunk; tokens/s is every answer's tokens (the LLM tokenizer) over the point's wall
time. Embeddings: `--embedding-requests` requests of `--embedding-batch` texts at concurrency 4,
text_embedding over gRPC vs /v1/embeddings. Every figure: median and range over `--runs` runs.
Writes perf/results/openai_gateway.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from modelrepo.gateway.process import gateway_command, wait_until_healthy
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.workloads import PROMPTS
from modelrepo.perf.results import Spread, record, repeat
from modelrepo.python_backends.llm.chat import TOKENIZER_DIR, load_tokenizer
from modelrepo.triton.llm_client import grpc_stream, llm_inputs
from modelrepo.triton.server import TritonServer, free_ports

MODELS = ("llm_bls", "llm_preprocessing", "llm_engine", "llm_postprocessing", "text_embedding", "minilm_tokenizer",
          "minilm_encoder")
KEY = "bench"
CHAT_FIGURES = ("ttft_p50_s", "tokens_per_s")


def start_gateway(server: TritonServer) -> tuple[subprocess.Popen, str]:
    (port,) = free_ports(1)
    env = dict(os.environ, MODELREPO_ADMIN_KEY=KEY)
    process = subprocess.Popen(gateway_command(server.grpc_url, "127.0.0.1", port, MODEL_REPOSITORY), env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
    except RuntimeError:
        process.kill()
        raise
    return process, url


def direct_chat(server: TritonServer, prompt: str, max_tokens: int) -> tuple[float, str]:
    result = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(prompt, max_tokens, stream=True, temperature=0.0))
    if result.error:
        raise RuntimeError(result.error)
    return result.ttft, result.text


def gateway_chat(http: httpx.Client, url: str, prompt: str, max_tokens: int) -> tuple[float, str]:
    body = {"model": "llm_bls", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    started, first, parts = time.monotonic(), None, []
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                first = first if first is not None else time.monotonic() - started
                parts.append(delta)
    return first, "".join(parts)


def chat_point(call, concurrency: int, per_client: int, count_tokens) -> dict[str, float]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(concurrency * per_client)]
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(call, prompts))
    wall = time.monotonic() - started
    return {"ttft_p50_s": statistics.median(ttft for ttft, _ in answers),
            "tokens_per_s": sum(count_tokens(text) for _, text in answers) / wall}


def embedding_point(call, requests: int, batch: int) -> float:
    texts = [[f"{PROMPTS[(i + j) % len(PROMPTS)]} ({i}, {j})" for j in range(batch)] for i in range(requests)]
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(call, texts))
    return requests * batch / (time.monotonic() - started)


def direct_embed(client, texts: list[str]) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    return client.infer("text_embedding", [tensor]).as_numpy("EMBEDDING")


def one_run(i: int, args, server, url, count_tokens) -> dict:
    import tritonclient.grpc as grpcclient

    paths = ["direct", "gateway"] if i % 2 == 0 else ["gateway", "direct"]
    run: dict = {"chat": {}, "embeddings": {}}
    with httpx.Client(timeout=600) as http:
        callers = {"direct": lambda prompt: direct_chat(server, prompt, args.max_tokens),
                   "gateway": lambda prompt: gateway_chat(http, url, prompt, args.max_tokens)}
        for concurrency in args.concurrency:
            for path in paths:
                run["chat"][f"{path}@{concurrency}"] = chat_point(callers[path], concurrency, args.requests_per_client,
                                                                  count_tokens)
        grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
        embed = {"direct": lambda texts: direct_embed(grpc_client, texts),
                 "gateway": lambda texts: http.post(f"{url}/v1/embeddings", json={"model": "text_embedding",
                                                                                  "input": texts}).raise_for_status()}
        for path in paths:
            run["embeddings"][path] = embedding_point(embed[path], args.embedding_requests, args.embedding_batch)
        grpc_client.close()
    return run


def report(args, runs: list[dict], command_line: str) -> str:
    rows, data = [], {"runs": runs, "chat": {}, "embeddings": {}}
    for concurrency in args.concurrency:
        spreads = {path: {figure: Spread.of(run["chat"][f"{path}@{concurrency}"][figure] for run in runs)
                          for figure in CHAT_FIGURES} for path in ("direct", "gateway")}
        ttft_ratio = Spread.of(run["chat"][f"gateway@{concurrency}"]["ttft_p50_s"] / run["chat"][f"direct@{concurrency}"]["ttft_p50_s"] for run in runs)
        tps_ratio = Spread.of(run["chat"][f"gateway@{concurrency}"]["tokens_per_s"] / run["chat"][f"direct@{concurrency}"]["tokens_per_s"] for run in runs)
        data["chat"][concurrency] = {"direct": {k: v.as_dict() for k, v in spreads["direct"].items()},
                                     "gateway": {k: v.as_dict() for k, v in spreads["gateway"].items()},
                                     "ttft_ratio": ttft_ratio.as_dict(), "tokens_per_s_ratio": tps_ratio.as_dict()}
        rows.append(f"| {concurrency} | {spreads['direct']['ttft_p50_s'].text(3)} | {spreads['gateway']['ttft_p50_s'].text(3)} "
                    f"| {ttft_ratio.text(3)} | {spreads['direct']['tokens_per_s'].text(1)} | "
                    f"{spreads['gateway']['tokens_per_s'].text(1)} | {tps_ratio.text(3)} |")
    embeddings = {path: Spread.of(run["embeddings"][path] for run in runs) for path in ("direct", "gateway")}
    embedding_ratio = Spread.of(run["embeddings"]["gateway"] / run["embeddings"]["direct"] for run in runs)
    data["embeddings"] = {**{k: v.as_dict() for k, v in embeddings.items()}, "ratio": embedding_ratio.as_dict()}
    body = [
        f"llm_bls greedy, {args.max_tokens} new tokens, {args.requests_per_client} prompts per client; "
        f"{len(runs)} runs, median (range). Goals (issue 18): gateway overhead <= 5 % (TTFT ratio <= 1.05, "
        "tokens/s ratio >= 0.95); embeddings >= 0.9x direct.",
        "",
        "| concurrency | TTFT p50 direct (s) | TTFT p50 gateway (s) | TTFT gateway/direct | tokens/s direct | tokens/s gateway | tokens/s gateway/direct |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Embeddings (text_embedding, {args.embedding_requests} requests x {args.embedding_batch} texts, concurrency 4): "
        f"direct {embeddings['direct'].text(1)} texts/s, gateway {embeddings['gateway'].text(1)} texts/s, "
        f"gateway/direct {embedding_ratio.text(3)}.",
    ]
    return record("openai_gateway", "OpenAI gateway vs direct gRPC", command_line, data, body,
                  note="The gateway, the server and the client share this machine's cores.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--embedding-requests", type=int, default=40)
    parser.add_argument("--embedding-batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    command_line = ("python -m modelrepo.perf.openai_gateway " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    tokenizer = load_tokenizer(MODEL_REPOSITORY / "llm_preprocessing" / "1" / TOKENIZER_DIR)

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    with TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=KEY, load_models=MODELS) as server:
        gateway, url = start_gateway(server)
        try:
            direct_chat(server, PROMPTS[0], 4)  # the first calls of every stub are slow
            with httpx.Client(timeout=600) as http:  # and the gateway's (its tokenizer loads on first use)
                gateway_chat(http, url, PROMPTS[0], 4)
                http.post(f"{url}/v1/embeddings", json={"model": "text_embedding", "input": "warm"}).raise_for_status()
            runs: list[dict] = []

            def measured(i: int) -> dict:
                runs.append(one_run(i, args, server, url, count_tokens))
                print(report(args, runs, command_line), flush=True)  # recorded after every run
                return runs[-1]

            repeat(args.runs, measured)
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
