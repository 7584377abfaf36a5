"""rollout routers (BLS, async): one model's serving version and a candidate version, split by policy.

`modelrepo rollout` writes MODEL_rollout in front of MODEL (same inputs and outputs, plus ROUTE) and
changes its policy by a config reload. Both sides are versions of the same model, called through BLS
with model_version:
- primary: every request to `primary_version`;
- canary: `percent` % of traffic to `candidate_version`, sticky per `user_id` request parameter
  (requests without one are sampled at random); a candidate that fails never fails the request: the
  primary answers it (route candidate_fallback) and the candidate's error is counted;
- shadow: the primary answers; then, for `percent` % of traffic, the candidate gets the same inputs
  and the two answers are compared (python_backends/rollout_compare.py).
Every version call is counted and timed per version (the gates read these metrics), and the PSI of
the candidate's predictions against the primary's is exported as a gauge.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, fields

from modelrepo.python_backends.batching import Tensors, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError, refuse_unknown_parameters
from modelrepo.python_backends.metrics import COUNTER, GAUGE, HISTOGRAM, InMemoryRegistry
from modelrepo.python_backends.rollout_compare import COMPARISONS, PredictionShift, disagreements, row_summary
from modelrepo.python_backends.routing import in_share
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS, RemoteModelError

import numpy as np

ROUTE = "ROUTE"
MODES = ("primary", "canary", "shadow")
ROUTER_PARAMETERS = ("user_id",)
LATENCY_BUCKETS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
NOT_MEASURED = -1.0  # the PSI gauge before both versions have answered enough rows
PSI_EVERY = 10  # candidate answers between two PSI computations (it sorts the primary's window)


@dataclass(frozen=True)
class RolloutPolicy:
    target: str = ""
    primary_version: int = 1
    candidate_version: int = 0  # 0: none
    mode: str = "primary"
    percent: float = 0.0
    salt: str = "rollout"
    comparison: str = "distance"
    tolerance: float = 1e-3

    def __post_init__(self):
        if not self.target:
            raise ValueError("router parameter `target` (the model whose versions are routed) is required")
        if self.mode not in MODES:
            raise ValueError(f"router parameter `mode` must be one of {MODES}, got {self.mode!r}")
        if self.mode != "primary" and self.candidate_version < 1:
            raise ValueError(f"router mode {self.mode!r} needs a `candidate_version` >= 1")
        if not 0 <= self.percent <= 100:
            raise ValueError(f"router parameter `percent` must be within [0, 100], got {self.percent}")
        if self.comparison not in COMPARISONS:
            raise ValueError(f"router parameter `comparison` must be one of {COMPARISONS}, got {self.comparison!r}")

    @classmethod
    def from_parameters(cls, get) -> "RolloutPolicy":
        """`get(key, default) -> str`: e.g. ModelContext.parameter."""
        casts = {"int": int, "float": float}
        return cls(**{spec.name: casts.get(spec.type, str)(get(spec.name, str(spec.default))) for spec in fields(cls)})


class RolloutRouter:
    def __init__(self, policy: RolloutPolicy, infer, inputs: list[str], outputs: list[str], metrics=None):
        self.policy, self.infer, self.inputs, self.outputs = policy, infer, inputs, outputs
        metrics = metrics or InMemoryRegistry()
        self.calls = metrics.family("rollout_calls_total", "Calls to each version (answers and errors)", COUNTER)
        self.errors = metrics.family("rollout_call_errors_total", "Calls to each version that failed (not the client's fault)", COUNTER)
        self.latency = metrics.family("rollout_call_latency_seconds", "Latency of each version's calls", HISTOGRAM)
        self.routes = metrics.family("rollout_requests_total", "Client requests by the route that answered", COUNTER)
        self.compared = metrics.family("rollout_shadow_comparisons_total", "Shadowed rows compared", COUNTER)
        self.disagreed = metrics.family("rollout_shadow_disagreements_total", "Shadowed rows whose answers disagree", COUNTER)
        self.distance = metrics.family("rollout_shadow_distance_total", "Sum of shadowed rows' distances (distance comparison)", COUNTER)
        self.psi_gauge = metrics.family("rollout_prediction_psi", "PSI of the candidate's predictions against the primary's", GAUGE)
        self.shift = PredictionShift()
        self.since_psi = 0
        self.psi_gauge.metric({"model": policy.target}).set(NOT_MEASURED)  # this policy's windows start empty

    @classmethod
    def from_context(cls, context: ModelContext) -> "RolloutRouter":
        inputs = [spec["name"] for spec in context.config.get("input", [])]
        outputs = [spec["name"] for spec in context.config.get("output", []) if spec["name"] != ROUTE]
        return cls(RolloutPolicy.from_parameters(context.parameter), context.infer, inputs, outputs, context.metrics)

    def labels(self, version: int) -> dict[str, str]:
        return {"model": self.policy.target, "version": str(version)}

    async def call(self, version: int, inputs: Tensors) -> Tensors:
        """One version's answer, counted and timed; its PSI window fed."""
        started = time.perf_counter()
        self.calls.metric(self.labels(version)).increment(1.0)
        try:
            outputs = await self.infer(self.policy.target, inputs, self.outputs, version)
        except RemoteModelError as err:
            if not err.client_error:
                self.errors.metric(self.labels(version)).increment(1.0)
            raise
        finally:
            self.latency.metric(self.labels(version), LATENCY_BUCKETS).observe(time.perf_counter() - started)
        self.observe(version, outputs)
        return outputs

    def observe(self, version: int, outputs: Tensors) -> None:
        if self.policy.candidate_version < 1:
            return
        side = "candidate" if version == self.policy.candidate_version else "primary"
        self.shift.add(side, row_summary(outputs, self.policy.comparison))
        self.since_psi += side == "candidate"
        if side == "candidate" and self.since_psi >= PSI_EVERY:
            self.since_psi = 0
            score = self.shift.score()
            if score is not None:
                self.psi_gauge.metric({"model": self.policy.target}).set(score)

    async def execute_request_async(self, request: Tensors, respond) -> Tensors:
        parameters = request.get(REQUEST_PARAMETERS) or {}
        refuse_unknown_parameters(parameters, ROUTER_PARAMETERS, "send the caller's id as `user_id` (it keeps the canary sticky)")
        inputs = {name: required(request, name) for name in self.inputs}
        user_id = None if parameters.get("user_id") is None else str(parameters["user_id"])
        policy = self.policy
        if policy.mode == "canary" and in_share(policy.percent, user_id, policy.salt, random.random() * 100):
            try:
                return self.answer(await self.call(policy.candidate_version, inputs), "candidate", respond)
            except RemoteModelError as err:
                if err.client_error:
                    raise
                return self.answer(await self.call(policy.primary_version, inputs), "candidate_fallback", respond)
        answered = self.answer(await self.call(policy.primary_version, inputs), "primary", respond)
        if policy.mode == "shadow" and in_share(policy.percent, user_id, policy.salt + ":shadow", random.random() * 100):
            await self.shadow(inputs, answered)
        return answered

    def answer(self, outputs: Tensors, route: str, respond) -> Tensors:
        rows = len(next(iter(outputs.values())))
        answer = {**outputs, ROUTE: np.array([route.encode()] * rows, dtype=object).reshape(-1, 1)}
        self.routes.metric({"model": self.policy.target, "route": route}).increment(1.0)
        respond(answer)  # the client has its answer before any shadow call
        return answer

    async def shadow(self, inputs: Tensors, primary: Tensors) -> None:
        try:
            candidate = await self.call(self.policy.candidate_version, inputs)
        except (RemoteModelError, InputError):
            return  # counted by call(); the client was answered by the primary
        disagreeing, distance = disagreements({k: primary[k] for k in self.outputs}, candidate,
                                              self.policy.comparison, self.policy.tolerance)
        labels = {"model": self.policy.target}
        self.compared.metric(labels).increment(float(len(next(iter(candidate.values())))))
        self.disagreed.metric(labels).increment(float(disagreeing))
        self.distance.metric(labels).increment(distance)
