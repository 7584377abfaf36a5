"""`modelrepo build llm --target tensorrt-llm`: the same repository with TensorRT-LLM as `llm_engine`.

Pinned release: TensorRT-LLM 0.14.0, the version in NGC's `tritonserver:24.10-trtllm-python-py3`
(the same 24.10 / Triton 2.51 release as everything else here). In 0.14 the Triton path is the
C++ `tensorrtllm` backend serving a TensorRT engine with in-flight batching; the PyTorch / LLM-API
backend for Triton arrived in later releases. The engine is built with 0.14's recommended LLM API
(`tensorrt_llm.LLM(model=<HF folder>, build_config=...)` then `.save(dir)`), which replaces the
legacy convert_checkpoint.py + trtllm-build pair; the model is the same SmolLM2 safetensors folder
`modelrepo build` saves for the CPU engine.

What changes: only `llm_engine` — its config is rendered through the protobuf from our CPU config
(the tensor names are already TensorRT-LLM's), backend `tensorrtllm`, the engine folder in its
version directory. Preprocessing, postprocessing, the `llm` ensemble, `llm_bls` and `llm_cached`
are copied unchanged, so clients do not notice the switch. No `${var}` templates anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from modelrepo.build.artifacts import STAMP_FILENAME
from modelrepo.build.targets import TargetError
from modelrepo.build.tensorrt_llm_engine import EngineLimits, build_engine
from modelrepo.build.tensorrt_plan import visible_gpu
from modelrepo.pins import pins
from modelrepo.python_backends.llm.engine import WEIGHTS_DIR
from modelrepo.triton.launch import DEFAULT_MODEL_REPOSITORY as DEFAULT_CONTAINER_REPOSITORY
from modelrepo.triton.model_config import ModelConfig, read_config, write_config

ENGINE_MODEL = "llm_engine"
ENGINE_DIR = "engine"
# CPU-engine parameters that mean nothing to the tensorrtllm backend
CPU_ONLY_PARAMETERS = ("max_active_sequences", "prefill_threads", "decode_threads", "max_prompt_tokens", "max_new_tokens")


def require_tensorrt_llm():
    """The `tensorrt_llm` module of the pinned release on a GPU, or TargetError in one sentence."""
    wanted = pins().tensorrt_llm
    if visible_gpu() is None:
        raise TargetError(
            f"--target tensorrt-llm needs an NVIDIA GPU with TensorRT-LLM {wanted} "
            f"(image {pins().ngc_trtllm_image}); this machine has no visible GPU"
        )
    try:
        import tensorrt_llm
    except ImportError:
        raise TargetError(f"--target tensorrt-llm needs TensorRT-LLM {wanted} (Python module `tensorrt_llm`), which is not installed here") from None
    if tensorrt_llm.__version__ != wanted:
        raise TargetError(f"--target tensorrt-llm needs TensorRT-LLM {wanted}, found {tensorrt_llm.__version__}")
    return tensorrt_llm


def engine_config(cpu_config: ModelConfig, limits: EngineLimits, engine_path: str) -> ModelConfig:
    """llm_engine's config for the tensorrtllm backend, derived from the CPU config (same tensors)."""
    config = ModelConfig()
    config.CopyFrom(cpu_config)
    config.backend = "tensorrtllm"
    config.max_batch_size = limits.max_batch_size
    config.model_transaction_policy.decoupled = True
    config.dynamic_batching.Clear()
    config.dynamic_batching.preferred_batch_size.append(limits.max_batch_size)
    for key in CPU_ONLY_PARAMETERS:
        if key in config.parameters:
            del config.parameters[key]
    for key, value in {
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": engine_path,
        "batching_strategy": "inflight_fused_batching",
        "batch_scheduler_policy": "max_utilization",
        "kv_cache_free_gpu_mem_fraction": str(limits.kv_cache_free_gpu_mem_fraction),
        "exclude_input_in_output": cpu_config.parameters["exclude_input_in_output"].string_value or "true",
        "enable_chunked_context": "false",
    }.items():
        config.parameters[key].string_value = value
    return config


def render(
    repository: Path,
    output: Path,
    limits: EngineLimits = EngineLimits(),
    container_repository: str = DEFAULT_CONTAINER_REPOSITORY,
    config_only: bool = False,
) -> Path:
    """A complete repository in `output` whose llm_engine is TensorRT-LLM; fails before writing anything
    when no GPU / TensorRT-LLM is there. `config_only` renders everything but the engine folder, which
    the Dockerfile's LLM stage then builds with tensorrt_llm_engine.py in the TensorRT-LLM image."""
    repository, output = Path(repository), Path(output)
    if not config_only:
        require_tensorrt_llm()
    if output.resolve() == repository.resolve():
        raise TargetError("--output must differ from the source repository (which stays the CPU one)")
    if output.exists():
        shutil.rmtree(output)
    shutil.copytree(repository, output, ignore=shutil.ignore_patterns("__pycache__", STAMP_FILENAME))
    version_dir = output / ENGINE_MODEL / "1"
    shutil.rmtree(version_dir)
    version_dir.mkdir()
    if not config_only:
        report = build_engine(repository / ENGINE_MODEL / "1" / WEIGHTS_DIR, version_dir / ENGINE_DIR, limits)
        (version_dir / "engine.json").write_text(json.dumps(report, indent=2))
    engine_path = f"{container_repository}/{ENGINE_MODEL}/1/{ENGINE_DIR}"
    write_config(output / ENGINE_MODEL, engine_config(read_config(repository / ENGINE_MODEL), limits, engine_path))
    return output
