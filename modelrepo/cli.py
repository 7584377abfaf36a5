"""The `modelrepo` command line: serve, build, check, perf-analyzer."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.build.quantize import DEFAULT_METHOD, METHODS
from modelrepo.build.targets import PIPELINE_TARGETS, PRECISIONS, TARGETS
from modelrepo.pins import pins
from modelrepo.triton.flags import ALL_INTERFACES, LOOPBACK
from modelrepo.triton.recovery import RestartPolicy

RESTART_POLICY = RestartPolicy()


def whole_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number >= 0")
    return int(text)


def _serve(args: argparse.Namespace) -> int:
    from modelrepo.serve import serve

    return serve(
        Path(args.model_repository),
        args.http_port,
        args.grpc_port,
        args.metrics_port,
        args.model_control_mode,
        args.startup_timeout,
        exit_on_error=args.exit_on_error == "true",
        host=args.host,
        policy=RestartPolicy(max_restarts=args.max_restarts, window_s=args.restart_window),
        openai_port=None if args.no_openai else args.openai_port,
    )


def _build(args: argparse.Namespace) -> int:
    """Every registry entry's steps; with NAME, its rendering for --target/--precision too.

    NAME is a registry entry or one of its models (build/registry.py), shipped or added: nothing
    here knows a model by name. A target an entry renders as a whole (tensorrt-llm) goes to
    `_build_engine_target`; the ONNX targets compile or calibrate one graph model."""
    import warnings

    from modelrepo.build import registry
    from modelrepo.build.pipeline import build_all

    # Tracing chatter from torch.onnx/transformers during export: the parity check against
    # sentence-transformers is what guards the exported graph, and it fails the build loudly.
    warnings.filterwarnings("ignore", module=r"(torch|transformers|sklearn)(\.|$)")

    repository = Path(args.model_repository)
    entry, request = None, None
    if args.model:
        entry = registry.entry_for(repository, args.model)
        if entry is None:
            names = ", ".join(e.name for e in registry.entries(repository))
            print(f"error: no model or pipeline {args.model!r} in {repository} (pipelines: {names})", file=sys.stderr)
            return 2
    engine = registry.engine_targets().get(args.target)
    if engine is not None:
        return _build_engine_target(repository, entry, engine, args)
    if args.model and args.model == entry.name and args.model not in _graph_models(repository):
        if (args.target, args.precision) != ("cpu", "fp32"):
            print(f"error: {args.model} has no ONNX graph of its own to render for --target {args.target} --precision "
                  f"{args.precision}; name one of its models with a graph ({', '.join(_graph_models(repository, entry)) or 'none'})",
                  file=sys.stderr)
            return 2
        build_all(repository, force=args.force)
        print(f"{entry.name}: built in the repository ({', '.join(entry.models)}); serve it with `modelrepo serve`")
        return 0
    if args.model:
        from modelrepo.build.minilm_int8 import AccuracyBudget
        from modelrepo.build.model_build import BuildRequest
        from modelrepo.build.outputs import check_output
        from modelrepo.build.targets import TargetError
        from modelrepo.build.tensorrt_plan import require_tensorrt

        try:
            request = BuildRequest(
                args.model, args.target, args.precision, args.calibration, args.calib_samples,
                AccuracyBudget.parse(args.accuracy_budget), args.ort_tensorrt,
            )
            request.validate(repository)
            if args.output:
                check_output(Path(args.output), repository)
            if args.config_only and request.target != "tensorrt":
                raise TargetError(f"--config-only applies to the tensorrt target (its plan needs a GPU), not {request.target}")
            if request.target == "tensorrt" and not args.config_only:
                require_tensorrt()  # say what is missing before minutes of building
        except (TargetError, ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    build_all(repository, force=args.force)
    if request is None:
        return 0
    return _build_target(repository, request, args)


def _graph_models(repository: Path, entry=None) -> list[str]:
    from modelrepo.build.model_build import onnx_models

    return [model for model in onnx_models(repository) if entry is None or model in entry.models]


def _build_engine_target(repository: Path, entry, engine, args: argparse.Namespace) -> int:
    """Render a pipeline for an engine target (TensorRT-LLM): the repository without its engine, then
    the engine built in the pinned image on a GPU host; `--config-only` prints that command instead."""
    import subprocess

    from modelrepo.build import registry
    from modelrepo.build.outputs import check_output
    from modelrepo.build.pipeline import build_all
    from modelrepo.build.targets import TargetError

    if entry is None or engine.name not in entry.engine_targets:
        owners = ", ".join(e.name for e in registry.shipped_entries() if engine.name in e.engine_targets)
        print(f"error: --target {engine.name} renders the pipeline {owners} (name it: modelrepo build {owners} "
              f"--target {engine.name})", file=sys.stderr)
        return 2
    output = Path(args.output or f"dist/{engine.name}/model_repository")
    try:
        check_output(output, repository)
        if not args.config_only:
            engine.require()  # before minutes of building
    except TargetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    build_all(repository, force=args.force)
    try:
        engine.render(repository, output)
    except TargetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = engine.engine_command(output, repository)
    if args.config_only:
        print(f"{entry.name}: {engine.name} repository rendered into {output} without its engine; on a GPU host build it with\n"
              f"  {shlex.join(command)}")
        return 0
    print(f"{entry.name}: building the {engine.name} engine in {engine.image()}:\n  {shlex.join(command)}", flush=True)
    try:
        code = subprocess.run(command).returncode
    except FileNotFoundError:
        print("error: docker is not installed here; run the command above on a GPU host with Docker", file=sys.stderr)
        return 2
    if code:
        print(f"error: the engine build exited with code {code}", file=sys.stderr)
        return 1
    print(f"{entry.name}: {engine.name} engine built into {output}; serve it in {engine.image()}")
    return 0


def _build_target(repository: Path, request, args: argparse.Namespace) -> int:
    from modelrepo.build.model_build import render_repository
    from modelrepo.build.targets import TargetError

    output = Path(args.output or f"dist/{request.target}-{request.precision}/model_repository")
    try:
        render_repository(repository, output, request, force=args.force, config_only=args.config_only)
    except TargetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{request.model}: {request.target}/{request.precision} rendered into {output}"
          + (" without its plan (--config-only)" if args.config_only else ""))
    report = output / request.model / "1" / "build_report.json"
    if request.precision == "int8" and report.exists():
        data = json.loads(report.read_text())
        print(
            f"  int8 ({data['calibration']}): held-out mean cosine {data['held_out']['mean_cosine']:.4f}, "
            f"review_sentiment accuracy drop {100 * data['classifier_review_sentiment']['accuracy_drop']:.1f} points, "
            f"{len(data['nodes_kept_fp32'])} of {data['nodes_total']} MatMuls kept in FP32"
        )
    if request.target == "cpu":
        print(f"  serve it here: modelrepo serve --model-repository {output}")
    elif args.config_only:
        from modelrepo.build.model_build import engine_command

        print(f"  on a GPU host, build the plan with: {engine_command(request)}")
    else:
        print(f"  serve it in {pins().ngc_triton_image} on a GPU host (the embedded server here has no {request.target} backend)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from modelrepo.check import check_repository, pending_engines

    problems = check_repository(Path(args.model_repository))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        pending = pending_engines(Path(args.model_repository))
        print(f"{args.model_repository}: OK" + (f" (configs; {len(pending)} engine(s) to build on a GPU host)" if pending else ""))
        for where, command in pending.items():
            print(f"  pending: {where}: {command}")
    return 1 if problems else 0


def _tune(args: argparse.Namespace) -> int:
    from modelrepo.perf.tune import Load
    from modelrepo.perf.tune_command import run_tune

    if args.concurrency is None and args.request_rate is None:
        args.concurrency = 8
    load = Load(concurrency=args.concurrency, request_rate=args.request_rate)
    command = "modelrepo " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["tune"] else "modelrepo tune ..."
    try:
        result = run_tune(
            Path(args.model_repository), args.model, args.p99_ms, load, args.apply,
            Path(args.output) if args.output else None, args.instances, command, input_data=args.input_data,
            workload=args.workload,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if result.winner else 1


def _perf_analyzer(passthrough: list[str]) -> int:
    from modelrepo.perf.analyzer import exec_perf_analyzer

    exec_perf_analyzer(passthrough[1:] if passthrough[:1] == ["--"] else passthrough)
    return 0  # not reached: the process is replaced


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="modelrepo", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the repository on the embedded Triton until Ctrl-C")
    serve.add_argument("--model-repository", default=str(MODEL_REPOSITORY))
    serve.add_argument(
        "--host", default=LOOPBACK,
        help=f"interface every endpoint binds to (default {LOOPBACK}: this machine only; {ALL_INTERFACES}: all)",
    )
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument(
        "--model-control-mode",
        choices=["explicit", "none", "poll"],
        default="explicit",
        help="explicit (default) loads every model at start and allows config reloads with the admin key",
    )
    serve.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for READY")
    serve.add_argument(
        "--exit-on-error",
        choices=["true", "false"],
        default="true",
        help="true (default): a model that fails to load stops the server; false: the other models keep serving "
        "and /v2/health/ready stays false until it loads",
    )
    serve.add_argument(
        "--max-restarts", type=whole_number, default=RESTART_POLICY.max_restarts,
        help="restarts of a tritonserver that died by itself, within --restart-window, before giving up (exit "
        f"non-zero: 128+N for signal N) (default {RESTART_POLICY.max_restarts}; 0: never restart)",
    )
    serve.add_argument(
        "--restart-window", type=float, default=RESTART_POLICY.window_s, metavar="SECONDS",
        help=f"restarts older than this are forgotten: the backoff (1 s, doubling) starts again (default {RESTART_POLICY.window_s:g})",
    )
    serve.add_argument("--openai-port", type=int, default=9000,
                       help="port of the OpenAI-compatible gateway (/v1/chat/completions, /v1/embeddings, ...) on --host")
    serve.add_argument("--no-openai", action="store_true", help="serve Triton only, without the OpenAI gateway")
    serve.set_defaults(func=_serve)

    build = commands.add_parser(
        "build",
        help="build every artifact (skips steps whose inputs are unchanged); with MODEL, also render it for a target",
    )
    build.add_argument("model", nargs="?", help="model to build for --target/--precision (e.g. minilm_encoder)")
    build.add_argument("--model-repository", default=str(MODEL_REPOSITORY))
    build.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    build.add_argument(
        "--target", choices=(*TARGETS, *PIPELINE_TARGETS), default="cpu",
        help=f"engine target (default cpu; {', '.join(PIPELINE_TARGETS)}: a whole pipeline, e.g. llm)",
    )
    build.add_argument("--precision", choices=PRECISIONS, default="fp32", help="engine precision (default fp32)")
    build.add_argument("--calibration", choices=METHODS, default=DEFAULT_METHOD, help="INT8 calibration method")
    build.add_argument("--calib-samples", type=int, default=128, help="INT8 calibration texts/rows (default 128)")
    build.add_argument(
        "--accuracy-budget",
        default="cosine=0.99,accuracy_drop=0.01",
        help="INT8 budget: min mean cosine vs FP32 and max downstream accuracy drop (fraction)",
    )
    build.add_argument("--ort-tensorrt", action="store_true", help="onnxruntime target: enable its TensorRT accelerator")
    build.add_argument("--config-only", action="store_true",
                       help="tensorrt and tensorrt-llm targets: render the repository without building the engine (no GPU "
                            "needed); prints the command that builds it on a GPU host")
    build.add_argument("--output", help="repository to render into (default dist/TARGET-PRECISION/model_repository)")
    build.set_defaults(func=_build)

    check = commands.add_parser("check", help="validate the repository's configs statically")
    check.add_argument("--model-repository", default=str(MODEL_REPOSITORY))
    check.set_defaults(func=_check)

    tune = commands.add_parser(
        "tune", help="find the dynamic-batching config with the most throughput under a p99 budget (perf_analyzer)"
    )
    tune.add_argument("model", help="model or ensemble to tune (an ensemble's steps are tuned)")
    tune.add_argument("--p99-ms", type=float, required=True, help="p99 latency budget in milliseconds")
    load = tune.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, help="closed-loop clients (default 8)")
    load.add_argument("--request-rate", type=float, help="open-loop requests per second")
    tune.add_argument("--apply", action="store_true", help="write the winner into config.pbtxt (diff printed)")
    tune.add_argument("--instances", type=int, nargs="+", default=[1, 2], help="instance counts to consider")
    tune.add_argument("--output", help="report folder (default perf/results/tune-MODEL-TIMESTAMP)")
    tune.add_argument("--input-data", help="perf_analyzer --input-data JSON (default: the sample `add` kept, else texts/random)")
    tune.add_argument("--workload", choices=("reviews", "short", "mixed"),
                      help="a TEXT model's texts: long reviews (default), short queries, or mixed (80 %% short, 20 %% long; "
                           "with --request-rate an open-loop mixed workload)")
    tune.add_argument("--model-repository", default=str(MODEL_REPOSITORY))
    tune.set_defaults(func=_tune)

    from modelrepo.build.add.cli import add_parsers  # add, remove

    add_parsers(commands, MODEL_REPOSITORY)
    from modelrepo.rollout.cli import add_parsers as rollout_parsers

    rollout_parsers(commands, MODEL_REPOSITORY)

    bench = commands.add_parser("bench", help="measure one model (`bench NAME`), or record text_embedding's serving ratios, in perf/results/",
                                  add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="see `modelrepo bench --help`")

    perf = commands.add_parser(
        "perf-analyzer",
        help="run the bundled perf_analyzer 2.51.0 with its libraries found (arguments pass through)",
        add_help=False,
    )
    perf.add_argument("args", nargs=argparse.REMAINDER, help="perf_analyzer's own arguments")
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["perf-analyzer"]:  # everything after it belongs to perf_analyzer, flags included
        return _perf_analyzer(argv[1:])
    if argv[:1] == ["bench"]:
        from modelrepo.perf.bench import main as bench

        return bench(argv[1:])
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
