"""Run the perf_analyzer 2.51.0 binary that ships in the tritonclient wheel, libraries resolved.

It links against libb64.so.0d and libcudart.so.12. The first is in the nvidia-pytriton wheel under a
mangled name; the second comes from nvidia-cuda-runtime-cu12. We point LD_LIBRARY_PATH at both so
nobody has to export anything by hand.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from modelrepo.paths import cache_dir
from modelrepo.triton.admin import ADMIN_HEADER, GRPC_ADMIN_HEADER, admin_key


UNSTABLE = "Failed to obtain stable measurement"
MAX_INTERVAL_MS = 12000  # windows double up to this before an unstable measurement is an error
# Triton's words when a bounded queue (dynamic_batching.default_queue_policy) turns a request away
QUEUE_REFUSALS = ("Request timeout expired", "Exceeds maximum queue size")


class RequestsRefused(RuntimeError):
    """perf_analyzer stopped because the server's queue policy refused requests at this load: the
    configuration under test did not keep up (or the host stalled), not a broken tool."""


class PerfAnalyzerNotFound(RuntimeError):
    pass


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise PerfAnalyzerNotFound(f"Python package {name!r} is not installed (run `make serve`).")
    return Path(list(spec.submodule_search_locations)[0])


def binary() -> Path:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    found = candidate if candidate.exists() else shutil.which("perf_analyzer")
    if not found:
        raise PerfAnalyzerNotFound("perf_analyzer is not in this environment: install tritonclient==2.51.0.")
    return Path(found)


def library_dirs() -> list[Path]:
    cudart_dir = _package_dir("nvidia.cuda_runtime") / "lib"
    pytriton_libs = _package_dir("pytriton").parent / "nvidia_pytriton.libs"
    mangled = sorted(pytriton_libs.glob("libb64-*.so.0d"))
    if not mangled:
        raise PerfAnalyzerNotFound(f"no libb64 in {pytriton_libs}")
    libb64_dir = cache_dir() / "perf_analyzer_libs"
    libb64_dir.mkdir(parents=True, exist_ok=True)
    link = libb64_dir / "libb64.so.0d"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(mangled[0])
    return [libb64_dir, cudart_dir]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    dirs = [str(d) for d in library_dirs()]
    if env.get("LD_LIBRARY_PATH"):
        dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs)
    return env


def command(args: list[str]) -> list[str]:
    return [str(binary()), *args]


def with_admin_header(args: list[str], key: str | None) -> list[str]:
    """perf_analyzer reads the model config, a restricted API here: send the admin key unless -H is given."""
    if key is None or "-H" in args:
        return list(args)
    protocol = "http"
    for flag in ("-i", "--protocol"):
        if flag in args[:-1]:
            protocol = args[args.index(flag) + 1].lower()
    header = GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER
    return [*args, "-H", f"{header}:{key}"]


def wrapper_script(folder: Path) -> Path:
    """`folder/perf_analyzer`: a script that runs the bundled binary with its libraries found, for
    tools that call perf_analyzer by name or path (Model Analyzer, genai-perf)."""
    env = environment()
    wrapper = folder / "perf_analyzer"
    wrapper.write_text(f"#!/bin/sh\nexport LD_LIBRARY_PATH='{env['LD_LIBRARY_PATH']}'\nexec '{binary()}' \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def tool_venv(name: str, requirement: str) -> Path:
    """The bin/ folder of `.cache/<name>`, a venv of its own holding `requirement` (installed once):
    peer tools whose dependencies clash with ours (Model Analyzer and genai-perf need numpy 2)."""
    from modelrepo.tools import ensure_venv

    return ensure_venv(cache_dir() / name, [requirement])


def exec_perf_analyzer(args: list[str]) -> None:
    """Replace this process with perf_analyzer (exit code and signals pass straight through)."""
    cmd = command(with_admin_header(args, admin_key()[0]))
    os.execve(cmd[0], cmd, environment())


def load_args(concurrency: int | None, request_rate: float | None) -> list[str]:
    """perf_analyzer's load: `concurrency` requests always outstanding (closed loop), or `request_rate`
    per second sent on schedule (open loop). The open loop runs async: in its default sync mode
    perf_analyzer gives a request rate 4 threads (--max-threads), so no more than 4 requests are ever
    outstanding and past that it sends late. A tune at 300 requests/s then measured 219-238/s at p99s
    of 47-55 ms, where async found the server refusing requests from a full queue
    (perf/results/tune-text_embedding-20261207-213451/ against -222751/)."""
    if request_rate:
        return ["--request-rate-range", str(request_rate), "--async"]
    return ["--concurrency-range", str(concurrency)]


def measure(
    model: str,
    grpc_url: str,
    input_data: Path,
    concurrency: int | None,
    admin_key: str | None,
    csv_path: Path,
    extra: list[str] | None = None,
    request_rate: float | None = None,
    interval_ms: int = 3000,
    request_count: int | None = None,
    percentile: int | None = 99,
    max_trials: int = 10,
) -> dict[str, float]:
    """One perf_analyzer run over gRPC at a fixed concurrency (closed loop) or request rate (open
    loop, `request_rate` per second), with settings that converge on 2 cores.

    Returns throughput (infer/s) and client latency percentiles (ms) from its CSV. `percentile`: the
    latency whose stability perf_analyzer waits for (None: the average), the CSV has p50 to p99 either way;
    `max_trials`: windows it may take to find 3 stable ones before it gives up (then the windows double).
    """
    import csv
    import subprocess

    args = [
        "-m", model, "-i", "grpc", "-u", grpc_url, "--input-data", str(input_data),
        *load_args(concurrency, request_rate),
        "--measurement-interval", str(interval_ms),
        # count windows: each window holds at least `request_count` requests (a p99 on enough samples)
        *(["--measurement-mode", "count_windows", "--measurement-request-count", str(request_count)]
          if request_count else []),
        "--stability-percentage", "50", "--max-trials", str(max_trials),
        *(["--percentile", str(percentile)] if percentile else []),
        "-f", str(csv_path), *(extra or []),
    ]
    cmd = command(with_admin_header(args, admin_key))
    completed = subprocess.run(cmd, capture_output=True, text=True, env=environment(), timeout=600)
    said = completed.stdout + completed.stderr
    if completed.returncode != 0 and UNSTABLE in said and interval_ms < MAX_INTERVAL_MS:
        # A p99 of a sub-millisecond model jitters window to window on a shared machine: longer
        # windows (perf_analyzer's own advice) hold more samples each.
        return measure(model, grpc_url, input_data, concurrency, admin_key, csv_path, extra, request_rate,
                       interval_ms * 2, request_count * 2 if request_count else None, percentile, max_trials)
    if completed.returncode != 0 and any(words in said for words in QUEUE_REFUSALS):
        raise RequestsRefused(f"perf_analyzer stopped: the server refused requests to {model} "
                              f"(its queue policy): {completed.stdout[-500:]}{completed.stderr[-500:]}")
    if completed.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({completed.returncode}): {completed.stdout[-1500:]}{completed.stderr[-1500:]}")
    (row,) = list(csv.DictReader(open(csv_path)))
    server_ms = {  # averages per request, reported by the server (for an ensemble: over its steps)
        f"server_{key}_ms": int(row[column]) / 1000
        for key, column in (("queue", "Server Queue"), ("compute", "Server Compute Infer"))
        if row.get(column, "").strip().isdigit()
    }
    return {
        "throughput_infer_per_s": float(row["Inferences/Second"]),
        "p50_ms": int(row["p50 latency"]) / 1000,
        "p99_ms": int(row["p99 latency"]) / 1000,
        **server_ms,
        "command": " ".join(["modelrepo perf-analyzer", *args]),
    }
