"""Chat preprocessing and incremental detokenisation with SmolLM2's real tokenizer (no server)."""

import numpy as np
import pytest

from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.llm.chat import ChatPreprocessor
from modelrepo.python_backends.llm.detokenizer import REPLACEMENT, Detokenizer, incremental_delta
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS


def request(text, max_tokens=16, **extra):
    tensors = {p.QUERY: np.array([[text.encode() if isinstance(text, str) else text]], dtype=object),
               p.REQUEST_OUTPUT_LEN: np.array([[max_tokens]], dtype=np.int32), REQUEST_PARAMETERS: {}}
    tensors.update(extra)
    return tensors


def test_the_chat_template_wraps_the_prompt_and_asks_for_the_assistant(llm_tokenizer):
    chat = ChatPreprocessor(llm_tokenizer)
    out = chat.prepare(request("What is the capital of France?"))
    ids = out[p.INPUT_ID][0].tolist()
    text = llm_tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert out[p.REQUEST_INPUT_LEN].tolist() == [[len(ids)]]
    assert out[p.OUT_END_ID].tolist() == [[llm_tokenizer.token_id("<|im_end|>")]]


def test_stop_words_become_word_lists_with_and_without_a_leading_space(llm_tokenizer):
    chat = ChatPreprocessor(llm_tokenizer)
    out = chat.prepare(request("hi", **{p.STOP_WORDS_DICT: np.array([[b"Paris"]], dtype=object)}))
    words = p.unpack_word_lists(out[p.STOP_WORDS_IDS][0])
    decoded = sorted(llm_tokenizer.decode(list(word)) for word in words)
    assert decoded == [" Paris", "Paris"]


@pytest.mark.parametrize(
    "text, max_tokens, extra, input_name, rule",
    [
        ("   ", 8, {}, "text_input", "empty"),
        (b"\xff\xfe bad", 8, {}, "text_input", "UTF-8"),
        ("word " * 1100, 8, {}, "text_input", "at most 1024"),
        ("hi", 0, {}, "max_tokens", "between 1 and 512"),
        ("hi", 100_000, {}, "max_tokens", "between 1 and 512"),
        ("hi", 8, {p.PRE_STREAM: np.array([[True]])}, "stream", "llm_bls"),
        ("hi", 8, {REQUEST_PARAMETERS: {"temprature": 1}}, "temprature", "not a known parameter"),
    ],
)
def test_bad_requests_are_refused_with_the_input_and_the_rule(llm_tokenizer, text, max_tokens, extra, input_name, rule):
    chat = ChatPreprocessor(llm_tokenizer)
    with pytest.raises(InputError, match=rule) as err:
        chat.prepare(request(text, max_tokens, **extra))
    assert err.value.input_name == input_name


def test_a_bad_request_does_not_disturb_its_batch_neighbours(llm_tokenizer):
    chat = ChatPreprocessor(llm_tokenizer)
    good, bad = chat.execute_batch([request("Hello"), request("")])
    assert isinstance(bad, InputError) and p.INPUT_ID in good


TEXTS = [
    "Plain ASCII answer, with punctuation!",
    "Café, naïve, jalapeño — déjà vu.",
    "日本語のテキストと中文字符。",
    "Emoji: 🚀🔥👍🏽 and flags 🇫🇷.",
]
SPLITS_CHARACTERS = TEXTS[2:]  # byte-level BPE cuts some of these characters across tokens


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_chunks_join_to_the_whole_text_and_never_split_a_character(llm_tokenizer, text):
    detokenizer = Detokenizer(llm_tokenizer)
    ids = llm_tokenizer.encode(text, add_special_tokens=False)
    chunks, prefix, read = [], 0, 0
    for end in range(1, len(ids) + 1):  # one token at a time, as the engine streams them
        delta = incremental_delta(detokenizer.decode, ids[:end], prefix, read)
        prefix, read = delta.prefix_offset, delta.read_offset
        chunks.append(delta.text)
    chunks.append(incremental_delta(detokenizer.decode, ids, prefix, read, flush=True).text)
    assert "".join(chunks) == detokenizer.decode(ids) == text
    assert not any(REPLACEMENT in chunk for chunk in chunks)
    if text in SPLITS_CHARACTERS:  # the case the hold-back exists for did occur
        assert any(detokenizer.decode(ids[:end]).endswith(REPLACEMENT) for end in range(1, len(ids)))


def test_postprocessing_model_decodes_whole_sequences_and_increments(llm_tokenizer):
    detokenizer = Detokenizer(llm_tokenizer)
    ids = llm_tokenizer.encode("Hello there", add_special_tokens=False)
    whole = detokenizer.one({p.TOKENS_BATCH: np.array([[ids]], dtype=np.int32), p.POST_SEQUENCE_LENGTH: np.array([[len(ids)]])})
    assert whole[p.OUTPUT].reshape(-1)[0] == "Hello there"
    step = detokenizer.one({
        p.TOKENS_BATCH: np.array([[ids]], dtype=np.int32), p.POST_SEQUENCE_LENGTH: np.array([[len(ids)]]),
        p.PREFIX_OFFSET: np.array([[0]]), p.READ_OFFSET: np.array([[1]]),
    })
    assert step[p.OUTPUT].reshape(-1)[0] == llm_tokenizer.decode(ids[1:]) and step[p.OUT_READ_OFFSET].item() == len(ids)


def messages_request(messages, **extra):
    import json

    text = messages if isinstance(messages, str) else json.dumps(messages)
    return request("last turn", **{p.PRE_MESSAGES: np.array([[text.encode()]], dtype=object)}, **extra)


def test_a_conversation_keeps_every_turn_in_order_and_asks_for_the_assistant(llm_tokenizer):
    chat = ChatPreprocessor(llm_tokenizer)
    turns = [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Hello"},
             {"role": "assistant", "content": "Bonjour"}, {"role": "user", "content": "Capital of Italy?"}]
    text = llm_tokenizer.decode(chat.prepare(messages_request(turns))[p.INPUT_ID][0].tolist())
    expected = ["<|im_start|>system\nYou answer in French.<|im_end|>", "<|im_start|>user\nHello<|im_end|>",
                "<|im_start|>assistant\nBonjour<|im_end|>", "<|im_start|>user\nCapital of Italy?<|im_end|>"]
    positions = [text.index(part) for part in expected]
    assert positions == sorted(positions) and text.endswith("<|im_start|>assistant\n")
    assert "last turn" not in text  # MESSAGES replaces QUERY


def test_one_user_message_templates_like_the_single_turn_prompt(llm_tokenizer):
    chat = ChatPreprocessor(llm_tokenizer)
    single = chat.prepare(request("What is 2+2?"))[p.INPUT_ID].tolist()
    assert chat.prepare(messages_request([{"role": "user", "content": "What is 2+2?"}]))[p.INPUT_ID].tolist() == single


@pytest.mark.parametrize("messages, rule", [
    ("not json", "must be a JSON array"),
    ([], "non-empty JSON array"),
    ([{"role": "user"}], "exactly the keys role and content"),
    ([{"role": "tool", "content": "x"}], "role must be one of system, user, assistant"),
    ([{"role": "user", "content": ""}], "content must be a non-empty string"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "last message must be a user turn"),
])
def test_a_bad_conversation_is_refused_naming_messages_and_the_rule(llm_tokenizer, messages, rule):
    with pytest.raises(InputError, match=rule) as caught:
        ChatPreprocessor(llm_tokenizer).prepare(messages_request(messages))
    assert caught.value.input_name == p.MESSAGES
