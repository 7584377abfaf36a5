"""Input hardening, table-driven: every public model over HTTP and gRPC gets wrong dtypes, wrong /
empty / oversize shapes, shape–data mismatches in the raw request, batches above max_batch_size,
non-UTF-8 and oversize strings, NaN/inf, unknown and missing inputs, unknown request parameters, and
good requests mixed with bad ones in one dynamic batch.

Every refusal must name the input and the rule, be the client's fault (what Triton 2.51 returns is
asserted exactly: HTTP 400 / gRPC INVALID_ARGUMENT; a gRPC *stream* carries only a message, no code),
and leave the server READY and answering a good request exactly as before.

Batch dimensions of 2**32 or more (Triton 2.51 truncates them) are refused by name where the tensor
reaches our code without its batch dimension; the requests that end tritonserver itself (classification
on a BYTES output, a huge shape on a numeric input) run against a crash-only `modelrepo serve`, which
must serve again afterwards.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import re
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np
import pytest

from modelrepo.perf.chaos import classification_on_bytes_grpc, classification_on_bytes_http
from modelrepo.triton.llm_client import generate, grpc_stream, llm_inputs
from tests.integration.crash_only import crash_and_recover
from tests.integration.triton_calls import InferenceServerException, texts

CLIENT_ERROR = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
OUTPUTS = {
    "text_embedding": ["EMBEDDING"],
    "review_sentiment": ["LABEL", "PROBABILITIES"],
    "credit_default": ["DEFAULT_PROBABILITY", "UNCERTAINTY", "INTERVAL", "DECISION", "CLASS_PROBABILITIES"],
    "credit_router": ["DEFAULT_PROBABILITY", "UNCERTAINTY", "INTERVAL", "DECISION", "CLASS_PROBABILITIES", "ROUTE"],
}
TEXT_MODELS = ("text_embedding", "review_sentiment")
CREDIT_MODELS = ("credit_default", "credit_router")
LLM_MODELS = ("llm", "llm_bls", "llm_cached")
CREDIT_INPUT = r"input '(STUDENT|BALANCE|INCOME)'"


def credit(*rows, student=None) -> dict[str, np.ndarray]:
    """rows of (student, balance, income) -> the three [n, 1] inputs."""
    rows = rows or (("No", 500.0, 30000.0),)
    return {
        "STUDENT": np.array([[s.encode() if isinstance(s, str) else s] for s, _, _ in rows], dtype=object),
        "BALANCE": np.array([[b] for _, b, _ in rows], dtype=np.float32),
        "INCOME": np.array([[i] for _, _, i in rows], dtype=np.float32),
    }


def with_(inputs: dict, **changes) -> dict:
    out = {**inputs, **changes}
    return {name: value for name, value in out.items() if value is not None}


@dataclass
class Bad:
    """One bad request: its inputs, optional dtype overrides, and regexes the error must match."""

    inputs: dict
    patterns: list[str]
    datatype: dict = field(default_factory=dict)


GOOD_TEXT = texts("A perfectly ordinary review of green tea.")
GOOD_CREDIT = credit(("No", 800.0, 40000.0))


def text_corpus() -> dict[str, Bad]:
    return {
        "dtype INT32": Bad({"TEXT": np.array([[1]], np.int32)}, ["'TEXT'", "data-type is 'INT32'", "expects 'BYTES'"]),
        "dtype FP32": Bad({"TEXT": np.array([[1.0]], np.float32)}, ["'TEXT'", "data-type is 'FP32'", "expects 'BYTES'"]),
        "shape [1,2]": Bad({"TEXT": texts("a", "b").reshape(1, 2)}, ["'TEXT'", r"Expected \[-1,1\], got \[1,2\]"]),
        "shape rank 1": Bad({"TEXT": texts("a").reshape(1)}, ["'TEXT'", r"Expected \[-1,1\], got \[1\]"]),
        "shape rank 3": Bad({"TEXT": texts("a").reshape(1, 1, 1)}, ["'TEXT'", r"Expected \[-1,1\], got \[1,1,1\]"]),
        "empty batch [0,1]": Bad({"TEXT": np.zeros((0, 1), dtype=object)}, ["input 'TEXT'", "expected 1 string elements", "got 0"]),
        "batch 65 > max 64": Bad({"TEXT": texts(*["ok"] * 65)}, ["batch-size must be <= 64"]),
        "non-UTF-8": Bad({"TEXT": texts(b"caf\xe9 latte")}, ["input 'TEXT'", "must be valid UTF-8"]),
        "overlong UTF-8 encoding": Bad({"TEXT": texts(b"\xc0\xaf")}, ["input 'TEXT'", "must be valid UTF-8"]),
        "UTF-16 surrogate bytes": Bad({"TEXT": texts(b"\xed\xa0\x80")}, ["input 'TEXT'", "must be valid UTF-8"]),
        "oversize by one byte": Bad({"TEXT": texts("x" * 16385)}, ["input 'TEXT'", "is 16385 bytes", "at most 16384 bytes"]),
        "oversize 1 MiB": Bad({"TEXT": texts("é" * 2**19)}, ["input 'TEXT'", "is 1048576 bytes", "at most 16384 bytes"]),
        "empty string": Bad({"TEXT": texts("")}, ["input 'TEXT'", "must not be empty"]),
        "whitespace only": Bad({"TEXT": texts(" \u00a0\t\n")}, ["input 'TEXT'", "must not be empty"]),
        "bad item 2 of 4": Bad({"TEXT": texts("a", "b", b"\xff", "d")}, ["input 'TEXT'", "batch item 2", "UTF-8"]),
        "unknown input name": Bad({"TEXT": GOOD_TEXT, "TEXTS": GOOD_TEXT}, ["'TEXTS'", "expected 1 inputs but got 2"]),
        "misspelt input only": Bad({"text": GOOD_TEXT}, ["unexpected inference input 'text'"]),
    }


def credit_corpus() -> dict[str, Bad]:
    three = credit(("No", 1.0, 2.0), ("Yes", 3.0, 4.0), ("No", 5.0, 6.0))
    return {
        "dtype BALANCE FP64": Bad(with_(GOOD_CREDIT, BALANCE=np.array([[1.0]], np.float64)), ["'BALANCE'", "'FP64'", "expects 'FP32'"]),
        "dtype INCOME INT32": Bad(with_(GOOD_CREDIT, INCOME=np.array([[1]], np.int32)), ["'INCOME'", "'INT32'", "expects 'FP32'"]),
        "dtype STUDENT BOOL": Bad(with_(GOOD_CREDIT, STUDENT=np.array([[True]])), ["'STUDENT'", "'BOOL'", "expects 'BYTES'"]),
        "shape BALANCE [1,2]": Bad(with_(GOOD_CREDIT, BALANCE=np.ones((1, 2), np.float32)), ["'BALANCE'", r"Expected \[-1,1\], got \[1,2\]"]),
        "shape INCOME rank 3": Bad(with_(GOOD_CREDIT, INCOME=np.ones((1, 1, 1), np.float32)), ["'INCOME'", r"got \[1,1,1\]"]),
        "empty batch [0,1]": Bad({k: v[:0] for k, v in GOOD_CREDIT.items()}, [CREDIT_INPUT, "byte size mismatch", "got 0"]),
        "batch 257 > max 256": Bad(credit(*[("No", 1.0, 1.0)] * 257), ["batch-size must be <= 256"]),
        "batch sizes differ": Bad(with_(GOOD_CREDIT, BALANCE=np.ones((2, 1), np.float32)), ["input 'BALANCE'", "batch size does not match other inputs"]),
        "BALANCE NaN": Bad(credit(("No", np.nan, 1.0)), ["input 'BALANCE'", r"batch item 0", "must be a finite number"]),
        "BALANCE -inf": Bad(credit(("No", -np.inf, 1.0)), ["input 'BALANCE'", "must be a finite number"]),
        "INCOME +inf": Bad(credit(("No", 1.0, np.inf)), ["input 'INCOME'", "must be a finite number"]),
        "INCOME negative": Bad(credit(("No", 1.0, -0.5)), ["input 'INCOME'", "must be >= 0", "got -0.5"]),
        "NaN in item 2 of 3": Bad(with_(three, INCOME=np.array([[1.0], [2.0], [np.nan]], np.float32)), ["input 'INCOME'", r"batch item 2", "finite"]),
        "STUDENT unknown": Bad(credit(("maybe", 1.0, 1.0)), ["input 'STUDENT'", "must be 'Yes' or 'No'", "got 'maybe'"]),
        "STUDENT wrong case": Bad(credit(("yes", 1.0, 1.0)), ["input 'STUDENT'", "must be 'Yes' or 'No'"]),
        "STUDENT empty": Bad(credit(("", 1.0, 1.0)), ["input 'STUDENT'", "must be 'Yes' or 'No'"]),
        "STUDENT non-UTF-8": Bad(credit((b"Y\xe9s", 1.0, 1.0)), ["input 'STUDENT'", "must be valid UTF-8"]),
        "STUDENT oversize 1 MiB": Bad(credit(("Y" * 2**20, 1.0, 1.0)), ["input 'STUDENT'", "must be 'Yes' or 'No'"]),
        "unknown input name": Bad(with_(GOOD_CREDIT, AGE=np.array([[30.0]], np.float32)), ["'AGE'", "expected 3 inputs but got 4"]),
        "missing INCOME": Bad(with_(GOOD_CREDIT, INCOME=None), ["missing required input", "'INCOME'"]),
        "missing everything but STUDENT": Bad(with_(GOOD_CREDIT, INCOME=None, BALANCE=None), ["missing required input", "'BALANCE'", "'INCOME'"]),
    }


CORPUS = {model: text_corpus() for model in TEXT_MODELS} | {model: credit_corpus() for model in CREDIT_MODELS}
GOOD = {model: {"TEXT": GOOD_TEXT} for model in TEXT_MODELS} | {model: GOOD_CREDIT for model in CREDIT_MODELS}
_BASELINE: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def assert_same_answer(got: dict, expected: dict) -> None:
    for name, value in expected.items():
        if value.dtype == object:
            assert got[name].tolist() == value.tolist(), name
        else:
            np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-5, err_msg=name)


def baseline(caller, model) -> dict[str, np.ndarray]:
    key = (caller.protocol, model)
    if key not in _BASELINE:
        _BASELINE[key] = caller.infer(model, GOOD[model], OUTPUTS[model])
    return _BASELINE[key]


def assert_healthy(server, caller, model) -> None:
    assert server.is_ready()
    assert_same_answer(caller.infer(model, GOOD[model], OUTPUTS[model]), baseline(caller, model))


def assert_refusal(err: InferenceServerException, protocol: str, patterns: list[str]) -> None:
    message = err.message()
    assert err.status() == CLIENT_ERROR[protocol], (err.status(), message)
    assert "internal" not in message.lower(), message
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


@pytest.mark.parametrize("model, case", [(m, c) for m, cases in CORPUS.items() for c in cases])
def test_bad_input_is_refused_by_name_and_the_server_keeps_answering(server, caller, model, case):
    bad = CORPUS[model][case]
    baseline(caller, model)  # taken before the bad request
    with pytest.raises(InferenceServerException) as raised:
        caller.infer(model, bad.inputs, OUTPUTS[model], datatype=bad.datatype)
    assert_refusal(raised.value, caller.protocol, bad.patterns)
    assert_healthy(server, caller, model)


@pytest.mark.parametrize("model", sorted(set(GOOD) - {"credit_router"}))
def test_ensembles_ignore_request_parameters_and_answer_the_same(server, caller, model):
    """Triton 2.51 hands an ensemble's request parameters to no code of ours, and these pipelines read
    none, so an unknown one changes nothing: the answer equals the plain request's."""
    parameters = {"temprature": "0.5", "useer_id": "x", "priority_level": 3, "flag": True}
    assert_same_answer(caller.infer(model, GOOD[model], OUTPUTS[model], parameters=parameters), baseline(caller, model))
    assert_healthy(server, caller, model)


def test_credit_router_refuses_a_misspelt_parameter_by_name(server, caller):
    # credit_router reads `user_id` (sticky canary / A-B assignment): a misspelling must not route the
    # request as if it had none.
    with pytest.raises(InferenceServerException) as raised:
        caller.infer("credit_router", GOOD["credit_router"], OUTPUTS["credit_router"], parameters={"useer_id": "x"})
    assert_refusal(raised.value, caller.protocol, ["input 'useer_id'", "is not a known parameter", "known: user_id"])
    answer = caller.infer("credit_router", GOOD["credit_router"], OUTPUTS["credit_router"], parameters={"user_id": "x"})
    assert_same_answer({k: v for k, v in answer.items() if k != "ROUTE"},
                       {k: v for k, v in baseline(caller, "credit_router").items() if k != "ROUTE"})
    assert_healthy(server, caller, "credit_router")


# ------------------------------------------------------------------ shape–data mismatch in the raw request
def http_infer_raw(server, model: str, header: dict, blobs: list[bytes] = ()) -> tuple[int, dict]:
    body = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream"}
    if blobs:
        headers["Inference-Header-Content-Length"] = str(len(body))
        body += b"".join(blobs)
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/infer", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def bytes_blob(*values: bytes, lie: int | None = None) -> bytes:
    """Triton's BYTES wire format: each element as a 4-byte little-endian length + its bytes."""
    return b"".join(struct.pack("<I", len(v) if lie is None else lie) + v for v in values)


def json_input(name, shape, datatype, data=None, binary_size=None):
    spec = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        spec["data"] = data
    if binary_size is not None:
        spec["parameters"] = {"binary_data_size": binary_size}
    return spec


def credit_json(balance: dict, rows: int = 1) -> list[dict]:
    return [json_input("STUDENT", [rows, 1], "BYTES", ["No"] * rows), balance, json_input("INCOME", [rows, 1], "FP32", [1.0] * rows)]


F32 = np.float32(500.0).tobytes()
HTTP_RAW = {
    # case: (model kind, header inputs, binary blobs, patterns)
    "JSON: shape [2,1], one string": ("text", [json_input("TEXT", [2, 1], "BYTES", ["a"])], [], ["input 'TEXT'", "expected 2 string elements", "got 1"]),
    "JSON: shape [1,1], two strings": ("text", [json_input("TEXT", [1, 1], "BYTES", ["a", "b"])], [], ["input 'TEXT'", "unexpected number of string elements 2", "expecting 1"]),
    "binary: string length prefix lies": ("text", [json_input("TEXT", [1, 1], "BYTES", binary_size=9)], [bytes_blob(b"hello", lie=999)], ["input 'TEXT'", "incomplete string data", "length 999"]),
    "binary: size beyond the body": ("text", [json_input("TEXT", [1, 1], "BYTES", binary_size=109)], [bytes_blob(b"hello")], ["input 'TEXT'", "expecting 100 additional bytes"]),
    "binary: shape [2,1], one string": ("text", [json_input("TEXT", [2, 1], "BYTES", binary_size=9)], [bytes_blob(b"hello")], ["input 'TEXT'", "expected 2 string elements", "got 1"]),
    "binary: two strings for shape [1,1]": ("text", [json_input("TEXT", [1, 1], "BYTES", binary_size=18)], [bytes_blob(b"hello", b"world")], ["input 'TEXT'", "unexpected number of string elements 2"]),
    # Triton 2.51's JSON parser, not the core, checks numeric data against the shape: HTTP 500 and no
    # input named (an upstream limitation, asserted exactly so an upgrade that fixes it shows)
    "JSON: FP32 shape [2,1], one value": ("credit", credit_json(json_input("BALANCE", [2, 1], "FP32", [1.0]), rows=2), [], ["^Unable to parse 'data': Shape does not match true shape of 'data' field$"]),
    "binary: FP32 3 bytes for 1 element": ("credit", credit_json(json_input("BALANCE", [1, 1], "FP32", binary_size=3)), [F32[:3]], ["input 'BALANCE'", "byte size mismatch", "Expected 4, got 3"]),
    "binary: FP32 8 bytes for 1 element": ("credit", credit_json(json_input("BALANCE", [1, 1], "FP32", binary_size=8)), [F32 * 2], ["input 'BALANCE'", "byte size mismatch", "Expected 4, got 8"]),
    "binary: FP32 NaN": ("credit", credit_json(json_input("BALANCE", [1, 1], "FP32", binary_size=4)), [np.float32(np.nan).tobytes()], ["input 'BALANCE'", "must be a finite number"]),
}
HTTP_RAW_MODELS = {"text": TEXT_MODELS, "credit": CREDIT_MODELS}
HTTP_RAW_TRITON_500 = {"JSON: FP32 shape [2,1], one value"}


@pytest.mark.parametrize(
    "model, case", [(m, c) for c, (kind, *_rest) in HTTP_RAW.items() for m in HTTP_RAW_MODELS[kind]]
)
def test_http_raw_body_whose_data_does_not_match_its_shape_is_refused(server, http_client, model, case):
    from tests.integration.triton_calls import Caller

    _, inputs, blobs, patterns = HTTP_RAW[case]
    status, answer = http_infer_raw(server, model, {"inputs": inputs}, blobs)
    assert status == (500 if case in HTTP_RAW_TRITON_500 else 400), answer
    for pattern in patterns:
        assert re.search(pattern, answer["error"]), (pattern, answer["error"])
    assert_healthy(server, Caller("http", http_client), model)


def test_http_binary_data_after_the_last_input_is_refused(server, http_client):
    """Trailing bytes belong to no input: Triton names the model (there is no input to name)."""
    from tests.integration.triton_calls import Caller

    inputs = credit_json(json_input("BALANCE", [1, 1], "FP32", binary_size=4))
    status, answer = http_infer_raw(server, "credit_default", {"inputs": inputs}, [F32 + b"junk"])
    assert (status, answer["error"]) == (400, "unexpected additional input data for model 'credit_default'")
    assert_healthy(server, Caller("http", http_client), "credit_default")


def grpc_raw_infer(server, model: str, inputs: list[tuple[str, list[int], str]], raw: list[bytes]):
    """A ModelInferRequest built by hand, so its raw_input_contents can disagree with the shapes:
    (status code, details, the response or None)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, shape, datatype in inputs:
        request.inputs.add(name=name, shape=shape, datatype=datatype)
    request.raw_input_contents.extend(raw)
    with grpc.insecure_channel(server.grpc_url) as channel:
        try:
            response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        except grpc.RpcError as err:
            return err.code(), err.details(), None
    return grpc.StatusCode.OK, "", response


CREDIT_RAW_OK = [bytes_blob(b"No"), F32, F32]
CREDIT_SPECS = [("STUDENT", [1, 1], "BYTES"), ("BALANCE", [1, 1], "FP32"), ("INCOME", [1, 1], "FP32")]
GRPC_RAW = {
    "string length prefix lies": ("text", [("TEXT", [1, 1], "BYTES")], [bytes_blob(b"hello", lie=999)], ["input 'TEXT'", "incomplete string data"]),
    "shape [2,1], one string": ("text", [("TEXT", [2, 1], "BYTES")], [bytes_blob(b"hello")], ["input 'TEXT'", "expected 2 string elements", "got 1"]),
    "two strings for shape [1,1]": ("text", [("TEXT", [1, 1], "BYTES")], [bytes_blob(b"a", b"b")], ["input 'TEXT'", "unexpected number of string elements 2"]),
    "no raw content for the input": ("text", [("TEXT", [1, 1], "BYTES")], [], ["unable to find data for input tensor 'TEXT'"]),
    "FP32 3 bytes for 1 element": ("credit", CREDIT_SPECS, [CREDIT_RAW_OK[0], F32[:3], F32], ["input 'BALANCE'", "Expected 4, got 3"]),
    "FP32 8 bytes for 1 element": ("credit", CREDIT_SPECS, [CREDIT_RAW_OK[0], F32, F32 * 2], ["input 'INCOME'", "Expected 4, got 8"]),
    "FP32 NaN in the raw bytes": ("credit", CREDIT_SPECS, [CREDIT_RAW_OK[0], np.float32(np.nan).tobytes(), F32], ["input 'BALANCE'", "must be a finite number"]),
}


@pytest.mark.parametrize("model", CREDIT_MODELS)
def test_grpc_raw_contents_beyond_the_inputs_are_ignored_by_triton(server, grpc_client, model):
    """Triton 2.51 answers a request with more raw_input_contents than inputs normally (the extra
    buffer is ignored, not refused): asserted exactly, with the answer equal to the clean request's."""
    import grpc

    from tests.integration.triton_calls import Caller

    code, details, _ = grpc_raw_infer(server, model, CREDIT_SPECS, CREDIT_RAW_OK + [F32])
    assert (code, details) == (grpc.StatusCode.OK, "")
    assert_healthy(server, Caller("grpc", grpc_client), model)


@pytest.mark.parametrize("model, case", [(m, c) for c, (kind, *_rest) in GRPC_RAW.items() for m in HTTP_RAW_MODELS[kind]])
def test_grpc_raw_request_whose_data_does_not_match_its_shape_is_refused(server, grpc_client, model, case):
    import grpc

    from tests.integration.triton_calls import Caller

    _, specs, raw, patterns = GRPC_RAW[case]
    code, details, _ = grpc_raw_infer(server, model, specs, raw)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    for pattern in patterns:
        assert re.search(pattern, details), (pattern, details)
    assert_healthy(server, Caller("grpc", grpc_client), model)


# ------------------------------------------------------------------ batch dimensions of 2**32 or more
# Triton 2.51 keeps only the low 32 bits of a request's batch dimension: [2**62, 1] is batch size 0.
HUGE = 2**62
HUGE_REFUSAL = ["input 'TEXT'", r"arrived with shape \[1\]", "batch dimension was not a valid size"]


def test_a_huge_batch_dimension_reaching_a_python_model_is_refused_by_name(server, http_client, grpc_client):
    """Sent to a Python model directly, the tensor arrives without its batch dimension ([1]):
    the adapter refuses it by name (HTTP 400 / INVALID_ARGUMENT) instead of answering."""
    import grpc

    from tests.integration.triton_calls import Caller

    status, answer = http_infer_raw(server, "minilm_tokenizer", {"inputs": [json_input("TEXT", [HUGE, 1], "BYTES", ["hello"])]})
    assert status == 400, answer
    code, details, _ = grpc_raw_infer(server, "minilm_tokenizer", [("TEXT", [HUGE, 1], "BYTES")], [bytes_blob(b"hello")])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    for message in (answer["error"], details):
        for pattern in HUGE_REFUSAL:
            assert re.search(pattern, message), (pattern, message)
    assert_healthy(server, Caller("http", http_client), "text_embedding")
    assert_healthy(server, Caller("grpc", grpc_client), "text_embedding")


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_a_huge_batch_dimension_on_an_ensemble_is_answered_by_triton_without_reaching_us_as_such(server, http_client, model):
    """Through an ensemble the step receives [1, 1], exactly what a real one-text request gives it, so no
    code of ours can tell: Triton 2.51 answers 200, the output's batch dimension missing. Asserted
    exactly (an upstream defect) so that an upgrade that refuses it shows; README "Failure modes"."""
    import grpc

    from tests.integration.triton_calls import Caller

    status, answer = http_infer_raw(server, model, {"inputs": [json_input("TEXT", [HUGE, 1], "BYTES", ["A fine tea."])]})
    assert status == 200, answer
    code, _, response = grpc_raw_infer(server, model, [("TEXT", [HUGE, 1], "BYTES")], [bytes_blob(b"A fine tea.")])
    assert code == grpc.StatusCode.OK
    per_text = {"text_embedding": [[384]], "review_sentiment": [[1], [2]]}[model]  # LABEL, PROBABILITIES
    assert sorted(output["shape"] for output in answer["outputs"]) == sorted(per_text)
    assert sorted(list(output.shape) for output in response.outputs) == sorted(per_text)
    assert_healthy(server, Caller("http", http_client), model)


# ------------------------------------------------------------------ requests that end tritonserver 2.51 itself
def dropped(send) -> str:
    """Send a request that kills the server: the client sees its connection drop (or an error)."""
    try:
        return repr(send())
    except (OSError, http.client.HTTPException) as err:
        return f"{type(err).__name__}: {err}"


# case: (send it to a ServeProcess, the signal tritonserver dies of). Triton's own code fails before any
# model sees the request, so nothing of ours can refuse it: crash-only serving restarts the server.
CRASHERS = {
    "HTTP classification on the BYTES output LABEL": (lambda serve: classification_on_bytes_http(serve.http_url), "SIGFPE"),
    "gRPC class_count on the BYTES output LABEL": (lambda serve: classification_on_bytes_grpc(serve.grpc_url), "SIGFPE"),
    "HTTP INT64 inputs shape [2**62, 1], one value each": (
        lambda serve: dropped(lambda: http_infer_raw(serve, "minilm_encoder", {"inputs": [
            json_input("input_ids", [HUGE, 1], "INT64", [101]), json_input("attention_mask", [HUGE, 1], "INT64", [1])]})),
        "SIGSEGV",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CRASHERS)
def test_a_request_that_kills_tritonserver_leaves_it_serving_again(crash_only_server, case):
    send, signal_name = CRASHERS[case]
    died = crash_and_recover(crash_only_server, lambda: send(crash_only_server))
    assert f"(killed by {signal_name}); restart" in died


# ------------------------------------------------------------------ good and bad in one dynamic batch
def send_together(caller, model: str, requests: list[dict]) -> list:
    """Every request in flight at once (so the dynamic batcher groups them); result dict or exception."""
    module = caller.module

    def tensors(inputs):
        out = []
        for name, array in inputs.items():
            tensor = module.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else
                                       {np.float32: "FP32", np.int32: "INT32"}[array.dtype.type])
            tensor.set_data_from_numpy(array)
            out.append(tensor)
        return out

    outputs = [module.InferRequestedOutput(name) for name in OUTPUTS[model]]
    results: list = [None] * len(requests)
    if caller.protocol == "http":
        pending = [caller.client.async_infer(model, tensors(inputs), outputs=outputs) for inputs in requests]
        for index, handle in enumerate(pending):
            try:
                result = handle.get_result()
                results[index] = {name: result.as_numpy(name) for name in OUTPUTS[model]}
            except InferenceServerException as err:
                results[index] = err
        return results
    done = [concurrent.futures.Future() for _ in requests]
    for index, inputs in enumerate(requests):
        def callback(result, error, index=index):
            done[index].set_result(error if error is not None else {name: result.as_numpy(name) for name in OUTPUTS[model]})
        caller.client.async_infer(model, tensors(inputs), callback, outputs=outputs)
    return [future.result(timeout=120) for future in done]


MIXED = {
    "text": (
        [{"TEXT": texts(f"review number {i}: the tea was fine")} for i in range(8)],
        {2: ({"TEXT": texts(b"\xff\xfe")}, "must be valid UTF-8"), 5: ({"TEXT": texts("   ")}, "must not be empty"),
         6: ({"TEXT": texts("y" * 20000)}, "at most 16384")},
    ),
    "credit": (
        [credit(("No" if i % 2 else "Yes", 100.0 * i, 1000.0 * (i + 1))) for i in range(8)],
        {1: (credit(("No", np.nan, 1.0)), "must be a finite number"), 4: (credit(("perhaps", 1.0, 1.0)), "must be 'Yes' or 'No'"),
         7: (credit(("No", 1.0, -1.0)), "must be >= 0")},
    ),
}


@pytest.mark.parametrize("model", sorted(GOOD))
def test_good_requests_batched_with_bad_ones_answer_as_if_sent_alone(server, caller, model):
    good, bad = MIXED["text" if model in TEXT_MODELS else "credit"]
    alone = [caller.infer(model, inputs, OUTPUTS[model]) for inputs in good]
    requests = list(good)
    for position in sorted(bad):
        requests.insert(position, bad[position][0])
    results = send_together(caller, model, requests)
    served = []
    for position, result in enumerate(results):
        if position in bad:
            assert isinstance(result, InferenceServerException), result
            assert_refusal(result, caller.protocol, [r"input '\w+'", bad[position][1]])
        else:
            assert isinstance(result, dict), f"request {position} (good) was refused: {result}"
            served.append(result)
    assert len(served) == len(alone)
    for got, expected in zip(served, alone):
        assert_same_answer(got, expected)
    assert_healthy(server, caller, model)


# ------------------------------------------------------------------ decoupled LLM models
LLM_GOOD = ("Say hello.", 4)

# case: (gRPC stream inputs or None, HTTP generate body or None, regexes; messages, not codes, on a stream)
LLM_CORPUS = {
    "missing max_tokens": ({"text_input": llm_inputs("hi", 4)["text_input"]}, {"text_input": "hi"}, ["missing required input", "'max_tokens'"]),
    "dtype max_tokens INT64": (llm_inputs("hi", 4) | {"max_tokens": np.array([[4]], np.int64)}, None, ["'max_tokens'", "'INT64'", "expects 'INT32'"]),
    "dtype temperature FP64": (llm_inputs("hi", 4) | {"temperature": np.array([[0.5]], np.float64)}, None, ["'temperature'", "'FP64'", "expects 'FP32'"]),
    "shape text_input rank 3": (llm_inputs("hi", 4) | {"text_input": np.array([[[b"hi"]]], dtype=object)}, None, ["'text_input'", r"got \[1,1,1\]"]),
    "empty batch": ({"text_input": np.zeros((0, 1), dtype=object), "max_tokens": np.zeros((0, 1), np.int32)}, None, ["input 'max_tokens'", "byte size mismatch", "got 0"]),
    "two prompts in one request": (
        {"text_input": np.array([[b"a"], [b"b"]], dtype=object), "max_tokens": np.array([[4], [4]], np.int32)}, None,
        ["input 'text_input'", "one prompt per request, got 2"],
    ),
    "batch 65 > max 64": (
        {"text_input": np.array([[b"a"]] * 65, dtype=object), "max_tokens": np.full((65, 1), 4, np.int32)}, None, ["batch-size must be <= 64"],
    ),
    "non-UTF-8 prompt": (llm_inputs("hi", 4) | {"text_input": np.array([[b"\xff\xfe"]], dtype=object)}, None, ["input 'text_input'", "must be valid UTF-8"]),
    "non-UTF-8 stop word": (llm_inputs("hi", 4) | {"stop_words": np.array([[b"ok", b"\xc3\x28"]], dtype=object)}, None, ["input 'stop_words'", "must be valid UTF-8"]),
    "oversize prompt": (llm_inputs("x" * 16385, 4), {"text_input": "x" * 16385, "max_tokens": 4}, ["input 'text_input'", "16385 bytes", "at most 16384"]),
    "empty prompt": (llm_inputs("", 4), {"text_input": "", "max_tokens": 4}, ["input 'text_input'", "must not be empty"]),
    "prompt over 1024 tokens": (llm_inputs("word " * 1100, 4), {"text_input": "word " * 1100, "max_tokens": 4}, ["input 'text_input'", "at most 1024"]),
    "max_tokens 0": (llm_inputs("hi", 0), {"text_input": "hi", "max_tokens": 0}, ["input 'max_tokens'", "must be between 1 and 512"]),
    "max_tokens -1": (llm_inputs("hi", -1), {"text_input": "hi", "max_tokens": -1}, ["input 'max_tokens'", "must be between 1 and 512"]),
    "max_tokens 2**31-1": (llm_inputs("hi", 2**31 - 1), {"text_input": "hi", "max_tokens": 2**31 - 1}, ["input 'max_tokens'", "must be between 1 and 512"]),
    "temperature NaN": (llm_inputs("hi", 4, temperature=float("nan")), {"text_input": "hi", "max_tokens": 4, "temperature": float("nan")}, ["input 'temperature'", "must be a finite number >= 0"]),
    "temperature -inf": (llm_inputs("hi", 4, temperature=float("-inf")), None, ["input 'temperature'", "must be a finite number >= 0"]),
    "top_p inf": (llm_inputs("hi", 4, top_p=float("inf")), {"text_input": "hi", "max_tokens": 4, "top_p": 1e39}, ["input 'top_p'", r"must be in \(0, 1\]"]),
    "top_p 0": (llm_inputs("hi", 4, top_p=0.0), {"text_input": "hi", "max_tokens": 4, "top_p": 0.0}, ["input 'top_p'", r"must be in \(0, 1\]"]),
    "top_k negative": (llm_inputs("hi", 4, top_k=-1), {"text_input": "hi", "max_tokens": 4, "top_k": -1}, ["input 'top_k'", "must be >= 0"]),
    "min_length > max_tokens": (llm_inputs("hi", 4, min_length=5), {"text_input": "hi", "max_tokens": 4, "min_length": 5}, ["input 'min_length'", "must be between 0 and max_tokens"]),
    "unknown input / field": (llm_inputs("hi", 4) | {"temprature": np.array([[0.5]], np.float32)}, {"text_input": "hi", "max_tokens": 4, "temprature": 0.5}, ["'temprature'"]),
}
LLM_UNKNOWN_PARAMETER = ["input 'temprature'", "is not a known parameter"]


def llm_refusal(server, model, protocol, case) -> tuple[int | None, str]:
    inputs, body, _ = LLM_CORPUS[case]
    if protocol == "grpc":
        result = grpc_stream(server.grpc_url, model, inputs, timeout_s=120)
        assert result.error is not None and not result.chunks, result
        return None, result.error
    status, answer = generate(server.http_url, model, body, timeout_s=120)
    return status, answer.get("error", "")


@pytest.fixture(scope="module")
def llm_answers(server):
    """Each LLM model's answer to one good prompt (greedy), before the corpus: the corpus must not change it."""
    answers = {}
    for model in LLM_MODELS:
        status, answer = generate(server.http_url, model, {"text_input": LLM_GOOD[0], "max_tokens": LLM_GOOD[1]})
        assert status == 200, answer
        answers[model] = answer["text_output"]
    return answers


# only the cases each protocol can express (a generate body has no INT64, non-UTF-8 or batch of prompts)
LLM_CASES = [
    (case, model, protocol)
    for case, (inputs, body, _) in LLM_CORPUS.items()
    for model in LLM_MODELS
    for protocol, request in (("grpc", inputs), ("http", body))
    if request is not None
]


@pytest.mark.parametrize("case, model, protocol", LLM_CASES)
def test_llm_bad_input_is_refused_by_name(server, llm_answers, model, protocol, case):
    _, _, patterns = LLM_CORPUS[case]
    status, message = llm_refusal(server, model, protocol, case)
    if protocol == "http":
        assert status == 400, (status, message)
    if protocol == "http" and case == "unknown input / field":
        patterns = LLM_UNKNOWN_PARAMETER  # HTTP generate turns an unknown field into a request parameter
    if protocol == "grpc" and case == "unknown input / field":
        patterns = ["unexpected inference input 'temprature'"]
    assert "internal" not in message.lower(), message
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    assert server.is_ready()


@pytest.mark.parametrize("model", LLM_MODELS)
def test_llm_unknown_request_parameter_is_refused_on_a_grpc_stream(server, llm_answers, model):
    result = grpc_stream(server.grpc_url, model, llm_inputs("hi", 4), parameters={"temprature": "0.5"}, timeout_s=120)
    assert result.error is not None and not result.chunks
    for pattern in LLM_UNKNOWN_PARAMETER:
        assert re.search(pattern, result.error), result.error
    assert server.is_ready()


def test_llm_stream_true_is_refused_by_the_ensemble(server, llm_answers):
    status, answer = generate(server.http_url, "llm", {"text_input": "hi", "max_tokens": 4, "stream": True})
    assert status == 400 and re.search(r"input 'stream'.*llm_bls", answer["error"]), answer


def test_http_generate_with_a_json_value_of_the_wrong_type_is_a_triton_500(server, llm_answers):
    """Triton 2.51's generate endpoint converts JSON to tensors before any model sees the request, and
    answers a string where an INT32 is declared with HTTP 500 and a message that does not name the
    input: a Triton limitation (upstream), recorded here exactly so an upgrade that fixes it shows."""
    for model in LLM_MODELS:
        status, answer = generate(server.http_url, model, {"text_input": "hi", "max_tokens": "four"})
        assert (status, answer["error"]) == (500, "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer")
    assert server.is_ready()


@pytest.mark.parametrize("model", LLM_MODELS)
def test_good_llm_requests_alongside_bad_ones_answer_as_before(server, llm_answers, model):
    """Good and bad prompts in flight together (one dynamic batch in preprocessing and the engine):
    the bad are refused by name, the good answer exactly what the same prompt answered alone."""
    bodies = [
        {"text_input": LLM_GOOD[0], "max_tokens": LLM_GOOD[1]},
        {"text_input": "", "max_tokens": 4},
        {"text_input": LLM_GOOD[0], "max_tokens": LLM_GOOD[1]},
        {"text_input": "hi", "max_tokens": 0},
        {"text_input": "hi", "max_tokens": 4, "top_p": 2.0},
    ]
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: generate(server.http_url, model, body, timeout_s=120), bodies))
    for body, (status, answer) in zip(bodies, answers):
        if body["text_input"] == LLM_GOOD[0]:
            assert status == 200 and answer["text_output"] == llm_answers[model], answer
        else:
            assert status == 400 and re.search(r"input '(text_input|max_tokens|top_p)'", answer["error"]), answer
    assert server.is_ready()
