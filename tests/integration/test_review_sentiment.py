"""review_sentiment over HTTP and gRPC: labels, probabilities and the classification extension."""

from __future__ import annotations

import numpy as np

from modelrepo.build.minilm import reference_embeddings
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.python_backends.linear_head import HEAD_FILENAME, LinearClassifierHead
from tests.integration.triton_calls import texts

REVIEWS = [
    "Absolutely delicious, my kids love these and I reorder every month.",
    "The bag was half empty and the chips tasted rancid. Waste of money.",
    "It's okay I guess, a bit too salty for me.",
]


def reference_head() -> LinearClassifierHead:
    return LinearClassifierHead.load(MODEL_REPOSITORY / "sentiment_head" / "1" / HEAD_FILENAME)


def labels_file() -> list[str]:
    return (MODEL_REPOSITORY / "review_sentiment" / "labels.txt").read_text().split()


def test_labels_and_probabilities_match_the_in_process_reference(caller):
    out = caller.infer("review_sentiment", {"TEXT": texts(*REVIEWS)}, ["LABEL", "PROBABILITIES"])
    expected = reference_head().predict_proba(reference_embeddings(REVIEWS))
    assert out["PROBABILITIES"].shape == (3, 2) and out["PROBABILITIES"].dtype == np.float32
    np.testing.assert_allclose(out["PROBABILITIES"], expected, atol=1e-4)
    np.testing.assert_allclose(out["PROBABILITIES"].sum(axis=1), 1.0, atol=1e-6)
    labels = [value.decode() for value in out["LABEL"].reshape(-1)]
    assert labels == [labels_file()[i] for i in expected.argmax(axis=1)]
    assert set(labels) <= {"great", "other"}
    assert labels[0] == "great" and labels[1] == "other"  # unambiguous reviews


def test_classification_extension_returns_score_index_label(caller):
    out = caller.infer("review_sentiment", {"TEXT": texts(*REVIEWS)}, ["PROBABILITIES"], class_count=2)
    plain = caller.infer("review_sentiment", {"TEXT": texts(*REVIEWS)}, ["PROBABILITIES"])["PROBABILITIES"]
    assert out["PROBABILITIES"].shape == (3, 2)
    for row, probabilities in zip(out["PROBABILITIES"], plain):
        entries = [value.decode().split(":") for value in row]
        scores = [float(score) for score, _, _ in entries]
        assert scores == sorted(scores, reverse=True)
        for score, index, label in entries:
            assert label == labels_file()[int(index)]
            assert abs(float(score) - probabilities[int(index)]) < 1e-5
