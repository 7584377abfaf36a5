"""The in-flight batcher in-process against transformers' own generate (SmolLM2, CPU)."""

import threading
import time

import pytest

from modelrepo.python_backends.llm.chat import ChatPreprocessor
from modelrepo.python_backends.llm.sampling import SamplingParams
from modelrepo.python_backends.llm.scheduler import (
    FINISH_CANCELLED, FINISH_END_ID, FINISH_LENGTH, FINISH_STOP, InflightBatcher, Sequence,
)

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "List three fruits.", "Explain gravity in one sentence."]


class Collector:
    def __init__(self, count):
        self.done = threading.Event()
        self.finished = {}
        self.chunks = {}
        self.count = count

    def on_tokens(self, sequence, ids):
        self.chunks.setdefault(sequence.id, []).append(list(ids))

    def on_finish(self, sequence, reason, error):
        self.finished[sequence.id] = (reason, error)
        if len(self.finished) >= self.count:
            self.done.set()


@pytest.fixture(scope="module")
def chat(llm_tokenizer):
    return ChatPreprocessor(llm_tokenizer)


@pytest.fixture
def batcher(llm_model):
    engine = InflightBatcher(llm_model, max_active=4)
    yield engine
    engine.close()


def submit(batcher, collector, ids, **params):
    sequence = Sequence(ids, SamplingParams(**params), collector.on_tokens, collector.on_finish)
    batcher.submit(sequence)
    return sequence


def test_staggered_requests_join_the_running_batch_and_equal_generate(batcher, chat, llm_reference):
    collector = Collector(len(PROMPTS))
    sequences = []

    def submit_next(after=None):
        # Each prompt arrives when the one before has its first tokens, i.e. while it is decoding
        # (submitted from the batcher's own callback: before its next step, whatever the CPU's speed).
        if len(sequences) < len(PROMPTS) and (after is None or after is sequences[-1]):
            prompt_ids = chat.prompt_ids(PROMPTS[len(sequences)])
            sequences.append(Sequence(prompt_ids, SamplingParams(max_tokens=24, end_ids=frozenset({chat.end_id})),
                                      on_tokens, collector.on_finish))
            batcher.submit(sequences[-1])

    def on_tokens(sequence, ids):
        collector.on_tokens(sequence, ids)
        submit_next(after=sequence)

    submit_next()
    assert collector.done.wait(180)
    assert len(sequences) == len(PROMPTS)
    for prompt, sequence in zip(PROMPTS, sequences):
        assert sequence.output_ids == llm_reference(prompt, 24), prompt
        assert sum(collector.chunks[sequence.id], []) == sequence.output_ids  # streamed = final
        assert collector.finished[sequence.id][0] in (FINISH_END_ID, FINISH_LENGTH)
    assert batcher.max_batch_seen >= 3 and batcher.batched_steps > 0
    assert batcher.prefix_hits >= 2  # the chat template's shared prefix was prefilled once, then reused


def test_a_seeded_sampled_sequence_is_the_same_alone_and_in_a_batch(batcher, chat):
    ids = chat.prompt_ids("Tell me a story about a cat.")
    settings = dict(max_tokens=16, temperature=0.9, top_p=0.95, top_k=50, random_seed=1234)
    alone = Collector(1)
    first = submit(batcher, alone, ids, **settings)
    assert alone.done.wait(120)
    crowd = Collector(3)
    submit(batcher, crowd, chat.prompt_ids("Name a planet."), max_tokens=16)
    second = submit(batcher, crowd, ids, **settings)
    submit(batcher, crowd, chat.prompt_ids("Count to five."), max_tokens=16, temperature=1.0)
    assert crowd.done.wait(120)
    assert first.output_ids == second.output_ids
    other = Collector(1)
    third = submit(batcher, other, ids, **{**settings, "random_seed": 99})
    assert other.done.wait(120)
    assert third.output_ids != first.output_ids


def test_a_stop_sequence_ends_the_answer_and_is_never_released(batcher, chat, llm_reference):
    ids = chat.prompt_ids("What is the capital of France?")
    answer = llm_reference("What is the capital of France?", 24)
    stop = tuple(answer[3:5])  # two tokens from the middle of the known answer
    collector = Collector(1)
    sequence = submit(batcher, collector, ids, max_tokens=24, stop_sequences=(stop,))
    assert collector.done.wait(120)
    assert collector.finished[sequence.id][0] == FINISH_STOP
    assert sequence.output_ids == answer[:3]
    assert sum(collector.chunks[sequence.id], []) == answer[:3]


def test_max_tokens_caps_the_answer(batcher, chat):
    collector = Collector(1)
    sequence = submit(batcher, collector, chat.prompt_ids("Write a long essay about rivers."), max_tokens=5)
    assert collector.done.wait(60)
    assert collector.finished[sequence.id][0] == FINISH_LENGTH and len(sequence.output_ids) == 5


def test_cancelling_frees_the_slot_for_a_waiting_request(llm_model, chat):
    batcher = InflightBatcher(llm_model, max_active=1)
    try:
        cancel = threading.Event()
        collector = Collector(2)
        long = Sequence(chat.prompt_ids("Write a long essay about rivers."), SamplingParams(max_tokens=400),
                        collector.on_tokens, collector.on_finish, is_cancelled=cancel.is_set)
        batcher.submit(long)
        waiting = submit(batcher, collector, chat.prompt_ids("Name a color."), max_tokens=4)
        deadline = time.monotonic() + 60
        while not long.generated:  # admitted and decoding; it runs until cancelled below
            assert time.monotonic() < deadline, "the first request was never admitted"
            time.sleep(0.05)
        assert batcher.active_count == 1 and batcher.waiting_count == 1  # one slot, taken
        cancel.set()
        assert collector.done.wait(60)
        assert collector.finished[long.id][0] == FINISH_CANCELLED and len(long.generated) < 400
        assert len(waiting.output_ids) == 4
        assert batcher.active_count == 0
    finally:
        batcher.close()


def test_requests_arriving_together_are_prefilled_together_and_still_equal_generate(llm_model, chat, llm_reference):
    collector = Collector(len(PROMPTS))
    held = InflightBatcher(llm_model, max_active=4)
    try:
        sequences = [Sequence(chat.prompt_ids(prompt), SamplingParams(max_tokens=16, end_ids=frozenset({chat.end_id})),
                              collector.on_tokens, collector.on_finish) for prompt in PROMPTS]
        for sequence in sequences:
            held._waiting.put(sequence)  # all queued before the loop wakes: one admission takes them all
        held._wake.set()
        assert collector.done.wait(180)
        for prompt, sequence in zip(PROMPTS, sequences):
            assert sequence.output_ids == llm_reference(prompt, 16), prompt
        assert held.prefill_passes == 1  # one left-padded forward pass for the four prompts
        assert held.steps < 16 * len(PROMPTS) / 2  # decode steps were shared
    finally:
        held.close()
