"""Drive a rollout on a running server: load the candidate version beside the serving one, step the
router's traffic share up, judge every step on its gates, and promote or roll back.

Everything the server serves is what the repository says: each change is written to config.pbtxt
(through Triton's protobuf) and then loaded (`load` with the admin key). The order of changes keeps
every request answered: the candidate is loaded before the router sends it anything; on promote or
rollback the router stops sending to a version before that version is unloaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelrepo.python_backends.rollout_router import RolloutPolicy
from modelrepo.rollout.gates import GateLimits, Snapshot, delta, step_gates, version_figures
from modelrepo.rollout.router_model import router_name, set_policy, write_router
from modelrepo.rollout.store import ACTIVE_PHASES, RolloutStore
from modelrepo.triton.control import ControlError, ServerControl
from modelrepo.triton.model_config import read_config, rewrite_config, serve_only, served_versions, version_folders

MODES = ("canary", "shadow", "swap")
POLL_S = 0.25  # how often a bake looks for a `promote` / `rollback` given from another terminal


class RolloutError(RuntimeError):
    """A rollout cannot start or continue; the message says why."""


@dataclass(frozen=True)
class RolloutSpec:
    model: str
    version: int
    mode: str = "canary"  # canary | shadow | swap (version_policy only, no split)
    steps: tuple[float, ...] = (10.0, 50.0, 100.0)  # traffic share (shadow: shadowed share) per step
    bake_s: float = 60.0
    limits: GateLimits = field(default_factory=GateLimits)
    comparison: str = "distance"
    tolerance: float = 1e-3
    promote: bool = True  # after the last step passes; else it waits for `modelrepo rollout promote`
    max_wait_s: float = 60.0  # how long a step may bake beyond bake_s for limits.min_calls candidate calls

    def __post_init__(self):
        if self.mode not in MODES:
            raise RolloutError(f"rollout mode must be one of {MODES}, got {self.mode!r}")
        if not self.steps or any(not 0 < s <= 100 for s in self.steps) or list(self.steps) != sorted(self.steps):
            raise RolloutError(f"--steps must be increasing percentages within (0, 100], got {list(self.steps)}")
        if self.bake_s < 0 or self.max_wait_s < 0:
            raise RolloutError(f"--bake and --max-wait must be >= 0 seconds, got {self.bake_s} and {self.max_wait_s}")


def candidate_calls(before: Snapshot, after: Snapshot, spec: RolloutSpec) -> float:
    return delta(before, after, "rollout_calls_total", model=spec.model, version=str(spec.version))


class Rollouts:
    def __init__(self, server: ServerControl, metrics: Callable[[], Snapshot], repository: Path,
                 store: RolloutStore, log: Callable[[str], None] = print):
        self.server, self.metrics, self.repository, self.store, self.log = server, metrics, Path(repository), store, log

    # -- the repository and the server
    def served(self, model: str) -> list[int]:
        folder = self.repository / model
        if not (folder / "config.pbtxt").exists():
            raise RolloutError(f"there is no model {model!r} in {self.repository}")
        return served_versions(folder, read_config(folder))

    def serve_versions(self, model: str, versions: list[int]) -> None:
        folder = self.repository / model
        config = read_config(folder)
        serve_only(config, versions)
        rewrite_config(folder, config)
        self.server.load_model(model)

    def route(self, policy: RolloutPolicy) -> None:
        set_policy(self.repository, policy)
        self.server.load_model(router_name(policy.target))

    def prepare(self, model: str) -> str:
        """MODEL_rollout written (if missing) and loaded, routing everything to the serving version."""
        served = self.served(model)
        if not (self.repository / router_name(model) / "config.pbtxt").exists():
            write_router(self.repository, model, served)
            self.log(f"{model}: wrote {router_name(model)} (clients send requests there during rollouts)")
        self.route(RolloutPolicy(target=model, primary_version=max(served)))
        return router_name(model)

    # -- the operations
    def start(self, spec: RolloutSpec) -> dict:
        state = self.store.state(spec.model)
        if state and state["phase"] in ACTIVE_PHASES:
            raise RolloutError(f"{spec.model}: the rollout to version {state['candidate']} is {state['phase']}; "
                               f"`modelrepo rollout promote` or `rollback` it first")
        served = self.served(spec.model)
        if spec.version not in version_folders(self.repository / spec.model):
            raise RolloutError(f"{spec.model} has no version {spec.version} (folders: "
                               f"{version_folders(self.repository / spec.model)}); write it with `modelrepo add --version`")
        if served == [spec.version]:
            raise RolloutError(f"{spec.model}: version {spec.version} is already the serving version")
        primary = max(v for v in served if v != spec.version)
        self.prepare(spec.model)
        state = {"model": spec.model, "phase": "running", "serving": primary, "candidate": spec.version,
                 "mode": spec.mode, "steps": list(spec.steps), "step": None, "bake_s": spec.bake_s,
                 "limits": vars(spec.limits), "started": time.time()}
        self.store.save(spec.model, state)
        self.store.record(spec.model, "start", serving=primary, candidate=spec.version, mode=spec.mode,
                          steps=list(spec.steps), bake_s=spec.bake_s, limits=vars(spec.limits))
        try:
            self.serve_versions(spec.model, [primary, spec.version])
        except ControlError as err:
            return self.candidate_did_not_load(spec, primary, err)
        self.log(f"{spec.model}: version {spec.version} loaded beside version {primary}")
        if spec.mode == "swap":
            return self.promote(spec.model, reason="swap: no traffic split asked")
        return self.steps(spec, primary, state)

    def candidate_did_not_load(self, spec: RolloutSpec, primary: int, err: Exception) -> dict:
        """The serving version goes on serving; the candidate is taken out of the policy again."""
        try:
            self.serve_versions(spec.model, [primary])
        except ControlError as again:
            err = RolloutError(f"{err}; restoring version {primary} alone also failed: {again}")
        reason = f"version {spec.version} failed to load: {err}"
        self.log(f"{spec.model}: {reason}; version {primary} serves on")
        return self.finish(spec.model, "rolled_back", "load_failed", primary, spec.version, reason=reason)

    def steps(self, spec: RolloutSpec, primary: int, state: dict) -> dict:
        for index, percent in enumerate(spec.steps):
            policy = RolloutPolicy(target=spec.model, primary_version=primary, candidate_version=spec.version,
                                   mode=spec.mode, percent=percent, salt=f"rollout:{spec.model}:{spec.version}",
                                   comparison=spec.comparison, tolerance=spec.tolerance)
            self.route(policy)
            self.store.save(spec.model, {**state, "step": index, "percent": percent})
            self.store.record(spec.model, "step", serving=primary, candidate=spec.version, step=index, percent=percent)
            self.log(f"{spec.model}: step {index + 1}/{len(spec.steps)}: {spec.mode} {percent:g}% to version "
                     f"{spec.version}, baking {spec.bake_s:g} s")
            before = self.metrics()
            interrupted = self.bake(spec.model, spec.bake_s)
            after = self.metrics()
            waited_until = time.monotonic() + spec.max_wait_s
            while not interrupted and candidate_calls(before, after, spec) < spec.limits.min_calls \
                    and time.monotonic() < waited_until:  # too few calls to judge yet (slow traffic)
                interrupted = self.bake(spec.model, 1.0)
                after = self.metrics()
            if interrupted:
                return interrupted
            gates = step_gates(before, after, spec.model, spec.version, spec.limits)
            failed = [gate for gate in gates if not gate.passed]
            figures = {str(v): version_figures(before, after, spec.model, v) for v in (primary, spec.version)}
            self.store.record(spec.model, "gates", serving=primary, candidate=spec.version, step=index, percent=percent,
                              gates=[g.record() for g in gates], versions=figures,
                              decision="rollback" if failed else ("next_step" if index + 1 < len(spec.steps) else "passed"))
            for gate in gates:
                self.log(f"  {gate.describe()}")
            if failed:
                return self.rollback(spec.model, reason="; ".join(g.describe() for g in failed), automatic=True)
        if spec.promote:
            return self.promote(spec.model, reason="every step passed its gates")
        self.store.save(spec.model, {**self.store.state(spec.model), "phase": "awaiting_promote"})
        self.log(f"{spec.model}: every step passed; `modelrepo rollout promote {spec.model}` serves version {spec.version}")
        return self.store.state(spec.model)

    def bake(self, model: str, seconds: float) -> dict | None:
        """Wait out a step; a promote / rollback given meanwhile (another process) ends the rollout here."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            state = self.store.state(model)
            if state and state["phase"] not in ACTIVE_PHASES:
                self.log(f"{model}: {state['phase']} meanwhile; stepping stops")
                return state
            time.sleep(min(POLL_S, max(until - time.monotonic(), 0)))
        return None

    def active(self, model: str) -> dict:
        state = self.store.state(model)
        if not state or state["phase"] not in ACTIVE_PHASES:
            raise RolloutError(f"{model}: no rollout in progress (`modelrepo rollout status {model}`)")
        return state

    def promote(self, model: str, reason: str = "promoted by hand") -> dict:
        state = self.active(model)
        candidate = state["candidate"]
        self.route(RolloutPolicy(target=model, primary_version=candidate))  # first: no request goes to the old one
        self.serve_versions(model, [candidate])
        self.log(f"{model}: version {candidate} promoted ({reason})")
        return self.finish(model, "promoted", "promote", candidate, candidate, reason=reason, previous=state["serving"])

    def rollback(self, model: str, reason: str = "rolled back by hand", automatic: bool = False) -> dict:
        state = self.active(model)
        serving = state["serving"]
        self.route(RolloutPolicy(target=model, primary_version=serving))  # first: no request goes to the candidate
        self.serve_versions(model, [serving])
        self.log(f"{model}: rolled back to version {serving} ({reason})")
        return self.finish(model, "rolled_back", "rollback", serving, state["candidate"], reason=reason, automatic=automatic)

    def finish(self, model: str, phase: str, event: str, serving: int, candidate: int, **fields) -> dict:
        state = {**(self.store.state(model) or {}), "phase": phase, "serving": serving, "candidate": candidate,
                 "finished": time.time(), **fields}
        self.store.save(model, state)
        self.store.record(model, event, serving=serving, candidate=candidate, decision=phase, **fields)
        return state

    def status(self, model: str) -> dict:
        state = self.store.state(model) or {"model": model, "phase": "none"}
        return {**state, "served_versions": self.served(model)}
