"""The rollout controller without a server: the order of its loads (so no request fails), what a
failed load, a failed gate and a slow step do, against a recording stand-in for Triton's load API
and scripted metric scrapes."""

from __future__ import annotations

import shutil

import pytest

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.rollout.controller import Rollouts, RolloutSpec
from modelrepo.rollout.gates import GateLimits
from modelrepo.rollout.store import RolloutStore
from modelrepo.triton.control import ControlError
from modelrepo.triton.model_config import read_config, rewrite_config, serve_only, served_versions

MODEL = "credit_aggregate"


class Loads:
    """Records every load as (model, what it serves then); `fail_with` makes loads serving that set fail."""

    def __init__(self, repository, fail_with: list[int] | None = None):
        self.repository, self.fail_with, self.done = repository, fail_with, []

    def load_model(self, name: str) -> None:
        config = read_config(self.repository / name)
        served = (served_versions(self.repository / name, config) if name == MODEL
                  else config.parameters["primary_version"].string_value + "/" + config.parameters["mode"].string_value)
        self.done.append((name, served))
        if name == MODEL and served == self.fail_with:
            raise ControlError("version 2 failed to load (planted)")


class Calls:
    """Scrapes in which the candidate's call count grows by `per_scrape`."""

    def __init__(self, per_scrape: float):
        self.per_scrape, self.count = per_scrape, 0.0

    def __call__(self) -> dict:
        self.count += self.per_scrape
        labels = (("model", MODEL), ("version", "2"))
        return {"rollout_calls_total": {labels: self.count}}


@pytest.fixture
def repository(tmp_path):
    shutil.copytree(MODEL_REPOSITORY / MODEL, tmp_path / MODEL)
    config = read_config(tmp_path / MODEL)
    serve_only(config, [1])  # as `modelrepo add --version 2` leaves it
    rewrite_config(tmp_path / MODEL, config)
    shutil.copytree(tmp_path / MODEL / "1", tmp_path / MODEL / "2")
    return tmp_path


def rollouts(repository, loads, metrics, tmp_path):
    return Rollouts(loads, metrics, repository, RolloutStore(tmp_path / "state", who="t"), log=lambda *_: None)


def test_promote_loads_the_candidate_first_and_unloads_the_old_version_last(repository, tmp_path):
    loads = Loads(repository)
    spec = RolloutSpec(MODEL, 2, "canary", (50.0,), bake_s=0, limits=GateLimits(min_calls=1))
    result = rollouts(repository, loads, Calls(10), tmp_path).start(spec)
    assert result["phase"] == "promoted"
    router = f"{MODEL}_rollout"
    assert loads.done == [(router, "1/primary"), (MODEL, [1, 2]), (router, "1/canary"), (router, "2/primary"), (MODEL, [2])]
    assert served_versions(repository / MODEL, read_config(repository / MODEL)) == [2]


def test_a_candidate_that_does_not_load_is_taken_out_and_the_router_never_sends_it_anything(repository, tmp_path):
    loads = Loads(repository, fail_with=[1, 2])
    result = rollouts(repository, loads, Calls(10), tmp_path).start(RolloutSpec(MODEL, 2, bake_s=0))
    assert result["phase"] == "rolled_back" and "failed to load (planted)" in result["reason"]
    assert [served for name, served in loads.done if name == f"{MODEL}_rollout"] == ["1/primary"]
    assert loads.done[-1] == (MODEL, [1])


def test_a_step_short_of_calls_bakes_on_then_fails_its_gate_and_rolls_back(repository, tmp_path):
    loads = Loads(repository)
    calls = Calls(1)  # one more candidate call per scrape: judged at the scrape that reaches 3 calls
    spec = RolloutSpec(MODEL, 2, "canary", (50.0,), bake_s=0, max_wait_s=60, limits=GateLimits(min_calls=3))
    result = rollouts(repository, loads, calls, tmp_path).start(spec)
    assert result["phase"] == "promoted" and calls.count == 4
    shutil.copytree(repository / MODEL / "1", repository / MODEL / "3")
    result = rollouts(repository, loads, Calls(1), tmp_path).start(
        RolloutSpec(MODEL, 3, "canary", (50.0,), bake_s=0, max_wait_s=0, limits=GateLimits(min_calls=100)))
    assert result["phase"] == "rolled_back" and result["reason"].startswith("candidate_calls")
    assert loads.done[-2:] == [(f"{MODEL}_rollout", "2/primary"), (MODEL, [2])]  # router first, then the versions
