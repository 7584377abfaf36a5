"""Streaming LLM calls for tests and benchmarks: gRPC bidirectional streams and HTTP SSE.

Both return a `StreamResult`: the text chunks in arrival order, when each arrived, and the error if
the server refused the request — enough to check content and to compute TTFT / inter-chunk time.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np
from tritonclient.utils import np_to_triton_dtype


@dataclass
class StreamResult:
    chunks: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # seconds since the request was sent
    error: str | None = None
    cancelled: bool = False
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)  # every non-empty response

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def ttft(self) -> float | None:
        return self.arrivals[0] if self.arrivals else None


def llm_inputs(prompt: str, max_tokens: int, **settings) -> dict[str, np.ndarray]:
    """Public inputs of llm / llm_bls / llm_cached, each [1, 1]: text_input, max_tokens, settings."""
    arrays = {"text_input": np.array([[prompt.encode("utf-8")]], dtype=object), "max_tokens": np.array([[max_tokens]], dtype=np.int32)}
    kinds = {"temperature": np.float32, "top_p": np.float32, "top_k": np.int32, "random_seed": np.uint64, "min_length": np.int32, "end_id": np.int32, "pad_id": np.int32}
    for name, value in settings.items():
        if name == "stop_words":
            arrays[name] = np.array([[word.encode() for word in value]], dtype=object)
        elif isinstance(value, bool):
            arrays[name] = np.array([[value]])
        else:
            arrays[name] = np.array([[value]], dtype=kinds.get(name, np.int32))
    return arrays


def grpc_stream(
    url: str,
    model: str,
    inputs: dict[str, np.ndarray],
    output: str = "text_output",
    cancel_after: int | None = None,
    timeout_s: float = 300.0,
    parameters: dict | None = None,
) -> StreamResult:
    """One request over a gRPC stream; `cancel_after=n` cancels it after n chunks."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error, time.monotonic())))
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = StreamResult()
    started = time.monotonic()
    try:
        client.async_stream_infer(model, tensors, enable_empty_final_response=True, parameters=parameters)
        while True:
            answer, error, arrived = responses.get(timeout=timeout_s)
            if error is not None:
                result.error = str(error)
                break
            array = answer.as_numpy(output)
            if array is not None and array.size:
                value = array.reshape(-1)[0]
                result.chunks.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
                result.arrivals.append(arrived - started)
                result.outputs.append({name: answer.as_numpy(name) for name in (output,)})
            if answer.get_response().parameters["triton_final_response"].bool_param:
                break
            if cancel_after is not None and len(result.chunks) >= cancel_after:
                result.cancelled = True
                break
    finally:
        client.stop_stream(cancel_requests=result.cancelled)
        client.close()
    return result


def sse_stream(http_url: str, model: str, body: dict, timeout_s: float = 300.0) -> StreamResult:
    """POST /v2/models/M/generate_stream and read the server-sent events."""
    request = urllib.request.Request(
        f"http://{http_url}/v2/models/{model}/generate_stream",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    result = StreamResult()
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:"):])
                if "error" in event:
                    result.error = event["error"]
                    break
                result.chunks.append(event["text_output"])
                result.arrivals.append(time.monotonic() - started)
    except urllib.error.HTTPError as err:  # refused before streaming: the body is one error event
        body_text = err.read().decode("utf-8", errors="replace").strip()
        payload = body_text[len("data:"):] if body_text.startswith("data:") else body_text
        try:
            result.error = json.loads(payload).get("error", body_text)
        except json.JSONDecodeError:
            result.error = body_text
    return result


def generate(http_url: str, model: str, body: dict, timeout_s: float = 300.0) -> tuple[int, dict]:
    """POST /v2/models/M/generate: (HTTP status, JSON body)."""
    request = urllib.request.Request(
        f"http://{http_url}/v2/models/{model}/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
