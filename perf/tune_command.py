"""`modelrepo tune`: start the embedded server with the model, tune it, write the report, optionally apply."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from modelrepo.build.add.layout import SAMPLE_INPUT_DATA
from modelrepo.paths import PERF_RESULTS
from modelrepo.perf.tune import Load, LiveModels, Target, Tuner, TuneResult
from modelrepo.perf.tune_report import apply_to_repository, write_report
from modelrepo.perf.workloads import TEXT_WORKLOADS, text_input_data
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.model_config import ensemble_steps, read_config
from modelrepo.triton.server import TritonServer, free_ports

TEXT_SAMPLES = 64


def text_model(repository: Path, model: str) -> bool:
    return [t.name for t in read_config(repository / model).input] == ["TEXT"]


def default_input_data(repository: Path, model: str, folder: Path, workload: str = "reviews") -> str:
    """The sample of a model `modelrepo add` wrote; for a model whose one input is TEXT, real texts of
    the `workload` (TEXT_WORKLOADS: long reviews, short queries, or both mixed 80 / 20); perf_analyzer's
    random data otherwise."""
    if (repository / model / SAMPLE_INPUT_DATA).exists():
        return str(repository / model / SAMPLE_INPUT_DATA)
    if text_model(repository, model):
        return str(text_input_data(TEXT_WORKLOADS[workload](TEXT_SAMPLES), folder / f"texts-{workload}.json"))
    return "random"


def check_tunable(repository: Path, model: str) -> None:
    """A clear refusal, before any server starts, for what perf_analyzer's request/response windows cannot
    tune: a model the repository lacks, and a decoupled (streaming) model or ensemble step."""
    if not (repository / model / "config.pbtxt").exists():
        raise ValueError(f"{model}: no such model in {repository} (no {model}/config.pbtxt)")
    config = read_config(repository / model)
    for name in ensemble_steps(config):
        check_tunable(repository, name)
    if config.model_transaction_policy.decoupled:
        raise ValueError(f"{model} is decoupled (streams its responses): `modelrepo tune` measures request/response "
                         "models; measure streaming LLM serving with genai-perf (python -m modelrepo.perf.studies.genai_perf_check)")


def run_tune(repository: Path, model: str, budget_ms: float, load: Load, apply: bool, output: Path | None,
             instance_options, command: str, log=print, input_data: str | None = None,
             workload: str | None = None) -> TuneResult:
    """`workload` (reviews | short | mixed) picks the texts of a model whose one input is TEXT."""
    check_tunable(repository, model)
    if workload is not None and input_data is not None:
        raise ValueError("--workload and --input-data: give one (the workload writes the input data)")
    if workload is not None and not text_model(repository, model):
        raise ValueError(f"--workload {workload}: {model} does not take one TEXT input; give --input-data instead")
    admin_key = secrets.token_urlsafe(16)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = output or PERF_RESULTS / f"tune-{model}-{stamp}"
    with tempfile.TemporaryDirectory(prefix="modelrepo-tune-") as tmp:
        workdir = Path(tmp)
        input_data = input_data or default_input_data(repository, model, workdir, workload or "reviews")
        folder.mkdir(parents=True, exist_ok=True)
        kept_input = input_data
        if input_data != "random":  # the report's reproduce command must still find it
            kept_input = str(folder / "input_data.json")
            shutil.copyfile(input_data, kept_input)
        server = TritonServer(repository, *free_ports(3), admin_key=admin_key, load_models=(model,),
                              log_path=workdir / "tritonserver.log")
        import tritonclient.grpc as grpcclient

        with server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            live = LiveModels(client, {GRPC_ADMIN_HEADER: admin_key})
            tuner = Tuner(server, live, model, budget_ms, load, input_data, workdir, admin_key, instance_options, log)
            log(f"tuning {model} ({', '.join(tuner.tuned_models)}) for p99 ≤ {budget_ms:g} ms at {load.describe()}")
            result = tuner.tune()
            client.close()
    write_report(result, folder, command, kept_input)
    log(f"report: {folder}/summary.md ({result.seconds:.0f} s)")
    if result.winner is None:
        log(f"no configuration met the budget: {result.confidence}")
        return result
    log(f"chosen: {result.winner.label()} — confidence {result.confidence}")
    if apply:
        diff = apply_to_repository(repository, result)
        log(diff or "configs already had these values")
        remeasure_applied(repository, model, budget_ms, load, kept_input, folder, log)
    return result


def remeasure_applied(repository: Path, model: str, budget_ms: float, load: Load, input_data: str, folder: Path,
                      log=print, rounds: int = 2) -> list[dict]:
    """A fresh server reading the written config.pbtxt, measured again: the applied config must meet the budget."""
    from modelrepo.perf.analyzer import measure

    admin_key = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="modelrepo-tune-") as tmp:
        server = TritonServer(repository, *free_ports(3), admin_key=admin_key, load_models=(model,),
                              log_path=Path(tmp) / "tritonserver.log")
        with server:
            runs = [measure(model, server.grpc_url, input_data, load.concurrency, admin_key, Path(tmp) / "re.csv",
                            request_rate=load.request_rate) for _ in range(rounds)]
    lines = ["", "## Re-measured after --apply (fresh server reading the written config.pbtxt)", "",
             "| run | throughput (/s) | p50 (ms) | p99 (ms) | met |", "| --- | --- | --- | --- | --- |"]
    target = Target.of(budget_ms, load)
    for number, run in enumerate(runs, 1):
        lines.append(f"| {number} | {run['throughput_infer_per_s']:.1f} | {run['p50_ms']:.1f} | {run['p99_ms']:.1f} | "
                     f"{target.verdict(run['throughput_infer_per_s'], run['p99_ms'])} |")
        log(f"applied config re-measured: {run['throughput_infer_per_s']:.1f}/s, p99 {run['p99_ms']:.1f} ms "
            f"(budget {budget_ms:g} ms)")
    with open(folder / "summary.md", "a") as summary:
        summary.write("\n".join(lines) + "\n")
    return runs
