"""Engine targets: one model's config rendered for cpu / onnxruntime / tensorrt, ensembles untouched.

The repository's own config of an ONNX model is the `cpu` target: a Python model running the graph
with onnxruntime (what the embedded server here can load). The other targets are rendered from it
through the protobuf, keeping name, batching, inputs, outputs and warm-up; only the engine changes:

- `onnxruntime`: Triton's native onnxruntime backend (`platform: onnxruntime_onnx`) in the NGC image,
  on the GPU, optionally with onnxruntime's TensorRT execution accelerator;
- `tensorrt`: a TensorRT plan (`platform: tensorrt_plan`) built for the config's batch sizes.

Ragged batching is a Python-runner feature (it pads inside the model): native backends batch only
requests of equal shape, so `allow_ragged_batch` is dropped there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from modelrepo.triton.model_config import ModelConfig

TARGETS = ("cpu", "onnxruntime", "tensorrt")
# Targets a registry entry renders as a whole pipeline (build/shipped.py); named here so the CLI need not import the entries.
PIPELINE_TARGETS = ("tensorrt-llm",)
PRECISIONS = ("fp32", "fp16", "int8")
PYTHON_RUNNER_PARAMETERS = ("intra_op_threads", "ragged_inputs", "ragged_run_cost_tokens", "onnx_file")
ONNX_FILENAME = "model.onnx"
PLAN_FILENAME = "model.plan"
ENGINE_METADATA = "engine.json"
ORT_TRT_WORKSPACE_BYTES = 1 << 30


class TargetError(ValueError):
    """A target/precision combination that cannot work, with the reason."""


@dataclass(frozen=True)
class EngineProfile:
    """One TensorRT optimisation profile: batch range covering every size the batcher can form."""

    min_batch: int
    opt_batch: int
    max_batch: int
    min_sequence: int = 1
    opt_sequence: int = 128
    max_sequence: int = 256

    def shapes(self, dims: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """min/opt/max shapes for a network input whose dims are (-1 batch, then fixed or -1 sequence)."""

        def at(batch: int, sequence: int) -> tuple[int, ...]:
            return (batch, *(sequence if d == -1 else d for d in dims[1:]))

        return (
            at(self.min_batch, self.min_sequence),
            at(self.opt_batch, self.opt_sequence),
            at(self.max_batch, self.max_sequence),
        )

    def covers(self, batch_size: int) -> bool:
        return self.min_batch <= batch_size <= self.max_batch

    def as_dict(self) -> dict:
        return asdict(self)


def engine_profile(config: ModelConfig, max_sequence: int = 256) -> EngineProfile:
    """min 1, max = max_batch_size, opt = the largest preferred batch size (what the batcher aims for)."""
    if config.max_batch_size < 1:
        raise TargetError(f"{config.name}: a TensorRT profile needs max_batch_size ≥ 1 (dynamic batching)")
    preferred = list(config.dynamic_batching.preferred_batch_size)
    too_big = [size for size in preferred if size > config.max_batch_size]
    if too_big:
        raise TargetError(f"{config.name}: preferred_batch_size {too_big} > max_batch_size {config.max_batch_size}")
    opt = max(preferred) if preferred else config.max_batch_size
    return EngineProfile(1, opt, config.max_batch_size, 1, min(128, max_sequence), max_sequence)


def check_combination(target: str, precision: str, ort_tensorrt: bool = False) -> None:
    if target not in TARGETS:
        raise TargetError(f"--target must be one of {TARGETS}, got {target!r}")
    if precision not in PRECISIONS:
        raise TargetError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if target == "cpu" and precision == "fp16":
        raise TargetError("--precision fp16 needs a GPU target (onnxruntime or tensorrt); the cpu target runs fp32 or int8")
    if ort_tensorrt and target != "onnxruntime":
        raise TargetError("--ort-tensorrt applies to the onnxruntime target only")


def render_config(cpu_config: ModelConfig, target: str, precision: str, ort_tensorrt: bool = False) -> ModelConfig:
    """The model's config for `target`, derived from its cpu-target config (which is left unchanged)."""
    check_combination(target, precision, ort_tensorrt)
    config = ModelConfig()
    config.CopyFrom(cpu_config)
    if target == "cpu":
        return config
    config.ClearField("backend")
    for key in PYTHON_RUNNER_PARAMETERS:
        if key in config.parameters:
            del config.parameters[key]
    for tensor in config.input:
        tensor.ClearField("allow_ragged_batch")
    for group in config.instance_group:
        group.kind = group.KIND_GPU
        group.count = 1  # one execution context per GPU; raise it with `modelrepo tune`
    if target == "onnxruntime":
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = ONNX_FILENAME
        if ort_tensorrt or precision == "fp16":
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            accelerator.parameters["precision_mode"] = precision.upper()
            accelerator.parameters["max_workspace_size_bytes"] = str(ORT_TRT_WORKSPACE_BYTES)
            accelerator.parameters["trt_engine_cache_enable"] = "1"
    else:
        config.platform = "tensorrt_plan"
        config.default_model_filename = PLAN_FILENAME
    return config
