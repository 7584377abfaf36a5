from __future__ import annotations

import numpy as np
import pytest

from modelrepo.python_backends.routing import RouterPolicy, assign, bucket, confident, shadowed


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 90])
def test_canary_share_over_10000_users_is_within_2_points(percent):
    policy = RouterPolicy(mode="canary", canary_percent=percent)
    routes = [assign(policy, f"user-{i}") for i in range(10_000)]
    share = 100 * routes.count("candidate") / len(routes)
    assert abs(share - percent) <= 2


def test_assignment_is_sticky_and_changes_only_with_the_salt():
    policy = RouterPolicy(mode="ab", ab_b_percent=50)
    first = [assign(policy, f"u{i}") for i in range(500)]
    assert first == [assign(policy, f"u{i}") for i in range(500)]
    resalted = RouterPolicy(mode="ab", ab_b_percent=50, salt="experiment-2")
    assert first != [assign(resalted, f"u{i}") for i in range(500)]
    assert set(first) == {"arm_a", "arm_b"}


def test_requests_without_a_user_go_to_the_primary_side():
    assert assign(RouterPolicy(mode="canary", canary_percent=100), None) == "primary"
    assert assign(RouterPolicy(mode="ab", ab_b_percent=100), None) == "arm_a"
    assert assign(RouterPolicy(mode="shadow"), "u1") == "primary"


def test_buckets_are_uniform_and_in_range():
    values = np.array([bucket(str(i), "s") for i in range(20_000)])
    assert values.min() >= 0 and values.max() < 100
    counts, _ = np.histogram(values, bins=10, range=(0, 100))
    assert counts.min() > 1800 and counts.max() < 2200


def test_policy_from_parameters_and_its_rules():
    params = {"mode": "canary", "canary_percent": "12.5", "candidate_model": "x"}
    policy = RouterPolicy.from_parameters(lambda key, default: params.get(key, default))
    assert policy.mode == "canary" and policy.canary_percent == 12.5 and policy.candidate_model == "x"
    assert policy.primary_model == "credit_default"
    with pytest.raises(ValueError, match="mode"):
        RouterPolicy(mode="random")
    with pytest.raises(ValueError, match="canary_percent"):
        RouterPolicy(canary_percent=120)


def test_cascade_confidence_band():
    policy = RouterPolicy(mode="cascade", cascade_approve_below=0.02, cascade_decline_at=0.9)
    assert confident(policy, [0.001, 0.95])
    assert not confident(policy, [0.001, 0.5])
    assert not confident(policy, [0.02])


def test_shadow_sampling_is_sticky_per_user_and_random_without_one():
    policy = RouterPolicy(mode="shadow", shadow_percent=25)
    chosen = [shadowed(policy, f"user-{i}", draw=99.0) for i in range(10_000)]
    assert abs(100 * sum(chosen) / len(chosen) - 25) <= 2
    assert chosen[:100] == [shadowed(policy, f"user-{i}", draw=0.0) for i in range(100)]
    assert shadowed(policy, None, draw=10.0) and not shadowed(policy, None, draw=30.0)
    assert all(shadowed(RouterPolicy(mode="shadow"), f"u{i}", 0.0) for i in range(100))
