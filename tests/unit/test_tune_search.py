"""The tuner's model: predictions on known curves, and a shortlist that respects the budget."""

from __future__ import annotations

import math

import pytest

from modelrepo.perf.tune_search import Candidate, predict_closed, predict_open, service_ms, shortlist

CURVE = {1: 22.0, 2: 24.0, 4: 28.0, 8: 36.0}  # 20 ms + 2 ms per row


def test_service_time_interpolates_and_extrapolates():
    assert service_ms(CURVE, 3) == 26.0 and service_ms(CURVE, 16) == 52.0 and service_ms(CURVE, 1) == 22.0


def test_closed_loop_prefers_parallel_instances_with_full_batches():
    best = shortlist(CURVE, 100, (1, 2), concurrency=8)
    assert best[0].candidate.instances == 2 and best[0].batch == 4
    assert best[0].throughput_per_s == pytest.approx(8000 / 28)
    one = predict_closed(Candidate(1, 8, 0), CURVE, 8)
    assert one.p99_ms == 36 and one.throughput_per_s == pytest.approx(8000 / 36)


def test_a_tight_budget_excludes_slow_batches():
    best = shortlist(CURVE, 40, (1, 2), concurrency=8)  # 40 ms * 0.8 safety = 32 ms: 1 x 8 (36 ms) is out
    assert all(p.p99_ms <= 32 for p in best) and (best[0].candidate.instances, best[0].batch) == (2, 4)


def test_when_nothing_fits_the_lowest_latency_candidate_is_still_verified():
    (only,) = shortlist(CURVE, 20, (1, 2), concurrency=8)
    assert only.p99_ms == min(predict_closed(c, CURVE, 8).p99_ms for c in [Candidate(2, 4, 0), Candidate(2, 8, 0)])


def test_open_loop_delay_forms_batches_and_overload_is_infinite_latency():
    slow_rate = predict_open(Candidate(1, 1, 0), CURVE, 100)  # capacity 1000/22 ≈ 45/s < 100/s
    assert math.isinf(slow_rate.p99_ms)
    batched = predict_open(Candidate(2, 4, 30000), CURVE, 100)  # 30 ms wait at 100/s fills 4
    assert batched.batch == 4 and batched.p99_ms < 100 and batched.throughput_per_s == 100
    best = shortlist(CURVE, 100, (1, 2), rate_per_s=100)
    assert best and all(p.p99_ms <= 80 for p in best)


def test_exactly_one_load_kind():
    with pytest.raises(ValueError):
        shortlist(CURVE, 100, (1,))
