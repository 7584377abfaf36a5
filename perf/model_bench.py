"""`modelrepo bench NAME`: one model's throughput and latency with perf_analyzer, as a team would quote it.

Any model of the repository, one `modelrepo add` put in as much as a shipped one: a server of that
model alone (an ensemble with its steps) at its config as it is; every concurrency measured `--runs`
times (runs interleaved, so a slow spell of the machine spreads over every point), each measurement
at least `--requests` requests (perf_analyzer's count windows, so a p99 rests on hundreds of samples);
each figure the median and range of the runs; p99 against the model's latency budget (the
`latency_budget_ms` `modelrepo add` states, or `--p99-ms`). Input: `--input-data`, else what
`modelrepo tune` uses (the sample `add` kept, review texts for a TEXT model, else random).
Writes <date>-bench-NAME.{json,md} in perf/results/ (or `--output`).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from datetime import date
from pathlib import Path

from modelrepo.build.add.monitoring import stated_budget_ms
from modelrepo.paths import MODEL_REPOSITORY, PERF_RESULTS
from modelrepo.perf.analyzer import measure
from modelrepo.perf.results import Spread, record
from modelrepo.perf.tune_command import check_tunable, default_input_data
from modelrepo.triton.server import TritonServer, free_ports

FIGURES = ("throughput_infer_per_s", "p50_ms", "p99_ms")


class BenchError(ValueError):
    """A request `bench` cannot carry out, in one sentence."""


def parser() -> argparse.ArgumentParser:
    bench = argparse.ArgumentParser(prog="modelrepo bench NAME", description=__doc__.splitlines()[0])
    bench.add_argument("model", help="model or ensemble of the repository")
    bench.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="closed-loop clients, each point")
    bench.add_argument("--runs", type=int, default=3, help="measurements per concurrency (median and range)")
    bench.add_argument("--requests", type=int, default=300, help="at least this many requests per measurement")
    bench.add_argument("--p99-ms", type=float, help="p99 budget (default: the model's latency_budget_ms, if stated)")
    bench.add_argument("--input-data", help="perf_analyzer --input-data JSON (default: as `modelrepo tune`)")
    bench.add_argument("--model-repository", default=str(MODEL_REPOSITORY))
    bench.add_argument("--output", help=f"folder for the report (default {PERF_RESULTS})")
    return bench


def bench(repository: Path, model: str, concurrencies: list[int], runs: int, requests: int,
          input_data: str | None, workdir: Path, log=print) -> dict[int, list[dict]]:
    """concurrency → one perf_analyzer result per run, on one server of `model`."""
    key = secrets.token_urlsafe(12)
    data = input_data or default_input_data(repository, model, workdir)
    results: dict[int, list[dict]] = {c: [] for c in concurrencies}
    with TritonServer(repository, *free_ports(3), admin_key=key, load_models=(model,),
                      log_path=workdir / "tritonserver.log") as server:
        for run in range(runs):
            for concurrency in concurrencies:
                result = measure(model, server.grpc_url, data, concurrency, key,
                                 workdir / f"c{concurrency}-r{run}.csv", request_count=requests)
                results[concurrency].append(result)
                log(f"run {run + 1}/{runs}, concurrency {concurrency}: {result['throughput_infer_per_s']:.1f}/s, "
                    f"p99 {result['p99_ms']:.1f} ms")
    return results


def spreads_of(results: dict[int, list[dict]]) -> dict[int, dict[str, Spread]]:
    """concurrency → figure → median and range over the runs."""
    return {c: {figure: Spread.of(r[figure] for r in runs) for figure in FIGURES} for c, runs in results.items()}


def report_body(model: str, results: dict[int, list[dict]], budget_ms: float | None, requests: int,
                input_data: str) -> tuple[list[str], dict]:
    spreads = spreads_of(results)
    runs = len(next(iter(results.values())))
    budget = f"{budget_ms:g} ms" if budget_ms else "none stated"
    body = [
        f"`{model}` at its config as it is, perf_analyzer over gRPC, closed loop; {runs} run(s) per concurrency, "
        f"each at least {requests} requests; median (range) of the runs. Input: `{input_data}`. p99 budget: {budget}.",
        "",
        "| concurrency | throughput (/s) | p50 (ms) | p99 (ms) | p99 within budget (runs) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for concurrency, figures in spreads.items():
        within = "" if not budget_ms else f"{sum(r['p99_ms'] <= budget_ms for r in results[concurrency])} of {runs}"
        body.append(f"| {concurrency} | {figures['throughput_infer_per_s'].text(1)} | {figures['p50_ms'].text(1)} | "
                    f"{figures['p99_ms'].text(1)} | {within} |")
    first = next(iter(results.values()))[0]
    body += ["", f"perf_analyzer command (first point): `{first['command']}`"]
    data = {"model": model, "p99_budget_ms": budget_ms, "requests_per_measurement": requests,
            "points": {str(c): {"runs": results[c], **{f: s.as_dict() for f, s in spreads[c].items()}}
                       for c in results}}
    return body, data


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    repository = Path(args.model_repository)
    try:
        if not (repository / args.model / "config.pbtxt").is_file():
            raise BenchError(f"there is no model {args.model!r} in {repository} (`modelrepo add` puts one in)")
        check_tunable(repository, args.model)  # a streaming model: perf_analyzer's windows do not measure it
        if args.runs < 1 or args.requests < 1 or min(args.concurrency) < 1:
            raise BenchError("--runs, --requests and every --concurrency must be at least 1")
        if args.input_data and not Path(args.input_data).is_file():
            raise BenchError(f"--input-data {args.input_data}: no such file")
    except ValueError as err:  # BenchError, and check_tunable's refusal
        print(f"error: {err}", file=sys.stderr)
        return 2
    budget_ms = args.p99_ms or stated_budget_ms(repository, args.model)
    with tempfile.TemporaryDirectory(prefix="modelrepo-bench-") as tmp:
        results = bench(repository, args.model, args.concurrency, args.runs, args.requests, args.input_data, Path(tmp))
        input_data = args.input_data or "the sample `add` kept, review texts or random (as `modelrepo tune`)"
        body, data = report_body(args.model, results, budget_ms, args.requests, input_data)
    name = f"{date.today().isoformat()}-bench-{args.model}"
    folder = Path(args.output) if args.output else PERF_RESULTS
    print(record(name, f"modelrepo bench {args.model}: throughput and latency per concurrency",
                 " ".join(["modelrepo bench", *argv]), data, body, folder=folder))
    print(f"written: {folder / name}.md and .json")
    return 0
