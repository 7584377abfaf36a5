"""Traffic policies for credit_router, as plain functions of the config parameters and a user id.

- canary: `canary_percent` % of users go to the candidate, sticky: a user's bucket is a hash of
  (salt, user_id), so the same user always lands on the same side until the salt changes.
- ab: two sticky arms, "a" (primary) and "b" (candidate), `ab_b_percent` % of users in arm b.
- shadow: the primary answers; the candidate gets the same request and the two are compared, for
  `shadow_percent` % of users (sticky by user id; requests without one are sampled at random).
- cascade: one member first; if its probability is confidently outside the review band
  (< cascade_approve_below or >= cascade_decline_at), that answers; otherwise the full ensemble.
- primary: everything to the primary.
Requests without a `user_id` parameter go to the primary (canary) or arm a (ab).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

MODES = ("primary", "canary", "ab", "shadow", "cascade")


@dataclass(frozen=True)
class RouterPolicy:
    mode: str = "primary"
    primary_model: str = "credit_default"
    candidate_model: str = "credit_candidate"
    canary_percent: float = 10.0
    ab_b_percent: float = 50.0
    shadow_percent: float = 100.0
    salt: str = "credit-router"
    cascade_model: str = "credit_member_0"
    cascade_approve_below: float = 0.02
    cascade_decline_at: float = 0.9

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"router mode must be one of {MODES}, got {self.mode!r}")
        for name in ("canary_percent", "ab_b_percent", "shadow_percent"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be within [0, 100]")

    @classmethod
    def from_parameters(cls, get) -> "RouterPolicy":
        """`get(key, default) -> str`: e.g. ModelContext.parameter."""
        values = {}
        for spec in fields(cls):
            raw = get(spec.name, str(spec.default))
            values[spec.name] = float(raw) if spec.type == "float" else raw
        return cls(**values)


def bucket(user_id: str, salt: str) -> float:
    """A stable position in [0, 100) for a user."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def assign(policy: RouterPolicy, user_id: str | None) -> str:
    """The route of a request: primary | candidate (canary) | arm_a | arm_b (ab)."""
    if policy.mode == "canary":
        return "candidate" if user_id is not None and bucket(user_id, policy.salt) < policy.canary_percent else "primary"
    if policy.mode == "ab":
        return "arm_b" if user_id is not None and bucket(user_id, policy.salt) < policy.ab_b_percent else "arm_a"
    return "primary"


def in_share(percent: float, user_id: str | None, salt: str, draw: float) -> bool:
    """Is this request in a `percent` share of traffic? Sticky by user id; `draw` in [0, 100) is used
    when there is no user id (such requests are sampled at random)."""
    position = draw if user_id is None else bucket(user_id, salt)
    return position < percent


def shadowed(policy: RouterPolicy, user_id: str | None, draw: float) -> bool:
    """Does this request also go to the candidate?"""
    return in_share(policy.shadow_percent, user_id, policy.salt + ":shadow", draw)


def confident(policy: RouterPolicy, probability) -> bool:
    """Cascade: may the cheap member answer alone for these probabilities?"""
    import numpy as np

    p = np.asarray(probability)
    return bool(((p < policy.cascade_approve_below) | (p >= policy.cascade_decline_at)).all())
