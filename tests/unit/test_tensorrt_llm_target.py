"""The TensorRT-LLM target: its llm_engine config, and the one-sentence refusal without a GPU."""

import subprocess
import sys

import pytest

from modelrepo.build import tensorrt_llm_target as trtllm
from modelrepo.build.tensorrt_plan import visible_gpu
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.model_config import read_config


def test_the_engine_config_keeps_every_tensor_and_only_swaps_the_backend():
    cpu = read_config(MODEL_REPOSITORY / "llm_engine")
    limits = trtllm.engine_limits(cpu)
    assert (limits.max_batch_size, limits.max_input_len, limits.max_output_len) == (cpu.max_batch_size, 1024, 512)
    gpu = trtllm.engine_config(cpu, limits, "/models/llm_engine/1/engine")
    assert gpu.backend == "tensorrtllm" and gpu.model_transaction_policy.decoupled
    assert [(t.name, t.data_type, list(t.dims)) for t in gpu.input] == [(t.name, t.data_type, list(t.dims)) for t in cpu.input]
    assert [t.name for t in gpu.output] == [t.name for t in cpu.output] == ["output_ids", "sequence_length"]
    assert gpu.max_batch_size == cpu.max_batch_size and list(gpu.dynamic_batching.preferred_batch_size) == [cpu.max_batch_size]
    assert gpu.dynamic_batching.default_queue_policy == cpu.dynamic_batching.default_queue_policy  # bounded, as on cpu
    parameters = {key: value.string_value for key, value in gpu.parameters.items()}
    assert parameters["gpt_model_type"] == "inflight_fused_batching"
    assert parameters["gpt_model_path"] == "/models/llm_engine/1/engine"
    assert parameters["exclude_input_in_output"] == "true"
    assert not set(trtllm.CPU_ONLY_PARAMETERS) & set(parameters)
    assert "${" not in str(gpu)


def test_tensor_names_are_tensorrt_llms():
    names = {t.name for t in read_config(MODEL_REPOSITORY / "llm_engine").input}
    assert {"input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "stop_words_list",
            "runtime_top_k", "runtime_top_p", "temperature", "random_seed", "streaming", "stop"} <= names
    public = {t.name for t in read_config(MODEL_REPOSITORY / "llm").input}
    assert {"text_input", "max_tokens", "stream", "temperature", "top_p", "top_k", "stop_words", "random_seed",
            "exclude_input_in_output", "min_length", "end_id", "pad_id"} <= public
    for model in ("llm_bls", "llm_cached"):
        assert public - {"stream"} <= {t.name for t in read_config(MODEL_REPOSITORY / model).input}


def test_the_engine_script_runs_on_the_images_python_3_10_and_imports_nothing_of_ours():
    import ast
    from pathlib import Path

    from modelrepo.build import tensorrt_llm_engine

    source = Path(tensorrt_llm_engine.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 10))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__", "tensorrt_llm"}, imported


def test_the_engine_script_refuses_without_the_rendered_limits(tmp_path):
    done = subprocess.run([sys.executable, trtllm.tensorrt_llm_engine.__file__, str(tmp_path / "hf"), str(tmp_path / "1" / "engine")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "engine_limits.json is missing: render the repository first" in done.stderr


def test_config_only_renders_the_repository_without_an_engine_and_without_a_gpu(tmp_path):
    output = trtllm.render(MODEL_REPOSITORY, tmp_path / "repo")
    config = read_config(output / "llm_engine")
    assert config.backend == "tensorrtllm"
    assert config.parameters["gpt_model_path"].string_value == "/models/llm_engine/1/engine"
    # the engine is built in the TensorRT-LLM image, from these limits
    assert [p.name for p in (output / "llm_engine" / "1").iterdir()] == ["engine_limits.json"]
    for model in ("llm", "llm_bls", "llm_preprocessing", "text_embedding"):
        assert (output / model / "config.pbtxt").read_text() == (MODEL_REPOSITORY / model / "config.pbtxt").read_text()
