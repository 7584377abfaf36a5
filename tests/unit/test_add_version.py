"""`modelrepo add NAME SOURCE --version N` without a server: the new version folder beside the serving
one, version_policy pinned to what served before, and the refusals (one sentence, nothing written)."""

from __future__ import annotations

import hashlib
import json

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelrepo.build.add.command import add_model
from modelrepo.build.add.recipes import AddError, AddRequest
from modelrepo.check import check_repository
from modelrepo.cli import main
from modelrepo.rollout.router_model import write_router
from modelrepo.triton.model_config import read_config, served_versions
from tests import added_models


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    return {"v1": added_models.sklearn_regressor(folder), **added_models.sklearn_regressor_versions(folder),
            "iris": added_models.sklearn_pipeline(folder)}


def tree_digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_new_version_is_written_beside_the_serving_one_and_not_served(sources, tmp_path):
    repository = tmp_path / "repository"
    repository.mkdir()
    v1 = sources["v1"]
    add_model(AddRequest("score", v1.source, sample=v1.sample), repository, log=lambda *_: None)
    before = tree_digest(repository / "score" / "1")
    assert main(["add", "score", str(sources["close"]), "--sample", str(v1.sample), "--version", "2",
                 "--model-repository", str(repository)]) == 0
    model = repository / "score"
    assert tree_digest(model / "1") == before  # the serving version is untouched
    assert (model / "2" / "model.onnx").is_file() and (model / "2" / "model.py").is_file()
    config = read_config(model)
    assert list(config.version_policy.specific.versions) == [1] and served_versions(model, config) == [1]
    assert (model / "config.pbtxt").read_text().startswith("# score:")  # the comment header is kept
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["versions"]["2"]["source"] == str(sources["close"].resolve())
    assert check_repository(repository) == []
    # a third version keeps the pin on what serves (version 1), whatever was added since
    add_model(AddRequest("score", sources["disagreeing"], sample=v1.sample, version=3), repository, log=lambda *_: None)
    assert served_versions(model, read_config(model)) == [1]
    # the rollout router written in front of it passes `modelrepo check` too
    router = read_config(write_router(repository, "score", [1]))
    assert [t.name for t in router.output] == ["PREDICTION", "ROUTE"] and router.parameters["target"].string_value == "score"
    assert check_repository(repository) == []


def test_version_refusals_name_the_rule_and_write_nothing(sources, tmp_path):
    repository = tmp_path / "repository"
    repository.mkdir()
    v1 = sources["v1"]

    def add(name, source, version, sample=v1.sample):
        return add_model(AddRequest(name, source, sample=sample, version=version), repository, log=lambda *_: None)

    with pytest.raises(AddError, match="no model 'score' written by `modelrepo add`"):
        add("score", v1.source, 2)
    add("score", v1.source, None)
    written = tree_digest(repository)
    with pytest.raises(AddError, match="--version must be 2 or more"):
        add("score", sources["close"], 1)
    add("score", sources["close"], 2)
    written = tree_digest(repository)
    with pytest.raises(AddError, match="score/2 already exists; choose the next free version \\(3\\)"):
        add("score", sources["close"], 2)
    iris = sources["iris"]
    with pytest.raises(AddError, match="SOURCE becomes model 'score_model'|labels"):
        add("score", iris.source, 3, sample=iris.sample)
    assert tree_digest(repository) == written


def test_a_classifier_gets_its_new_version_in_its_graph_model(sources, tmp_path):
    """Behind the ensemble NAME, the graph model NAME_model holds the versions; the labels step is shared."""
    repository = tmp_path / "repository"
    repository.mkdir()
    iris = sources["iris"]
    add_model(AddRequest("flower", iris.source, sample=iris.sample), repository, log=lambda *_: None)
    data = load_iris()
    retrained = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    retrained.fit(data.data, data.target_names[data.target])
    joblib.dump(retrained, tmp_path / "iris_v2.joblib")
    add_model(AddRequest("flower", tmp_path / "iris_v2.joblib", sample=iris.sample, version=2), repository,
              log=lambda *_: None)
    graph = repository / "flower_model"
    assert (graph / "2" / "model.onnx").is_file() and served_versions(graph, read_config(graph)) == [1]
    assert not (repository / "flower" / "2").exists() and not (repository / "flower_labels" / "2").exists()
    assert check_repository(repository) == []
