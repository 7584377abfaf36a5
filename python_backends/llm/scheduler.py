"""In-flight (continuous) batching for a causal LM on CPU.

One background thread owns the model. Between two decode steps it admits every waiting request
that fits: they are prefilled together in one left-padded forward pass (a request that arrives alone
is prefilled unpadded, exactly as `generate` does) and their key/value caches are joined to the
running batch, left-padded to the batch's length. The prefix that consecutive prompts share (a chat
template's system prompt) is prefilled once and reused (prefix caching). Every decode step then runs
all active sequences in one forward pass; a sequence that ends (end id, stop sequence, max_tokens,
cancellation) leaves the batch at once and frees its slot for the next waiting request.

Callers see only `Sequence` callbacks (`on_tokens`, `on_finish`), called on the scheduler thread,
and `submit` / `close`.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from modelrepo.python_backends.llm.sampling import SamplingParams, StopMatcher, next_token

MIN_SHARED_PREFIX = 8  # tokens: shorter common prefixes are not worth a cache entry
FINISH_END_ID, FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED, FINISH_ERROR = (
    "end_id", "stop_words", "max_tokens", "cancelled", "error",
)
_ids = itertools.count()


@dataclass
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    on_tokens: Callable[["Sequence", list[int]], None]  # newly released ids (stop-word hold-back applied)
    on_finish: Callable[["Sequence", str, Exception | None], None]
    is_cancelled: Callable[[], bool] = lambda: False
    id: int = field(default_factory=lambda: next(_ids))
    generated: list[int] = field(default_factory=list)  # every sampled id, stop sequence included
    released: int = 0  # how many of `generated` went to on_tokens
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        self.generator = self.params.generator()
        self.stops = StopMatcher(self.params.stop_sequences)

    @property
    def output_ids(self) -> list[int]:
        """The answer: generated ids without a matched stop sequence or end id."""
        return self.generated[: self.released]


class SchedulerEvents:
    """What the batcher reports; the engine turns these into Prometheus metrics."""

    def queue_size(self, waiting: int) -> None: ...
    def active(self, sequences: int) -> None: ...
    def decode_step(self, batch_size: int, seconds: float) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def finished(self, sequence: Sequence) -> None: ...


class InflightBatcher:
    def __init__(
        self,
        model: Any,
        max_active: int = 8,
        events: SchedulerEvents | None = None,
        prefill_threads: int | None = None,
        decode_threads: int | None = None,
    ):
        self.model = model.eval()
        self.prefill_threads = prefill_threads or torch.get_num_threads()
        self.decode_threads = decode_threads or torch.get_num_threads()
        self.config = model.config
        self.max_active = max_active
        self.events = events or SchedulerEvents()
        self._waiting: queue.Queue[Sequence] = queue.Queue()
        self._active: list[Sequence] = []
        self._cache: Any = None  # the batch's transformers DynamicCache: per layer [B, heads, T, head_dim]
        self._mask = torch.zeros((0, 0), dtype=torch.long)  # [B, T]: 1 real token, 0 left padding
        self._wake = threading.Event()
        self._stopping = False
        self.steps = 0  # decode steps run
        self.batched_steps = 0  # decode steps that ran more than one sequence
        self.max_batch_seen = 0
        self.prefill_passes = 0  # forward passes that prefilled one or more prompts
        self.prefix_hits = 0  # prompts whose shared prefix came from the prefix cache
        self._prefix_ids: tuple[int, ...] = ()  # the cached shared prefix (e.g. a chat template's system prompt)
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._last_prompt: list[int] | None = None
        self._thread = threading.Thread(target=self._run, name="llm-inflight-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, sequence: Sequence) -> None:
        if self._stopping:
            raise RuntimeError("the engine is shutting down")
        self._waiting.put(sequence)
        self.events.queue_size(self._waiting.qsize())
        self._wake.set()

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def waiting_count(self) -> int:
        return self._waiting.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop; every unfinished sequence is finished as cancelled (its client gets a final)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        torch.set_num_threads(self.decode_threads)
        while not self._stopping:
            if not self._active and self._waiting.empty():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._decode_step()
            except Exception as err:  # a failed step fails its sequences, never the loop
                for sequence in list(self._active):
                    self._finish(sequence, FINISH_ERROR, err)
                self._reset_batch()
        for sequence in list(self._active):
            self._finish(sequence, FINISH_CANCELLED)
        while not self._waiting.empty():
            self._finish(self._waiting.get_nowait(), FINISH_CANCELLED)

    def _admit(self) -> None:
        """Prefill every waiting request that fits, together (left-padded), then join them to the batch."""
        admitted = []
        while len(self._active) + len(admitted) < self.max_active and not self._waiting.empty():
            sequence = self._waiting.get_nowait()
            if sequence.is_cancelled():
                self._finish(sequence, FINISH_CANCELLED)
            else:
                admitted.append(sequence)
        self.events.queue_size(self._waiting.qsize())
        if not admitted:
            return
        for sequence in admitted:
            self._learn_prefix(sequence.prompt_ids)
        try:
            logits, cache, mask = self._prefill([sequence.prompt_ids for sequence in admitted])
        except Exception as err:
            for sequence in admitted:
                self._finish(sequence, FINISH_ERROR, err)
            return
        self._join(admitted, cache, mask)
        for row, sequence in enumerate(admitted):
            self._accept(sequence, logits[row])
        self.events.active(len(self._active))

    def _learn_prefix(self, prompt: list[int]) -> None:
        """Prefix caching: the longest prefix two consecutive prompts share (a chat template's system
        prompt and turn header) is prefilled once; later prompts that start with it prefill only the rest."""
        if self._prefix_ids and tuple(prompt[: len(self._prefix_ids)]) == self._prefix_ids:
            return
        previous, self._last_prompt = self._last_prompt, prompt
        if previous is None:
            return
        shared = 0
        for a, b in zip(previous, prompt):
            if a != b:
                break
            shared += 1
        shared = min(shared, len(prompt) - 1, len(previous) - 1)  # every prompt keeps a token to prefill
        if shared >= MIN_SHARED_PREFIX:
            out = self._prefill_forward(input_ids=torch.tensor([prompt[:shared]]))
            self._prefix_ids = tuple(prompt[:shared])
            self._prefix_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]

    def _prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """One forward pass over the prompts, left-padded to the longest (after the cached prefix, when
        they all start with it)."""
        from transformers import DynamicCache

        shared = len(self._prefix_ids)
        if not shared or any(len(prompt) <= shared or tuple(prompt[:shared]) != self._prefix_ids for prompt in prompts):
            shared = 0
        suffixes = [prompt[shared:] for prompt in prompts]
        length = max(len(suffix) for suffix in suffixes)
        input_ids = torch.zeros((len(prompts), length), dtype=torch.long)
        mask = torch.zeros((len(prompts), shared + length), dtype=torch.long)
        mask[:, :shared] = 1
        for row, suffix in enumerate(suffixes):
            input_ids[row, length - len(suffix):] = torch.tensor(suffix)
            mask[row, shared + length - len(suffix):] = 1
        past = None
        if shared:
            rows = len(prompts)
            past = DynamicCache(
                ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self._prefix_kv],
                config=self.config,
            )
            self.prefix_hits += rows
        self.prefill_passes += 1
        if past is None and len(prompts) == 1:  # no padding, no prefix: exactly what `generate` computes
            out = self._prefill_forward(input_ids=input_ids)
        else:
            position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, shared:]
            out = self._prefill_forward(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, past_key_values=past)
        return out.logits[:, -1], out.past_key_values, mask

    def _prefill_forward(self, **inputs: Any) -> Any:
        """A forward pass on `prefill_threads` (prefill is compute-bound); back to `decode_threads` after."""
        torch.set_num_threads(self.prefill_threads)
        try:
            return self.model(**inputs, use_cache=True)
        finally:
            torch.set_num_threads(self.decode_threads)

    def _join(self, sequences: list[Sequence], cache: Any, new_mask: torch.Tensor) -> None:
        """Add prefilled sequences to the batch: left-pad the shorter side to a common length."""
        if not self._active:
            self._cache, self._mask = cache, new_mask
        else:
            length = max(self._mask.shape[1], new_mask.shape[1])
            for layer, new in zip(self._cache.layers, cache.layers):
                layer.keys = torch.cat([_left_pad(layer.keys, length), _left_pad(new.keys, length)])
                layer.values = torch.cat([_left_pad(layer.values, length), _left_pad(new.values, length)])
            self._mask = torch.cat([_left_pad(self._mask, length), _left_pad(new_mask, length)])
        self._active.extend(sequences)

    def _decode_step(self) -> None:
        started = time.monotonic()
        batch = len(self._active)
        last_ids = torch.tensor([[seq.generated[-1]] for seq in self._active], dtype=torch.long)
        mask = torch.cat([self._mask, torch.ones((batch, 1), dtype=torch.long)], dim=1)
        position_ids = (mask.sum(dim=1, keepdim=True) - 1)
        out = self.model(
            input_ids=last_ids, attention_mask=mask, position_ids=position_ids, past_key_values=self._cache, use_cache=True
        )
        self._mask = mask
        self.steps += 1
        self.batched_steps += batch > 1
        self.max_batch_seen = max(self.max_batch_seen, batch)
        self.events.decode_step(batch, time.monotonic() - started)
        for row, sequence in enumerate(list(self._active)):
            self._accept(sequence, out.logits[row, -1])

    # ------------------------------------------------------------------ per sequence
    def _accept(self, sequence: Sequence, logits: torch.Tensor) -> None:
        """Sample one token for `sequence`, release what is safe to release, finish it if it ended."""
        params = sequence.params
        token = next_token(logits, params, sequence.generator, len(sequence.generated))
        if sequence.first_token_at is None:
            sequence.first_token_at = time.monotonic()
            self.events.first_token(sequence.first_token_at - sequence.submitted_at)
        if token in params.end_ids and len(sequence.generated) >= params.min_length:
            self._release(sequence, len(sequence.generated))
            self._finish(sequence, FINISH_END_ID)
            return
        sequence.generated.append(token)
        stop = sequence.stops.matched(sequence.generated)
        if stop is not None:
            self._release(sequence, len(sequence.generated) - len(stop))
            self._finish(sequence, FINISH_STOP)
        elif len(sequence.generated) >= params.max_tokens:
            self._release(sequence, len(sequence.generated))
            self._finish(sequence, FINISH_LENGTH)
        else:
            self._release(sequence, len(sequence.generated) - sequence.stops.hold_back(sequence.generated))

    def _release(self, sequence: Sequence, upto: int) -> None:
        if upto > sequence.released:
            new = sequence.generated[sequence.released : upto]
            sequence.released = upto
            sequence.on_tokens(sequence, new)

    def _drop_cancelled(self) -> None:
        for sequence in [seq for seq in self._active if seq.is_cancelled()]:
            self._finish(sequence, FINISH_CANCELLED)

    def _finish(self, sequence: Sequence, reason: str, error: Exception | None = None) -> None:
        if sequence in self._active:
            row = self._active.index(sequence)
            self._active.pop(row)
            self._remove_row(row)
            self.events.active(len(self._active))
        sequence.finish_reason = reason
        sequence.finished_at = time.monotonic()
        self.events.finished(sequence)
        sequence.on_finish(sequence, reason, error)

    def _remove_row(self, row: int) -> None:
        if not self._active:
            self._reset_batch()
            return
        keep = torch.tensor([i for i in range(self._mask.shape[0]) if i != row])
        mask = self._mask[keep]
        start = int((mask.sum(dim=0) > 0).nonzero()[0])  # columns that are padding in every row go
        self._mask = mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[keep, :, start:]
            layer.values = layer.values[keep, :, start:]

    def _reset_batch(self) -> None:
        self._active.clear()
        self._cache = None
        self._mask = torch.zeros((0, 0), dtype=torch.long)
        self.events.active(0)


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the sequence axis (the last for a mask, the second-to-last for keys/values) on the left."""
    axis = -1 if tensor.dim() == 2 else -2
    missing = length - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
