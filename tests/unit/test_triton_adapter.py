"""The adapter's BLS stream against a stand-in for the stub's pb_utils (no server)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import numpy as np

from modelrepo.python_backends.triton_adapter import Retired, bls_stream


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeResponse:
    def __init__(self, value):
        self.value = value

    def has_error(self):
        return False


class FakeResponseIterator:
    """What `exec(decoupled=True)` returns: responses until the last one."""

    def __init__(self, values):
        self._left = iter([FakeResponse(v) for v in values])

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._left)


class FakePbUtils:
    class TritonModelException(Exception):
        pass

    def __init__(self, values):
        self.values = values
        self.iterators: list[weakref.ref] = []
        utils = self

        class InferenceRequest:
            def __init__(self, **kwargs):
                pass

            def exec(self, decoupled=False):
                iterator = FakeResponseIterator(utils.values)
                utils.iterators.append(weakref.ref(iterator))
                return iterator

        self.InferenceRequest = InferenceRequest

    @staticmethod
    def Tensor(name, array):
        return (name, array)

    @staticmethod
    def get_output_tensor_by_name(response, name):
        return type("T", (), {"as_numpy": lambda self: np.array([response.value])})()


def read_all(stream) -> list[int]:
    async def run():
        return [int(out["OUT"][0]) async for out in stream("callee", {}, ["OUT"])]

    return asyncio.run(run())


def test_a_finished_bls_stream_is_held_then_let_go_by_python_not_by_the_stub_s_cleanup_thread():
    clock = Clock()
    retired = Retired(hold_s=60.0, clock=clock)
    pb_utils = FakePbUtils([1, 2, 3])
    assert read_all(bls_stream(pb_utils, retired)) == [1, 2, 3]
    gc.collect()
    first = pb_utils.iterators[0]
    assert first() is not None and len(retired) == 1  # our reference outlives the stream's use
    clock.now = 59.0
    read_all(bls_stream(pb_utils, retired))
    gc.collect()
    assert first() is not None and len(retired) == 2  # not yet: the hold has not passed
    clock.now = 61.0
    read_all(bls_stream(pb_utils, retired))
    gc.collect()
    assert first() is None and pb_utils.iterators[1]() is not None and len(retired) == 2
