"""Foundation figures: server start to READY, first-request latency, steady single-request latency.

    .venv/bin/python -m modelrepo.perf.studies.foundation [--starts 3] [--requests 50]

Writes perf/results/foundation.{json,md} (with this command and the machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.results import record
from modelrepo.triton.server import TritonServer, free_ports

PIPELINES = {"text_embedding": "EMBEDDING", "review_sentiment": "PROBABILITIES"}
TEXT = "The tea arrived quickly and tastes fresh, though the tin was dented."


def one_request(module, client, model: str, output: str) -> float:
    tensor = module.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[TEXT.encode()]], dtype=object))
    started = time.perf_counter()
    client.infer(model, [tensor], outputs=[module.InferRequestedOutput(output)])
    return (time.perf_counter() - started) * 1000


def measure(starts: int, requests: int) -> dict:
    start_seconds, first_ms, steady = [], {}, {}
    for attempt in range(starts):
        ports = free_ports(3)
        begun = time.monotonic()
        with TritonServer(MODEL_REPOSITORY, *ports, admin_key="bench") as server:
            start_seconds.append(time.monotonic() - begun)
            clients = {
                "http": (httpclient, httpclient.InferenceServerClient(server.http_url)),
                "grpc": (grpcclient, grpcclient.InferenceServerClient(server.grpc_url)),
            }
            for model, output in PIPELINES.items():
                for protocol, (module, client) in clients.items():
                    key = f"{model}/{protocol}"
                    latency = one_request(module, client, model, output)
                    if attempt == 0:
                        first_ms[key] = latency
                        samples = [one_request(module, client, model, output) for _ in range(requests)]
                        steady[key] = {
                            "p50_ms": float(np.percentile(samples, 50)),
                            "p99_ms": float(np.percentile(samples, 99)),
                        }
    return {
        "start_to_ready_s": start_seconds,
        "first_request_ms": first_ms,
        "sequential_single_text_latency": steady,
        "requests_per_latency_sample": requests,
    }


def report(results: dict, command: str) -> str:
    body = [
        "Start to READY (all models, seconds): " + ", ".join(f"{s:.1f}" for s in results["start_to_ready_s"]),
        "",
        "| pipeline / protocol | first request (ms) | sequential p50 (ms) | sequential p99 (ms) |",
        "| --- | --- | --- | --- |",
    ]
    for key, first in results["first_request_ms"].items():
        steady = results["sequential_single_text_latency"][key]
        body.append(f"| {key} | {first:.1f} | {steady['p50_ms']:.1f} | {steady['p99_ms']:.1f} |")
    return record("foundation", "Foundation figures", command, results, body, "One run; these machines are noisy.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    results = measure(args.starts, args.requests)
    print(report(results, f".venv/bin/python -m modelrepo.perf.studies.foundation --starts {args.starts} --requests {args.requests}"))


if __name__ == "__main__":
    main()
