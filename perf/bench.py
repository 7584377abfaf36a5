"""`modelrepo bench`: three ratios for text_embedding at its (tuned) config, measured in one run.
(`modelrepo bench NAME` measures any one model instead: perf/model_bench.py.)

1. serving efficiency: Triton throughput (perf_analyzer) ÷ in-process onnxruntime throughput of the
   same tokenizer + encoder at the same batch size with the same parallelism: as many callers, each
   with its own session, as the encoder has instances, each session with its `intra_op_threads`
   (perf/embedding_sessions.py); both measured twice, the ratio of the medians reported with the
   range of the run-by-run ratios;
2. batching gain: the config as it is vs the same models with dynamic batching removed, at the same
   concurrency (both p99s reported against the budget);
3. against what users write instead: a FastAPI + onnxruntime server of the same model, both driven
   by the same closed-loop HTTP client at the same concurrency, p99 against the budget; FastAPI gets
   the served parallelism too.
Writes perf/results/<date>-bench.{json,md}. `--workload short` runs the short-text and mixed-workload
benchmark instead (perf/short_text_bench.py).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.embedding_sessions import ENCODER, Parallelism, embedder
from modelrepo.perf.results import Spread, record, repeat
from modelrepo.perf.tune import LiveModels
from modelrepo.perf.tune_command import default_input_data
from modelrepo.perf.workloads import reviews
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.model_config import copy_config, read_config
from modelrepo.triton.server import TritonServer, free_ports

MODEL = "text_embedding"


def in_process_throughput(batch: int, parallelism: Parallelism, seconds: float = 20.0, corpus: list[str] | None = None) -> float:
    """Texts/s of tokenizer + ONNX encoder in this process: one caller thread per served instance, each
    with its own session of the served intra-op threads, batches of `batch` of `corpus` (default: the
    test reviews), for `seconds`."""
    corpus = corpus or reviews()
    sessions = [embedder(parallelism.threads_per_session) for _ in range(parallelism.sessions)]
    for session in sessions:
        session.embed(corpus[:batch], batch_size=batch)  # first run of a session allocates
    done = [0] * len(sessions)
    stop = time.perf_counter() + seconds

    def caller(k: int) -> None:
        start = (k * batch) % len(corpus)  # callers start at different texts
        while time.perf_counter() < stop:
            chunk = (corpus[start:] + corpus[:start])[:batch]
            sessions[k].runner.run(sessions[k].tokenize(chunk))
            done[k] += len(chunk)
            start = (start + batch) % len(corpus)

    began = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - began)


def closed_loop(call, concurrency: int, seconds: float) -> dict:
    """`concurrency` threads calling `call(i)` back to back for `seconds`; throughput and latency percentiles."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                call(i)
            except Exception as err:  # counted and reported, never silently dropped
                with lock:
                    errors.append(repr(err))
            else:
                with lock:
                    latencies.append(time.perf_counter() - started)
            i += concurrency

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if not latencies:
        raise RuntimeError(f"every request failed, e.g. {errors[:1]}")
    ms = np.array(latencies) * 1000
    return {"errors": len(errors), "throughput_per_s": len(ms) / elapsed, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "requests": len(ms)}


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def fastapi_server(port: int, parallelism: Parallelism) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "modelrepo.perf.fastapi_baseline", "--port", str(port),
                                "--sessions", str(parallelism.sessions), "--threads", str(parallelism.threads_per_session)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the FastAPI baseline did not start")


def http_client_comparison(server: TritonServer, concurrency: int, seconds: float, parallelism: Parallelism,
                           corpus: list[str] | None = None) -> dict:
    """FastAPI + onnxruntime and Triton (KServe v2 JSON), one text per request of `corpus` (default: the
    test reviews), driven by the same closed-loop client."""
    corpus = corpus or reviews()
    (port,) = free_ports(1)
    process = fastapi_server(port, parallelism)
    try:
        fastapi = closed_loop(lambda i: post_json(f"http://127.0.0.1:{port}/embed", {"texts": [corpus[i % len(corpus)]]}),
                              concurrency, seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)

    def triton_call(i: int) -> None:  # KServe v2 JSON over HTTP: the same client work as for FastAPI
        body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [corpus[i % len(corpus)]]}]}
        post_json(f"http://{server.http_url}/v2/models/{MODEL}/infer", body)

    triton = closed_loop(triton_call, concurrency, seconds)
    return {"fastapi": fastapi, "triton": triton}


def main(argv: list[str] | None = None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-"):  # `modelrepo bench NAME`: any one model (perf/model_bench.py)
        from modelrepo.perf.model_bench import main as model_bench

        return model_bench(argv)
    workload = argparse.ArgumentParser(add_help=False)
    workload.add_argument("--workload", choices=("reviews", "short"), default="reviews",
                          help="reviews: the three ratios below; short: short texts and the mixed workload (perf/short_text_bench.py)")
    chosen, rest = workload.parse_known_args(argv)
    if chosen.workload == "short":
        from modelrepo.perf.short_text_bench import main as short_text_bench

        return short_text_bench(rest)
    parser = argparse.ArgumentParser(prog="modelrepo bench", description=__doc__.splitlines()[0], parents=[workload],
                                     epilog="`modelrepo bench --workload short --help`: its options (--runs, --mixed-rate, ...); "
                                            "`modelrepo bench NAME --help`: one model's throughput and latency")
    parser.add_argument("--p99-ms", type=float, default=1000.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="closed-loop duration per HTTP measurement")
    args = parser.parse_args(argv)
    encoder = read_config(MODEL_REPOSITORY / ENCODER)
    batch = max(encoder.dynamic_batching.preferred_batch_size or [1])
    parallelism = Parallelism.of_config(encoder)
    key = secrets.token_urlsafe(12)
    import tritonclient.grpc as grpcclient

    with tempfile.TemporaryDirectory() as tmp, \
            TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=key, load_models=(MODEL,)) as server:
        folder = Path(tmp)
        data = default_input_data(MODEL_REPOSITORY, MODEL, folder)
        live = LiveModels(grpcclient.InferenceServerClient(server.grpc_url), {GRPC_ADMIN_HEADER: key})
        tuned = measure(MODEL, server.grpc_url, data, args.concurrency, key, folder / "a.csv")
        originals = {name: live.config(name) for name in ("minilm_tokenizer", ENCODER)}
        for name, config in originals.items():
            unbatched = copy_config(config)
            unbatched.ClearField("dynamic_batching")
            live.load(name, unbatched)
        no_batching = measure(MODEL, server.grpc_url, data, args.concurrency, key, folder / "b.csv")
        for name, config in originals.items():
            live.load(name, config)
        tuned_again = measure(MODEL, server.grpc_url, data, args.concurrency, key, folder / "c.csv")
        http = http_client_comparison(server, args.concurrency, args.seconds, parallelism)
    in_process_runs = repeat(2, lambda _: in_process_throughput(batch, parallelism, args.seconds))
    served_runs = [tuned["throughput_infer_per_s"], tuned_again["throughput_infer_per_s"]]
    in_process = Spread.of(in_process_runs)
    efficiency = Spread.of(s / i for s, i in zip(served_runs, in_process_runs))
    efficiency_of_medians = Spread.of(served_runs).median / in_process.median
    gain = Spread.of(served_runs).median / no_batching["throughput_infer_per_s"]
    versus = http["triton"]["throughput_per_s"] / http["fastapi"]["throughput_per_s"]
    budget = args.p99_ms
    body = [
        f"text_embedding at its config (encoder: {parallelism.describe()}, preferred batch sizes "
        f"{list(encoder.dynamic_batching.preferred_batch_size) or 'none'}, "
        f"queue delay {encoder.dynamic_batching.max_queue_delay_microseconds} us), concurrency {args.concurrency}, "
        f"64 real test reviews, p99 budget {budget:g} ms.",
        "",
        "| measurement | throughput (/s) | p50 (ms) | p99 (ms) | within budget |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {label} | {r['throughput_infer_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p99_ms'] <= budget} |"
          for label, r in (("Triton, config as is (perf_analyzer)", tuned), ("Triton, no dynamic batching", no_batching),
                           ("Triton, config as is, again", tuned_again))],
        f"| in-process onnxruntime, batch {batch}, {parallelism.describe()}, 2 runs: median (range) | {in_process.text(1)} | | | |",
        *[f"| {label} (same Python HTTP client) | {r['throughput_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
          f"{r['p99_ms'] <= budget} |" for label, r in (("FastAPI + onnxruntime", http["fastapi"]), ("Triton HTTP", http["triton"]))],
        "",
        "| ratio | value | goal |",
        "| --- | --- | --- |",
        f"| serving efficiency: Triton ÷ in-process onnxruntime (medians; run-by-run range {efficiency.low:.2f}–{efficiency.high:.2f}) "
        f"| {efficiency_of_medians:.2f} | ≥ 0.90 |",
        f"| batching gain: config as is ÷ no dynamic batching (concurrency {args.concurrency}) | {gain:.2f}x | ≥ 3x within budget |",
        f"| Triton ÷ FastAPI + onnxruntime (same client) | {versus:.2f}x | ≥ 2x |",
        "",
        f"perf_analyzer command: `{tuned['command']}`",
    ]
    name = f"{date.today().isoformat()}-bench"
    print(record(name, "modelrepo bench: serving efficiency, batching gain, FastAPI baseline",
                 " ".join(["modelrepo bench", *argv]).strip(),
                 {"tuned": tuned, "tuned_again": tuned_again, "no_batching": no_batching, "in_process_per_s": in_process.as_dict(),
                  "parallelism": {"sessions": parallelism.sessions, "threads_per_session": parallelism.threads_per_session},
                  "http": http, "ratios": {"efficiency": efficiency_of_medians, "efficiency_run_by_run": efficiency.as_dict(),
                                           "batching_gain": gain, "vs_fastapi": versus}},
                 body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
