"""The committed configs, read through Triton's protobuf, and the static checker on broken copies."""

from __future__ import annotations

import shutil

import pytest

from modelrepo.check import check_repository
from modelrepo.paths import MODEL_REPOSITORY
from tritonclient.grpc.model_config_pb2 import TYPE_FP32, TYPE_STRING

from modelrepo.triton.model_config import format_config, parse_config, read_config, repository_models, write_config

PUBLIC = {"text_embedding": (["TEXT"], ["EMBEDDING"]), "review_sentiment": (["TEXT"], ["LABEL", "PROBABILITIES"])}


def test_the_repository_passes_the_static_check():
    assert check_repository(MODEL_REPOSITORY) == []


def test_every_config_round_trips_through_the_protobuf():
    for name, config in repository_models(MODEL_REPOSITORY).items():
        assert parse_config(format_config(config)) == config, name


def test_public_contracts():
    models = repository_models(MODEL_REPOSITORY)
    for name, (inputs, outputs) in PUBLIC.items():
        config = models[name]
        assert config.platform == "ensemble"
        assert [t.name for t in config.input] == inputs
        assert [t.name for t in config.output] == outputs
        text = config.input[0]
        assert text.data_type == TYPE_STRING and list(text.dims) == [1] and config.max_batch_size > 0
    embedding = models["text_embedding"].output[0]
    assert embedding.data_type == TYPE_FP32 and list(embedding.dims) == [384]
    probabilities = models["review_sentiment"].output[1]
    assert list(probabilities.dims) == [2] and probabilities.label_filename == "labels.txt"


@pytest.fixture
def repo_copy(tmp_path):
    target = tmp_path / "repo"
    shutil.copytree(MODEL_REPOSITORY, target, ignore=shutil.ignore_patterns("*.onnx", "*.npz"))
    (target / "review_sentiment" / "labels.txt").write_text("great\nother\n")
    return target


def test_check_finds_a_missing_composing_model(repo_copy):
    shutil.rmtree(repo_copy / "sentiment_head")
    assert any("sentiment_head" in p and "no such model" in p for p in check_repository(repo_copy))


def test_check_finds_a_misnamed_tensor_and_missing_dynamic_batching(repo_copy):
    config = read_config(repo_copy / "text_embedding")
    config.ensemble_scheduling.step[1].output_map["embeddings_typo"] = "EMBEDDING"
    del config.ensemble_scheduling.step[1].output_map["embedding"]
    write_config(repo_copy / "text_embedding", config)
    encoder = read_config(repo_copy / "minilm_encoder")
    encoder.ClearField("dynamic_batching")
    write_config(repo_copy / "minilm_encoder", encoder)
    problems = check_repository(repo_copy)
    assert any("no output 'embeddings_typo'" in p for p in problems)
    assert any("minilm_encoder" in p and "no dynamic_batching" in p for p in problems)


def test_check_reports_a_config_that_does_not_parse(repo_copy):
    (repo_copy / "sentiment_head" / "config.pbtxt").write_text("name: sentiment_head\nmax_batch_size: [")
    (problem,) = check_repository(repo_copy)
    assert "does not parse" in problem


@pytest.mark.parametrize(
    "name, fused, version", [("credit_default", False, 1), ("credit_default_fused", True, 1), ("credit_candidate", True, 2)]
)
def test_credit_ensembles_are_the_committed_rendering(name, fused, version):
    from modelrepo.build.credit import credit_ensemble_config

    assert read_config(MODEL_REPOSITORY / name) == credit_ensemble_config(name, fused, version)


def test_the_onehop_config_is_the_committed_rendering_of_its_steps():
    from modelrepo.build.credit import ONEHOP, ONEHOP_STEPS, credit_onehop_config

    rendered = credit_onehop_config({step: read_config(MODEL_REPOSITORY / step) for step in ONEHOP_STEPS})
    assert read_config(MODEL_REPOSITORY / ONEHOP) == rendered
    assert rendered.parameters["decline_at"].string_value == read_config(MODEL_REPOSITORY / "credit_aggregate").parameters["decline_at"].string_value


def test_a_rewrite_keeps_the_whole_comment_header_an_indented_line_included(tmp_path):
    from modelrepo.triton.model_config import read_config, rewrite_config

    (tmp_path / "config.pbtxt").write_text('# why this model\n  # why this parameter\n# and this\nname: "m"\nbackend: "python"\n')
    config = read_config(tmp_path)
    config.parameters["limit"].string_value = "60"
    rewrite_config(tmp_path, config)
    text = (tmp_path / "config.pbtxt").read_text()
    assert text.startswith("# why this model\n# why this parameter\n# and this\nname: \"m\"")
    assert read_config(tmp_path).parameters["limit"].string_value == "60"
