from __future__ import annotations

import numpy as np
import pytest

from modelrepo.python_backends.batching import (answer_each, check_ranks, concat_requests, input_ranks, length_groups,
                                               pad_to_length, split_rows)
from modelrepo.python_backends.errors import InputError


def test_ragged_inputs_are_right_padded_and_split_back():
    requests = [{"ids": np.array([[1, 2]])}, {"ids": np.array([[3, 4, 5], [6, 7, 8]])}]
    joined, sizes = concat_requests(requests, ["ids"], ragged=["ids"])
    np.testing.assert_array_equal(joined["ids"], [[1, 2, 0], [3, 4, 5], [6, 7, 8]])
    assert sizes == [1, 2]
    first, second = split_rows(joined, sizes)
    np.testing.assert_array_equal(first["ids"], [[1, 2, 0]])
    np.testing.assert_array_equal(second["ids"], [[3, 4, 5], [6, 7, 8]])


def test_non_ragged_inputs_of_different_lengths_are_an_error():
    with pytest.raises(ValueError):
        concat_requests([{"x": np.zeros((1, 2))}, {"x": np.zeros((1, 3))}], ["x"])


def test_a_long_sequence_runs_apart_from_short_ones_when_padding_costs_more_than_a_run():
    # four one-row queries of 8-12 tokens and a 200-token review: padded together 5 x 200 = 1000 tokens
    lengths, rows = [12, 200, 8, 10, 9], [1, 1, 1, 1, 1]
    assert length_groups(lengths, rows, run_cost_tokens=10) == [[2, 4, 3, 0], [1]]
    assert length_groups(lengths, rows, run_cost_tokens=1_000_000) == [[2, 4, 3, 0, 1]]  # never split
    assert length_groups([9, 9, 9], [1, 2, 1], run_cost_tokens=0) == [[0, 1, 2]]  # equal lengths: a tie keeps one run
    assert length_groups([5], [3], run_cost_tokens=10) == [[0]] and length_groups([], [], 10) == []


def cost(groups, lengths, rows, run_cost):
    return sum(run_cost + sum(rows[i] for i in group) * max(lengths[i] for i in group) for group in groups)


def test_length_groups_cost_no_more_than_any_cut_of_the_sorted_requests():
    import itertools
    random = np.random.default_rng(7)
    for _ in range(200):
        n = int(random.integers(1, 8))
        lengths, rows = random.integers(1, 300, n).tolist(), random.integers(1, 5, n).tolist()
        run_cost = float(random.choice([0, 4, 10, 50, 500]))
        groups = length_groups(lengths, rows, run_cost)
        assert sorted(i for group in groups for i in group) == list(range(n))  # every request once
        order = sorted(range(n), key=lambda i: lengths[i])
        every_cut = (
            [order[a:b] for a, b in zip((0, *cuts), (*cuts, n))]
            for k in range(n) for cuts in itertools.combinations(range(1, n), k)
        )
        assert cost(groups, lengths, rows, run_cost) <= min(cost(g, lengths, rows, run_cost) for g in every_cut) + 1e-9


def test_pad_to_length_keeps_full_rows():
    array = np.array([[1, 2, 3]])
    assert pad_to_length(array, 3) is array
    np.testing.assert_array_equal(pad_to_length(array, 5, pad_value=9), [[1, 2, 3, 9, 9]])


def test_answer_each_computes_valid_requests_together_and_keeps_order():
    calls = []

    def prepare(request):
        if request["x"] < 0:
            raise InputError("x", "must be >= 0")
        return request["x"]

    def compute(values):
        calls.append(list(values))
        return [{"y": v * 10} for v in values]

    results = answer_each([{"x": 1}, {"x": -1}, {"x": 2}], prepare, compute)
    assert calls == [[1, 2]]
    assert results[0] == {"y": 10} and results[2] == {"y": 20}
    assert isinstance(results[1], InputError) and str(results[1]) == "input 'x': must be >= 0"


def test_answer_each_with_only_bad_requests_computes_nothing():
    def compute(values):
        raise AssertionError("must not be called")

    def reject(request):
        raise InputError("x", "bad")

    results = answer_each([{"x": 1}], reject, compute)
    assert isinstance(results[0], InputError)


def test_a_tensor_without_its_batch_dimension_is_refused_by_name():
    """What Triton 2.51 hands the model for HTTP shape [2**62, 1] (batch size truncated to 0): [1]."""
    config = {"max_batch_size": 64, "input": [{"name": "TEXT", "dims": [1]}, {"name": "LEN", "dims": [1], "reshape": {}}]}
    ranks = input_ranks(config)
    assert ranks == {"TEXT": 2, "LEN": 1}  # reshape {}: the model sees [batch]
    check_ranks({"TEXT": np.array([[b"ok"]], dtype=object), "LEN": np.array([3])}, ranks)
    check_ranks({"TEXT": np.array([[b"ok"]], dtype=object)}, ranks)  # an optional input not sent
    with pytest.raises(InputError, match=r"input 'TEXT': arrived with shape \[1\], not the 2 dimensions .* send the real batch size"):
        check_ranks({"TEXT": np.array([b"ok"], dtype=object)}, ranks)
    assert input_ranks({"max_batch_size": 0, "input": [{"name": "X", "dims": [2, 3]}]}) == {"X": 2}
