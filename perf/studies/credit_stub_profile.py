"""Where a credit model's Python-backend stubs spend their time under load: py-spy samples every stub
process of the model while perf_analyzer drives it (gRPC, batch 1, fixed concurrency), and each sample is
put in one bucket:
- idle: the stub waits for Triton to hand it a batch (no Python frame on the stack);
- metric calls: a custom-metric call (`.set(`, `.observe(`, `.increment(` on the sampled line), each a
  blocking IPC round trip to the server in Triton 2.51's Python backend;
- onnxruntime: inside an InferenceSession run;
- handler: the rest of python_backends' code (validation, numpy);
- adapter: the rest (triton_adapter, pb_utils tensor conversion, the stub's Python glue).

    .venv/bin/python -m modelrepo.perf.studies.credit_stub_profile [--model credit_default_onehop]
        [--concurrency 8] [--runs 3] [--label after]

Shares are of all samples of all the model's stubs (so idle is the stubs' spare time), median and range
over runs; the busiest sampled lines are listed with their source. py-spy slows what it samples: the
throughput printed is under the profiler, for orientation only (the credit study measures without it).
Writes perf/results/credit_stub_profile-<model>[-<label>].{json,md}.
"""

from __future__ import annotations

import argparse
import linecache
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.results import Spread, record, repeat
from modelrepo.perf.tune_command import default_input_data
from modelrepo.triton.server import TritonServer, free_ports

BUCKETS = ("idle", "metric calls", "onnxruntime", "handler", "adapter")
METRIC_CALL = re.compile(r"\.(set|observe|increment)\(")
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*):(?P<line>\d+)\)$")
SAMPLES_PER_S = 250


def frames(stack: str) -> list[tuple[str, str, int]]:
    """A py-spy raw stack ('f (path:line);g (path:line)') -> [(function, path, line)], outermost first."""
    parsed = []
    for frame in filter(None, stack.split(";")):
        match = FRAME.match(frame.strip())
        if match:
            parsed.append((match["function"], match["path"], int(match["line"])))
    return parsed


def bucket(stack: list[tuple[str, str, int]]) -> str:
    if not stack:
        return "idle"
    _, path, line = stack[-1]
    if METRIC_CALL.search(linecache.getline(path, line)):
        return "metric calls"
    if any("onnxruntime" in frame_path for _, frame_path, _ in stack):
        return "onnxruntime"
    if "python_backends" in path and not path.endswith(("triton_adapter.py",)):
        return "handler"
    return "adapter"


def profile_files(paths: list[Path]) -> tuple[Counter, Counter]:
    """Samples per bucket, and per busiest line ('path:line' of the innermost frame)."""
    buckets, lines = Counter(), Counter()
    for path in paths:
        for raw in path.read_text().splitlines():
            stack_text, _, count = raw.rpartition(" ")
            stack = frames(stack_text)
            buckets[bucket(stack)] += int(count)
            if stack:
                _, frame_path, line = stack[-1]
                lines[f"{frame_path}:{line}"] += int(count)
    return buckets, lines


def stub_pids(model: str) -> list[int]:
    """The model's stub processes: Triton starts them with the model's name among their arguments."""
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and "triton_python_backend_stub" in p.info["cmdline"][0]
            and any(f"/{model}/" in arg or arg.endswith(f"/{model}") for arg in p.info["cmdline"])]


def one_run(model: str, server: TritonServer, data: Path, concurrency: int, folder: Path, index: int) -> dict:
    pids = stub_pids(model)
    if not pids:
        raise RuntimeError(f"no Python-backend stub found for {model}: is it a Python model?")
    outputs = [folder / f"run{index}-{pid}.txt" for pid in pids]
    spies = [subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record",
                               "-p", str(pid), "-r", str(SAMPLES_PER_S), "-f", "raw", "--idle", "--full-filenames",
                               "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for pid, out in zip(pids, outputs)]
    try:
        figures = measure(model, server.grpc_url, data, concurrency, "bench", folder / f"run{index}.csv")
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on an interrupt
        for spy in spies:
            spy.wait(timeout=60)
    buckets, lines = profile_files(outputs)
    total = sum(buckets.values())
    return {"throughput_infer_per_s": figures["throughput_infer_per_s"], "samples": total, "stubs": len(pids),
            "shares": {name: buckets[name] / total for name in BUCKETS},
            "lines": {line: count / total for line, count in lines.most_common(12)},
            "command": figures["command"]}


def source_of(location: str) -> str:
    path, _, line = location.rpartition(":")
    return linecache.getline(path, int(line)).strip().replace("|", "\\|")


def short_path(location: str) -> str:
    for marker in ("python_backends/", "site-packages/"):
        if marker in location:
            return location.split(marker, 1)[1]
    return location


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="credit_default_onehop")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--label", default="", help="a suffix for the result's name (e.g. before / after a change)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key="bench", load_models=(args.model,))
        with server:
            data = Path(default_input_data(MODEL_REPOSITORY, args.model, folder))  # the build's hold-out rows
            measure(args.model, server.grpc_url, data, args.concurrency, "bench", folder / "warm.csv")
            runs = repeat(args.runs, lambda i: one_run(args.model, server, data, args.concurrency, folder, i))
    shares = {name: Spread.of(run["shares"][name] for run in runs) for name in BUCKETS}
    busy = Spread.of(1 - run["shares"]["idle"] for run in runs)
    throughput = Spread.of(run["throughput_infer_per_s"] for run in runs)
    every_line = Counter()
    for run in runs:
        every_line.update({line: share / len(runs) for line, share in run["lines"].items()})
    name = f"credit_stub_profile-{args.model}" + (f"-{args.label}" if args.label else "")
    command = "python -m modelrepo.perf.studies.credit_stub_profile " + " ".join(sys.argv[1:])
    body = [
        f"{args.model}, perf_analyzer gRPC batch 1 at concurrency {args.concurrency}, {runs[0]['stubs']} stubs sampled "
        f"at {SAMPLES_PER_S}/s by py-spy; {throughput.text(0)} infer/s under the profiler. Median (range) over "
        f"{args.runs} runs; shares of all the stubs' samples.", "",
        "| bucket | share of samples | share of busy time |", "| --- | --- | --- |",
        *(f"| {bucket_name} | {shares[bucket_name].text(3)} | "
          + ("" if bucket_name == "idle" else Spread.of(run["shares"][bucket_name] / (1 - run["shares"]["idle"])
                                                         for run in runs).text(3)) + " |"
          for bucket_name in BUCKETS),
        "", "Busiest lines (innermost frame; mean share of samples over runs):", "",
        "| share | line | source |", "| --- | --- | --- |",
        *(f"| {share:.3f} | {short_path(line)} | `{source_of(line)}` |" for line, share in every_line.most_common(10)),
        "", f"perf_analyzer command (last run): `{runs[-1]['command']}`",
    ]
    print(record(name, f"Where {args.model}'s stubs spend their time", command,
                 {"model": args.model, "concurrency": args.concurrency, "shares": {k: v.as_dict() for k, v in shares.items()},
                  "busy": busy.as_dict(), "throughput_under_profiler": throughput.as_dict(), "runs": runs}, body))


if __name__ == "__main__":
    main()
