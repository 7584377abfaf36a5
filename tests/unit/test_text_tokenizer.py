from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from modelrepo.build.minilm import max_tokens, minilm_dir
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.text_tokenizer import TextTokenizer, decode_text


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(minilm_dir() / "tokenizer.json", max_tokens=max_tokens(), max_text_bytes=4096)


def request(*values) -> dict:
    encoded = [v.encode() if isinstance(v, str) else v for v in values]
    return {"TEXT": np.array(encoded, dtype=object).reshape(-1, 1)}


def test_ids_equal_the_transformers_tokenizer_with_sentence_transformers_truncation(tokenizer):
    reference = AutoTokenizer.from_pretrained(str(minilm_dir()))
    texts = ["Hello World!", "Café — 日本語 🙂", "word " * 400]
    (out,) = tokenizer.execute_batch([request(*texts)])
    expected = reference(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
    np.testing.assert_array_equal(out["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(out["attention_mask"], expected["attention_mask"])
    assert out["input_ids"].shape == (3, 256) and out["input_ids"].dtype == np.int64


def test_each_request_is_padded_to_its_own_longest(tokenizer):
    short, long = tokenizer.execute_batch([request("hi"), request("hi", "a much longer sentence here")])
    assert short["input_ids"].shape == (1, 3)  # [CLS] hi [SEP]
    assert long["input_ids"].shape[0] == 2 and long["input_ids"].shape[1] > 3
    assert long["attention_mask"][0].sum() == 3


@pytest.mark.parametrize(
    "value, rule",
    [
        (b"", "must not be empty"),
        (b" \t\n", "must not be empty"),
        (b"\xff\xfe", "must be valid UTF-8"),
        (b"x" * 1001, "1001 bytes; at most 1000 bytes"),
    ],
)
def test_decode_rules_name_the_input_item_and_rule(value, rule):
    with pytest.raises(InputError) as raised:
        decode_text(value, item=3, max_bytes=1000)
    assert str(raised.value).startswith("input 'TEXT' (batch item 3): ")
    assert rule in str(raised.value)


def test_a_bad_request_does_not_fail_its_neighbours(tokenizer):
    good, bad, also_good = tokenizer.execute_batch([request("ok"), request("fine", b"\xc3\x28"), request("yes")])
    assert isinstance(bad, InputError) and bad.item == 1 and bad.input_name == "TEXT"
    assert good["input_ids"].shape == (1, 3) and also_good["input_ids"].shape == (1, 3)


def test_missing_input_is_named(tokenizer):
    (result,) = tokenizer.execute_batch([{"TEXT": None}])
    assert isinstance(result, InputError) and "'TEXT'" in str(result) and "required" in str(result)
