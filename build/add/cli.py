"""The `add` and `remove` subcommands (kept here so modelrepo/cli.py only registers them)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from modelrepo.build.add.recipes import DEFAULT_INSTANCES, DEFAULT_LATENCY_BUDGET_MS, TASKS
from modelrepo.build.targets import PRECISIONS

ADD_DESCRIPTION = """Add a model of your own to the repository, recognised by what SOURCE is: an ONNX file;
a TorchScript file (--sample gives the input shapes); a scikit-learn estimator or pipeline
(.joblib / .pkl); an XGBoost (.json / .ubj) or LightGBM (.txt) model file; a Hugging Face
transformers folder (sequence or token classifier, encoder, sentence-transformers). The model is exported
to ONNX, run on the sample through the serving code and compared with its own framework, then
written with its config, warm-up, labels, metrics and a build report (NAME/build_report.md).
WARNING: loading a .joblib / .pkl file runs the code inside it: add only a file you trust; this
command loads only the one file you name."""


def add_parsers(commands, default_repository: Path) -> None:
    add = commands.add_parser("add", help="add your own model (ONNX, TorchScript, scikit-learn, XGBoost, LightGBM)",
                              description=ADD_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add.add_argument("name", metavar="NAME", help="the model's name in the repository (a plain folder name)")
    add.add_argument("source", metavar="SOURCE", type=Path,
                     help="the model file (a pickle runs code when loaded: name only a file you trust)")
    add.add_argument("--task", choices=TASKS,
                     help="override what SOURCE is served as (e.g. classification for a graph that outputs class scores)")
    add.add_argument("--sample", type=Path,
                     help="rows the model takes (.npy, .npz per input, .csv): parity, warm-up and tuning data")
    add.add_argument("--labels", help="class names L1,L2,... in the model's class order")
    add.add_argument("--max-batch-size", type=int, default=64, help="largest dynamic batch (default 64)")
    add.add_argument("--instances", type=int, default=DEFAULT_INSTANCES, help=f"model instances (default {DEFAULT_INSTANCES})")
    add.add_argument("--precision", choices=PRECISIONS, default="fp32",
                     help="fp32 (default) or int8 (QDQ, MatMul nodes: transformers folders); fp16 is not available yet")
    add.add_argument("--calibration-data", type=Path,
                     help="--precision int8: rows like the sample (.npy/.npz/.csv), or texts for a text model")
    add.add_argument("--accuracy-budget",
                     help="--precision int8: against FP32 on the sample, min mean cosine and max share of changed top "
                          "classes (default cosine=0.99,accuracy_drop=0.01)")
    add.add_argument("--latency-budget-ms", type=float, default=DEFAULT_LATENCY_BUDGET_MS,
                     help=f"served p99 budget (default {DEFAULT_LATENCY_BUDGET_MS:g}): the config's latency_budget_ms "
                          f"(rollout gates) and NAME/prometheus-rule.yaml (the latency alerts)")
    add.add_argument("--version", type=int, metavar="N",
                     help="write SOURCE as version N (2, 3, ...) of the model NAME that `add` wrote before, beside the "
                          "serving version and not served yet (`modelrepo rollout start NAME --version N` serves it)")
    add.add_argument("--model-repository", default=str(default_repository))
    add.add_argument("--force", action="store_true", help="replace a model that `modelrepo add` wrote under NAME")
    add.set_defaults(func=add_command)

    remove = commands.add_parser("remove", help="take out everything `modelrepo add` wrote for NAME")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--model-repository", default=str(default_repository))
    remove.set_defaults(func=remove_command)


def _refused(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def add_command(args: argparse.Namespace) -> int:
    from modelrepo.build.add.command import add_model
    from modelrepo.build.add.recipes import AddError, AddRequest

    # Tracing chatter from the exporters: the parity check on the sample is what guards the graph.
    warnings.filterwarnings("ignore", module=r"(torch|transformers|sklearn|skl2onnx|onnxmltools)(\.|$)")
    labels = tuple(label.strip() for label in args.labels.split(",")) if args.labels else None
    request = AddRequest(args.name, args.source, args.task, args.sample, labels, args.max_batch_size, args.instances,
                         args.precision, args.force, args.calibration_data, args.accuracy_budget, args.latency_budget_ms,
                         args.version)
    try:
        report = add_model(request, Path(args.model_repository))
    except AddError as err:
        return _refused(err)
    print_summary(args.name, report, args.max_batch_size)
    return 0


def print_summary(name: str, report: dict, max_batch_size: int) -> None:
    for key, limit in report.items():
        if key.startswith("parity_") and key.endswith("_limit"):
            tensor = key.removeprefix("parity_").removesuffix("_limit")
            measure, value = next((k, v) for k, v in report.items() if k.startswith(f"parity_{tensor}_") and k != key)
            what = measure.removeprefix(f"parity_{tensor}_").replace("_", " ")
            digits = ".6f" if "cosine" in what else ".3g"
            held = "the INT8 budget applies instead" if report.get("precision") == "int8" else f"limit {limit:{digits}}"
            print(f"  parity with the source framework on the sample: {tensor} {what} {value:{digits}} ({held})")
    if report.get("precision") == "int8":
        print(f"  int8 vs fp32 on the sample: mean cosine {report['int8_vs_fp32_mean_cosine']:.6f} (budget "
              f"{report['budget_min_mean_cosine']}), top class changed {report['int8_vs_fp32_top_class_changed']:.2%} (budget "
              f"{report['budget_max_accuracy_drop']:.2%}); {report['nodes_int8']} of {report['nodes_total']} nodes int8")
    print(f"  latency in process (median): batch 1 {report['latency_batch_1_median_ms']:.2f} ms, batch {max_batch_size} "
          f"{report[f'latency_batch_{max_batch_size}_median_ms']:.2f} ms; report: {name}/build_report.md")


def remove_command(args: argparse.Namespace) -> int:
    from modelrepo.build.add.command import remove_model
    from modelrepo.build.add.recipes import AddError

    try:
        remove_model(args.name, Path(args.model_repository))
    except AddError as err:
        return _refused(err)
    return 0
