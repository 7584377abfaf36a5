"""Models no one here trained, made in the test, put in with `modelrepo add` (the CLI), served by one
real server over HTTP and gRPC: the answers equal their own framework's within the issue's
tolerances (probabilities 1e-4, embeddings cosine 0.9999); bad input is refused by name; the
model's own metrics count; `modelrepo check` passes; `remove` takes everything out again."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelrepo.check import check_repository
from modelrepo.cli import main
from modelrepo.triton.server import TritonServer, free_ports
from tests import added_models
from tests.integration.triton_calls import Caller, InferenceServerException, texts

pytestmark = pytest.mark.slow
SOURCES = {
    "iris": (added_models.sklearn_pipeline, []),
    "cancer": (added_models.xgboost_classifier, ["--labels", "malignant,benign"]),
    "diabetes": (added_models.lightgbm_regressor, []),
    "cnn": (added_models.torchscript_cnn, []),
    "blend": (added_models.two_input_onnx, []),
    "reviews": (added_models.tiny_bert_classifier, []),
    "sentences": (added_models.sentence_embedding_folder, []),
    "entities": (added_models.tiny_bert_token_classifier, []),
}


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    folder = tmp_path_factory.mktemp("byom")
    repository = folder / "model_repository"
    repository.mkdir()
    made = {}
    for name, (make, options) in SOURCES.items():
        made[name] = make(folder)
        argv = ["add", name, str(made[name].source), "--sample", str(made[name].sample), "--max-batch-size", "32",
                "--model-repository", str(repository), *options]
        assert main(argv) == 0, name
    return repository, made


@pytest.fixture(scope="module")
def callers(added, admin_key, tmp_path_factory):
    repository, _ = added
    server = TritonServer(repository, *free_ports(3), admin_key=admin_key,
                          log_path=tmp_path_factory.mktemp("byom-triton") / "tritonserver.log")
    with server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        yield {"http": Caller("http", http), "grpc": Caller("grpc", grpc), "server": server}
        http.close()
        grpc.close()


@pytest.fixture(params=["http", "grpc"])
def caller(request, callers) -> Caller:
    return callers[request.param]


def test_the_repository_passes_check(added):
    repository, _ = added
    assert check_repository(repository) == []


def test_scikit_learn_pipeline(caller, added):
    iris = added[1]["iris"]
    out = caller.infer("iris", {"INPUT": iris.rows}, ["LABEL", "PROBABILITIES"])
    assert np.abs(out["PROBABILITIES"] - iris.model.predict_proba(iris.rows)).max() <= 1e-4
    assert [label.decode() for label in out["LABEL"][:, 0]] == iris.model.predict(iris.rows).tolist()


def test_xgboost_classifier_and_the_classification_extension(caller, added):
    import xgboost

    cancer = added[1]["cancer"]
    positive = cancer.model.predict(xgboost.DMatrix(cancer.rows))
    out = caller.infer("cancer", {"INPUT": cancer.rows}, ["PROBABILITIES"])
    assert np.abs(out["PROBABILITIES"] - np.stack([1 - positive, positive], axis=1)).max() <= 1e-4
    top = caller.infer("cancer", {"INPUT": cancer.rows[:2]}, ["PROBABILITIES"], class_count=1)["PROBABILITIES"]
    for (entry,), p in zip(top, positive[:2]):
        score, index, label = entry.decode().split(":")
        assert label == ("benign" if p >= 0.5 else "malignant") and float(score) == pytest.approx(max(p, 1 - p), abs=1e-4)


def test_lightgbm_regressor(caller, added):
    diabetes = added[1]["diabetes"]
    out = caller.infer("diabetes", {"INPUT": diabetes.rows}, ["PREDICTION"])["PREDICTION"][:, 0]
    np.testing.assert_allclose(out, diabetes.model.predict(diabetes.rows), rtol=1e-4, atol=1e-3)


def test_torchscript_cnn(caller, added):
    import torch

    cnn = added[1]["cnn"]
    out = caller.infer("cnn", {"INPUT": cnn.rows}, ["OUTPUT"])["OUTPUT"]
    np.testing.assert_allclose(out, cnn.model(torch.from_numpy(cnn.rows)).detach().numpy(), atol=1e-4)


def test_onnx_graph_with_two_inputs_and_a_batch_only_output(caller, added):
    import torch

    blend = added[1]["blend"]
    out = caller.infer("blend", blend.rows, ["score", "peak"])
    score, peak = blend.model(*(torch.from_numpy(v) for v in blend.rows.values()))
    np.testing.assert_allclose(out["score"], score.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["peak"], peak.numpy().reshape(-1, 1), atol=1e-6)  # [batch] served as [batch, 1]


def test_transformers_sequence_classifier(caller, added):
    import torch

    reviews = added[1]["reviews"]
    tokenizer = added_models.minilm_tokenizer()
    with torch.no_grad():
        logits = reviews.model(**tokenizer(reviews.rows, padding=True, return_tensors="pt")).logits
    expected = torch.softmax(logits.double(), dim=1).numpy()
    out = caller.infer("reviews", {"TEXT": texts(*reviews.rows)}, ["LABEL", "PROBABILITIES"])
    assert np.abs(out["PROBABILITIES"] - expected).max() <= 1e-4
    assert [label.decode() for label in out["LABEL"][:, 0]] == [added_models.LABELS[i] for i in expected.argmax(axis=1)]


def test_transformers_token_classifier(caller, added):
    entities = added[1]["entities"]
    texts_ = entities.rows[:3]
    out = caller.infer("entities", {"TEXT": texts(*texts_)}, ["TOKENS", "TOKEN_LABELS", "TOKEN_PROBABILITIES"])
    for row, want in enumerate(added_models.expected_token_labels(entities, texts_)):
        count = len(want)  # rows of one request are padded to its longest
        assert [t.decode() for t in out["TOKENS"][row, :count]] == [token for token, _, _ in want]
        assert [t.decode() for t in out["TOKEN_LABELS"][row, :count]] == [label for _, label, _ in want]
        np.testing.assert_allclose(out["TOKEN_PROBABILITIES"][row, :count], [p for _, _, p in want], atol=1e-4)
        assert set(out["TOKENS"][row, count:].tolist()) <= {b""}


def test_sentence_embedding_folder(caller, added):
    sentences = added[1]["sentences"]
    expected = sentences.model.encode(sentences.rows, normalize_embeddings=True)
    out = caller.infer("sentences", {"TEXT": texts(*sentences.rows)}, ["EMBEDDING"])["EMBEDDING"]
    cosine = (out * expected).sum(axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("model, inputs, rule", [
    ("iris", {"INPUT": np.array([[5.0, np.nan, 1.0, 0.2]], dtype=np.float32)}, "must contain only finite numbers"),
    ("diabetes", {"INPUT": np.full((1, 10), np.inf, dtype=np.float32)}, "must contain only finite numbers"),
    ("reviews", {"TEXT": texts(b"\xff\xfe")}, "must be valid UTF-8"),
    ("sentences", {"TEXT": texts("   ")}, "must not be empty"),
])
def test_bad_input_names_the_input_and_the_rule(caller, model, inputs, rule):
    (name,) = inputs
    with pytest.raises(InferenceServerException) as raised:
        caller.infer(model, inputs, ["LABEL"] if model in ("iris", "reviews") else ["PREDICTION" if model == "diabetes" else "EMBEDDING"])
    assert f"input '{name}'" in raised.value.message() and rule in raised.value.message()


def test_the_models_own_metrics_count(callers, added):
    iris = added[1]["iris"]
    callers["http"].infer("iris", {"INPUT": iris.rows}, ["LABEL"])
    with pytest.raises(InferenceServerException):
        callers["http"].infer("iris", {"INPUT": np.full((1, 4), np.nan, dtype=np.float32)}, ["LABEL"])
    metrics = callers["server"].metrics()
    assert metrics["modelrepo_model_rejected_inputs_total"][(("input", "INPUT"), ("model", "iris"))] >= 1
    predictions = metrics["modelrepo_model_predictions_total"]
    assert sum(v for labels, v in predictions.items() if ("model", "iris") in labels) >= len(iris.rows)
    assert any(("model", "iris") in labels for labels in metrics["modelrepo_model_confidence_count"])


def test_tune_and_bench_take_an_added_model_with_no_further_code(added, tmp_path, capsys):
    # The contract: `modelrepo tune NAME --p99-ms B` (input data derived from the sample `add`
    # kept) and `modelrepo bench NAME`, against the real server and perf_analyzer.
    repository, _ = added
    repo = ["--model-repository", str(repository)]
    before = (repository / "iris_model" / "config.pbtxt").read_text()
    assert main(["tune", "iris", "--p99-ms", "1000", "--concurrency", "2", "--instances", "1", "--apply",
                 "--output", str(tmp_path / "tune"), *repo]) == 0
    tuned_log = capsys.readouterr().out
    assert "tuning iris (iris_model" in tuned_log and "chosen:" in tuned_log, tuned_log
    assert "applied config re-measured" in tuned_log
    summary = (tmp_path / "tune" / "summary.md").read_text()
    kept = (tmp_path / "tune" / "input_data.json").read_text()
    assert '"INPUT"' in kept and "Re-measured after --apply" in summary
    after = (repository / "iris_model" / "config.pbtxt").read_text()
    assert after.splitlines()[0] == before.splitlines()[0]  # the header comment stays
    assert check_repository(repository) == []

    assert main(["bench", "iris", "--concurrency", "1", "2", "--runs", "2", "--requests", "100",
                 "--output", str(tmp_path / "bench"), *repo]) == 0
    (report,) = (tmp_path / "bench").glob("*-bench-iris.md")
    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2, text
    assert "p99 budget: 100 ms" in text and "of 2 |" in rows[0]  # `add`'s stated budget, both runs judged
    (data,) = (tmp_path / "bench").glob("*-bench-iris.json")
    import json

    points = json.loads(data.read_text())["points"]
    for concurrency in ("1", "2"):
        assert len(points[concurrency]["runs"]) == 2
        assert points[concurrency]["throughput_infer_per_s"]["median"] > 0
        assert 0 < points[concurrency]["p50_ms"]["median"] <= points[concurrency]["p99_ms"]["median"]


def test_remove_takes_every_added_model_out(added, capsys):
    repository, _ = added
    for name in SOURCES:
        assert main(["remove", name, "--model-repository", str(repository)]) == 0
    assert list(repository.iterdir()) == []
    assert main(["remove", "iris", "--model-repository", str(repository)]) == 2
    assert "no model 'iris'" in capsys.readouterr().err
