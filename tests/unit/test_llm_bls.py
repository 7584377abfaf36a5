"""llm_bls's control flow without a server: the BLS calls are fakes that record what was asked."""

from __future__ import annotations

import asyncio

import numpy as np

from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.llm.bls import ENGINE, POSTPROCESSING, PREPROCESSING, LlmBls


class FakeCalls:
    """preprocessing / postprocessing answers, and an engine stream that goes on for `after_stop`
    responses once a stop request for its id has come (as llm_engine finishes a cancelled sequence)."""

    def __init__(self, after_stop: int = 2):
        self.after_stop = after_stop
        self.stopped: list[str] = []
        self.engine_responses_read = 0
        self.engine_responses_sent = 0

    async def infer(self, model, inputs, outputs, version=-1):
        if model == PREPROCESSING:
            return {name: np.zeros((1, 1), dtype=np.int32) for name in outputs}
        assert model == POSTPROCESSING
        return {p.OUTPUT: np.array([[b"x"]], dtype=object), p.OUT_PREFIX_OFFSET: np.zeros((1, 1), np.int32),
                p.OUT_READ_OFFSET: np.zeros((1, 1), np.int32)}

    async def infer_stream(self, model, inputs, outputs, version=-1, request_id=""):
        assert model == ENGINE
        if p.STOP in inputs:
            self.stopped.append(request_id)
            return
        left = None
        while left is None or left > 0:
            if self.stopped and left is None:
                left = self.after_stop
            if left is not None:
                left -= 1
            self.engine_responses_sent += 1
            yield {p.OUTPUT_IDS: np.array([[[7]]], dtype=np.int32), p.SEQUENCE_LENGTH: np.array([[1]], dtype=np.int32)}
            self.engine_responses_read += 1
            await asyncio.sleep(0)


class ClientStream:
    def __init__(self, cancel_after: int):
        self.cancel_after = cancel_after
        self.sent: list[dict] = []

    def send(self, outputs, final=False):
        self.sent.append(outputs)

    def cancelled(self) -> bool:
        return len(self.sent) >= self.cancel_after


def test_a_cancelled_stream_stops_the_engine_and_reads_its_stream_to_the_end():
    calls = FakeCalls(after_stop=2)
    client = ClientStream(cancel_after=3)
    request = {p.TEXT_INPUT: np.array([[b"hi"]], dtype=object), p.MAX_TOKENS: np.array([[64]], dtype=np.int32),
               p.STREAM: np.array([[True]])}
    asyncio.run(LlmBls(calls.infer, calls.infer_stream).stream_request_async(request, client))

    assert len(calls.stopped) == 1 and calls.stopped[0].startswith("llm_bls-")
    assert len(client.sent) == 3  # nothing reaches the client after it went away
    # every response the engine sent after the stop was read: the BLS stream ended, not abandoned
    assert calls.engine_responses_read == calls.engine_responses_sent == 4 + 2
