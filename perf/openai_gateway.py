"""The OpenAI gateway's overhead: streaming chat and embeddings through it against direct gRPC.

    .venv/bin/python -m modelrepo.perf.openai_gateway [--concurrency 1 4 8] [--requests-per-client 4]
        [--max-tokens 32] [--embedding-requests 40] [--embedding-batch 16] [--runs 3]
        [--embeddings-only] [--http httptools|h11]

Chat: `--concurrency` clients stream llm_bls (greedy, `--max-tokens`), each sending every one of its
`--requests-per-client` prompts (a multiple of 4) twice, once over a direct gRPC stream (tritonclient)
and once through the gateway's /v1/chat/completions SSE (httpx), switching path every 4 requests (half
the clients start with each): both paths see the same engine load and the same drift of the machine's
speed, which timing one path after the other did not (this machine's speed moved ~15 % within a
session). A request's TTFT is its first text chunk; its tokens/s is its answer's tokens (the LLM
tokenizer) over its whole time; each path's figure is the median over its requests.
Embeddings: `--embedding-requests` requests of `--embedding-batch` texts at concurrency 4,
text_embedding over gRPC vs /v1/embeddings, as floats and as base64 (what the official `openai` client
asks for by default). Every figure: median and range over `--runs` runs. Also timed: encoding one
answer of `--embedding-batch` rows as JSON, FastAPI's default encoder against orjson (the gateway's).
`--http` picks the gateway's HTTP parser (h11 to compare with the default httptools).
Writes perf/results/openai_gateway.{json,md}; with `--embeddings-only` (no chat),
perf/results/openai_gateway_embeddings[-h11].{json,md}.
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
EMBEDDING_MODELS = ("text_embedding", "minilm_tokenizer", "minilm_encoder")
KEY = "bench"
CHAT_FIGURES = ("ttft_p50_s", "tokens_per_s")
CHAT_PATHS = ("direct", "gateway")
# Requests in a row down one path before a client switches: a process left idle for a whole request of
# the other path (~1 s) answers its next one slower on this VM (measured: +10-30 ms), which strict
# alternation would charge to the gateway at concurrency 1; blocks this short still cancel drift.
BLOCK = 4
EMBEDDING_PATHS = ("direct", "gateway", "gateway_base64")
ENCODING_REPEATS = 200


def start_gateway(server: TritonServer, http_parser: str, api_key: str | None = None) -> tuple[subprocess.Popen, str]:
    """The gateway as `modelrepo serve` starts it (`api_key`: the one key it accepts; None: open)."""
    (port,) = free_ports(1)
    env = dict(os.environ, MODELREPO_ADMIN_KEY=server.admin_key or "")  # the gateway lists models with it
    env.pop("MODELREPO_OPENAI_API_KEYS_FILE", None)
    env["MODELREPO_OPENAI_API_KEYS"] = api_key or ""
    cmd = gateway_command(server.grpc_url, "127.0.0.1", port, MODEL_REPOSITORY) + ["--http", http_parser]
    process = subprocess.Popen(cmd, env=env)
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


def chat_point(callers: dict, concurrency: int, per_client: int, count_tokens) -> dict[str, dict[str, float]]:
    """Per path: the median TTFT and the median tokens/s per stream, all clients' requests together."""

    if per_client % BLOCK:
        raise ValueError(f"--requests-per-client must be a multiple of {BLOCK}, got {per_client}")

    def client(number: int) -> dict[str, list[tuple[float, float]]]:
        answers: dict[str, list[tuple[float, float]]] = {path: [] for path in CHAT_PATHS}
        for sent in range(2 * per_client):
            block, within = divmod(sent, BLOCK)
            path = CHAT_PATHS[(block + number) % 2]
            prompt = PROMPTS[(number * per_client + (block // 2) * BLOCK + within) % len(PROMPTS)]  # down both paths
            started = time.monotonic()
            ttft, text = callers[path](prompt)
            answers[path].append((ttft, count_tokens(text) / (time.monotonic() - started)))
        return answers

    with ThreadPoolExecutor(concurrency) as pool:
        clients = list(pool.map(client, range(concurrency)))
    return {path: {"ttft_p50_s": statistics.median(ttft for answers in clients for ttft, _ in answers[path]),
                   "tokens_per_s": statistics.median(rate for answers in clients for _, rate in answers[path])}
            for path in CHAT_PATHS}


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

    run: dict = {"chat": {}, "embeddings": {}}
    with httpx.Client(timeout=600) as http:
        callers = {"direct": lambda prompt: direct_chat(server, prompt, args.max_tokens),
                   "gateway": lambda prompt: gateway_chat(http, url, prompt, args.max_tokens)}
        for concurrency in args.concurrency:
            point = chat_point(callers, concurrency, args.requests_per_client, count_tokens)
            for path in CHAT_PATHS:
                run["chat"][f"{path}@{concurrency}"] = point[path]
        grpc_client = grpcclient.InferenceServerClient(server.grpc_url)

        def through_gateway(encoding_format: str):
            return lambda texts: http.post(f"{url}/v1/embeddings", json={
                "model": "text_embedding", "input": texts, "encoding_format": encoding_format}).raise_for_status()

        embed = {"direct": lambda texts: direct_embed(grpc_client, texts), "gateway": through_gateway("float"),
                 "gateway_base64": through_gateway("base64")}
        order = ["direct", "gateway", "gateway_base64"] if i % 2 == 0 else ["gateway_base64", "gateway", "direct"]
        for path in order:
            run["embeddings"][path] = embedding_point(embed[path], args.embedding_requests, args.embedding_batch)
        grpc_client.close()
    return run


def report(args, runs: list[dict], command_line: str, encoding: dict[str, float]) -> str:
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
    embeddings = {path: Spread.of(run["embeddings"][path] for run in runs) for path in EMBEDDING_PATHS}
    ratios = {path: Spread.of(run["embeddings"][path] / run["embeddings"]["direct"] for run in runs)
              for path in EMBEDDING_PATHS[1:]}
    data["embeddings"] = {**{k: v.as_dict() for k, v in embeddings.items()},
                          **{f"{k}_ratio": v.as_dict() for k, v in ratios.items()}, "encoding_ms": encoding}
    goals = ("Goals (issue 18): gateway overhead <= 5 % (TTFT ratio <= 1.05, tokens/s ratio >= 0.95); "
             "embeddings >= 0.9x direct.")
    body = [] if not args.concurrency else [
        f"llm_bls greedy, {args.max_tokens} new tokens; every client sends each of its {args.requests_per_client} "
        f"prompts down both paths, switching path every {BLOCK} requests, so both paths share the engine's load. "
        "TTFT: the median over a path's requests; tokens/s: the median per stream (an answer's tokens over its "
        f"whole time). {len(runs)} runs, median (range) of the runs. {goals}",
        "",
        "| concurrency | TTFT p50 direct (s) | TTFT p50 gateway (s) | TTFT gateway/direct | tokens/s per stream direct | tokens/s per stream gateway | tokens/s gateway/direct |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    body += [
        f"Embeddings (text_embedding, {args.embedding_requests} requests x {args.embedding_batch} texts, concurrency 4, "
        f"gateway HTTP parser {args.http}; {len(runs)} runs, median (range)"
        + ("" if args.concurrency else f"; {goals}") + "):",
        "",
        "| path | texts/s | / direct |",
        "| --- | --- | --- |",
        f"| direct gRPC (tritonclient) | {embeddings['direct'].text(1)} | 1 |",
        f"| gateway, encoding_format float | {embeddings['gateway'].text(1)} | {ratios['gateway'].text(3)} |",
        f"| gateway, encoding_format base64 (the openai client's default) | {embeddings['gateway_base64'].text(1)} "
        f"| {ratios['gateway_base64'].text(3)} |",
        "",
        f"Encoding one answer of {args.embedding_batch} x 384 float32 rows as JSON (median of "
        f"{ENCODING_REPEATS}, this process): FastAPI's default encoder (jsonable_encoder + json.dumps) "
        f"{encoding['fastapi_default']:.2f} ms, orjson (what the gateway uses) {encoding['orjson']:.2f} ms.",
    ]
    name = "openai_gateway" if args.concurrency else "openai_gateway_embeddings" + ("" if args.http == "httptools" else f"-{args.http}")
    return record(name, "OpenAI gateway vs direct gRPC", command_line, data, body,
                  note="The gateway, the server and the client share this machine's cores.")


def encoding_times(rows: int) -> dict[str, float]:
    """Median ms to encode one /v1/embeddings answer of `rows` 384-wide rows: FastAPI's default vs orjson."""
    import orjson
    from fastapi.encoders import jsonable_encoder

    vectors = np.random.default_rng(0).random((rows, 384), dtype=np.float32)

    def answer(row):
        return {"object": "list", "model": "text_embedding", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                "data": [{"object": "embedding", "index": i, "embedding": row(v)} for i, v in enumerate(vectors)]}

    encoders = {"fastapi_default": lambda: json.dumps(jsonable_encoder(answer(lambda v: v.tolist()))).encode(),
                "orjson": lambda: orjson.dumps(answer(lambda v: v), option=orjson.OPT_SERIALIZE_NUMPY)}
    times = {}
    for name, encode in encoders.items():
        samples = []
        for _ in range(ENCODING_REPEATS):
            started = time.perf_counter()
            encode()
            samples.append((time.perf_counter() - started) * 1000)
        times[name] = statistics.median(samples)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--embeddings-only", action="store_true", help="no chat points")
    parser.add_argument("--http", choices=("httptools", "h11"), default="httptools", help="the gateway's HTTP parser")
    parser.add_argument("--requests-per-client", type=int, default=4, help="prompts per client (a multiple of 4), each sent down both paths")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--embedding-requests", type=int, default=40)
    parser.add_argument("--embedding-batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.embeddings_only:
        args.concurrency = []
    command_line = ("python -m modelrepo.perf.openai_gateway " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    tokenizer = load_tokenizer(MODEL_REPOSITORY / "llm_preprocessing" / "1" / TOKENIZER_DIR)

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    models = MODELS if args.concurrency else EMBEDDING_MODELS
    with TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=KEY, load_models=models) as server:
        gateway, url = start_gateway(server, args.http)
        encoding = encoding_times(args.embedding_batch)
        try:
            with httpx.Client(timeout=600) as http:  # the first calls of every stub are slow
                if args.concurrency:  # and the gateway's (its tokenizer loads on first use)
                    direct_chat(server, PROMPTS[0], 4)
                    gateway_chat(http, url, PROMPTS[0], 4)
                http.post(f"{url}/v1/embeddings", json={"model": "text_embedding", "input": "warm"}).raise_for_status()
            runs: list[dict] = []

            def measured(i: int) -> dict:
                runs.append(one_run(i, args, server, url, count_tokens))
                print(report(args, runs, command_line, encoding), flush=True)  # recorded after every run
                return runs[-1]

            repeat(args.runs, measured)
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
