"""Turning a list of Triton requests into one array and back: the core of dynamic batching."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from modelrepo.python_backends.context import non_negative_parameter
from modelrepo.python_backends.errors import InputError

Tensors = dict[str, np.ndarray]
T = TypeVar("T")


def required(request: Tensors, name: str) -> np.ndarray:
    value = request.get(name)
    if value is None:
        raise InputError(name, "is required but was not sent")
    return value


def input_ranks(config: dict) -> dict[str, int]:
    """Input name -> the number of dimensions each request's tensor has in this model: its config dims
    (or reshape), plus the batch dimension when the model batches (max_batch_size > 0)."""
    batched = int(config.get("max_batch_size", 0)) > 0
    ranks = {}
    for spec in config.get("input", []):
        reshape = spec.get("reshape")
        dims = reshape.get("shape", []) if reshape is not None else spec.get("dims", [])
        ranks[spec["name"]] = len(dims) + batched
    return ranks


def check_ranks(request: Tensors, ranks: dict[str, int]) -> None:
    """Triton checks every shape against the config, except that 2.51 keeps only the low 32 bits of a
    request's batch dimension: [2**62, 1] passes as batch size 0 and reaches the model as [1] (the
    batch dimension dropped). Refuse such a tensor by name instead of answering it."""
    for name, rank in ranks.items():
        value = request.get(name)
        if value is not None and value.ndim != rank:
            raise InputError(name, f"arrived with shape {list(value.shape)}, not the {rank} dimensions this model takes: "
                                   "its batch dimension was not a valid size (Triton 2.51 reads a dimension of 2**32 "
                                   "or more modulo 2**32); send the real batch size")


def pad_to_length(array: np.ndarray, length: int, pad_value=0) -> np.ndarray:
    """Right-pad axis 1 of a [batch, seq] array to `length`."""
    missing = length - array.shape[1]
    if missing == 0:
        return array
    return np.pad(array, ((0, 0), (0, missing)), constant_values=pad_value)


def concat_requests(
    requests: Sequence[Tensors], names: Sequence[str], ragged: Sequence[str] = ()
) -> tuple[Tensors, list[int]]:
    """Concatenate each named input over requests along the batch axis.

    Inputs named in `ragged` may differ in their second dimension between requests (e.g. token
    sequences): they are right-padded with zeros to the longest before concatenating.
    Returns the joined tensors and each request's batch size, for `split_rows`.
    """
    sizes = [int(required(request, names[0]).shape[0]) for request in requests]
    joined: Tensors = {}
    for name in names:
        parts = [required(request, name) for request in requests]
        if name in ragged:
            longest = max(part.shape[1] for part in parts)
            parts = [pad_to_length(part, longest) for part in parts]
        joined[name] = np.concatenate(parts, axis=0)
    return joined, sizes


RAGGED_RUN_COST = "ragged_run_cost_tokens"
# all-MiniLM-L6-v2 on one thread: a session.run costs about as much as 4-7 more padded tokens
# (perf/results/ragged_split.md fits time = a + b x rows x length: a / b was 4.0 and 6.7 in two runs;
# where the cut falls hardly depends on it)
RAGGED_RUN_COST_TOKENS = 7.0


def run_cost_tokens(value: str) -> float:
    """The parameter's tokens; a clear error for anything but a finite number ≥ 0."""
    return non_negative_parameter(RAGGED_RUN_COST, value, "tokens", "what one session.run costs beyond its tokens; "
                                  "0: every length runs alone, 1000000: never split")


def length_groups(lengths: Sequence[int], rows: Sequence[int], run_cost_tokens: float) -> list[list[int]]:
    """Requests (their indices) grouped into separate runs by sequence length, so that a dynamic batch of
    short texts and one long text does not pad every short one to the long one's length.

    A run is costed as `run_cost_tokens` (what one session.run costs beyond its tokens, in padded
    tokens) plus its rows times its longest length. The requests are sorted by length and cut where the
    total is least (dynamic programming over the sorted order; a batch holds at most max_batch_size
    requests). Ties keep fewer runs; groups come shortest first, each in sorted order.
    """
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    rows_before = np.concatenate([[0], np.cumsum([rows[index] for index in order])])
    best = [0.0] + [float("inf")] * len(order)  # best[end]: least cost of the first `end` sorted requests
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(end):  # largest last group first, so that ties keep fewer runs
            cost = best[start] + run_cost_tokens + float(rows_before[end] - rows_before[start]) * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


def split_rows(tensors: Tensors, sizes: Sequence[int]) -> list[Tensors]:
    """The inverse of `concat_requests`: one dict of tensors per request."""
    bounds = np.cumsum([0, *sizes])
    return [
        {name: array[start:stop] for name, array in tensors.items()}
        for start, stop in zip(bounds[:-1], bounds[1:])
    ]


def answer_each(
    requests: Sequence[Tensors],
    prepare: Callable[[Tensors], T],
    compute: Callable[[list[T]], list[Tensors]],
) -> list[Tensors | Exception]:
    """Validate requests one by one, then compute all valid ones together.

    `prepare` turns one request into what `compute` needs, or raises InputError; that request is
    answered with its error while its neighbours in the dynamic batch still get their results.
    """
    results: list[Tensors | Exception | None] = [None] * len(requests)
    valid: list[int] = []
    prepared: list[T] = []
    for index, request in enumerate(requests):
        try:
            prepared.append(prepare(request))
            valid.append(index)
        except InputError as err:
            results[index] = err
    if prepared:
        for index, outputs in zip(valid, compute(prepared), strict=True):
            results[index] = outputs
    return results  # type: ignore[return-value]


def run_in_steps(requests: Sequence[Tensors], steps: Sequence[Callable[[list[Tensors]], list]]) -> list[Tensors | Exception]:
    """Handlers chained inside one model: each step's `execute_batch` gets what the previous one answered.
    A request a step refuses keeps that error; its neighbours go on through the next steps."""
    results: list[Tensors | Exception] = list(requests)
    for step in steps:
        going_on = [index for index, result in enumerate(results) if not isinstance(result, Exception)]
        if not going_on:
            break
        for index, output in zip(going_on, step([results[index] for index in going_on]), strict=True):
            results[index] = output
    return results
