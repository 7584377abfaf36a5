"""The exported MiniLM ONNX graph: valid, dynamic batch and sequence axes, parity with torch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from modelrepo.build import minilm
from modelrepo.build.embedding import ServingEmbedder
from modelrepo.paths import MODEL_REPOSITORY
from tests.conftest import require_built_repository

ENCODER = MODEL_REPOSITORY / "minilm_encoder" / "1"


@pytest.fixture(scope="module")
def graph():
    require_built_repository()
    return onnx.load(str(ENCODER / "model.onnx"))


def test_the_graph_passes_the_onnx_checker_with_dynamic_batch_and_sequence(graph):
    onnx.checker.check_model(graph)
    for tensor in graph.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"], tensor.name
    (output,) = graph.graph.output
    assert output.name == "embedding"
    dims = output.type.tensor_type.shape.dim
    assert len(dims) == 2 and dims[0].dim_param == "batch"  # dim 1 (384) is left symbolic by the tracer


@pytest.mark.slow
def test_parity_with_torch_at_shapes_other_than_the_export_example():
    texts = ["one", "two words here", "a much longer sentence about tea " * 20, "Crème brûlée 🙂", "x y z"]
    ours = ServingEmbedder(ENCODER.parent.parent / "minilm_tokenizer" / "1" / "tokenizer", ENCODER / "model.onnx").embed(
        texts, batch_size=5
    )
    reference = minilm.reference_embeddings(texts)  # sentence-transformers = the torch model + pooling
    assert ours.shape == (5, minilm.EMBEDDING_DIM)
    assert np.abs(ours - reference).max() < 1e-4
    assert (np.sum(ours * reference, axis=1)).min() > 0.99999


def test_the_build_report_records_parity_against_torch():
    require_built_repository()
    report = json.loads((ENCODER / "build_report.json").read_text())
    assert report["parity_min_cosine"] >= 0.9999 and report["parity_max_abs_diff"] < 1e-4
    assert report["parity_texts"] >= 64 and report["onnx_opset"] == minilm.ONNX_OPSET
