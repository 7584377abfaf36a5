"""Sampling, stop sequences and word-list packing: pure functions, no model."""

import numpy as np
import pytest
import torch

from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.llm.sampling import SamplingParams, StopMatcher, filtered_logits, next_token


def test_greedy_takes_the_largest_logit():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    params = SamplingParams(max_tokens=4)
    assert next_token(logits, params, params.generator(), generated=0) == 1


def test_end_id_is_suppressed_before_min_length():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    params = SamplingParams(max_tokens=4, min_length=2, end_ids=frozenset({1}))
    assert next_token(logits, params, params.generator(), generated=1) == 2
    assert next_token(logits, params, params.generator(), generated=2) == 1


def test_top_k_and_top_p_remove_the_tail():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept_k = torch.isfinite(filtered_logits(logits, SamplingParams(max_tokens=1, temperature=1.0, top_k=2)))
    assert kept_k.tolist() == [True, True, False, False]
    kept_p = torch.isfinite(filtered_logits(logits, SamplingParams(max_tokens=1, temperature=1.0, top_p=0.7)))
    assert kept_p.tolist() == [True, True, False, False]  # 0.5 < 0.7, 0.8 >= 0.7: the third goes


def test_a_seed_makes_sampling_reproducible_and_different_seeds_differ():
    logits = torch.zeros(1000)  # uniform: every draw is the generator's choice

    def draws(seed):
        params = SamplingParams(max_tokens=1, temperature=1.0, random_seed=seed)
        generator = params.generator()
        return [next_token(logits, params, generator, generated=i) for i in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_stop_matcher_finds_sequences_and_holds_back_possible_prefixes():
    stops = StopMatcher(((5, 6, 7), (9,)))
    assert stops.matched([1, 5, 6, 7]) == (5, 6, 7)
    assert stops.matched([1, 9]) == (9,)
    assert stops.matched([1, 5, 6]) is None
    assert stops.hold_back([1, 5, 6]) == 2  # could still become 5 6 7
    assert stops.hold_back([1, 5]) == 1
    assert stops.hold_back([1, 6]) == 0


def test_word_lists_round_trip_in_tensorrt_llm_format():
    packed = p.pack_word_lists([[5, 6, 7], [9]])
    assert packed.tolist() == [[5, 6, 7, 9], [3, 4, -1, -1]]
    assert p.unpack_word_lists(packed) == ((5, 6, 7), (9,))
    assert p.unpack_word_lists(p.pack_word_lists([])) == ()


@pytest.mark.parametrize(
    "args, name",
    [
        ((-0.1, 1.0, 0, 0, 8), "temperature"),
        ((float("nan"), 1.0, 0, 0, 8), "temperature"),
        ((1.0, 0.0, 0, 0, 8), "top_p"),
        ((1.0, 1.5, 0, 0, 8), "top_p"),
        ((1.0, 1.0, -1, 0, 8), "top_k"),
        ((1.0, 1.0, 0, 9, 8), "min_length"),
    ],
)
def test_sampling_settings_out_of_range_are_named(args, name):
    with pytest.raises(InputError) as err:
        p.check_sampling(*args)
    assert err.value.input_name == name


def test_max_tokens_bounds_and_unknown_parameters():
    assert p.check_max_tokens(1, 512) == 1
    for bad in (0, -3, 513, 10**9):
        with pytest.raises(InputError, match="max_tokens"):
            p.check_max_tokens(bad, 512)
    p.check_parameters({})
    with pytest.raises(InputError, match="'temprature'.*not a known parameter"):
        p.check_parameters({"temprature": 0.5})


def test_scalar_reads_one_value_and_refuses_more():
    assert p.scalar({"x": np.array([[3]])}, "x", 0) == 3
    assert p.scalar({}, "x", 5) == 5
    with pytest.raises(InputError, match="exactly one value"):
        p.scalar({"x": np.array([[1, 2]])}, "x", 0)
