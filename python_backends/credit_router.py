"""credit_router (BLS, async): canary / A-B / shadow / cascade routing in front of the credit pipelines.

The policy comes from the model's config parameters (python_backends/routing.py), so a config
reload (`load_model` with a config override) changes it without a restart. A request's
`user_id` parameter makes canary and A/B assignment sticky. The answer carries ROUTE, which path
answered. A candidate that fails or is missing never fails the request: the primary answers and
credit_router_fallbacks_total counts it. Shadow disagreements (different DECISION) are counted and
logged as JSON lines (rotating file, `shadow_log` parameter).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import random
import time
from pathlib import Path

import numpy as np

from modelrepo.python_backends.batching import Tensors, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.ensemble_stats import OUTPUT_NAMES
from modelrepo.python_backends.errors import InputError, refuse_unknown_parameters
from modelrepo.python_backends.credit_features import (
    INPUT_NAMES,
    CreditInputError,
    count_rejection,
    rejection_counter,
    validate_credit_inputs,
)
from modelrepo.python_backends.metrics import COUNTER, HISTOGRAM, InMemoryRegistry
from modelrepo.python_backends.routing import RouterPolicy, assign, confident, shadowed
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS, RemoteModelError

OUTPUTS = list(OUTPUT_NAMES)
ROUTER_PARAMETERS = ("user_id",)  # the only request parameter the router reads
LATENCY_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]


def shadow_logger(path: Path) -> logging.Logger:
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"credit_router.shadow.{path}")
    if not logger.handlers:
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=3)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def decisions(outputs: Tensors) -> list[str]:
    return [value.decode() for value in outputs["DECISION"].reshape(-1)]


class CreditRouter:
    def __init__(self, policy: RouterPolicy, infer, shadow_log: Path, metrics=None):
        self.policy = policy
        self.infer = infer
        self.shadow_log = shadow_logger(shadow_log)
        metrics = metrics or InMemoryRegistry()
        self.rejections = rejection_counter(metrics)
        self.requests = metrics.family("credit_router_requests_total", "Routed requests by policy and route", COUNTER)
        self.decided = metrics.family("credit_router_decisions_total", "Decisions by route (A/B arms)", COUNTER)
        self.latency = metrics.family("credit_router_latency_seconds", "End-to-end latency by route", HISTOGRAM)
        self.fallbacks = metrics.family("credit_router_fallbacks_total", "Candidate failures answered by the primary", COUNTER)
        self.shadow_compared = metrics.family("credit_shadow_comparisons_total", "Shadowed requests compared", COUNTER)
        self.shadow_disagreed = metrics.family(
            "credit_shadow_disagreements_total", "Shadowed requests whose DECISION differs", COUNTER
        )

    @classmethod
    def from_context(cls, context: ModelContext) -> "CreditRouter":
        from modelrepo.paths import cache_dir

        default_log = cache_dir() / "logs" / f"{context.name}_shadow.jsonl"
        return cls(
            RouterPolicy.from_parameters(context.parameter),
            context.infer,
            Path(context.parameter("shadow_log", str(default_log))),
            context.metrics,
        )

    async def execute_request_async(self, request: Tensors, respond) -> Tensors:
        """One request; in shadow mode the client is answered before the candidate runs."""
        return await self.route(request, respond)

    async def route(self, request: Tensors, respond=None) -> Tensors:
        started = time.perf_counter()
        try:  # refuse bad input here: BLS reports a callee's validation error as INTERNAL
            validate_credit_inputs(request)
        except CreditInputError as err:
            count_rejection(self.rejections, err)
            raise
        try:
            refuse_unknown_parameters(request.get(REQUEST_PARAMETERS) or {}, ROUTER_PARAMETERS,
                                      "send the caller's id as `user_id` (it keeps canary and A/B assignment sticky)")
        except InputError:
            # One fixed label: parameter names come from the client (unbounded label values otherwise).
            self.rejections.metric({"field": "parameters", "reason": "unknown_parameter"}).increment(1.0)
            raise
        inputs = {name: required(request, name) for name in INPUT_NAMES}
        user_id = request.get(REQUEST_PARAMETERS, {}).get("user_id")
        user_id = None if user_id is None else str(user_id)
        mode = self.policy.mode
        if mode == "shadow":
            return await self.shadowed(inputs, user_id, lambda out: self.answer(out, "primary", mode, started, respond))
        if mode == "cascade":
            route, outputs = await self.cascade(inputs)
        else:
            route = assign(self.policy, user_id)
            use_candidate = route in ("candidate", "arm_b")
            model = self.policy.candidate_model if use_candidate else self.policy.primary_model
            route, outputs = await self.with_fallback(model, inputs, route, use_candidate)
        return self.answer(outputs, route, mode, started, respond)

    def answer(self, outputs: Tensors, route: str, mode: str, started: float, respond=None) -> Tensors:
        """Count, time and (with a responder) send the answer; idempotent per request."""
        rows = len(outputs["DECISION"])
        answer = {**outputs, "ROUTE": np.array([route.encode()] * rows, dtype=object).reshape(-1, 1)}
        self.requests.metric({"policy": mode, "route": route}).increment(1.0)
        for decision in decisions(outputs):
            self.decided.metric({"route": route, "decision": decision}).increment(1.0)
        self.latency.metric({"route": route}, LATENCY_BUCKETS).observe(time.perf_counter() - started)
        if respond is not None:
            respond(answer)
        return answer

    async def with_fallback(self, model: str, inputs: Tensors, route: str, is_candidate: bool) -> tuple[str, Tensors]:
        try:
            return route, await self.infer(model, inputs, OUTPUTS)
        except RemoteModelError as err:
            if err.client_error or not is_candidate:
                raise
            self.fallbacks.metric({"reason": "candidate_error", "candidate": model}).increment(1.0)
            return f"{route}_fallback", await self.infer(self.policy.primary_model, inputs, OUTPUTS)

    async def shadowed(self, inputs: Tensors, user_id: str | None, answer) -> Tensors:
        """The primary answers the client first (response sender); only then does the candidate run, so
        under light load it does not compete with the primary for the CPU."""
        if not shadowed(self.policy, user_id, random.random() * 100):
            return answer(await self.infer(self.policy.primary_model, inputs, OUTPUTS))
        primary = await self.infer(self.policy.primary_model, inputs, OUTPUTS)
        answered = answer(primary)  # the client has its answer before the candidate starts
        try:
            shadow = await self.infer(self.policy.candidate_model, inputs, OUTPUTS)
        except Exception as err:
            reason = "shadow_client_error" if getattr(err, "client_error", False) else "shadow_candidate_error"
            self.fallbacks.metric({"reason": reason, "candidate": self.policy.candidate_model}).increment(1.0)
            return answered
        self.shadow_compared.metric({}).increment(1.0)
        ours, theirs = decisions(primary), decisions(shadow)
        if ours != theirs:
            self.shadow_disagreed.metric({}).increment(1.0)
            self.shadow_log.info(json.dumps({
                "time": time.time(),
                "user_id": user_id,
                "primary_model": self.policy.primary_model,
                "candidate_model": self.policy.candidate_model,
                "primary": {"decision": ours, "probability": primary["DEFAULT_PROBABILITY"].reshape(-1).tolist()},
                "candidate": {"decision": theirs, "probability": shadow["DEFAULT_PROBABILITY"].reshape(-1).tolist()},
                "inputs": {"STUDENT": [v.decode(errors="replace") for v in inputs["STUDENT"].reshape(-1)],
                           "BALANCE": inputs["BALANCE"].reshape(-1).tolist(),
                           "INCOME": inputs["INCOME"].reshape(-1).tolist()},
            }))
        return answered

    async def cascade(self, inputs: Tensors) -> tuple[str, Tensors]:
        features = (await self.infer("credit_preprocess", inputs, ["FEATURES"]))["FEATURES"]
        cheap = (await self.infer(self.policy.cascade_model, {"FEATURES": features}, ["PROBABILITY"]))["PROBABILITY"]
        if not confident(self.policy, cheap):
            return "cascade_full", await self.infer(self.policy.primary_model, inputs, OUTPUTS)
        p = cheap.reshape(-1).astype(np.float32)
        decision = np.where(p >= self.policy.cascade_decline_at, "decline", "approve")
        return "cascade_short", {
            "DEFAULT_PROBABILITY": p.reshape(-1, 1),
            "UNCERTAINTY": np.zeros((len(p), 1), dtype=np.float32),  # one member: no ensemble spread
            "INTERVAL": np.stack([p, p], axis=1),
            "DECISION": np.array([d.encode() for d in decision], dtype=object).reshape(-1, 1),
            "CLASS_PROBABILITIES": np.stack([1 - p, p], axis=1),
        }
