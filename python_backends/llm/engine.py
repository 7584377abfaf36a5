"""llm_engine: the CPU stand-in for TensorRT-LLM's `tensorrt_llm` model (same tensors), decoupled.

A request is validated, turned into a `Sequence` and handed to the in-flight batcher; `start`
returns at once, so Triton delivers the next requests while earlier ones decode — that is what lets
them join the running batch. Responses go out from the batcher's thread:
- streaming: one response per released chunk of ids (`output_ids` [1, 1, n]), then an empty final;
- otherwise: one final response with every generated id, preceded by the prompt's unless
  `exclude_input_in_output` (its default is the config parameter of that name, as in TensorRT-LLM's
  `tensorrt_llm` model; ours is true: the prompt is a chat template the client never wrote).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelrepo.python_backends.batching import Tensors, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.llm.llm_metrics import EngineMetrics
from modelrepo.python_backends.llm.sampling import SamplingParams
from modelrepo.python_backends.llm.scheduler import FINISH_ERROR, InflightBatcher, Sequence
from modelrepo.python_backends.triton_adapter import REQUEST_ID, REQUEST_PARAMETERS

WEIGHTS_DIR = "model"
DEFAULT_MAX_ACTIVE = 8
STUCK_SEND_EXIT_S = 60  # a response send stuck this long ends the stub (Outbox); 0: never
CANCEL_CHECK_S = 0.2  # asking Triton whether a client cancelled is an IPC round trip: not every step


class Outbox:
    """Responses leave on their own thread, in order: the decode loop never waits on Triton's IPC
    (a step of 8 sequences sends 8 responses).

    A send blocks until Triton has passed the response on; to a BLS caller that means until the
    caller's stub has taken it. When that stub died (Triton 2.51 does not notice, see triton_adapter's
    Retired) the send never returns and every later response waits behind it: the engine is wedged for
    good. So a send stuck for `stuck_after_s` calls `on_stuck(seconds)` once (from_context: end the
    stub, crash-only, so that `modelrepo serve` reloads the model instead of every stream hanging)."""

    def __init__(self, stuck_after_s: float = 0.0, on_stuck: Callable[[float], None] | None = None,
                 check_every_s: float = 1.0):
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._sending_since: float | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llm-outbox", daemon=True)
        self._thread.start()
        if stuck_after_s > 0 and on_stuck is not None:
            threading.Thread(target=self._watch, args=(stuck_after_s, on_stuck, check_every_s),
                             name="llm-outbox-watch", daemon=True).start()

    def put(self, send: Callable[[], None]) -> None:
        self._queue.put(send)

    def _run(self) -> None:
        while (send := self._queue.get()) is not None:
            self._sending_since = time.monotonic()
            try:
                send()
            except Exception:  # a client that went away must not stop the others' responses
                pass
            finally:
                self._sending_since = None

    def _watch(self, stuck_after_s: float, on_stuck: Callable[[float], None], check_every_s: float) -> None:
        while not self._closed.wait(check_every_s):
            since = self._sending_since
            if since is not None and (stuck := time.monotonic() - since) >= stuck_after_s:
                on_stuck(stuck)
                return

    def close(self, timeout: float = 10.0) -> None:
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout)


def end_stub(stuck_s: float) -> None:
    """Crash-only: a stub whose responses cannot leave ends itself (its stderr is Triton's log)."""
    print(f"llm_engine: a response has been stuck in Triton's send for {stuck_s:.0f} s (its receiver is gone); "
          "ending this stub so that the model is reloaded", file=sys.stderr, flush=True)
    os._exit(1)


def throttled(check: Callable[[], bool], every_s: float = CANCEL_CHECK_S) -> Callable[[], bool]:
    """`check`, asked at most once per `every_s`; once true, true for good."""
    state = {"at": 0.0, "value": False}

    def cached() -> bool:
        now = time.monotonic()
        if not state["value"] and now - state["at"] >= every_s:
            state["at"], state["value"] = now, bool(check())
        return state["value"]

    return cached


def load_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True).eval()


class LlmEngine:
    def __init__(
        self,
        model,
        max_active: int = DEFAULT_MAX_ACTIVE,
        max_prompt_tokens: int = p.DEFAULT_MAX_PROMPT_TOKENS,
        max_new_tokens: int = p.DEFAULT_MAX_NEW_TOKENS,
        metrics: EngineMetrics | None = None,
        exclude_input_default: bool = True,
        prefill_threads: int | None = None,
        decode_threads: int | None = None,
        outbox: "Outbox | None" = None,
    ):
        self.exclude_input_default = exclude_input_default
        self.vocab_size = int(model.config.vocab_size)
        self.default_end_id = int(model.generation_config.eos_token_id)
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.batcher = InflightBatcher(model, max_active, metrics, prefill_threads, decode_threads)
        self._stop_flags: dict[str, threading.Event] = {}  # request id → set by a stop request
        self._lock = threading.Lock()
        self.outbox = outbox or Outbox()

    @classmethod
    def from_context(cls, context: ModelContext) -> "LlmEngine":
        cores = len(os.sched_getaffinity(0))
        model = load_model(context.version_dir / WEIGHTS_DIR)
        engine = cls(
            model,
            max_active=context.int_parameter("max_active_sequences", DEFAULT_MAX_ACTIVE),
            max_prompt_tokens=context.int_parameter("max_prompt_tokens", p.DEFAULT_MAX_PROMPT_TOKENS),
            max_new_tokens=context.int_parameter("max_new_tokens", p.DEFAULT_MAX_NEW_TOKENS),
            metrics=EngineMetrics(context.metrics, context.name),
            exclude_input_default=context.parameter("exclude_input_in_output", "true").lower() == "true",
            prefill_threads=context.int_parameter("prefill_threads", 0) or cores,
            decode_threads=context.int_parameter("decode_threads", 0) or cores,
            outbox=Outbox(context.int_parameter("stuck_send_exit_s", STUCK_SEND_EXIT_S), on_stuck=end_stub),
        )
        engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """The first forward passes are several times slower (allocator, kernels): pay them at load."""
        done = threading.Event()
        self.batcher.submit(
            Sequence([1, 2, 3, 4], SamplingParams(max_tokens=4), on_tokens=lambda *_: None, on_finish=lambda *_: done.set())
        )
        done.wait(120)

    def close(self) -> None:
        self.batcher.close()  # finishes every open sequence: their finals go through the outbox
        self.outbox.close()

    # ------------------------------------------------------------------ requests
    def sequence_for(self, request: Tensors) -> tuple[list[int], SamplingParams, bool, bool]:
        p.check_parameters(request.get(REQUEST_PARAMETERS) or {})
        ids = np.asarray(required(request, p.INPUT_IDS))
        if ids.ndim == 2 and ids.shape[0] != 1:
            raise InputError(p.INPUT_IDS, f"one sequence per request (batch size 1), got {ids.shape[0]}")
        ids = ids.reshape(-1)
        length = int(p.scalar(request, p.INPUT_LENGTHS, ids.size))
        if not 1 <= length <= min(ids.size, self.max_prompt_tokens):
            raise InputError(p.INPUT_LENGTHS, f"must be between 1 and min(len(input_ids), {self.max_prompt_tokens}), got {length}")
        prompt = ids[:length].astype(np.int64)
        if prompt.min() < 0 or prompt.max() >= self.vocab_size:
            raise InputError(p.INPUT_IDS, f"token ids must be in [0, {self.vocab_size})")
        max_tokens = p.check_max_tokens(p.scalar(request, p.ENGINE_OUTPUT_LEN, 0), self.max_new_tokens, p.ENGINE_OUTPUT_LEN)
        temperature = float(p.scalar(request, p.ENGINE_TEMPERATURE, 0.0))
        top_p = float(p.scalar(request, p.RUNTIME_TOP_P, 1.0))
        top_k = int(p.scalar(request, p.RUNTIME_TOP_K, 0))
        min_length = int(p.scalar(request, p.ENGINE_MIN_LENGTH, 0))
        p.check_sampling(temperature, top_p, top_k, min_length, max_tokens)
        seed = p.scalar(request, p.ENGINE_SEED, None)
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            random_seed=None if seed is None else int(seed),
            min_length=min_length,
            end_ids=frozenset({int(p.scalar(request, p.ENGINE_END_ID, self.default_end_id))}),
            stop_sequences=p.unpack_word_lists(request.get(p.STOP_WORDS_LIST)),
        )
        streaming = bool(p.scalar(request, p.STREAMING, False))
        exclude_input = bool(p.scalar(request, p.EXCLUDE_INPUT, self.exclude_input_default))
        return prompt.tolist(), params, streaming, exclude_input

    def start(self, request: Tensors, stream) -> None:
        """Validate and enqueue; `stream` (send / fail / cancelled) receives the responses."""
        request_id = request.get(REQUEST_ID) or ""
        if bool(p.scalar(request, p.STOP, False)):
            self.stop(request_id)
            self.outbox.put(lambda: stream.send({}, final=True))  # never block execute on a send (Outbox)
            return
        prompt, params, streaming, exclude_input = self.sequence_for(request)
        stop_flag = threading.Event()
        if request_id:
            with self._lock:
                self._stop_flags[request_id] = stop_flag

        def on_tokens(sequence: Sequence, ids: list[int]) -> None:
            if streaming:
                outputs = _ids_output(ids)
                self.outbox.put(lambda: stream.send(outputs))

        def on_finish(sequence: Sequence, reason: str, error: Exception | None) -> None:
            with self._lock:
                if self._stop_flags.get(request_id) is stop_flag:
                    del self._stop_flags[request_id]
            if reason == FINISH_ERROR:
                self.outbox.put(lambda: stream.fail(error))
            elif streaming:
                self.outbox.put(lambda: stream.send({}, final=True))
            else:
                answer = _ids_output(sequence.output_ids if exclude_input else sequence.prompt_ids + sequence.output_ids)
                self.outbox.put(lambda: stream.send(answer, final=True))

        client_cancelled = throttled(stream.cancelled)
        cancelled = lambda: stop_flag.is_set() or client_cancelled()  # noqa: E731
        self.batcher.submit(Sequence(prompt, params, on_tokens, on_finish, is_cancelled=cancelled))

    def stop(self, request_id: str) -> None:
        """Cancel the running request with this id (TensorRT-LLM's `stop` input); unknown ids are ignored:
        the request may have finished already."""
        with self._lock:
            flag = self._stop_flags.get(request_id)
        if flag is not None:
            flag.set()


def _ids_output(ids: list[int]) -> Tensors:
    return {
        p.OUTPUT_IDS: np.array([[ids]], dtype=np.int32),
        p.SEQUENCE_LENGTH: np.array([[len(ids)]], dtype=np.int32),
    }
