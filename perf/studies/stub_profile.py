"""Where a model's Python-backend stubs spend their time under load: py-spy samples every stub process
of the model (an ensemble: of its Python steps) while perf_analyzer drives it (gRPC, batch 1, fixed
concurrency), and each sample is put in one bucket:
- idle: the stub waits for Triton to hand it a batch (no Python frame on the stack);
- metric calls: a custom-metric call (`.set(`, `.observe(`, `.increment(` on the sampled line), each a
  blocking IPC round trip to the server in Triton 2.51's Python backend;
- onnxruntime: inside an InferenceSession run;
- handler: the rest of python_backends' code (validation, numpy, and native calls made from it directly,
  such as the tokenizers library's encode_batch: py-spy sees no Python frame below them);
- adapter: the rest (triton_adapter, pb_utils tensor conversion, the stub's Python glue);
- background threads: a thread the stub's Python started (the metrics export of exported_metrics.py)
  while it works; while it waits in `threading` it is not counted at all, so the other shares stay
  shares of the stub's main thread as before such threads existed.

    .venv/bin/python -m modelrepo.perf.studies.stub_profile [--model credit_default_onehop]
        [--workload reviews|short|mixed] [--concurrency 8] [--runs 3] [--label after]

The input data is what `modelrepo tune` feeds by default (the build's sample for credit models, the
`--workload` texts for a TEXT model). Shares are of all samples of each step's stubs (so idle is their
spare time), median and range over runs; a stub counts as busy while it is descheduled too (py-spy
samples the stack, not the CPU), so on a saturated machine a blocking call's share includes the wait
for the server's thread. The busiest sampled lines are listed with their source. py-spy slows what it
samples: the throughput printed is under the profiler, for orientation only.
Writes perf/results/stub_profile-<model>[-<label>].{json,md}.
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
from modelrepo.perf.workloads import TEXT_WORKLOADS
from modelrepo.triton.model_config import ensemble_steps, read_config
from modelrepo.triton.server import TritonServer, free_ports

BUCKETS = ("idle", "metric calls", "onnxruntime", "handler", "adapter", "background threads")
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


def bucket(stack: list[tuple[str, str, int]]) -> str | None:
    """The sample's bucket; None for a background thread parked in `threading` (not counted)."""
    if not stack:
        return "idle"
    _, path, line = stack[-1]
    if stack[0][0].endswith("_bootstrap") and stack[0][1].endswith("threading.py"):  # py-spy: Thread._bootstrap
        return None if path.endswith("threading.py") else "background threads"
    if METRIC_CALL.search(linecache.getline(path, line)):
        return "metric calls"
    if any("/onnxruntime/" in frame_path for _, frame_path, _ in stack):
        return "onnxruntime"
    if "python_backends" in path and not path.endswith("triton_adapter.py"):
        return "handler"
    return "adapter"


def profile_files(paths: list[Path]) -> tuple[Counter, Counter]:
    """Samples per bucket, and per busiest line ('path:line' of the innermost frame)."""
    buckets, lines = Counter(), Counter()
    for path in paths:
        for raw in path.read_text().splitlines():
            stack_text, _, count = raw.rpartition(" ")
            stack = frames(stack_text)
            where = bucket(stack)
            if where is None:
                continue
            buckets[where] += int(count)
            if stack:
                _, frame_path, line = stack[-1]
                lines[f"{frame_path}:{line}"] += int(count)
    return buckets, lines


def python_steps(repository: Path, model: str) -> list[str]:
    """The model itself if it runs on the Python backend; an ensemble's Python steps, in order."""
    config = read_config(repository / model)
    if config.platform == "ensemble":
        return [name for step in ensemble_steps(config) for name in python_steps(repository, step)]
    return [model] if config.backend == "python" else []


def stub_pids(model: str) -> list[int]:
    """The model's stub processes: Triton starts them with the model's folder among their arguments."""
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and "triton_python_backend_stub" in p.info["cmdline"][0]
            and any(f"/{model}/" in arg or arg.endswith(f"/{model}") for arg in p.info["cmdline"])]


def one_run(model: str, steps: list[str], server: TritonServer, data: Path, concurrency: int, folder: Path,
            index: int) -> dict:
    pids = {step: stub_pids(step) for step in steps}
    outputs = {step: [folder / f"run{index}-{step}-{pid}.txt" for pid in pids[step]] for step in steps}
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    spies = [subprocess.Popen([py_spy, "record", "-p", str(pid), "-r", str(SAMPLES_PER_S), "-f", "raw",
                               "--idle", "--full-filenames", "-o", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for step in steps for pid, out in zip(pids[step], outputs[step], strict=True)]
    try:
        figures = measure(model, server.grpc_url, data, concurrency, "bench", folder / f"run{index}.csv")
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on an interrupt
        for spy in spies:
            spy.wait(timeout=60)
    profiles = {}
    for step, files in outputs.items():
        buckets, lines = profile_files(files)
        total = sum(buckets.values())
        profiles[step] = {"stubs": len(files), "samples": total,
                          "shares": {name: buckets[name] / total for name in BUCKETS},
                          "lines": {line: count / total for line, count in lines.most_common(12)}}
    return {"throughput_infer_per_s": figures["throughput_infer_per_s"], "steps": profiles, "command": figures["command"]}


def source_of(location: str) -> str:
    path, _, line = location.rpartition(":")
    return linecache.getline(path, int(line)).strip().replace("|", "\\|")


def short_path(location: str) -> str:
    for marker in ("python_backends/", "site-packages/"):
        if marker in location:
            return location.split(marker, 1)[1]
    return location


def step_table(step: str, runs: list[dict]) -> list[str]:
    profiles = [run["steps"][step] for run in runs]
    lines = Counter()
    for profile in profiles:
        lines.update({line: share / len(profiles) for line, share in profile["lines"].items()})
    busy = [1 - profile["shares"]["idle"] for profile in profiles]
    return [
        f"### {step} ({profiles[0]['stubs']} stubs)", "",
        "| bucket | share of samples | share of busy time |", "| --- | --- | --- |",
        *(f"| {name} | {Spread.of(p['shares'][name] for p in profiles).text(3)} | "
          + ("" if name == "idle" else Spread.of(p["shares"][name] / b for p, b in zip(profiles, busy)).text(3)) + " |"
          for name in BUCKETS),
        "", "Busiest lines (innermost frame; mean share of samples over runs):", "",
        "| share | line | source |", "| --- | --- | --- |",
        *(f"| {share:.3f} | {short_path(line)} | `{source_of(line)}` |" for line, share in lines.most_common(10)),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="credit_default_onehop")
    parser.add_argument("--workload", choices=sorted(TEXT_WORKLOADS), default="reviews", help="the texts of a TEXT model")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--label", default="", help="a suffix for the result's name (e.g. before / after a change)")
    args = parser.parse_args()
    steps = python_steps(MODEL_REPOSITORY, args.model)
    if not steps:
        parser.error(f"--model {args.model}: neither a Python model nor an ensemble with Python steps")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = Path(default_input_data(MODEL_REPOSITORY, args.model, folder, args.workload))
        with TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key="bench", load_models=(args.model,)) as server:
            measure(args.model, server.grpc_url, data, args.concurrency, "bench", folder / "warm.csv")
            runs = repeat(args.runs, lambda i: one_run(args.model, steps, server, data, args.concurrency, folder, i))
    throughput = Spread.of(run["throughput_infer_per_s"] for run in runs)
    name = f"stub_profile-{args.model}" + (f"-{args.label}" if args.label else "")
    command = "python -m modelrepo.perf.studies.stub_profile " + " ".join(sys.argv[1:])
    body = [
        f"{args.model}, perf_analyzer gRPC batch 1 at concurrency {args.concurrency}"
        + (f", {args.workload} texts" if data.name.startswith("texts-") else f", input data {data.name}")
        + f"; stubs sampled at {SAMPLES_PER_S}/s by py-spy; {throughput.text(0)} infer/s under the profiler. "
        f"Median (range) over {args.runs} runs; shares of all samples of each step's stubs.", "",
        *(row for step in steps for row in step_table(step, runs)),
        f"perf_analyzer command (last run): `{runs[-1]['command']}`",
    ]
    print(record(name, f"Where {args.model}'s Python stubs spend their time", command,
                 {"model": args.model, "concurrency": args.concurrency, "steps": steps,
                  "throughput_under_profiler": throughput.as_dict(), "runs": runs}, body))


if __name__ == "__main__":
    main()
