"""`modelrepo build MODEL --target T --precision P`: export → calibrate → compile → render.

- export: the repository build (`build_all`) exports every ONNX graph and checks its parity;
- calibrate (int8): a QDQ graph within the accuracy budget, by the calibration step the model's
  registry entry defines (build/registry.py; minilm_encoder's in build/shipped.py), cached by its inputs;
- compile (tensorrt): a plan for the pinned TensorRT, with its optimisation profile and metadata;
- render: a complete repository in `--output` — every other model copied unchanged (ensembles and
  pre/post-processing never change with the target), this model's config rendered for the target.

The project's own repository stays the cpu/fp32 one that `make serve` runs here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from modelrepo.build import minilm_int8, quantize, registry, targets, tensorrt_plan
from modelrepo.build.outputs import check_output, copy_repository, render_into
from modelrepo.build.reports import REPORT_JSON, REPORT_MD
from modelrepo.paths import cache_dir
from modelrepo.triton.model_config import read_config, write_config

RENDER_RECORD = "target.json"


@dataclass(frozen=True)
class BuildRequest:
    model: str
    target: str = "cpu"
    precision: str = "fp32"
    calibration: str = quantize.DEFAULT_METHOD
    calib_samples: int = 128
    budget: minilm_int8.AccuracyBudget = minilm_int8.AccuracyBudget()
    ort_tensorrt: bool = False

    def validate(self, repository: Path) -> None:
        targets.check_combination(self.target, self.precision, self.ort_tensorrt)
        model_dir = repository / self.model
        if not (model_dir / "config.pbtxt").exists():
            raise targets.TargetError(f"no model {self.model!r} in {repository}")
        if not onnx_versions(model_dir):
            raise targets.TargetError(
                f"{self.model} has no ONNX graph to compile; models with one: {', '.join(onnx_models(repository))}"
            )
        if self.precision == "int8" and calibration_step(repository, self.model) is None:
            defined = registry.int8_models(repository)
            raise targets.TargetError(
                (f"INT8 calibration data is defined for {', '.join(defined)} only" if defined else
                 "no model of this repository has INT8 calibration data defined")
                + "; a model of your own gets its INT8 graph from `modelrepo add NAME SOURCE --precision int8 "
                "--calibration-data FILE --force`")
        if self.calibration not in quantize.METHODS:
            raise targets.TargetError(f"--calibration must be one of {quantize.METHODS}")


def calibration_step(repository: Path, model: str):
    """The registry's INT8 calibration of `model`, or None where no calibration data is defined for it."""
    entry = registry.entry_for(repository, model)
    return entry.int8.get(model) if entry else None


def onnx_versions(model_dir: Path) -> list[Path]:
    return sorted(path.parent for path in model_dir.glob(f"*/{targets.ONNX_FILENAME}") if path.parent.name.isdigit())


def onnx_models(repository: Path) -> list[str]:
    return sorted(path.name for path in repository.iterdir() if path.is_dir() and onnx_versions(path))


def render_repository(repository: Path, output: Path, request: BuildRequest, force: bool = False, log=print,
                      config_only: bool = False) -> Path:
    """A full repository in `output` with `request.model` built for its target and precision.

    `config_only` (tensorrt): everything but the plan, which needs a GPU; the render record names the
    profile the plan will be built with, so `modelrepo check` verifies the batch sizes all the same."""
    repository, output = Path(repository), Path(output)
    request.validate(repository)
    check_output(output, repository)  # before minutes of calibration
    if request.target == "tensorrt" and not config_only:
        tensorrt_plan.require_tensorrt()  # before anything is written: one sentence if it cannot work
    if config_only and request.target != "tensorrt":
        raise targets.TargetError("--config-only applies to the tensorrt target (its plan needs a GPU); "
                                  f"the {request.target} target renders whole without one")

    sources = {version.name: version / targets.ONNX_FILENAME for version in onnx_versions(repository / request.model)}
    reports: list[Path] = []
    if request.precision == "int8":
        step = calibration_step(repository, request.model)(repository, request, force=force)
        log(f"int8 {request.model:<14} {'unchanged' if step.cached else 'built'}: {step.output_dir}")
        sources = {"1": step.output_dir / targets.ONNX_FILENAME}
        reports = [step.output_dir / REPORT_JSON, step.output_dir / REPORT_MD]
    cpu_config = read_config(repository / request.model)
    config = targets.render_config(cpu_config, request.target, request.precision, request.ort_tensorrt)
    profile = targets.engine_profile(cpu_config) if request.target == "tensorrt" else None

    def fill(folder: Path) -> None:
        copy_repository(repository, folder)
        model_dir = folder / request.model
        engines = {}
        for version in sorted(path.name for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit()):
            version_dir = model_dir / version
            shim = version_dir / "model.py"
            shim_text = shim.read_text() if request.target == "cpu" and shim.exists() else None
            shutil.rmtree(version_dir)
            if version not in sources:
                continue  # a version without a graph for this precision is not served
            version_dir.mkdir()
            if shim_text is not None:
                shim.write_text(shim_text)
            for report in reports:
                shutil.copy2(report, version_dir / report.name)
            if request.target == "tensorrt" and not config_only:
                engines[version] = tensorrt_plan.build_datacenter_plan(
                    sources[version], version_dir, profile, request.precision == "fp16",
                    cache_dir() / "tensorrt" / "timing.cache",
                )
            elif request.target != "tensorrt":
                shutil.copy2(sources[version], version_dir / targets.ONNX_FILENAME)
        write_config(model_dir, config)
        record = {
            "model": request.model,
            "target": request.target,
            "precision": request.precision,
            "calibration": request.calibration if request.precision == "int8" else None,
            "ort_tensorrt": request.ort_tensorrt,
            "source_repository": str(repository),
            "engines": engines,
            "config_only": config_only,
            "profile": profile.as_dict() if profile else None,
            "engine_command": engine_command(request) if config_only else None,
        }
        (model_dir / RENDER_RECORD).write_text(json.dumps(record, indent=2))

    return render_into(output, repository, fill)


def engine_command(request: BuildRequest) -> str:
    """What builds the pending plan on a GPU host (the same render, without --config-only)."""
    words = ["modelrepo", "build", request.model, "--target", request.target, "--precision", request.precision]
    if request.precision == "int8":
        words += ["--calibration", request.calibration, "--calib-samples", str(request.calib_samples)]
    return " ".join(words) + " --output DIR"
