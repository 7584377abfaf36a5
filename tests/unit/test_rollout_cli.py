"""`modelrepo rollout` refusals that need no server (one sentence, exit 2), and how flags become a spec."""

from __future__ import annotations

import shutil

import pytest

from modelrepo.cli import main, parser
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.rollout.cli import spec_of
from modelrepo.rollout.controller import RolloutError, RolloutSpec


@pytest.fixture
def repository(tmp_path):
    shutil.copytree(MODEL_REPOSITORY / "credit_aggregate", tmp_path / "credit_aggregate")
    return tmp_path


def rollout(*args, repository, state_dir):
    return main(["rollout", *args, "--model-repository", str(repository), "--state-dir", str(state_dir),
                 "--url", "127.0.0.1:9"])  # nothing listens there: these refusals come before any call


def test_refusals_name_the_problem(repository, tmp_path, capsys):
    assert rollout("start", "credit_aggregate", "--version", "7", repository=repository, state_dir=tmp_path) == 2
    assert "credit_aggregate has no version 7 (folders: [1])" in capsys.readouterr().err
    assert rollout("start", "nothing", "--version", "2", repository=repository, state_dir=tmp_path) == 2
    assert "there is no model 'nothing'" in capsys.readouterr().err
    assert rollout("promote", "credit_aggregate", repository=repository, state_dir=tmp_path) == 2
    assert "no rollout in progress" in capsys.readouterr().err
    assert rollout("start", "credit_aggregate", "--version", "1", repository=repository, state_dir=tmp_path) == 2
    assert "already the serving version" in capsys.readouterr().err


def test_flags_become_the_spec(repository):
    args = parser().parse_args(["rollout", "start", "credit_aggregate", "--version", "2", "--canary", "5",
                                "--steps", "10,50,100", "--bake", "30", "--model-repository", str(repository)])
    spec = spec_of(args)
    assert (spec.mode, spec.steps, spec.bake_s, spec.comparison) == ("canary", (5.0, 10.0, 50.0, 100.0), 30.0, "distance")
    assert spec.limits.p99_budget_ms == 1000.0
    args = parser().parse_args(["rollout", "start", "credit_aggregate", "--version", "2", "--shadow", "--steps", "100",
                                "--p99-budget-ms", "250", "--model-repository", str(repository)])
    assert (spec_of(args).mode, spec_of(args).limits.p99_budget_ms) == ("shadow", 250.0)
    with pytest.raises(RolloutError, match="increasing percentages"):
        RolloutSpec("m", 2, steps=(50.0, 10.0))


def test_the_budget_comes_from_the_model_or_the_public_model_add_stated_it_on(repository):
    from modelrepo.rollout.cli import default_budget_ms
    from modelrepo.triton.model_config import read_config, rewrite_config

    assert default_budget_ms(repository, "credit_aggregate") == 1000.0  # nothing stated: the default
    shutil.copytree(repository / "credit_aggregate", repository / "scores")
    public = read_config(repository / "scores")
    public.name = "scores"
    public.parameters["latency_budget_ms"].string_value = "40"
    rewrite_config(repository / "scores", public)
    graph = read_config(repository / "credit_aggregate")
    graph.parameters["public_model"].string_value = "scores"  # as `add` writes NAME_model behind NAME
    rewrite_config(repository / "credit_aggregate", graph)
    assert default_budget_ms(repository, "credit_aggregate") == 40.0
