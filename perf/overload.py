"""Overload: a pipeline driven open loop at a multiple of its tuned capacity, then back at capacity.

    python -m modelrepo.perf.overload --model text_embedding --budget-ms 1000 --concurrency 8 --multiple 3 --normal 0.7

1. Capacity: perf_analyzer at the tuned concurrency (closed loop, the measurement `modelrepo tune`
   decides with) on this server, with the same texts: C requests/s. Measured in the same run, because
   these machines are noisy and a figure from another day would not be C here.
2. Open loop over gRPC (async: each request is sent at its scheduled time whatever the server is
   doing, and its latency counts from that time): `baseline` at normal x C, `overload` at
   multiple x C, `recovery` at normal x C. Normal traffic is below capacity (0.7 by default, the
   utilisation autoscalers aim at): an open-loop queue fed at exactly its service rate never drains
   (measured: perf/results/overload_text_embedding-normal-at-capacity.md).
3. Figures per phase: accepted / refused (by status), refusal latency, accepted latency p50/p99 against
   the budget. Recovery time: from the end of the overload to the start of the first one-second
   window after which no window has a refusal or a median above the baseline phase's p99.

The claims checked (the verdict): refusals are UNAVAILABLE and fast (p99 under a second), accepted
requests keep p99 <= 2 x budget during the overload, and recovery takes seconds (< 10 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelrepo.paths import MODEL_REPOSITORY, PERF_RESULTS
from modelrepo.perf.results import record
from modelrepo.triton.server import TritonServer, free_ports

REFUSAL_P99_S = 1.0
RECOVERY_S = 10.0
CLIENTS = 4  # gRPC channels: spreads in-flight requests over connections (HTTP/2 stream limits)


@dataclass
class Sent:
    phase: str
    scheduled: float  # seconds from the start of the open-loop run
    latency: float  # from scheduled to answered
    status: str  # "OK" or the gRPC status code's name


def capacity(server: TritonServer, model: str, input_data: Path, concurrency: int, workdir: Path) -> dict:
    from modelrepo.perf.analyzer import measure

    return measure(model, server.grpc_url, input_data, concurrency, server.admin_key, workdir / "capacity.csv")


def open_loop(server: TritonServer, model: str, texts: list[str], phases: list[tuple[str, float, float]]) -> list[Sent]:
    """phases: (name, rate /s, seconds). Every request is answered or counted as lost (never dropped)."""
    import tritonclient.grpc as grpcclient

    clients = [grpcclient.InferenceServerClient(server.grpc_url) for _ in range(CLIENTS)]
    inputs = []
    for text in texts:
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
        inputs.append([tensor])
    sent: list[Sent] = []
    lock = threading.Lock()
    outstanding = threading.Semaphore(0)
    count = 0

    def answered(phase, scheduled, origin, result, error):
        status = "OK" if error is None else (error.status() or "ERROR").removeprefix("StatusCode.")
        with lock:
            sent.append(Sent(phase, scheduled, time.monotonic() - origin - scheduled, status))
        outstanding.release()

    origin = time.monotonic()
    begin = 0.0
    picks = itertools.cycle(range(len(inputs)))
    for phase, rate, seconds in phases:
        n = 0
        while (due := begin + n / rate) < begin + seconds:
            delay = origin + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            clients[count % CLIENTS].async_infer(
                model, inputs[next(picks)],
                callback=lambda result, error, p=phase, d=due: answered(p, d, origin, result, error))
            n += 1
            count += 1
        begin += seconds
    lost = 0
    for _ in range(count):
        if not outstanding.acquire(timeout=60):
            lost += 1
    for client in clients:
        client.close()
    assert lost == 0, f"{lost} of {count} requests never answered within 60 s"
    return sorted(sent, key=lambda s: s.scheduled)


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def phase_figures(sent: list[Sent], phase: str) -> dict:
    mine = [s for s in sent if s.phase == phase]
    ok = [s.latency for s in mine if s.status == "OK"]
    refused = [s.latency for s in mine if s.status != "OK"]
    return {
        "requests": len(mine), "accepted": len(ok), "refused": len(refused),
        "statuses": dict(Counter(s.status for s in mine)),
        "accepted_p50_ms": percentile_ms(ok, 50), "accepted_p99_ms": percentile_ms(ok, 99),
        "accepted_max_ms": percentile_ms(ok, 100),
        "refused_p50_ms": percentile_ms(refused, 50), "refused_p99_ms": percentile_ms(refused, 99),
        "refused_max_ms": percentile_ms(refused, 100),
    }


def windows(sent: list[Sent], start: float, end: float, width: float = 1.0) -> list[dict]:
    rows = []
    for left in np.arange(start, end, width):
        mine = [s for s in sent if left <= s.scheduled < left + width]
        ok = [s.latency for s in mine if s.status == "OK"]
        rows.append({"t": float(left), "requests": len(mine), "refused": len(mine) - len(ok),
                     "p50_ms": percentile_ms(ok, 50), "p99_ms": percentile_ms(ok, 99)})
    return rows


def recovery_seconds(sent: list[Sent], overload_end: float, run_end: float, normal_ms: float) -> float | None:
    """Seconds from the overload's end until every later one-second window is normal; None if never."""
    rows = windows(sent, overload_end, run_end)
    abnormal = [i for i, w in enumerate(rows) if w["refused"] or w["p50_ms"] is None or w["p50_ms"] > normal_ms]
    if not abnormal:
        return 0.0
    last = abnormal[-1]
    return None if last == len(rows) - 1 else rows[last]["t"] + 1.0 - overload_end


def plot(sent: list[Sent], phases: list[tuple[str, float, float]], budget_ms: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=[3, 1])
    ok = [s for s in sent if s.status == "OK"]
    refused = [s for s in sent if s.status != "OK"]
    top.scatter([s.scheduled for s in ok], [s.latency * 1000 for s in ok], s=4, label="accepted")
    top.scatter([s.scheduled for s in refused], [s.latency * 1000 for s in refused], s=4, color="tab:red",
                label="refused (UNAVAILABLE)")
    top.axhline(budget_ms, color="grey", linestyle=":", label="budget")
    top.axhline(2 * budget_ms, color="black", linestyle=":", label="2 x budget")
    top.set(ylabel="latency from schedule (ms)", yscale="log", title="Open-loop overload")
    top.legend(fontsize=7)
    end = sum(seconds for _, _, seconds in phases)
    rows = windows(sent, 0.0, end)
    bottom.bar([w["t"] for w in rows], [w["requests"] - w["refused"] for w in rows], width=1.0, align="edge", label="accepted/s")
    bottom.bar([w["t"] for w in rows], [w["refused"] for w in rows], width=1.0, align="edge",
               bottom=[w["requests"] - w["refused"] for w in rows], color="tab:red", label="refused/s")
    begin = 0.0
    for name, _, seconds in phases:
        for axis in (top, bottom):
            axis.axvline(begin, color="grey", linewidth=0.5)
        top.text(begin + 0.5, budget_ms * 4, name, fontsize=8)
        begin += seconds
    bottom.set(xlabel="seconds", ylabel="requests")
    bottom.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def verdict(figures: dict, budget_ms: float) -> dict:
    overload = figures["phases"]["overload"]
    checks = {
        "excess refused with UNAVAILABLE only": overload["refused"] > 0
        and set(overload["statuses"]) <= {"OK", "UNAVAILABLE"},
        f"refusals fast (p99 < {REFUSAL_P99_S * 1000:.0f} ms)": overload["refused_p99_ms"] is not None
        and overload["refused_p99_ms"] < REFUSAL_P99_S * 1000,
        "accepted p99 <= 2 x budget during the overload": overload["accepted_p99_ms"] is not None
        and overload["accepted_p99_ms"] <= 2 * budget_ms,
        f"recovered within {RECOVERY_S:.0f} s": figures["recovery_s"] is not None and figures["recovery_s"] <= RECOVERY_S,
    }
    return {"checks": checks, "pass": all(checks.values())}


def run(model: str, budget_ms: float, concurrency: int, multiple: float, normal: float, seconds: dict[str, float],
        workdir: Path, samples: int, name: str) -> dict:
    from modelrepo.perf.tune_command import default_input_data

    input_data = Path(default_input_data(MODEL_REPOSITORY, model, workdir))
    texts = [row["TEXT"]["content"][0] for row in json.loads(input_data.read_text())["data"]][:samples]
    server = TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=secrets.token_urlsafe(12), load_models=(model,),
                          log_path=workdir / "tritonserver.log")
    with server:
        measured = capacity(server, model, input_data, concurrency, workdir)
        rate = measured["throughput_infer_per_s"]
        phases = [("baseline", normal * rate, seconds["baseline"]), ("overload", multiple * rate, seconds["overload"]),
                  ("recovery", normal * rate, seconds["recovery"])]
        before = server.metrics()
        sent = open_loop(server, model, texts, phases)
        after = server.metrics()
        assert server.is_ready(), "the server is not READY after the overload"
    overload_end = seconds["baseline"] + seconds["overload"]
    figures = {
        "model": model, "budget_ms": budget_ms, "concurrency": concurrency, "multiple": multiple, "normal": normal,
        "capacity": measured, "phase_rates": {name: round(r, 2) for name, r, _ in phases},
        "phases": {name: phase_figures(sent, name) for name, _, _ in phases},
        "server_failures": failure_deltas(before, after),
    }
    normal_ms = figures["phases"]["baseline"]["accepted_p99_ms"]
    figures["recovery_s"] = recovery_seconds(sent, overload_end, overload_end + seconds["recovery"], normal_ms)
    figures["windows"] = windows(sent, 0.0, overload_end + seconds["recovery"])
    figures["plot"] = str(plot(sent, phases, budget_ms, PERF_RESULTS / f"{name}.png"))
    return figures


def failure_deltas(before: dict, after: dict) -> dict[str, float]:
    """Triton's own failure counters over the run, per model and reason (queue-full refusals show as
    REJECTED or OTHER depending on the path, which is why the repository counts its own)."""
    name = "nv_inference_request_failure"  # a counter without _total: scrape_metrics keeps the exposed name
    deltas = {}
    for labels, value in after.get(name, {}).items():
        change = value - before.get(name, {}).get(labels, 0.0)
        if change:
            label = dict(labels)
            deltas[f"{label.get('model')}/{label.get('reason')}"] = change
    return deltas


def report(figures: dict, judged: dict) -> list[str]:
    cap = figures["capacity"]
    lines = [
        f"Capacity measured first on the same server: perf_analyzer at concurrency {figures['concurrency']} "
        f"(closed loop): **{cap['throughput_infer_per_s']:.1f} requests/s**, p99 {cap['p99_ms']:.0f} ms "
        f"(budget {figures['budget_ms']:g} ms). Then open loop over gRPC at these rates (requests/s): "
        + ", ".join(f"{name} {rate:g}" for name, rate in figures["phase_rates"].items())
        + f" ({figures['normal']:g} x, {figures['multiple']:g} x and {figures['normal']:g} x capacity). "
        "Latency counts from each request's scheduled time.", "",
        f"**Verdict: {'PASS' if judged['pass'] else 'FAIL'}**", "",
        *[f"- {'yes' if ok else 'NO'}: {claim}" for claim, ok in judged["checks"].items()], "",
        "| phase | rate /s | requests | accepted | refused | statuses | accepted p50 ms | accepted p99 ms | "
        "accepted max ms | refused p50 ms | refused p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, p in figures["phases"].items():
        lines.append(f"| {name} | {figures['phase_rates'][name]:g} | {p['requests']} | {p['accepted']} | {p['refused']} | "
                     f"{p['statuses']} | {p['accepted_p50_ms']} | {p['accepted_p99_ms']} | {p['accepted_max_ms']} | "
                     f"{p['refused_p50_ms']} | {p['refused_p99_ms']} |")
    recovery = figures["recovery_s"]
    refused_total = sum(p["refused"] for p in figures["phases"].values())
    lines += [
        "",
        f"Recovery: {'never within the recovery phase' if recovery is None else f'{recovery:.0f} s'} after the "
        "overload ended (first one-second window from which every later window has no refusal and a median "
        f"under the baseline's p99, {figures['phases']['baseline']['accepted_p99_ms']} ms).", "",
        f"Triton's own failure counters over the run (model/reason: count): {figures['server_failures'] or 'none'}, "
        f"for {refused_total} refused requests. Triton 2.51 counts a queue-full refusal of an ensemble step under "
        "the ensemble with reason OTHER (twice per refused request in our runs) and leaves REJECTED at 0, so "
        "that counter cannot tell refusals from errors; the repository's own metric counts refusals behind its "
        "BLS callers (modelrepo_queue_rejections_total).", "",
        f"![overload]({Path(figures['plot']).name})", "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="text_embedding")
    parser.add_argument("--budget-ms", type=float, default=1000.0, help="the p99 budget the model was tuned for")
    parser.add_argument("--concurrency", type=int, default=8, help="the concurrency the model was tuned at")
    parser.add_argument("--multiple", type=float, default=3.0, help="overload rate as a multiple of the capacity")
    parser.add_argument("--normal", type=float, default=0.7, help="baseline and recovery rate, as a fraction of the capacity")
    parser.add_argument("--baseline-s", type=float, default=20.0)
    parser.add_argument("--overload-s", type=float, default=30.0)
    parser.add_argument("--recovery-s", type=float, default=30.0)
    parser.add_argument("--samples", type=int, default=64, help="distinct texts sent, round robin")
    parser.add_argument("--name", help="results file name in perf/results (default overload_<model>)")
    args = parser.parse_args()
    command = (f"python -m modelrepo.perf.overload --model {args.model} --budget-ms {args.budget_ms:g} "
               f"--concurrency {args.concurrency} --multiple {args.multiple:g} --normal {args.normal:g} --baseline-s {args.baseline_s:g} "
               f"--overload-s {args.overload_s:g} --recovery-s {args.recovery_s:g} --samples {args.samples}"
               + (f" --name {args.name}" if args.name else ""))
    seconds = {"baseline": args.baseline_s, "overload": args.overload_s, "recovery": args.recovery_s}
    with tempfile.TemporaryDirectory(prefix="modelrepo-overload-") as tmp:
        figures = run(args.model, args.budget_ms, args.concurrency, args.multiple, args.normal, seconds, Path(tmp),
                      args.samples, args.name or f"overload_{args.model}")
    judged = verdict(figures, args.budget_ms)
    print(record(args.name or f"overload_{args.model}", f"Overload: {args.model} at {args.multiple:g}x its tuned capacity "
                 "(Triton 2.51, CPU)", command, {"figures": figures, "verdict": judged}, report(figures, judged)))


if __name__ == "__main__":
    main()
