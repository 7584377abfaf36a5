"""One place per model: the shipped pipelines and the models `add` wrote are entries of one registry,
and `modelrepo build` / its renders find a model through it, with no model named in the CLI."""

from __future__ import annotations

import shutil

import pytest

from modelrepo.build import registry, targets
from modelrepo.build.add.command import add_model
from modelrepo.build.add.recipes import AddRequest
from modelrepo.build.artifacts import read_stamp
from modelrepo.build.model_build import BuildRequest, render_repository
from modelrepo.build.pipeline import build_all
from modelrepo.check import check_repository
from modelrepo.cli import main
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.model_config import repository_models
from tests import added_models
from tests.conftest import require_built_repository


def test_every_model_of_the_repository_belongs_to_exactly_one_entry():
    entries = registry.entries(MODEL_REPOSITORY)
    assert [entry.name for entry in entries if not entry.added] == [entry.name for entry in registry.shipped_entries()]
    owners: dict[str, list[str]] = {}
    for entry in entries:
        for model in entry.models:
            owners.setdefault(model, []).append(entry.name)
    assert {model: names for model, names in owners.items() if len(names) > 1} == {}
    served = {path.parent.name for path in MODEL_REPOSITORY.glob("*/config.pbtxt")}
    assert served - set(owners) == set(), "a model no entry owns"


def test_each_step_fills_a_model_of_its_own_entry_or_the_build_cache():
    repository = MODEL_REPOSITORY.resolve()
    names = [step.name for entry in registry.shipped_entries() for step in entry.steps]
    assert len(names) == len(set(names))
    for entry in registry.shipped_entries():
        for step in entry.steps:
            folder = step.folder(repository).resolve()
            if folder.is_relative_to(repository):
                assert folder.relative_to(repository).parts[0] in entry.models, step.name


def test_the_build_is_the_registry_and_its_cache_keys_match_what_was_built():
    """The stamps `make build` wrote hold the input hashes the registry's steps compute now: the
    registry is what built the repository, and a second build rebuilds nothing."""
    require_built_repository()
    results = build_all(MODEL_REPOSITORY, log=lambda *_: None)
    assert [result.name for result in results] == [
        step.name for entry in registry.shipped_entries() for step in entry.steps]
    rebuilt = [result.name for result in results if not result.cached]
    # in a working tree, editing code a step hashes (python_backends/, build/) since `make build` fails this once;
    # the call above has rebuilt and re-stamped those steps, so a rerun passes
    assert not rebuilt, f"rebuilt, their inputs changed since the last build: {rebuilt}"
    for result in results:
        assert read_stamp(result.output_dir)["input_hash"] == result.input_hash


def test_the_cli_knows_the_pipeline_targets_the_entries_render():
    assert set(registry.engine_targets()) == set(targets.PIPELINE_TARGETS)
    assert registry.int8_models(MODEL_REPOSITORY) == ["minilm_encoder"]


@pytest.fixture
def own_repository(tmp_path):
    """A repository holding one model of a team's own (a scikit-learn pipeline) and nothing shipped."""
    repository = tmp_path / "model_repository"
    repository.mkdir()
    iris = added_models.sklearn_pipeline(tmp_path)
    add_model(AddRequest("iris", iris.source, sample=iris.sample), repository, log=lambda *_: None)
    return repository


def test_an_added_model_is_an_entry_found_by_its_name_and_its_models(own_repository):
    (entry,) = registry.added_entries(own_repository)
    assert entry.added and entry.name == "iris" and entry.models == ("iris", "iris_model", "iris_labels")
    assert registry.entry_for(own_repository, "iris_model") == entry
    assert registry.entry_for(own_repository, "nope") is None
    assert build_all(own_repository, log=lambda *_: None) == []  # add built it; nothing shipped is written here
    assert sorted(path.name for path in own_repository.iterdir()) == ["iris", "iris_labels", "iris_model"]


def test_an_added_graph_renders_for_a_target_like_a_shipped_one(own_repository, tmp_path):
    output = render_repository(own_repository, tmp_path / "rendered", BuildRequest("iris_model", "onnxruntime"),
                               log=lambda *_: None)
    assert check_repository(output) == []
    before, after = repository_models(own_repository), repository_models(output)
    assert {name for name in before if before[name] != after[name]} == {"iris_model"}
    assert after["iris_model"].platform == "onnxruntime_onnx"
    with pytest.raises(targets.TargetError, match=r"^no model of this repository has INT8 calibration data defined; .*modelrepo add NAME"):
        BuildRequest("iris_model", precision="int8").validate(own_repository)
    shutil.rmtree(output)


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "error: no model or pipeline 'nope' in {repository} (pipelines: iris)"),
    (["iris", "--target", "onnxruntime"], "error: iris has no ONNX graph of its own to render for --target onnxruntime "
                                          "--precision fp32; name one of its models with a graph (iris_model)"),
    (["iris_model", "--target", "tensorrt-llm", "--config-only"],
     "error: --target tensorrt-llm renders the pipeline llm (name it: modelrepo build llm --target tensorrt-llm)"),
])
def test_build_refusals_name_the_model_and_the_rule(own_repository, tmp_path, capsys, args, message):
    output = tmp_path / "out"
    code = main(["build", *args, "--model-repository", str(own_repository), "--output", str(output)])
    assert code == 2 and not output.exists()
    assert capsys.readouterr().err.strip().splitlines() == [message.format(repository=own_repository)]


def test_building_a_pipeline_by_name_builds_it_in_place(own_repository, capsys):
    assert main(["build", "iris", "--model-repository", str(own_repository)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        "iris: built in the repository (iris, iris_model, iris_labels); serve it with `modelrepo serve`"]
