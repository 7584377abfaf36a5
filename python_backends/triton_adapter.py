"""The one bridge between Triton's Python backend and the plain handlers in this package.

A handler is any class with `from_context(ModelContext)` and
`execute_batch(list[dict[str, ndarray]]) -> list[dict[str, ndarray] | Exception]`, one entry per
request; or the coroutine `execute_request_async(request, respond)` (the model's execute is then
async, its requests handled concurrently, as BLS routers need), which may call `respond(result)`
early and keep working inside execute after the client has its answer (the response sender, one
final response per request, as Triton allows for non-decoupled models). An `InputError`, or an
exception with `client_error = True`, becomes that request's INVALID_ARG error; any other exception
an INTERNAL one; its neighbours in the same dynamic batch are answered normally.

Decoupled models (streaming) have two more forms: `start(request, stream)` hands the request to
work that answers later from another thread (the LLM engine), and the coroutine
`stream_request_async(request, stream)` answers while it runs (BLS streaming); `stream` is a
`ResponseStream` (send / fail / cancelled), its final response closes the request.

Each request dict also carries the request's parameters (`{"user_id": ...}`) under
REQUEST_PARAMETERS and its id under REQUEST_ID.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import json
import re
import time
import traceback
from typing import Any

import numpy as np

from modelrepo.python_backends.batching import check_ranks, input_ranks
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.exported_metrics import METRICS_EXPORT_INTERVAL, ExportingRegistry, export_interval
from modelrepo.python_backends.metrics import TritonRegistry

REQUEST_PARAMETERS = "$parameters"
REQUEST_ID = "$request_id"


class RemoteModelError(RuntimeError):
    """A model called through BLS answered with an error."""

    def __init__(self, model: str, message: str, client_error: bool, overloaded: bool = False):
        super().__init__(message)
        self.model = model
        self.client_error = client_error
        self.overloaded = overloaded  # the callee's queue was full or its queue timeout expired


# Threads that wait for a BLS call's response, or a decoupled call's next one (one per open stream):
# asyncio's default pool (cores + 4 threads) would make the seventh concurrent wait hold up the rest.
_STREAM_WAITERS = concurrent.futures.ThreadPoolExecutor(max_workers=128, thread_name_prefix="bls-stream")


async def _executed(request: Any, decoupled: bool = False) -> Any:
    """`request.exec` awaited on our own pool. The stub's `async_exec` runs it on asyncio's default
    pool (cores + 4 threads), and a decoupled call holds its thread until the callee's first response:
    six streams waiting for an llm_engine slot on 2 cores took every thread, so every other BLS call
    of the model (the running streams' detokenisation, new requests' preprocessing) waited too."""
    return await asyncio.get_running_loop().run_in_executor(_STREAM_WAITERS, functools.partial(request.exec, decoupled=decoupled))


def _bls_request(pb_utils: Any, model: str, inputs: dict, outputs: list[str], version: int, request_id: str = "") -> Any:
    return pb_utils.InferenceRequest(
        model_name=model,
        model_version=version,
        request_id=request_id,
        requested_output_names=list(outputs),
        inputs=[pb_utils.Tensor(name, array) for name, array in inputs.items()],
    )


# How an InputError reads once it comes back through BLS (an ensemble step prefixes its name).
_INPUT_ERROR = re.compile(r"^(in ensemble '[^']*', )?input '")
# Triton's own words when a queue policy refuses a request (queue full / queue timeout).
_OVERLOADED = re.compile(r"Exceeds maximum queue size|Request timeout expired")
QUEUE_REJECTIONS = "modelrepo_queue_rejections_total"
_rejection_family = None
_caller = ""  # this stub's model (one stub process per model instance), set in initialize


def _count_rejection(pb_utils: Any, caller: str, model: str) -> None:
    """Triton does not count requests its queue policy refuses (2.51: nv_inference_request_failure
    stays 0 for REJECTED); where our BLS code is the caller, we do. One family per stub process."""
    global _rejection_family
    if _rejection_family is None:
        _rejection_family = pb_utils.MetricFamily(
            name=QUEUE_REJECTIONS, description="Requests a callee's queue policy refused (full or timed out)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
    _rejection_family.Metric(labels={"caller": caller, "model": model}).increment(1)


def _remote_error(pb_utils: Any, model: str, error: Any) -> RemoteModelError:
    """A callee's error. Its code does not survive the trip back through BLS (2.51: a model's
    INVALID_ARG arrives as another code), so the message decides: a client's mistake is an
    `InputError` ("input 'NAME' ..."); anything else (a model not ready, an internal error) is not."""
    message = error.message() if hasattr(error, "message") else str(error)
    overloaded = bool(_OVERLOADED.search(message))
    if overloaded:
        _count_rejection(pb_utils, _caller, model)
    return RemoteModelError(model, message, client_error=bool(_INPUT_ERROR.match(message)), overloaded=overloaded)


def bls_caller(pb_utils: Any):
    """An async `infer(model, inputs, outputs, version=-1) -> dict` over Triton's BLS."""

    async def infer(model: str, inputs: dict, outputs: list[str], version: int = -1) -> dict:
        try:
            response = await _executed(_bls_request(pb_utils, model, inputs, outputs, version))
        except pb_utils.TritonModelException as err:
            raise _remote_error(pb_utils, model, err) from None
        if response.has_error():
            raise _remote_error(pb_utils, model, response.error())
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}

    return infer


class ResponseStream:
    """The responses of one decoupled request: any number of `send`s, the last with `final=True`."""

    def __init__(self, model: Any, sender: Any):
        self._model = model
        self._sender = sender
        self.closed = False

    def send(self, outputs: dict, final: bool = False) -> None:
        if self.closed:
            return
        flags = self._model.pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        self.closed = final
        if outputs:
            self._sender.send(self._model._response(outputs), flags=flags)
        elif final:
            self._sender.send(flags=flags)

    def fail(self, error: Exception) -> None:
        if not self.closed:
            self.closed = True
            if not (isinstance(error, InputError) or getattr(error, "client_error", False)):
                self._model.pb_utils.Logger.log_error(f"{type(error).__name__}: {error}")
            self._sender.send(self._model._response(error), flags=self._model.pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def cancelled(self) -> bool:
        return bool(self._sender.is_cancelled())


class Retired:
    """Objects kept for `hold_s` after their last use, then let go by whoever calls `keep` next.

    Why: Triton 2.51's stub frees a finished BLS stream (its response iterator) on its own cleanup
    thread, without the GIL, whenever that thread drops the last reference: the responses' numpy
    arrays then go back to Python's allocator unlocked, while Python threads allocate. That corrupted
    llm_bls's heap under load (a segfault in libpython; the engine then waited forever to hand it a
    response, and every llm_bls request was "Stub process is not healthy"). Fixed upstream after 24.10
    (python_backend b771f4f: PbTensor's destructor takes the GIL). Holding each finished stream until
    the cleanup thread has surely let go makes our reference the last: dropped by Python, with the GIL."""

    def __init__(self, hold_s: float, clock=time.monotonic):
        self.hold_s = hold_s
        self._clock = clock
        self._held: collections.deque = collections.deque()  # (release_at, object), oldest first

    def keep(self, obj: Any) -> None:
        now = self._clock()
        while self._held and self._held[0][0] <= now:
            self._held.popleft()
        self._held.append((now + self.hold_s, obj))

    def __len__(self) -> int:
        return len(self._held)


# The cleanup thread lets go within milliseconds of the final response; a minute covers a stalled stub.
_RETIRED_STREAMS = Retired(hold_s=60.0)


def bls_stream(pb_utils: Any, retired: Retired = _RETIRED_STREAMS):
    """An async iterator over a decoupled model's responses through BLS (`async for outputs in ...`).
    (2.51's BLS cannot cancel such a call: callees offer their own stop request, see llm_engine.)"""

    async def stream(model: str, inputs: dict, outputs: list[str], version: int = -1, request_id: str = ""):
        try:
            responses = await _executed(_bls_request(pb_utils, model, inputs, outputs, version, request_id), decoupled=True)
        except pb_utils.TritonModelException as err:
            raise _remote_error(pb_utils, model, err) from None
        loop = asyncio.get_running_loop()
        done = object()
        try:
            while True:
                # the iterator blocks until the next response: wait in a thread, not on the event loop
                response = await loop.run_in_executor(_STREAM_WAITERS, next, responses, done)
                if response is done:
                    return
                if response.has_error():
                    raise _remote_error(pb_utils, model, response.error())
                names = [name for name in outputs if pb_utils.get_output_tensor_by_name(response, name) is not None]
                if names:
                    yield {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in names}
        finally:
            retired.keep(responses)  # see Retired: never let the stub's cleanup thread free it

    return stream


def triton_model(handler_class: Any) -> type:
    """Build the `TritonPythonModel` class for a model.py shim around `handler_class`."""

    class TritonPythonModel:
        def initialize(self, args: dict[str, str]) -> None:
            import triton_python_backend_utils as pb_utils  # exists only inside the stub

            global _caller
            self.pb_utils = pb_utils
            _caller = args["model_name"]
            context = ModelContext.from_triton_args(args, infer=bls_caller(pb_utils), infer_stream=bls_stream(pb_utils))
            self.metrics = TritonRegistry(pb_utils)  # lives as long as the stub process (see metrics.py)
            export_every_s = export_interval(context.parameter(METRICS_EXPORT_INTERVAL, "0"))
            if export_every_s > 0:  # kept in the stub, sent every so often (exported_metrics.py)
                self.metrics = ExportingRegistry(self.metrics, export_every_s)
            context = dataclasses.replace(context, metrics=self.metrics)
            self.input_names = [spec["name"] for spec in context.config.get("input", [])]
            self.input_ranks = input_ranks(context.config)
            self.output_dtypes = {
                spec["name"]: pb_utils.triton_string_to_numpy(spec["data_type"])
                for spec in context.config.get("output", [])
            }
            self.handler = handler_class.from_context(context)

        def _batch(self, requests: list) -> list[dict | InputError]:
            """Each request's tensors, or the InputError it is answered with before any handler sees it."""
            batch: list[dict | InputError] = []
            for request in requests:
                tensors: dict[str, Any] = {}
                for name in self.input_names:
                    tensor = self.pb_utils.get_input_tensor_by_name(request, name)
                    tensors[name] = None if tensor is None else tensor.as_numpy()
                tensors[REQUEST_PARAMETERS] = json.loads(request.parameters() or "{}")
                tensors[REQUEST_ID] = request.request_id()
                try:
                    check_ranks(tensors, self.input_ranks)
                    batch.append(tensors)
                except InputError as err:
                    batch.append(err)
            return batch

        def _failed(self, err: Exception, count: int) -> list:
            # a bug must not take the model down: fail this batch only
            self.pb_utils.Logger.log_error(traceback.format_exc())
            return [err] * count

        def _response(self, result: Any) -> Any:
            pb_utils = self.pb_utils
            if isinstance(result, Exception):
                client_error = isinstance(result, InputError) or getattr(result, "client_error", False)
                if getattr(result, "overloaded", False):  # a callee refused it: retryable, like Triton's own 503
                    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"overloaded: {result}", pb_utils.TritonError.UNAVAILABLE))
                code = pb_utils.TritonError.INVALID_ARG if client_error else pb_utils.TritonError.INTERNAL
                message = str(result) if client_error else f"internal error: {result}"
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(array, dtype=self.output_dtypes[name]))
                for name, array in result.items()
                if name in self.output_dtypes
            ]
            return pb_utils.InferenceResponse(output_tensors=tensors)

        def finalize(self) -> None:
            close = getattr(self.handler, "close", None)
            if close:
                close()
            if isinstance(self.metrics, ExportingRegistry):
                self.metrics.close()

    if hasattr(handler_class, "start"):

        class StartingModel(TritonPythonModel):
            def execute(self, requests: list) -> None:
                for tensors, request in zip(self._batch(requests), requests):
                    stream = ResponseStream(self, request.get_response_sender())
                    try:
                        if isinstance(tensors, InputError):
                            raise tensors
                        self.handler.start(tensors, stream)
                    except Exception as err:
                        stream.fail(err)
                return None

        model = StartingModel
    elif hasattr(handler_class, "stream_request_async"):

        class StreamingModel(TritonPythonModel):
            async def execute(self, requests: list) -> None:
                streams = [ResponseStream(self, request.get_response_sender()) for request in requests]
                await asyncio.gather(*(self._one(tensors, stream) for tensors, stream in zip(self._batch(requests), streams)))
                return None

            async def _one(self, tensors: dict | InputError, stream: ResponseStream) -> None:
                try:
                    if isinstance(tensors, InputError):
                        raise tensors
                    await self.handler.stream_request_async(tensors, stream)
                    stream.send({}, final=True)
                except Exception as err:
                    stream.fail(err)

        model = StreamingModel
    elif hasattr(handler_class, "execute_request_async"):

        class RespondingModel(TritonPythonModel):
            async def execute(self, requests: list) -> None:
                final = self.pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                senders = [request.get_response_sender() for request in requests]
                await asyncio.gather(
                    *(self._one(tensors, sender, final) for tensors, sender in zip(self._batch(requests), senders))
                )
                return None

            async def _one(self, tensors: dict | InputError, sender: Any, final: int) -> None:
                sent = False

                def respond(result: Any) -> None:
                    nonlocal sent
                    if not sent:
                        sent = True
                        sender.send(self._response(result), flags=final)

                try:
                    if isinstance(tensors, InputError):
                        raise tensors
                    respond(await self.handler.execute_request_async(tensors, respond))
                except Exception as err:
                    if not (isinstance(err, InputError) or getattr(err, "client_error", False)):
                        self.pb_utils.Logger.log_error(traceback.format_exc())
                    respond(err)

        model = RespondingModel
    else:

        class SyncModel(TritonPythonModel):
            def execute(self, requests: list) -> list:
                batch = self._batch(requests)
                valid = [tensors for tensors in batch if not isinstance(tensors, InputError)]
                try:
                    computed = iter(self.handler.execute_batch(valid) if valid else [])
                except Exception as err:
                    computed = iter(self._failed(err, len(valid)))
                results = [tensors if isinstance(tensors, InputError) else next(computed) for tensors in batch]
                return [self._response(result) for result in results]

        model = SyncModel
    model.__name__ = f"TritonPythonModel[{handler_class.__name__}]"
    return model
