"""llm_engine's request handling without a model: TensorRT-LLM tensors in, validation, stop requests."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.llm.engine import LlmEngine, Outbox, throttled
from modelrepo.python_backends.triton_adapter import REQUEST_ID, REQUEST_PARAMETERS


class NoModel:
    config = SimpleNamespace(vocab_size=100)
    generation_config = SimpleNamespace(eos_token_id=2)

    def eval(self):
        return self


class Stream:
    def __init__(self):
        self.sent = []

    def send(self, outputs, final=False):
        self.sent.append((outputs, final))

    def fail(self, error):
        self.sent.append((error, True))

    def cancelled(self):
        return False


@pytest.fixture
def engine():
    engine = LlmEngine(NoModel(), max_new_tokens=64, max_prompt_tokens=32)
    yield engine
    engine.close()


def request(ids, **extra):
    tensors = {p.INPUT_IDS: np.array([ids], dtype=np.int32), p.INPUT_LENGTHS: np.array([[len(ids)]], dtype=np.int32),
               p.ENGINE_OUTPUT_LEN: np.array([[8]], dtype=np.int32), REQUEST_PARAMETERS: {}, REQUEST_ID: ""}
    tensors.update(extra)
    return tensors


def test_a_request_becomes_sampling_settings(engine):
    prompt, params, streaming, exclude = engine.sequence_for(request(
        [5, 6, 7], **{p.STREAMING: np.array([[True]]), p.ENGINE_TEMPERATURE: np.array([[0.5]], dtype=np.float32),
                      p.ENGINE_SEED: np.array([[9]], dtype=np.uint64), p.STOP_WORDS_LIST: p.pack_word_lists([[7, 8]])[None]}))
    assert prompt == [5, 6, 7] and streaming and exclude  # the config default: answer only
    assert params.max_tokens == 8 and params.temperature == 0.5 and params.random_seed == 9
    assert params.end_ids == frozenset({2}) and params.stop_sequences == ((7, 8),)


@pytest.mark.parametrize(
    "tensors, name",
    [
        (request([5, 500]), "input_ids"),  # outside the vocabulary
        (request([5, -1]), "input_ids"),
        ({**request([5, 6]), p.INPUT_IDS: np.array([[5, 6], [7, 8]], dtype=np.int32)}, "input_ids"),  # two sequences
        ({**request([5, 6]), p.INPUT_LENGTHS: np.array([[3]], dtype=np.int32)}, "input_lengths"),
        (request(list(range(40))), "input_lengths"),  # over max_prompt_tokens
        ({**request([5]), p.ENGINE_OUTPUT_LEN: np.array([[0]], dtype=np.int32)}, "request_output_len"),
        ({**request([5]), p.RUNTIME_TOP_P: np.array([[0.0]], dtype=np.float32)}, "top_p"),
        ({**request([5]), REQUEST_PARAMETERS: {"beam_width": 2}}, "beam_width"),
    ],
)
def test_bad_engine_requests_name_the_tensor(engine, tensors, name):
    with pytest.raises(InputError) as err:
        engine.sequence_for(tensors)
    assert err.value.input_name == name


def test_a_stop_request_answers_at_once_and_sets_the_running_requests_flag(engine):
    stream = Stream()
    engine.start({**request([0]), p.STOP: np.array([[True]]), REQUEST_ID: "unknown"}, stream)
    deadline = time.monotonic() + 10  # its final leaves through the outbox's thread, like every response
    while not stream.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.sent == [({}, True)]
    flag = engine._stop_flags.setdefault("running", threading.Event())
    engine.stop("running")
    assert flag.is_set()


def test_a_send_stuck_past_the_limit_is_reported_once_and_quick_sends_never():
    release, stuck_for = threading.Event(), []
    outbox = Outbox(stuck_after_s=0.3, on_stuck=stuck_for.append, check_every_s=0.02)
    sent = []
    for i in range(50):
        outbox.put(lambda i=i: sent.append(i))
    time.sleep(0.5)
    assert sent == list(range(50)) and stuck_for == []  # many quick sends add up past the limit: no report
    outbox.put(release.wait)  # a receiver that never takes the response
    outbox.put(lambda: sent.append("after"))
    deadline = time.monotonic() + 10
    while not stuck_for and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert len(stuck_for) == 1 and stuck_for[0] >= 0.3 and sent[-1] == 49  # the next waits behind it
    release.set()
    outbox.close()
    assert sent[-1] == "after"


def test_cancel_checks_are_throttled_and_sticky():
    calls = []

    def check():
        calls.append(1)
        return len(calls) >= 2

    cached = throttled(check, every_s=0.0)
    assert cached() is False and cached() is True and cached() is True
    assert len(calls) == 2
    slow = throttled(lambda: calls.append(1) or False, every_s=60)
    slow(), slow(), slow()
    assert len(calls) == 3
