"""A bounded, seeded fuzz of Triton's HTTP inference endpoint for every non-decoupled public model.

Bodies start from a valid request and are mutated: inputs dropped, renamed or added, datatypes and
shapes changed, data replaced by arbitrary JSON, request parameters and requested outputs made up,
the JSON text truncated or corrupted, and binary-extension bodies with wrong sizes. Every answer
must be a 4xx with a JSON error body, or a 200 whose outputs are well-formed; the connection must
never drop, the server must stay READY and its Python-backend stubs alive.

Triton 2.51's HTTP frontend answers a body its JSON parser cannot map to tensors (not JSON, a
missing `inputs`, a string where a number is declared, ...) with HTTP 500 before any model sees it.
Those are upstream behaviour, allowed here only with the parser's own messages (TRITON_PARSER_500);
a 500 from a model (our adapter's "internal error: ...") always fails.

Not generated here, because they crash or mis-answer tritonserver 2.51 itself (upstream defects,
found by this fuzz; a single request takes the whole server down, so they cannot share its session):
a shape dimension >= 2**32 (truncated to 32 bits: a wrong-shaped 200 for BYTES through an ensemble,
SIGSEGV for a numeric input) and `classification` requested on a BYTES output (SIGFPE). The hostile
corpus sends each of them (tests/integration/test_input_corpus.py): to a Python model a huge batch
dimension is refused by name; the crashers go to a crash-only `modelrepo serve`, which must serve
again, every model READY and answering as before.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import struct

import pytest

from modelrepo.triton.recovery import stub_processes

SEED = 2051
BODIES_PER_MODEL = 200
MODELS = {
    "text_embedding": ({"TEXT": ("BYTES", ["A short review of green tea."])}, {"EMBEDDING": "FP32"}),
    "review_sentiment": ({"TEXT": ("BYTES", ["Stale and overpriced."])}, {"LABEL": "BYTES", "PROBABILITIES": "FP32"}),
    "credit_default": (
        {"STUDENT": ("BYTES", ["No"]), "BALANCE": ("FP32", [800.0]), "INCOME": ("FP32", [40000.0])},
        {"DEFAULT_PROBABILITY": "FP32", "UNCERTAINTY": "FP32", "INTERVAL": "FP32", "DECISION": "BYTES", "CLASS_PROBABILITIES": "FP32"},
    ),
    "credit_router": (
        {"STUDENT": ("BYTES", ["Yes"]), "BALANCE": ("FP32", [1500.0]), "INCOME": ("FP32", [20000.0])},
        {"DEFAULT_PROBABILITY": "FP32", "UNCERTAINTY": "FP32", "INTERVAL": "FP32", "DECISION": "BYTES", "CLASS_PROBABILITIES": "FP32", "ROUTE": "BYTES"},
    ),
}
DATATYPES = ["BYTES", "FP32", "FP64", "FP16", "INT32", "INT64", "UINT8", "BOOL", "BF16", "STRING", "", "fp32"]
TRITON_PARSER_500 = (
    "Unable to parse",
    "failed to parse the request JSON buffer",
    "failed to get request params",
    "Unable to set",
    "parameter key",
)
ELEMENT_BYTES = {"FP32": 4, "INT32": 4, "FP64": 8, "INT64": 8, "FP16": 2, "BF16": 2, "UINT8": 1, "BOOL": 1}


def random_scalar(rng: random.Random):
    return rng.choice([
        lambda: rng.randint(-(2**31), 2**31),
        lambda: rng.uniform(-1e6, 1e6),
        lambda: rng.choice([0, -1, 1, 1e39, -0.0]),
        lambda: "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 12))),
        lambda: rng.choice(["Yes", "No", "", " ", "\u0000", "nan", "\ud7ff"]),
        lambda: rng.choice([True, False, None]),
        lambda: "x" * rng.choice([16385, 40000]),
    ])()


def random_json(rng: random.Random, depth: int = 0):
    if depth > 2 or rng.random() < 0.6:
        return random_scalar(rng)
    if rng.random() < 0.5:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {str(random_scalar(rng))[:8]: random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def random_shape(rng: random.Random, rows: int) -> list:
    # every dimension < 2**32: larger ones crash tritonserver 2.51 (see the module docstring)
    return rng.choice([
        lambda: [rows, 1], lambda: [rows], lambda: [rows, 1, 1], lambda: [0, 1], lambda: [rng.randint(0, 300), 1],
        lambda: [1, rng.randint(0, 3)], lambda: [], lambda: [-1, 1], lambda: [2**31, 1], lambda: [rng.randint(2, 5), rng.randint(1, 3)],
        lambda: ["1", 1], lambda: [1.5, 1], lambda: None,
    ])()


def valid_inputs(model: str, rows: int) -> list[dict]:
    inputs, _ = MODELS[model]
    return [{"name": name, "shape": [rows, 1], "datatype": dt, "data": values * rows} for name, (dt, values) in inputs.items()]


def mutate_json_request(rng: random.Random, model: str) -> dict:
    rows = rng.choice([1, 1, 2, 3])
    inputs = valid_inputs(model, rows)
    body: dict = {"inputs": inputs}
    for _ in range(rng.randint(0, 3)):
        target = rng.choice(inputs) if inputs else None
        kind = rng.randrange(11)
        if kind == 0 and inputs:
            inputs.remove(target)
        elif kind == 1 and target:
            name = target.get("name", "")
            target["name"] = rng.choice([name.lower(), name + "_", "", "EXTRA", str(random_scalar(rng))[:10]])
        elif kind == 2 and target:
            target["datatype"] = rng.choice(DATATYPES)
        elif kind == 3 and target:
            shape = random_shape(rng, rows)
            if shape is None:
                target.pop("shape")
            else:
                target["shape"] = shape
        elif kind == 4 and target:
            target["data"] = random_json(rng) if rng.random() < 0.3 else [random_scalar(rng) for _ in range(rng.randint(0, 4))]
        elif kind == 5 and target:
            target.pop(rng.choice(["data", "datatype", "name"]), None)
        elif kind == 6:
            inputs.append({"name": rng.choice(["EXTRA", "TEXT", "STUDENT"]), "shape": [rows, 1], "datatype": "BYTES", "data": ["x"] * rows})
        elif kind == 7:
            body["parameters"] = {str(random_scalar(rng))[:12]: rng.choice([random_scalar(rng), random_json(rng)]) for _ in range(rng.randint(0, 3))}
        elif kind == 8:
            _, outputs = MODELS[model]
            requested = []
            for _ in range(rng.randint(0, 3)):
                name = rng.choice([*outputs, "NOPE", ""])
                spec: dict = {"name": name}
                if rng.random() < 0.4:
                    # classification only on FP32 outputs: on a BYTES one it crashes tritonserver 2.51
                    safe = outputs.get(name) != "BYTES"
                    spec["parameters"] = {"classification": rng.choice([0, 1, 2, 5]) if safe else 0, "binary_data": rng.choice([True, False])}
                requested.append(spec)
            body["outputs"] = requested
        elif kind == 9:
            body["id"] = random_scalar(rng)
        elif kind == 10 and target:
            target["parameters"] = {"binary_data_size": rng.randint(0, 64)}  # claims binary data that never comes
    return body


def corrupt(rng: random.Random, text: bytes) -> bytes:
    """Truncate, delete or insert a byte — never digits, so no shape can grow past 2**32."""
    position = rng.randrange(len(text) + 1)
    choice = rng.randrange(4)
    if choice == 0:
        return text[:position]
    if choice == 1:
        return text[:position] + text[position + 1:]
    if choice == 2:
        return text[:position] + bytes([rng.choice(b'{}[]:,"\\ \x00\xff\xc3tfn')]) + text[position:]
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))


def binary_request(rng: random.Random, model: str) -> tuple[bytes, dict]:
    """The binary extension with honest or lying sizes."""
    rows = rng.choice([1, 2])
    inputs = valid_inputs(model, rows)
    blobs = []
    for spec in inputs:
        if rng.random() < 0.5:
            continue  # this one stays JSON
        values = spec.pop("data")
        if spec["datatype"] == "BYTES":
            blob = b"".join(struct.pack("<I", len(v.encode()) + rng.choice([0, 0, 0, 3, -1, 1000]) if v else 0) + v.encode() for v in values)
        else:
            blob = struct.pack(f"<{len(values)}f", *values)
        blob = rng.choice([blob, blob, blob[: rng.randrange(len(blob) + 1)], blob + bytes(rng.randrange(1, 9))])
        declared = rng.choice([len(blob), len(blob), len(blob) + rng.randint(1, 16), max(0, len(blob) - rng.randint(1, 4))])
        spec["parameters"] = {"binary_data_size": declared}
        blobs.append(blob)
    header = json.dumps({"inputs": inputs}).encode()
    length = rng.choice([len(header)] * 6 + [len(header) + rng.randint(1, 20), rng.randint(0, len(header)), -3, "nan"])
    return header + b"".join(blobs), {"Inference-Header-Content-Length": str(length)}


def bodies(model: str, rng: random.Random):
    for _ in range(BODIES_PER_MODEL):
        roll = rng.random()
        if roll < 0.55:
            yield json.dumps(mutate_json_request(rng, model), allow_nan=True).encode(), {}
        elif roll < 0.75:
            yield corrupt(rng, json.dumps({"inputs": valid_inputs(model, 1)}).encode()), {}
        else:
            yield binary_request(rng, model)


def post(server, model: str, body: bytes, headers: dict) -> tuple[int, dict[str, str], bytes]:
    host, port = server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def check_ok_answer(model: str, headers: dict, payload: bytes) -> None:
    """A 200: the JSON (and any binary part) describes well-formed outputs of this model."""
    length = headers.get("Inference-Header-Content-Length")
    header = json.loads(payload[: int(length)] if length else payload)
    binary = payload[int(length):] if length else b""
    assert header["model_name"] == model
    _, outputs = MODELS[model]
    assert header["outputs"], header
    offset = 0
    for output in header["outputs"]:
        assert output["name"] in outputs, output
        shape = output["shape"]
        assert all(isinstance(d, int) and d >= 0 for d in shape) and shape[0] >= 1, output
        count = math.prod(shape)
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = binary[offset: offset + size]
            assert len(chunk) == size, output
            offset += size
            if output["datatype"] in ELEMENT_BYTES:
                assert size == count * ELEMENT_BYTES[output["datatype"]], output
        else:
            assert len(output["data"]) == count, output
            if output["datatype"] == "FP32":
                assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in output["data"]), output
    assert offset == len(binary)


def live_stubs(server) -> set:
    return set(stub_processes(server.process.pid))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_random_and_malformed_bodies_get_client_errors_or_well_formed_answers(server, model):
    stubs_before = live_stubs(server)
    assert stubs_before, "no Python-backend stubs found under the server process"
    rng = random.Random(f"{SEED}-{model}")
    tally: dict[int, int] = {}
    for index, (body, headers) in enumerate(bodies(model, rng)):
        try:
            status, response_headers, payload = post(server, model, body, headers)
        except (ConnectionError, http.client.HTTPException) as err:
            pytest.fail(f"body {index} dropped the connection ({err!r}): {body[:300]!r} {headers}")
        tally[status] = tally.get(status, 0) + 1
        context = f"body {index}: {body[:300]!r} {headers} -> {status} {payload[:300]!r}"
        if status == 200:
            check_ok_answer(model, response_headers, payload)
            continue
        assert 400 <= status < 500 or status == 500, context
        error = json.loads(payload)["error"]
        assert isinstance(error, str) and error, context
        assert "internal error" not in error, context  # a model's own failure is never acceptable
        if status == 500:
            assert error.startswith(TRITON_PARSER_500), context
    assert sum(tally.values()) == BODIES_PER_MODEL
    assert any(400 <= s < 500 for s in tally), tally  # the corpus does reach the refusals
    assert server.is_ready()
    assert live_stubs(server) == stubs_before  # same stubs, none died or restarted
