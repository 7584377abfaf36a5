"""Every repository the build can render passes `modelrepo check`: cpu / onnxruntime / tensorrt ×
fp32 / fp16 / int8 (tensorrt config-only: its plan needs a GPU) and tensorrt-llm (config-only: its
engine is built in the TensorRT-LLM image), through the same CLI a user runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelrepo.build import targets
from modelrepo.build.outputs import MARKER
from modelrepo.build.tensorrt_llm_engine import LIMITS_FILE
from modelrepo.check import check_repository, pending_engines
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.pins import pins
from modelrepo.triton.model_config import read_config, repository_models
from tests.conftest import require_built_repository

pytestmark = pytest.mark.slow
COMBINATIONS = [(t, p) for t in targets.TARGETS for p in targets.PRECISIONS]


def modelrepo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelrepo.cli", *args], capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def built(request):
    require_built_repository()
    if any(p == "int8" for _, p in COMBINATIONS):
        request.getfixturevalue("int8_encoder")  # calibrated once per session, shared with the INT8 serving tests


@pytest.mark.parametrize(("target", "precision"), COMBINATIONS)
def test_every_target_and_precision_renders_a_repository_that_passes_check(built, target, precision, tmp_path):
    output = tmp_path / "repository"
    args = ["build", "minilm_encoder", "--target", target, "--precision", precision, "--output", str(output)]
    if target == "tensorrt":
        args.append("--config-only")
    done = modelrepo(*args)
    if (target, precision) == ("cpu", "fp16"):  # refused by rule, in one sentence
        assert done.returncode == 2 and not output.exists()
        assert done.stderr.strip().splitlines() == [
            "error: --precision fp16 needs a GPU target (onnxruntime or tensorrt); the cpu target runs fp32 or int8"]
        return
    assert done.returncode == 0, done.stderr
    assert check_repository(output) == []
    assert (output / MARKER).exists()
    config = read_config(output / "minilm_encoder")
    assert config.platform == {"cpu": "", "onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}[target]
    # the ensembles and pre/post-processing never change with the target
    before, after = repository_models(MODEL_REPOSITORY), repository_models(output)
    assert {name for name in before if before[name] != after[name]} <= {"minilm_encoder"}
    if target == "tensorrt":
        record = json.loads((output / "minilm_encoder" / "target.json").read_text())
        assert record["config_only"] and record["profile"]["max_batch"] == config.max_batch_size
        assert list(pending_engines(output)) == ["minilm_encoder version 1"]
        assert "modelrepo build minilm_encoder --target tensorrt" in done.stdout
    else:
        assert pending_engines(output) == {}
    shutil.rmtree(output)


def test_the_tensorrt_llm_rendering_passes_check_with_consistent_batch_sizes(built, tmp_path):
    output = tmp_path / "repository"
    done = modelrepo("build", "llm", "--target", "tensorrt-llm", "--config-only", "--output", str(output))
    assert done.returncode == 0, done.stderr
    assert check_repository(output) == []
    engine, ensemble = read_config(output / "llm_engine"), read_config(output / "llm")
    limits = json.loads((output / "llm_engine" / "1" / LIMITS_FILE).read_text())
    assert limits["max_batch_size"] == engine.max_batch_size >= ensemble.max_batch_size
    assert read_config(output / "llm_bls").max_batch_size <= engine.max_batch_size
    assert engine.dynamic_batching.default_queue_policy.max_queue_size > 0
    # the printed GPU route: the pinned image runs the standalone script (Python 3.10) with our pin
    route = done.stdout.strip().splitlines()[-1]
    assert f"{pins().ngc_trtllm_image} python3 /opt/modelrepo/tensorrt_llm_engine.py" in route
    assert f"--expect-version {pins().tensorrt_llm}" in route and route.lstrip().startswith("docker run --rm --gpus all")
    assert list(pending_engines(output)) == ["llm_engine version 1"]
    shutil.rmtree(output)


def test_a_check_catches_an_engine_built_for_another_batch_size(built, tmp_path):
    output = tmp_path / "repository"
    assert modelrepo("build", "llm", "--target", "tensorrt-llm", "--config-only", "--output", str(output)).returncode == 0
    limits_file = output / "llm_engine" / "1" / LIMITS_FILE
    limits_file.write_text(json.dumps({**json.loads(limits_file.read_text()), "max_batch_size": 8}))
    assert check_repository(output) == [
        "llm_engine: version 1: engine max_batch_size 8 != config max_batch_size 64 (engine_limits.json; rebuild the engine)"]
    shutil.rmtree(output)


@pytest.mark.parametrize("where", ["the project", "its parent", "a folder someone else made", "the repository itself"])
def test_a_render_never_deletes_a_folder_it_did_not_create(where, tmp_path):
    from modelrepo.build.outputs import check_output
    from modelrepo.build.targets import TargetError

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    output = {"the project": MODEL_REPOSITORY.parent, "its parent": MODEL_REPOSITORY.parent.parent,
              "a folder someone else made": foreign, "the repository itself": MODEL_REPOSITORY}[where]
    with pytest.raises(TargetError, match=r"choose a new or empty folder$"):
        check_output(output, MODEL_REPOSITORY)
    if where == "the project":  # through the CLI, both render paths: one sentence, exit 2, nothing touched
        for args in (["build", "minilm_encoder", "--target", "onnxruntime"],
                     ["build", "llm", "--target", "tensorrt-llm", "--config-only"]):
            done = modelrepo(*args, "--output", str(output))
            assert done.returncode == 2, done.stdout + done.stderr
            (line,) = done.stderr.strip().splitlines()
            assert line.startswith(f"error: --output {output.resolve()}") and "choose a new or empty folder" in line
    assert (foreign / "keep.txt").read_text() == "precious"
    assert (MODEL_REPOSITORY / "text_embedding" / "config.pbtxt").exists()


def test_a_render_replaces_its_own_earlier_output_and_an_empty_folder(built, tmp_path):
    output = tmp_path / "empty"
    output.mkdir()
    for _ in range(2):  # empty first, then the marker of the first render
        done = modelrepo("build", "llm", "--target", "tensorrt-llm", "--config-only", "--output", str(output))
        assert done.returncode == 0, done.stderr
        assert (output / MARKER).exists() and check_repository(output) == []
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no staging folder left behind
    shutil.rmtree(output)


def test_without_a_gpu_the_engine_builds_stop_with_one_sentence(tmp_path):
    from modelrepo.build.tensorrt_plan import visible_gpu

    if visible_gpu() is not None:
        pytest.skip("this machine has a GPU: the builds would run")
    for args, expected in (
        (["build", "llm", "--target", "tensorrt-llm"], "has no visible GPU"),
        (["build", "minilm_encoder", "--target", "tensorrt"], "GPU"),
    ):
        done = modelrepo(*args, "--output", str(tmp_path / "out"))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert expected in line, line
        assert not (tmp_path / "out").exists()


def test_gpu_check_stops_with_one_sentence_without_a_gpu():
    from modelrepo.build.tensorrt_plan import visible_gpu

    if visible_gpu() is not None:
        pytest.skip("this machine has a GPU: gpu-check would run")
    done = subprocess.run([sys.executable, "-m", "modelrepo.perf.gpu_check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: gpu-check needs an NVIDIA GPU; this machine has no visible GPU (nothing was run)"]
