"""`modelrepo build llm --target tensorrt-llm`: the same repository with TensorRT-LLM as `llm_engine`.

Pinned release: TensorRT-LLM 0.14.0, the version in NGC's `tritonserver:24.10-trtllm-python-py3`
(the same 24.10 / Triton 2.51 release as everything else here). In 0.14 the Triton path is the
C++ `tensorrtllm` backend serving a TensorRT engine with in-flight batching. 0.14 runs on Python 3.10
only, so the engine is never built in this project's 3.11 environment: the render writes the
repository (config-only), and the engine is built inside the pinned image by
`build/tensorrt_llm_engine.py` (the Dockerfile's llm stage, or the `docker run` command
`engine_build_command` gives, which `modelrepo build llm --target tensorrt-llm` runs on a GPU host).

What changes: only `llm_engine` — its config is rendered through the protobuf from our CPU config
(the tensor names are already TensorRT-LLM's), backend `tensorrtllm`, the engine folder in its
version directory. Its batch size stays the CPU config's, which the `llm` ensemble and `llm_bls`
share, and the engine is built for exactly that (`engine_limits.json`, written from the configs);
the bounded queue policy stays (Triton's scheduler enforces it before the backend sees a request).
Preprocessing, postprocessing, the `llm` ensemble, `llm_bls` and `llm_cached` are copied unchanged,
so clients do not notice the switch. No `${var}` templates anywhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from modelrepo.build import tensorrt_llm_engine
from modelrepo.build.outputs import copy_repository, render_into
from modelrepo.build.targets import TargetError
from modelrepo.build.tensorrt_llm_engine import LIMITS_FILE, EngineLimits
from modelrepo.build.tensorrt_plan import visible_gpu
from modelrepo.pins import pins
from modelrepo.python_backends.llm.engine import WEIGHTS_DIR
from modelrepo.triton.launch import DEFAULT_MODEL_REPOSITORY as DEFAULT_CONTAINER_REPOSITORY
from modelrepo.triton.model_config import ModelConfig, parameter, read_config, write_config

ENGINE_MODEL = "llm_engine"
ENGINE_DIR = "engine"
# CPU-engine parameters that mean nothing to the tensorrtllm backend
CPU_ONLY_PARAMETERS = ("max_active_sequences", "prefill_threads", "decode_threads", "max_prompt_tokens", "max_new_tokens",
                       "stuck_send_exit_s")
CONTAINER_SCRIPT = "/opt/modelrepo/tensorrt_llm_engine.py"


def engine_limits(cpu_config: ModelConfig) -> EngineLimits:
    """The engine's limits from the served CPU config: its batch size (the ensemble's) and token limits."""
    return EngineLimits(
        max_batch_size=cpu_config.max_batch_size,
        max_input_len=int(parameter(cpu_config, "max_prompt_tokens")),
        max_output_len=int(parameter(cpu_config, "max_new_tokens")),
    )


def require_gpu() -> None:
    if visible_gpu() is None:
        raise TargetError(
            f"--target tensorrt-llm builds its engine on an NVIDIA GPU in {pins().ngc_trtllm_image}; this machine "
            "has no visible GPU (add --config-only to render the repository, then run the printed command on a GPU host)"
        )


def engine_build_command(output: Path, repository: Path) -> list[str]:
    """`docker run` of the pinned TensorRT-LLM image (Python 3.10) building the engine into `output`."""
    version_dir = Path(output).resolve() / ENGINE_MODEL / "1"
    weights = (Path(repository).resolve() / ENGINE_MODEL / "1" / WEIGHTS_DIR)
    return [
        "docker", "run", "--rm", "--gpus", "all",
        "-v", f"{weights}:/hf:ro",
        "-v", f"{version_dir}:/engine",
        "-v", f"{Path(tensorrt_llm_engine.__file__).resolve()}:{CONTAINER_SCRIPT}:ro",
        pins().ngc_trtllm_image,
        "python3", CONTAINER_SCRIPT, "/hf", f"/engine/{ENGINE_DIR}", "--expect-version", pins().tensorrt_llm,
    ]


def engine_config(cpu_config: ModelConfig, limits: EngineLimits, engine_path: str) -> ModelConfig:
    """llm_engine's config for the tensorrtllm backend, derived from the CPU config (same tensors)."""
    config = ModelConfig()
    config.CopyFrom(cpu_config)
    config.backend = "tensorrtllm"
    config.max_batch_size = limits.max_batch_size
    config.model_transaction_policy.decoupled = True
    # The queue policy stays (bounded: Triton refuses beyond it); the batch aims at the engine's size.
    del config.dynamic_batching.preferred_batch_size[:]
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
    container_repository: str = DEFAULT_CONTAINER_REPOSITORY,
) -> Path:
    """A complete repository in `output` whose llm_engine is TensorRT-LLM, with `engine_limits.json`
    in its version folder and no engine yet (`engine_build_command` builds it in the pinned image)."""
    repository, output = Path(repository), Path(output)
    cpu_config = read_config(repository / ENGINE_MODEL)
    limits = engine_limits(cpu_config)
    engine_path = f"{container_repository}/{ENGINE_MODEL}/1/{ENGINE_DIR}"

    def fill(folder: Path) -> None:
        copy_repository(repository, folder)
        version_dir = folder / ENGINE_MODEL / "1"
        shutil.rmtree(version_dir)
        version_dir.mkdir()
        limits.write(version_dir / LIMITS_FILE)
        write_config(folder / ENGINE_MODEL, engine_config(cpu_config, limits, engine_path))

    return render_into(output, repository, fill)
