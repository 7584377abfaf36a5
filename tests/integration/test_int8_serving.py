"""The INT8 encoder served through the unchanged text_embedding / review_sentiment ensembles.

`modelrepo build minilm_encoder --target cpu --precision int8` renders a repository where only
minilm_encoder's graph differs; a second real server runs it. The budget's tolerance applies:
mean cosine vs FP32 ≥ 0.99 on texts the build never saw, and the sentiment labels of held-out
reviews within one point of the FP32 pipeline.
"""

from __future__ import annotations

import filecmp

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelrepo.build.minilm import reference_embeddings
from modelrepo.build.minilm_int8 import AccuracyBudget
from modelrepo.build.model_build import BuildRequest, render_repository
from modelrepo.build.review_data import reviews
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.model_config import read_config
from modelrepo.triton.server import TritonServer, free_ports
from tests.integration.test_text_embedding import SAMPLES, cosine
from tests.integration.triton_calls import Caller, texts

pytestmark = pytest.mark.slow
BUDGET = AccuracyBudget()
HELD_OUT = reviews("testing_data").review.tolist()[-120:]  # test reviews; the build calibrated on training ones


@pytest.fixture(scope="module")
def int8_repository(int8_encoder, tmp_path_factory):
    output = tmp_path_factory.mktemp("int8") / "model_repository"
    return render_repository(MODEL_REPOSITORY, output, BuildRequest("minilm_encoder", "cpu", "int8"), log=lambda *_: None)


@pytest.fixture(scope="module")
def int8_callers(int8_repository, admin_key, tmp_path_factory):
    ports = free_ports(3)
    server = TritonServer(int8_repository, *ports, admin_key=admin_key, load_models=("text_embedding", "review_sentiment"),
                          log_path=tmp_path_factory.mktemp("int8-triton") / "tritonserver.log")
    with server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        yield {"http": Caller("http", http), "grpc": Caller("grpc", grpc)}
        http.close()
        grpc.close()


def test_only_the_encoder_graph_differs(int8_repository):
    for model in ("text_embedding", "review_sentiment", "minilm_tokenizer", "sentiment_head"):
        assert filecmp.cmp(MODEL_REPOSITORY / model / "config.pbtxt", int8_repository / model / "config.pbtxt", shallow=False)
    # cpu target: the encoder's config is the same data too (rendered through the protobuf)
    assert read_config(int8_repository / "minilm_encoder") == read_config(MODEL_REPOSITORY / "minilm_encoder")
    graph = int8_repository / "minilm_encoder" / "1" / "model.onnx"
    assert not filecmp.cmp(graph, MODEL_REPOSITORY / "minilm_encoder" / "1" / "model.onnx", shallow=False)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_int8_embeddings_stay_within_the_budget(int8_callers, protocol):
    caller = int8_callers[protocol]
    batch = SAMPLES + HELD_OUT[:28]
    served = caller.infer("text_embedding", {"TEXT": texts(*batch)}, ["EMBEDDING"])["EMBEDDING"]
    similarity = cosine(served, reference_embeddings(batch))
    assert similarity.mean() >= BUDGET.min_mean_cosine
    assert similarity.min() >= 0.9  # no text falls apart
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def classify(caller, reviews_: list[str]) -> dict[str, np.ndarray]:
    """In requests of 40 (review_sentiment's max batch is 64)."""
    parts = [caller.infer("review_sentiment", {"TEXT": texts(*reviews_[i:i + 40])}, ["LABEL", "PROBABILITIES"])
             for i in range(0, len(reviews_), 40)]
    return {name: np.concatenate([part[name] for part in parts]) for name in ("LABEL", "PROBABILITIES")}


def test_int8_sentiment_labels_agree_with_fp32_within_the_budget(int8_callers, grpc_client):
    # One protocol: 120 long reviews through two servers is the slow part; both protocols are covered above.
    fp32 = classify(Caller("grpc", grpc_client), HELD_OUT)
    int8 = classify(int8_callers["grpc"], HELD_OUT)
    truth = np.array(reviews("testing_data").score.tolist()[-120:])
    accuracy = {name: (np.char.decode(out["LABEL"].reshape(-1).astype(bytes)) == truth).mean()
                for name, out in (("fp32", fp32), ("int8", int8))}
    assert accuracy["fp32"] - accuracy["int8"] <= BUDGET.max_accuracy_drop + 1 / len(HELD_OUT)  # one review of slack
    assert np.abs(fp32["PROBABILITIES"] - int8["PROBABILITIES"]).mean() < 0.05
