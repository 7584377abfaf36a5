"""Per-target rendering (cpu / onnxruntime / tensorrt), the TensorRT profile, and the GPU-less refusal."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from modelrepo.build import targets, tensorrt_plan
from modelrepo.build.model_build import BuildRequest, onnx_models, render_repository
from modelrepo.check import check_repository
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.model_config import read_config, repository_models

ENCODER = read_config(MODEL_REPOSITORY / "minilm_encoder")


def test_cpu_target_is_the_repository_config_itself():
    assert targets.render_config(ENCODER, "cpu", "fp32") == ENCODER
    assert targets.render_config(ENCODER, "cpu", "int8") == ENCODER  # the QDQ graph runs in the same runner


@pytest.mark.parametrize("target, platform, filename", [("onnxruntime", "onnxruntime_onnx", "model.onnx"),
                                                        ("tensorrt", "tensorrt_plan", "model.plan")])
def test_native_targets_keep_the_contract_and_change_only_the_engine(target, platform, filename):
    config = targets.render_config(ENCODER, target, "fp32")
    assert config.platform == platform and config.backend == "" and config.default_model_filename == filename
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        (t.name, t.data_type, list(t.dims)) for t in ENCODER.input
    ]
    assert config.output == ENCODER.output and config.max_batch_size == ENCODER.max_batch_size
    assert config.dynamic_batching == ENCODER.dynamic_batching and config.model_warmup == ENCODER.model_warmup
    assert not any(t.allow_ragged_batch for t in config.input)  # native backends do not pad for us
    assert not set(config.parameters) & set(targets.PYTHON_RUNNER_PARAMETERS)
    assert all(group.kind == group.KIND_GPU for group in config.instance_group)


def test_onnxruntime_target_can_enable_the_tensorrt_accelerator():
    plain = targets.render_config(ENCODER, "onnxruntime", "fp32")
    assert not plain.optimization.execution_accelerators.gpu_execution_accelerator
    for precision, ort_trt in (("fp16", False), ("int8", True)):
        config = targets.render_config(ENCODER, "onnxruntime", precision, ort_tensorrt=ort_trt)
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == precision.upper()


@pytest.mark.parametrize("target, precision, ort_trt, message", [
    ("cpu", "fp16", False, "fp16 needs a GPU target"),
    ("tensorrt", "fp32", True, "onnxruntime target only"),
    ("gpu", "fp32", False, "--target must be one of"),
    ("cpu", "int4", False, "--precision must be one of"),
])
def test_impossible_combinations_are_refused_with_the_reason(target, precision, ort_trt, message):
    with pytest.raises(targets.TargetError, match=message):
        targets.render_config(ENCODER, target, precision, ort_tensorrt=ort_trt)


def test_the_engine_profile_covers_max_batch_and_every_preferred_size():
    config = read_config(MODEL_REPOSITORY / "minilm_encoder")
    config.dynamic_batching.preferred_batch_size.extend([4, 16])
    profile = targets.engine_profile(config)
    assert (profile.min_batch, profile.opt_batch, profile.max_batch) == (1, 16, config.max_batch_size)
    assert all(profile.covers(size) for size in [*config.dynamic_batching.preferred_batch_size, config.max_batch_size])
    assert profile.shapes((-1, -1)) == ((1, 1), (16, 128), (64, 256))
    assert profile.shapes((-1, 3)) == ((1, 3), (16, 3), (64, 3))
    config.dynamic_batching.preferred_batch_size.append(128)
    with pytest.raises(targets.TargetError, match="preferred_batch_size .128. > max_batch_size 64"):
        targets.engine_profile(config)


def test_without_a_gpu_the_tensorrt_build_stops_with_one_sentence():
    if tensorrt_plan.visible_gpu() is not None:
        pytest.skip("this machine has a GPU")
    with pytest.raises(tensorrt_plan.TensorRTUnavailable) as caught:
        tensorrt_plan.require_tensorrt()
    message = str(caught.value)
    assert "no NVIDIA GPU is visible" in message and "TensorRT 10.5" in message and message.count("\n") == 0
    done = subprocess.run(
        [sys.executable, "-m", "modelrepo.cli", "build", "minilm_encoder", "--target", "tensorrt", "--precision", "int8"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {message}"]


def test_build_refuses_unknown_models_and_int8_without_calibration_data():
    with pytest.raises(targets.TargetError, match="no model 'nope'"):
        BuildRequest("nope").validate(MODEL_REPOSITORY)
    with pytest.raises(targets.TargetError, match="has no ONNX graph"):
        BuildRequest("minilm_tokenizer").validate(MODEL_REPOSITORY)
    with pytest.raises(targets.TargetError, match="INT8 calibration data is defined for minilm_encoder only"):
        BuildRequest("credit_members_fused", precision="int8").validate(MODEL_REPOSITORY)
    assert {"minilm_encoder", "credit_members_fused", "credit_member_0"} <= set(onnx_models(MODEL_REPOSITORY))


@pytest.mark.slow
def test_rendering_the_onnxruntime_target_changes_only_the_engine_model(tmp_path):
    output = render_repository(MODEL_REPOSITORY, tmp_path / "repo", BuildRequest("credit_members_fused", "onnxruntime"),
                               log=lambda *_: None)
    before, after = repository_models(MODEL_REPOSITORY), repository_models(output)
    assert set(before) == set(after)
    assert {name for name in before if before[name] != after[name]} == {"credit_members_fused"}
    for version in ("1", "2"):
        assert sorted(p.name for p in (output / "credit_members_fused" / version).iterdir()) == ["model.onnx"]
    assert after["credit_members_fused"].platform == "onnxruntime_onnx"
    assert check_repository(output) == []  # config IO still matches both graphs
    shutil.rmtree(output)
