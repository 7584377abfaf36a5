"""Property-based tests of the plain-Python validators behind every public model.

For arbitrary bytes, strings, floats, integers and shapes a validator either accepts — and then what
it returns satisfies the documented limits — or raises `InputError` (never another exception, which
the Triton adapter would turn into an INTERNAL error) whose message names the input and the rule.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelrepo.python_backends.batching import answer_each, concat_requests, required, split_rows
from modelrepo.python_backends.credit_features import INPUT_NAMES, STUDENT_VALUES, CreditInputError, validate_credit_inputs
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.llm.bls import preprocessing_inputs
from modelrepo.python_backends.llm.engine import LlmEngine
from modelrepo.python_backends.llm.semantic_cache import settings_key
from modelrepo.python_backends.text_tokenizer import DEFAULT_MAX_TEXT_BYTES, decode_text
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# BYTES elements as Triton hands them to a Python model: bytes (any, including invalid UTF-8) or str
texts = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    st.sampled_from([b"", b" \t\n", b"\xff\xfe", b"\xc3\x28", "\u00a0", "Yes", "No", "yes", "Yes ", "\x00"]),
)
any_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
# shapes of a [batch, 1] input, from empty to a few rows, and some that are not [batch, 1] at all
shapes = st.sampled_from([(0, 1), (1, 1), (2, 1), (3, 1), (1,), (3,), (1, 2), (2, 1, 1)])


def assert_names(err: InputError, *names: str) -> None:
    message = str(err)
    assert err.input_name in names, (err.input_name, names)
    assert f"input '{err.input_name}'" in message, message
    assert err.rule and err.rule in message, message  # the rule is spelled out, not just the name


def bytes_array(values, shape=None) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array.reshape(shape if shape is not None else (-1, 1))


# ----------------------------------------------------------------------------- errors.InputError
@FAST
@given(name=st.text(min_size=1, max_size=20), rule=st.text(min_size=1, max_size=40), item=st.one_of(st.none(), st.integers(0, 10**6)))
def test_input_error_message_names_the_input_the_item_and_the_rule(name, rule, item):
    err = InputError(name, rule, item)
    message = str(err)
    assert message.startswith(f"input '{name}'") and message.endswith(rule)
    assert (f"(batch item {item})" in message) == (item is not None)
    assert isinstance(err, ValueError) and (err.input_name, err.rule, err.item) == (name, rule, item)


# ----------------------------------------------------------------------------- text_tokenizer
@FAST
@given(value=texts, item=st.one_of(st.none(), st.integers(0, 63)), max_bytes=st.integers(1, 80), name=st.sampled_from(["TEXT", "text_input", "stop_words"]))
def test_decode_text_accepts_only_non_blank_utf8_within_the_byte_limit(value, item, max_bytes, name):
    raw = value.encode("utf-8") if isinstance(value, str) else value
    try:
        text = decode_text(value, item, max_bytes, name)
    except InputError as err:
        assert_names(err, name)
        assert err.item == item
        # the refusal is for a documented reason, and the reason is true of this value
        if "bytes are accepted" in err.rule:
            assert len(raw) > max_bytes and f"at most {max_bytes} bytes" in err.rule
        elif "UTF-8" in err.rule:
            assert err.rule.startswith("must be valid UTF-8")
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
        else:
            assert err.rule == "must not be empty or whitespace-only"
            assert not raw.decode("utf-8").strip()
        return
    assert isinstance(text, str) and text.encode("utf-8") == raw
    assert len(raw) <= max_bytes and text.strip()


@FAST
@given(extra=st.integers(1, 5000))
def test_decode_text_refuses_oversize_text_before_decoding_it(extra):
    value = b"\xff" * (DEFAULT_MAX_TEXT_BYTES + extra)  # also invalid UTF-8: the size rule is reported
    with pytest.raises(InputError, match=f"is {DEFAULT_MAX_TEXT_BYTES + extra} bytes; at most {DEFAULT_MAX_TEXT_BYTES}"):
        decode_text(value, 0, DEFAULT_MAX_TEXT_BYTES)


# ----------------------------------------------------------------------------- credit_features
@st.composite
def credit_requests(draw):
    rows = draw(st.integers(0, 4))
    request = {}
    for name in INPUT_NAMES:
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        n = rows if draw(st.integers(0, 7)) else draw(st.integers(0, 4))  # sometimes a row mismatch
        if name == "STUDENT":
            request[name] = bytes_array(draw(st.lists(texts, min_size=n, max_size=n)))
        else:
            dtype = draw(st.sampled_from([np.float32, np.float64, np.int32]))
            elements = any_floats if dtype != np.int32 else st.integers(-(2**31), 2**31 - 1)
            request[name] = draw(hnp.arrays(dtype, (n, 1), elements=elements))
    return request


@FAST
@given(request=credit_requests())
def test_credit_validation_accepts_or_names_the_field_and_rule(request):
    try:
        raw = validate_credit_inputs(request)
    except CreditInputError as err:
        assert_names(err, *INPUT_NAMES)
        assert err.reason in {"missing", "not_finite", "negative", "unknown_category", "not_utf8", "shape"}
        assert f"(batch item {err.item})" in str(err)
        if err.reason == "missing":
            assert request.get(err.input_name) is None and "is required" in err.rule
        elif err.reason == "not_finite":
            assert "must be a finite number" in err.rule
            assert not np.isfinite(request[err.input_name].reshape(-1)[err.item].astype(np.float64))
        elif err.reason == "negative":
            assert "must be >= 0" in err.rule and request[err.input_name].reshape(-1)[err.item] < 0
        elif err.reason == "unknown_category":
            assert "must be 'Yes' or 'No'" in err.rule
        return
    rows = len(request["STUDENT"].reshape(-1))
    assert raw.shape == (rows, 3) and raw.dtype == np.float64
    assert np.isfinite(raw).all() and (raw >= 0).all()
    assert set(raw[:, 0]) <= set(STUDENT_VALUES.values())
    for column, name in ((1, "BALANCE"), (2, "INCOME")):
        assert np.array_equal(raw[:, column], request[name].reshape(-1).astype(np.float64))


@FAST
@given(student=texts)
def test_only_the_two_exact_student_categories_are_accepted(student):
    request = {"STUDENT": bytes_array([student]), "BALANCE": np.zeros((1, 1), np.float32), "INCOME": np.zeros((1, 1), np.float32)}
    text = student if isinstance(student, str) else None
    try:
        raw = validate_credit_inputs(request)
    except CreditInputError as err:
        assert err.input_name == "STUDENT" and err.reason in {"not_utf8", "unknown_category"}
        return
    assert raw[0, 0] == STUDENT_VALUES[text if text is not None else student.decode()]


# ----------------------------------------------------------------------------- llm/protocol
@FAST
@given(value=st.integers(-(2**40), 2**40), limit=st.integers(1, 2048))
def test_max_tokens_accepts_exactly_one_to_the_limit(value, limit):
    try:
        accepted = p.check_max_tokens(value, limit)
    except InputError as err:
        assert_names(err, p.MAX_TOKENS)
        assert f"between 1 and {limit}" in err.rule and not 1 <= value <= limit
        return
    assert accepted == value and 1 <= accepted <= limit


@FAST
@given(
    temperature=st.floats(allow_nan=True, allow_infinity=True),
    top_p=st.floats(allow_nan=True, allow_infinity=True),
    top_k=st.integers(-(2**31), 2**31 - 1),
    min_length=st.integers(-(2**31), 2**31 - 1),
    max_tokens=st.integers(1, 512),
)
def test_sampling_settings_accept_only_the_documented_ranges(temperature, top_p, top_k, min_length, max_tokens):
    try:
        p.check_sampling(temperature, top_p, top_k, min_length, max_tokens)
    except InputError as err:
        assert_names(err, p.TEMPERATURE, p.TOP_P, p.TOP_K, p.MIN_LENGTH)
        assert "must be" in err.rule
        return
    assert math.isfinite(temperature) and temperature >= 0
    assert math.isfinite(top_p) and 0 < top_p <= 1
    assert top_k >= 0 and 0 <= min_length <= max_tokens


@FAST
@given(parameters=st.dictionaries(st.text(max_size=16), st.one_of(st.text(max_size=8), st.integers(), st.booleans()), max_size=4))
def test_every_request_parameter_is_refused_by_name(parameters):
    if not parameters:
        p.check_parameters(parameters)
        return
    with pytest.raises(InputError) as raised:
        p.check_parameters(parameters)
    assert raised.value.input_name in parameters and "is not a known parameter" in raised.value.rule
    assert f"input '{raised.value.input_name}'" in str(raised.value)


@FAST
@given(
    array=st.one_of(
        st.none(),
        hnp.arrays(st.sampled_from([np.int32, np.float32, np.uint64, np.bool_]), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),
    ),
    public=st.sampled_from([p.TEMPERATURE, p.TOP_K, p.STREAM]),
)
def test_scalar_takes_exactly_one_value_or_names_the_input(array, public):
    request = {} if array is None else {"X": array}
    try:
        value = p.scalar(request, "X", "default", public)
    except InputError as err:
        assert_names(err, public)
        assert f"got {array.size}" in err.rule
        return
    if array is None:
        assert value == "default"
    else:
        expected = array.reshape(-1)[0].item()
        assert array.size == 1 and (value == expected or (math.isnan(value) and math.isnan(expected)))


# ----------------------------------------------------------------------------- llm_engine's request check
def engine_like(vocab_size=100, max_prompt_tokens=16, max_new_tokens=32):
    return SimpleNamespace(vocab_size=vocab_size, max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens, default_end_id=2, exclude_input_default=True)


@st.composite
def engine_requests(draw):
    ids = draw(hnp.arrays(np.int32, st.sampled_from([(1, 0), (1, 1), (1, 5), (1, 20), (2, 3), (5,)]), elements=st.integers(-5, 120)))
    request = {p.INPUT_IDS: ids, REQUEST_PARAMETERS: draw(st.sampled_from([{}, {}, {"temprature": 1}]))}
    optional = {
        p.INPUT_LENGTHS: st.integers(-3, 25).map(lambda v: np.array([[v]], np.int32)),
        p.ENGINE_OUTPUT_LEN: st.integers(-3, 40).map(lambda v: np.array([[v]], np.int32)),
        p.ENGINE_TEMPERATURE: any_floats.map(lambda v: np.array([[v]], np.float32)),
        p.RUNTIME_TOP_P: any_floats.map(lambda v: np.array([[v]], np.float32)),
        p.RUNTIME_TOP_K: st.integers(-3, 200).map(lambda v: np.array([[v]], np.int32)),
        p.ENGINE_MIN_LENGTH: st.integers(-3, 40).map(lambda v: np.array([[v]], np.int32)),
        p.ENGINE_SEED: st.integers(0, 2**64 - 1).map(lambda v: np.array([[v]], np.uint64)),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            request[name] = draw(strategy)
    return request


@FAST
@given(request=engine_requests())
def test_engine_requests_are_accepted_within_limits_or_refused_by_name(request):
    engine = engine_like()
    try:
        prompt, params, _, _ = LlmEngine.sequence_for(engine, request)
    except InputError as err:
        assert_names(err, p.INPUT_IDS, p.INPUT_LENGTHS, p.ENGINE_OUTPUT_LEN, p.TEMPERATURE, p.TOP_P, p.TOP_K, p.MIN_LENGTH, *request[REQUEST_PARAMETERS])
        return
    assert not request[REQUEST_PARAMETERS]
    assert 1 <= len(prompt) <= engine.max_prompt_tokens
    assert all(0 <= token < engine.vocab_size for token in prompt)
    assert 1 <= params.max_tokens <= engine.max_new_tokens
    assert 0 <= params.min_length <= params.max_tokens and params.top_k >= 0
    assert math.isfinite(params.temperature) and params.temperature >= 0 and 0 < params.top_p <= 1


# ----------------------------------------------------------------------------- llm_bls / llm_cached request handling
@FAST
@given(rows=st.integers(0, 3), stop_words=st.one_of(st.none(), st.lists(texts, max_size=3)))
def test_bls_preprocessing_inputs_take_one_prompt_or_refuse_by_name(rows, stop_words):
    request = {p.TEXT_INPUT: bytes_array([b"hi"] * rows), p.MAX_TOKENS: np.full((rows, 1), 8, np.int32)}
    if stop_words is not None:
        request[p.STOP_WORDS] = bytes_array(stop_words, (1, -1))
    try:
        inputs = preprocessing_inputs(request)
    except InputError as err:
        assert_names(err, p.TEXT_INPUT, p.MAX_TOKENS)
        assert rows != 1 and "one prompt per request" in err.rule
        return
    assert rows == 1
    assert inputs[p.QUERY].shape == (1, 1) and inputs[p.REQUEST_OUTPUT_LEN].shape == (1, 1)


@FAST
@given(
    temperature=st.one_of(st.none(), any_floats),
    top_k=st.one_of(st.none(), st.integers(-2, 5)),
    seed=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    batch=st.integers(1, 2),
)
def test_cache_key_is_none_exactly_for_unseeded_sampling_or_names_the_input(temperature, top_k, seed, batch):
    request = {p.TEXT_INPUT: bytes_array([b"hi"]), p.MAX_TOKENS: np.array([[8]], np.int32)}
    if temperature is not None:
        request[p.TEMPERATURE] = np.full((batch, 1), temperature, np.float32)
    if top_k is not None:
        request[p.TOP_K] = np.array([[top_k]], np.int32)
    if seed is not None:
        request[p.RANDOM_SEED] = np.array([[seed]], np.uint64)
    try:
        key = settings_key(request)
    except InputError as err:
        assert_names(err, p.TEMPERATURE)
        assert batch == 2
        return
    sampled = temperature is not None and float(np.float32(temperature)) > 0 and top_k != 1
    assert (key is None) == (sampled and seed is None)


# ----------------------------------------------------------------------------- batching
@SLOW
@given(
    sizes=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    bad=st.lists(st.booleans(), min_size=6, max_size=6),
    missing=st.booleans(),
)
def test_answer_each_isolates_refused_requests_from_their_neighbours(sizes, bad, missing):
    requests = [{"X": np.arange(n, dtype=np.float32).reshape(-1, 1) + 10 * i} for i, n in enumerate(sizes)]
    if missing:
        del requests[0]["X"]

    def prepare(request):
        x = required(request, "X")
        if x.size and x.reshape(-1)[0] // 10 < len(bad) and bad[int(x.reshape(-1)[0] // 10)]:
            raise InputError("X", "is refused by this test", 0)
        return request

    def compute(prepared):
        joined, counts = concat_requests(prepared, ["X"])
        return split_rows({"Y": joined["X"] * 2}, counts)

    results = answer_each(requests, prepare, compute)
    assert len(results) == len(requests)
    for i, (request, result) in enumerate(zip(requests, results)):
        x = request.get("X")
        if x is None:
            assert isinstance(result, InputError) and result.input_name == "X" and "is required" in str(result)
        elif x.size and bad[i]:
            assert isinstance(result, InputError) and "input 'X'" in str(result)
        else:
            assert np.array_equal(result["Y"], x * 2)


@FAST
@given(names=st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=3, unique=True), present=st.sets(st.sampled_from(["A", "B", "C"])))
def test_required_returns_the_tensor_or_names_the_missing_input(names, present):
    request = {name: np.zeros((1, 1)) for name in present}
    for name in names:
        if name in present:
            assert required(request, name) is request[name]
        else:
            with pytest.raises(InputError, match=f"input '{name}': is required but was not sent"):
                required(request, name)


# ----------------------------------------------------------------------------- chat preprocessing (real SmolLM2 tokenizer)
@pytest.fixture(scope="module")
def chat(llm_tokenizer):
    from modelrepo.python_backends.llm.chat import ChatPreprocessor

    return ChatPreprocessor(llm_tokenizer, max_prompt_tokens=64, max_new_tokens=32, max_text_bytes=200)


@st.composite
def chat_requests(draw):
    rows = draw(st.sampled_from([1, 1, 1, 0, 2]))
    request = {
        p.QUERY: bytes_array(draw(st.lists(st.one_of(texts, st.text(min_size=150, max_size=260)), min_size=rows, max_size=rows))),
        p.REQUEST_OUTPUT_LEN: np.array([[draw(st.integers(-2, 40))]], np.int32),
        REQUEST_PARAMETERS: draw(st.sampled_from([{}, {}, {}, {"max_token": 4}])),
    }
    if draw(st.booleans()):
        request[p.STOP_WORDS_DICT] = bytes_array(draw(st.lists(texts, max_size=3)), (1, -1))
    if draw(st.integers(0, 4)) == 0:
        request[p.PRE_STREAM] = np.array([[True]])
    return request


@SLOW
@given(request=chat_requests())
def test_chat_prepare_accepts_within_limits_or_refuses_by_name(chat, request):
    try:
        out = chat.prepare(request)
    except InputError as err:
        assert_names(err, p.TEXT_INPUT, p.MAX_TOKENS, p.STOP_WORDS, p.STREAM, *request[REQUEST_PARAMETERS])
        return
    ids = out[p.INPUT_ID]
    assert ids.dtype == np.int32 and ids.shape[0] == 1 and 1 <= ids.shape[1] <= chat.max_prompt_tokens
    assert out[p.REQUEST_INPUT_LEN].tolist() == [[ids.shape[1]]]
    assert 1 <= int(out[p.OUT_REQUEST_OUTPUT_LEN][0, 0]) <= chat.max_new_tokens
    text = request[p.QUERY].reshape(-1)[0]
    raw = text.encode() if isinstance(text, str) else text
    assert len(raw) <= chat.max_text_bytes and raw.decode("utf-8").strip()
