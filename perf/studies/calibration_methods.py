"""INT8 calibration methods compared on the MiniLM encoder: accuracy kept vs FP32, and CPU speed.

    .venv/bin/python -m modelrepo.perf.studies.calibration_methods [--calib-samples N]

For each method (max, entropy, percentile) runs the same build step as
`modelrepo build minilm_encoder --precision int8 --calibration METHOD` (cached per method in
.cache/build/), i.e. calibration on training reviews, sensitivity search to the accuracy budget,
verification on the 1,000 held-out test reviews. Writes perf/results/calibration_methods.{json,md}.
"""

from __future__ import annotations

import argparse
import sys

from modelrepo.build.minilm_int8 import AccuracyBudget
from modelrepo.build.model_build import BuildRequest
from modelrepo.build.quantize import METHODS
from modelrepo.build.shipped import int8_encoder_step
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.results import record


def row(method: str, report: dict) -> str:
    held, clf, speed = report["held_out"], report["classifier_review_sentiment"], report["ort_cpu_speed"]
    return (
        f"| {method} | {report['score_every_node_int8']:.4f} | {report['nodes_int8']}/{report['nodes_total']} | "
        f"{held['mean_cosine']:.4f} | {held['min_cosine']:.4f} | {held['nn_agreement_at_1']:.3f} | "
        f"{clf['int8_accuracy']:.3f} ({100 * clf['accuracy_drop']:+.1f}) | {clf['roc_auc_drop']:+.4f} | "
        f"{speed['batch1']['int8_over_fp32']:.2f}x | {speed['batch16']['int8_over_fp32']:.2f}x | "
        f"{'yes' if report['budget_met'] else 'no'} |"
    )


def main(argv: list[str] | None = None) -> int:
    args_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args_parser.add_argument("--calib-samples", type=int, default=128)
    args = args_parser.parse_args(argv)
    budget = AccuracyBudget()
    reports = {}
    for method in METHODS:
        request = BuildRequest("minilm_encoder", precision="int8", calibration=method, calib_samples=args.calib_samples)
        reports[method] = int8_encoder_step(MODEL_REPOSITORY, request).report
    body = [
        f"Budget: held-out mean cosine ≥ {budget.min_mean_cosine}, review_sentiment accuracy drop ≤ "
        f"{100 * budget.max_accuracy_drop:.0f} point. {args.calib_samples} calibration texts (training reviews); "
        "held-out: the 1,000 test reviews; accuracy: review_sentiment's head on FP32 vs INT8 embeddings.",
        "",
        "| calibration | every MatMul INT8: cosine (search texts) | MatMuls INT8 | held-out mean cos | min cos | "
        "NN agreement@1 | accuracy (drop, points) | ROC-AUC drop | ORT speed b1 INT8/FP32 | b16 | budget met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[row(method, report) for method, report in reports.items()],
        "",
        f"FP32 reference: accuracy {next(iter(reports.values()))['classifier_review_sentiment']['fp32_accuracy']:.3f}.",
        "",
        "Nodes kept in FP32 per method (most sensitive first):",
        "",
        *[f"- {method}: " + ", ".join(f"`{n.removeprefix('/encoder/encoder/')}`" for n in r["nodes_kept_fp32"])
          for method, r in reports.items()],
    ]
    print(record(
        "calibration_methods",
        "INT8 calibration methods on all-MiniLM-L6-v2 (QDQ, onnxruntime CPU)",
        " ".join(["python -m modelrepo.perf.studies.calibration_methods", *(argv if argv is not None else sys.argv[1:])]).strip(),
        {"budget": vars(budget), "calib_samples": args.calib_samples, "reports": reports},
        body,
        note="Speed: onnxruntime CPU, 1 thread (as served), 64 test reviews, after warm-up.",
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
