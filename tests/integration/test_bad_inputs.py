"""Bad input to either public pipeline: a clear error naming the input and the rule, server stays READY,
and good requests batched alongside bad ones are still answered correctly."""

from __future__ import annotations

import numpy as np
import pytest

from modelrepo.build.minilm import reference_embeddings
from tests.integration.triton_calls import InferenceServerException, texts

PIPELINES = {"text_embedding": ["EMBEDDING"], "review_sentiment": ["LABEL", "PROBABILITIES"]}

BAD_REQUESTS = {
    # case: (TEXT tensor, datatype override, fragments the error must contain)
    "empty string": (texts(""), None, ["'TEXT'", "must not be empty"]),
    "whitespace only": (texts("  \n\t "), None, ["'TEXT'", "must not be empty"]),
    "non-UTF-8 bytes": (texts(b"good start \xff\xfe bad"), None, ["'TEXT'", "must be valid UTF-8"]),
    "oversize text": (texts("x" * 20_000), None, ["'TEXT'", "20000 bytes", "at most 16384 bytes"]),
    "bad item inside a batch": (texts("fine", b"\xc3\x28"), None, ["'TEXT'", "batch item 1", "UTF-8"]),
    "wrong dtype": (np.array([[1], [2]], dtype=np.int32), None, ["'TEXT'", "INT32", "BYTES"]),
    "wrong shape": (texts("a", "b").reshape(1, 2), None, ["'TEXT'", "shape", "[-1,1]"]),
    "batch above max": (texts(*["ok"] * 65), None, ["batch-size must be <= 64"]),
}


def assert_healthy(server, caller, model):
    assert server.is_ready()
    outputs = PIPELINES[model]
    result = caller.infer(model, {"TEXT": texts("still working")}, outputs)
    assert all(result[name].shape[0] == 1 for name in outputs)


@pytest.mark.parametrize("model", sorted(PIPELINES))
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_is_refused_with_a_named_rule(server, caller, model, case):
    tensor, datatype, fragments = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as raised:
        caller.infer(model, {"TEXT": tensor}, PIPELINES[model], datatype=datatype)
    message = raised.value.message()
    assert raised.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")  # the client's fault, not 500
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert_healthy(server, caller, model)


def test_bad_requests_do_not_fail_their_neighbours_in_a_dynamic_batch(server, http_client):
    import tritonclient.http as httpclient

    good = [f"tasty snack number {i}" for i in range(12)]
    requests = [texts(text) for text in good]
    bad_positions = {2, 5, 9}
    for position in sorted(bad_positions):
        requests.insert(position, texts(b"\xff"))
    pending = []
    # All in flight at once. The tokenizer (no batcher, perf/results/dynamic_batcher_stall.md) refuses
    # each bad one by itself; the good ones meet in minilm_encoder's dynamic batches.
    for tensor in requests:
        infer_input = httpclient.InferInput("TEXT", list(tensor.shape), "BYTES")
        infer_input.set_data_from_numpy(tensor)
        pending.append(http_client.async_infer("text_embedding", [infer_input]))
    served, errors = [], 0
    for position, request in enumerate(pending):
        if position in bad_positions:
            with pytest.raises(InferenceServerException, match="must be valid UTF-8"):
                request.get_result()
            errors += 1
        else:
            served.append(request.get_result().as_numpy("EMBEDDING")[0])
    assert errors == len(bad_positions)
    reference = reference_embeddings(good)
    cosines = np.sum(np.vstack(served) * reference, axis=1)
    assert cosines.min() >= 0.9999
    assert server.is_ready()
