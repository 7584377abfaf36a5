"""Where a short text's time goes on its way through text_embedding: client -> ensemble -> tokenizer
stub -> encoder stub -> back, from Triton's statistics and the handlers timed in this process.

    .venv/bin/python -m modelrepo.perf.studies.short_text_hops [--requests 300] [--runs 3]

One server (admin key: the statistics API is restricted) serves text_embedding with its shipped
configs. Short texts (3-15 tokens, perf/workloads.py) are sent over gRPC at concurrency 1 and 16;
per run the statistics are read before and after, and each hop is a mean per request:
- client + gRPC: the client's round trip minus the ensemble's time in the server;
- ensemble: its time minus the two steps' times (scheduling the steps, moving tensors between them);
- per step: queue, compute input (tensors into the stub's shared memory), compute infer (the stub's
  execute: IPC to the stub process, the adapter, the handler), compute output;
- the handler alone (TextTokenizer / OnnxRunner at batch 1, in this process, same thread counts), so
  compute infer minus handler is the Python backend's per-call cost (stub IPC + triton_adapter); the
  encoder also as the served instances take turns: as many sessions (each its own copy of the weights)
  called in turn, which is what Triton does with two instances at concurrency 1;
- where the cores go: CPU time per request of each process during the run (the Python client, which is
  this process; tritonserver: gRPC, the ensemble, the schedulers; the tokenizer's stub; the encoder's
  stubs) and the cores left idle. On 2 cores the encoder gets what the rest leaves.
Writes perf/results/short_text_hops.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import secrets
import threading
import time

import numpy as np
import psutil
import tritonclient.grpc as grpcclient

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.embedding_sessions import ENCODER, embedder, served_parallelism
from modelrepo.perf.results import Spread, record
from modelrepo.perf.workloads import short_texts
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "text_embedding"
TOKENIZER = "minilm_tokenizer"
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def statistics(client, headers) -> dict[str, dict[str, int]]:
    """model -> {"count", "success_ns", phase_ns...}: cumulative, all versions."""
    totals = {}
    for model in (MODEL, TOKENIZER, ENCODER):
        stats = client.get_inference_statistics(model, as_json=True, headers=headers)["model_stats"]
        inference = [s["inference_stats"] for s in stats]
        totals[model] = {"count": sum(int(i["success"].get("count", 0)) for i in inference),
                         "success_ns": sum(int(i["success"].get("ns", 0)) for i in inference),
                         **{phase: sum(int(i[phase].get("ns", 0)) for i in inference) for phase in PHASES}}
    return totals


def send(url: str, texts: list[str], concurrency: int, requests: int) -> list[float]:
    """`requests` single-text requests from `concurrency` threads (one client each); each one's seconds."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        for i in range(offset, requests, concurrency):
            tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[texts[i % len(texts)].encode()]], dtype=object))
            began = time.perf_counter()
            client.infer(MODEL, [tensor])
            with lock:
                latencies.append(time.perf_counter() - began)
        client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


CPU_GROUPS = ("client", "tritonserver", "tokenizer_stubs", "encoder_stubs")


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """Cumulative CPU seconds (user + system) per process group, and the wall clock under "wall"."""
    def used(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    server = psutil.Process(server_pid)
    totals = dict.fromkeys(CPU_GROUPS, 0.0)
    totals["client"], totals["tritonserver"] = used(psutil.Process()), used(server)
    for stub in server.children(recursive=True):
        command = " ".join(stub.cmdline())
        for model, group in ((TOKENIZER, "tokenizer_stubs"), (ENCODER, "encoder_stubs")):
            if f"/{model}/" in command:
                totals[group] += used(stub)
    return {**totals, "wall": time.monotonic()}


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """ms of CPU per request of each group, and the cores' idle ms per request (all cores, minus the groups)."""
    figures = {f"cpu_{group}": (after[group] - before[group]) / requests * 1000 for group in CPU_GROUPS}
    wall_ms = (after["wall"] - before["wall"]) / requests * 1000
    figures["cpu_idle"] = wall_ms * (os.cpu_count() or 1) - sum(figures.values())
    return figures


def hops(before: dict, after: dict, latencies: list[float]) -> dict[str, float]:
    """Mean ms per request of each hop between two statistics snapshots."""
    delta = {m: {k: after[m][k] - before[m][k] for k in after[m]} for m in after}
    per = {m: {k: v / max(1, delta[m]["count"]) / 1e6 for k, v in delta[m].items() if k != "count"} for m in delta}
    ensemble = per[MODEL]["success_ns"]
    figures = {"client_round_trip": float(np.mean(latencies)) * 1000, "client_p99": float(np.percentile(latencies, 99)) * 1000,
               "client_and_grpc": float(np.mean(latencies)) * 1000 - ensemble,
               "ensemble_total": ensemble, "ensemble_own": ensemble - per[TOKENIZER]["success_ns"] - per[ENCODER]["success_ns"]}
    for model, label in ((TOKENIZER, "tokenizer"), (ENCODER, "encoder")):
        figures[f"{label}_total"] = per[model]["success_ns"]
        figures.update({f"{label}_{phase}": per[model][phase] for phase in PHASES})
    return figures


def handler_ms(sessions: list, texts: list[str], repeats: int = 100) -> dict[str, float]:
    """Tokenizer and encoder handlers at batch 1 in this process (the encoder with the served threads):
    one session, and every session in turn."""
    session = sessions[0]
    batches = [session.tokenize([text]) for text in texts]

    def mean_ms(call) -> float:
        call(0)
        began = time.perf_counter()
        for i in range(repeats):
            call(i)
        return (time.perf_counter() - began) / repeats * 1000
    return {"tokenizer_handler": mean_ms(lambda i: session.tokenize([texts[i % len(texts)]])),
            "encoder_handler": mean_ms(lambda i: session.runner.run(batches[i % len(batches)])),
            "encoder_handler_in_turn": mean_ms(lambda i: sessions[i % len(sessions)].runner.run(batches[i % len(batches)])),
            "tokens_min": min(int(b["attention_mask"].sum()) for b in batches),
            "tokens_max": max(int(b["attention_mask"].sum()) for b in batches)}


ROWS = [("client round trip (mean)", "client_round_trip"), ("client p99", "client_p99"),
        ("client + gRPC (round trip - ensemble in server)", "client_and_grpc"),
        ("ensemble in server", "ensemble_total"), ("ensemble's own (scheduling steps, tensors between them)", "ensemble_own"),
        *[(f"{label}: {phase.replace('_', ' ')}", f"{label}_{phase}") for label in ("tokenizer", "encoder") for phase in ("total", *PHASES)],
        ("CPU: client (Python, this process)", "cpu_client"), ("CPU: tritonserver (gRPC, ensemble, schedulers)", "cpu_tritonserver"),
        ("CPU: tokenizer stub", "cpu_tokenizer_stubs"), ("CPU: encoder stubs", "cpu_encoder_stubs"),
        ("CPU: idle (all cores, minus the above)", "cpu_idle")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    texts = short_texts()
    key = secrets.token_urlsafe(12)
    headers = {GRPC_ADMIN_HEADER: key}
    runs: dict[int, list[dict]] = {1: [], 16: []}
    parallelism = served_parallelism()
    sessions = [embedder(parallelism.threads_per_session) for _ in range(parallelism.sessions)]
    with TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=key, load_models=(MODEL,)) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        send(server.grpc_url, texts, 4, 40)  # warm
        for _ in range(args.runs):
            # The handlers timed right before the concurrency-1 run, with the server idle: the same
            # conditions, so compute infer minus handler is the stub's cost (at 16 the cores are shared).
            handlers = handler_ms(sessions, texts)
            for concurrency in runs:
                before, cpu_before = statistics(client, headers), cpu_seconds(server.process.pid)
                load = os.getloadavg()[0]
                latencies = send(server.grpc_url, texts, concurrency, args.requests)
                cpu = cpu_per_request(cpu_before, cpu_seconds(server.process.pid), args.requests)
                runs[concurrency].append({**hops(before, statistics(client, headers), latencies), **cpu,
                                          "load_1min": load, **handlers})
    for run in runs[1]:
        run["tokenizer_stub_overhead"] = run["tokenizer_compute_infer"] - run["tokenizer_handler"]
        run["encoder_stub_overhead"] = run["encoder_compute_infer"] - run["encoder_handler"]
        run["encoder_stub_overhead_in_turn"] = run["encoder_compute_infer"] - run["encoder_handler_in_turn"]
    rows = ROWS + [("tokenizer handler alone, batch 1, in process", "tokenizer_handler"),
                   ("encoder handler alone, batch 1, in process", "encoder_handler"),
                   ("encoder handler, batch 1, in process, the served instances' sessions in turn", "encoder_handler_in_turn"),
                   ("tokenizer: compute infer - handler (stub IPC + adapter)", "tokenizer_stub_overhead"),
                   ("encoder: compute infer - handler (stub IPC + adapter)", "encoder_stub_overhead"),
                   ("encoder: compute infer - handler's sessions in turn", "encoder_stub_overhead_in_turn"), ("load (1 min)", "load_1min")]

    def cell(concurrency: int, key: str) -> str:
        values = [run[key] for run in runs[concurrency] if key in run]
        return Spread.of(values).text(2) if values else "—"
    body = [
        f"{args.requests} single-text gRPC requests per run, short texts of {handlers['tokens_min']}-{handlers['tokens_max']} "
        f"tokens; mean ms per request, median (range) over {args.runs} runs; the CPU rows are CPU ms per request of each process ({os.cpu_count()} cores). The handlers alone are timed in this "
        "process just before each run (server idle); their difference to compute infer is given at concurrency 1 only.",
        "",
        "| hop (ms per request) | concurrency 1 | concurrency 16 |",
        "| --- | --- | --- |",
        *(f"| {label} | {cell(1, key)} | {cell(16, key)} |" for label, key in rows),
    ]
    command = f".venv/bin/python -m modelrepo.perf.studies.short_text_hops --requests {args.requests} --runs {args.runs}"
    note = "Shared 2-core machine (see the load row): absolute figures are noisy."
    print(record("short_text_hops", "text_embedding per hop, short texts", command,
                 {"runs": {str(c): r for c, r in runs.items()}}, body, note))


if __name__ == "__main__":
    main()
