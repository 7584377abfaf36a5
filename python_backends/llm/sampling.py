"""Per-sequence sampling and stop rules.

Each sequence owns a torch.Generator seeded from its `random_seed`, so a seeded request samples the
same tokens whatever else shares its batch. Temperature 0 (the default) or top_k 1 is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    random_seed: int | None = None
    min_length: int = 0  # end ids are suppressed before this many new tokens
    end_ids: frozenset[int] = frozenset()
    stop_sequences: tuple[tuple[int, ...], ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1

    def generator(self) -> torch.Generator:
        generator = torch.Generator()
        if self.random_seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.random_seed)
        return generator


def filtered_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on one row of logits."""
    logits = logits / params.temperature
    if params.top_k > 0 and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p (the first one always stays)
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator, generated: int) -> int:
    """The next token id for one sequence from its last-position logits (1-D, vocabulary size)."""
    logits = logits.float()
    if generated < params.min_length and params.end_ids:
        logits = logits.clone()
        logits[list(params.end_ids)] = float("-inf")
    if params.greedy:
        return int(torch.argmax(logits))
    probabilities = torch.softmax(filtered_logits(logits, params), dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


@dataclass
class StopMatcher:
    """Finds stop sequences at the end of the generated ids and says how many trailing ids to hold back
    (they could still become a stop sequence, which is never emitted)."""

    stop_sequences: tuple[tuple[int, ...], ...]
    _longest: int = field(init=False)

    def __post_init__(self) -> None:
        self._longest = max((len(seq) for seq in self.stop_sequences), default=0)

    def matched(self, ids: list[int]) -> tuple[int, ...] | None:
        for seq in self.stop_sequences:
            if len(ids) >= len(seq) and tuple(ids[-len(seq):]) == seq:
                return seq
        return None

    def hold_back(self, ids: list[int]) -> int:
        """The length of the longest suffix of `ids` that is a proper prefix of a stop sequence."""
        for size in range(min(self._longest - 1, len(ids)), 0, -1):
            tail = tuple(ids[-size:])
            if any(len(seq) > size and seq[:size] == tail for seq in self.stop_sequences):
                return size
        return 0
