"""Every ONNX graph we ship parses and builds in TensorRT's ONNX parser, checked on CPU.

TensorRT for RTX (`tensorrt_rtx`) builds engines without a GPU, so it runs here; these are RTX engines,
not the datacenter plans Triton loads in the NGC image. What this proves: our graphs (FP32 and the INT8
QDQ one) are accepted by TensorRT's parser and builder through the same code path and optimisation
profile as `modelrepo build --target tensorrt`, with INT64 token inputs and a strongly typed network.
Timing-cache calls are accepted but are no-ops in TensorRT-RTX (it says so in a DeprecationWarning):
that the cache speeds up datacenter rebuilds is not verified here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrepo.build import targets, tensorrt_plan
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.model_config import read_config

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu12 is in the test extra: `make test` installs it")

pytestmark = pytest.mark.filterwarnings("ignore:.*Timing cache operations are no-ops:DeprecationWarning")
SHIPPED = sorted(MODEL_REPOSITORY.glob("*/[0-9]*/model.onnx"))


def build(onnx_path: Path, model: str, tmp_path: Path) -> dict:
    profile = targets.engine_profile(read_config(MODEL_REPOSITORY / model))
    return tensorrt_plan.build_plan(trt, onnx_path, tmp_path / "model.plan", profile, timing_cache_path=tmp_path / "timing.cache")


def test_the_repository_ships_the_graphs_we_expect():
    names = {path.parent.parent.name for path in SHIPPED}
    assert {"minilm_encoder", "credit_members_fused", "credit_member_0"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("onnx_path", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_shipped_graph_parses_and_builds(onnx_path, tmp_path):
    model = onnx_path.parent.parent.name
    metadata = build(onnx_path, model, tmp_path)
    config = read_config(MODEL_REPOSITORY / model)
    assert metadata["strongly_typed"] and metadata["plan_bytes"] > 0 and (tmp_path / "model.plan").exists()
    assert (tmp_path / "timing.cache").exists()  # written by the same code; empty of timings under RTX
    assert [i["name"] for i in metadata["inputs"]] == [t.name for t in config.input]
    assert {o["name"] for o in metadata["outputs"]} >= {t.name for t in config.output}
    for shapes in metadata["input_shapes_min_opt_max"].values():
        assert shapes[0][0] == 1 and shapes[2][0] == config.max_batch_size


@pytest.mark.slow
def test_the_int8_qdq_encoder_parses_and_builds_strongly_typed(int8_encoder, tmp_path):
    metadata = build(int8_encoder.output_dir / "model.onnx", "minilm_encoder", tmp_path)
    assert metadata["strongly_typed"] and metadata["inputs"][0]["dtype"] == "INT64"
    fp32 = build(MODEL_REPOSITORY / "minilm_encoder" / "1" / "model.onnx", "minilm_encoder", tmp_path / "fp32")
    assert metadata["plan_bytes"] < fp32["plan_bytes"]  # int8 weights are stored as int8 in the engine


def test_a_graph_the_parser_rejects_is_reported_with_the_parser_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    profile = targets.EngineProfile(1, 1, 1)
    with pytest.raises(RuntimeError, match="TensorRT's ONNX parser rejected"):
        tensorrt_plan.build_plan(trt, broken, None, profile)
