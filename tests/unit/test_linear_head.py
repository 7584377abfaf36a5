from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelrepo.build.sentiment import head_from_sklearn
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.linear_head import LinearClassifierHead


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 8)).astype(np.float32)
    labels = np.where(features[:, 0] + 0.3 * rng.normal(size=200) > 0, "great", "other")
    return LogisticRegression().fit(features, labels), features


def test_binary_head_reproduces_sklearn_probabilities_and_labels(fitted):
    model, features = fitted
    head = head_from_sklearn(model)
    np.testing.assert_allclose(head.predict_proba(features), model.predict_proba(features), atol=1e-5)
    (out,) = head.execute_batch([{"EMBEDDING": features[:5]}])
    assert out["LABEL"].shape == (5, 1)
    assert [label.decode() for label in out["LABEL"][:, 0]] == list(model.predict(features[:5]))


def test_save_and_load_round_trip(fitted, tmp_path):
    model, features = fitted
    head_from_sklearn(model).save(tmp_path / "head.npz")
    loaded = LinearClassifierHead.load(tmp_path / "head.npz")
    np.testing.assert_allclose(loaded.predict_proba(features), model.predict_proba(features), atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_by_name(fitted, bad):
    model, features = fitted
    head = head_from_sklearn(model)
    poisoned = features[:2].copy()
    poisoned[1, 3] = bad
    good, refused = head.execute_batch([{"EMBEDDING": features[:1]}, {"EMBEDDING": poisoned}])
    assert isinstance(refused, InputError) and "'EMBEDDING'" in str(refused) and "finite" in str(refused)
    assert good["PROBABILITIES"].shape == (1, 2)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="disagree"):
        LinearClassifierHead(np.zeros((2, 4)), np.zeros(3), ["a", "b"])
