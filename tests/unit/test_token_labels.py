"""The token classifier's labels step without a server: padding and special tokens dropped, rows of one
request padded to its longest, labels and probabilities from the classifier's softmax, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from tokenizers import Tokenizer

from modelrepo.build.minilm import minilm_dir
from modelrepo.python_backends.classifier_output import SCORES, ClassifierOutput
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.text_tokenizer import TextTokenizer
from modelrepo.python_backends.token_labels import TOKEN_LABELS, TOKEN_PROBABILITIES, TOKENS, TokenLabels

LABELS = ("O", "B-PLACE", "I-PLACE")


@pytest.fixture(scope="module")
def labeller():
    return TokenLabels(ClassifierOutput("entities", LABELS, "logits"), Tokenizer.from_file(str(minilm_dir() / "tokenizer.json")))


def tokenized(*texts: str) -> dict[str, np.ndarray]:
    tokenizer = TextTokenizer(minilm_dir() / "tokenizer.json")
    (request,) = tokenizer.execute_batch([{"TEXT": np.array([[t.encode()] for t in texts], dtype=object)}])
    return request


def test_text_tokens_only_rows_padded_and_labels_from_the_softmax(labeller):
    request = tokenized("Paris is nice", "ok 🙂")
    rows, longest = request["input_ids"].shape
    padded = longest + 3  # the graph's batch was padded to a longer neighbour
    scores = np.random.default_rng(0).normal(size=(rows, padded, len(LABELS))).astype(np.float32)
    (answer,) = labeller.execute_batch([{SCORES: scores, **request}])
    assert answer[TOKENS].tolist() == [[b"paris", b"is", b"nice"], [b"ok", b"[UNK]", b""]]  # an unknown word is a text token
    probabilities = softmax(scores.astype(np.float64), axis=2)
    expected_first = probabilities[0, 1:4]  # [CLS] paris is nice [SEP]
    assert answer[TOKEN_LABELS][0].tolist() == [LABELS[i].encode() for i in expected_first.argmax(axis=1)]
    np.testing.assert_allclose(answer[TOKEN_PROBABILITIES][0], expected_first.max(axis=1), atol=1e-6)
    assert answer[TOKEN_LABELS][1, 2] == b"" and answer[TOKEN_PROBABILITIES][1, 2] == 0.0


def test_a_bad_request_is_refused_alone(labeller):
    good = tokenized("Rome")
    scores = np.zeros((1, good["input_ids"].shape[1], len(LABELS)), dtype=np.float32)
    wrong_classes = {SCORES: np.zeros((1, scores.shape[1], 2), dtype=np.float32), **good}
    not_finite = {SCORES: np.full_like(scores, np.nan), **good}
    answers = labeller.execute_batch([wrong_classes, {SCORES: scores, **good}, not_finite])
    assert isinstance(answers[0], InputError) and "[tokens, 3] class scores" in str(answers[0])
    assert answers[1][TOKENS].tolist() == [[b"rome"]]
    assert isinstance(answers[2], InputError) and "finite" in str(answers[2])
