"""An added token classifier's last step: per-token class scores -> one label per token of the text.

Inputs (each request's rows, padded by the steps before it): SCORES [tokens, classes] from the graph,
input_ids and attention_mask [tokens] from the tokenizer step. The graph pads a dynamic batch to its
longest text and the tokenizer to its own batch's longest, so a row's tokens are its first
attention_mask.sum() positions in both; the special tokens the tokenizer adds ([CLS], [SEP]) are dropped.

Outputs per row: TOKENS (the tokenizer's token strings), TOKEN_LABELS and TOKEN_PROBABILITIES (the
top class's probability), all [tokens]; rows of one request are right-padded with "" / 0 to its
longest row. Labels, metrics and drift are the sequence classifier's (ClassifierOutput), per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from modelrepo.python_backends.batching import Tensors, answer_each, required
from modelrepo.python_backends.classifier_output import SCORES, ClassifierOutput
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError

INPUT_IDS, ATTENTION_MASK = "input_ids", "attention_mask"
TOKENS, TOKEN_LABELS, TOKEN_PROBABILITIES = "TOKENS", "TOKEN_LABELS", "TOKEN_PROBABILITIES"
OUTPUTS = (TOKENS, TOKEN_LABELS, TOKEN_PROBABILITIES)
TOKENIZER_FILE = "tokenizer.json"


class TokenLabels:
    def __init__(self, classifier: ClassifierOutput, tokenizer: Tokenizer):
        self.classifier = classifier
        self.tokenizer = tokenizer
        # the tokens the tokenizer adds around a text ([CLS], [SEP], padding); an unknown word's [UNK] is a text token
        unknown = tokenizer.token_to_id(getattr(tokenizer.model, "unk_token", None) or "")
        self.special_ids = {token_id for token_id, token in tokenizer.get_added_tokens_decoder().items()
                            if token.special and token_id != unknown}

    @classmethod
    def from_context(cls, context: ModelContext) -> "TokenLabels":
        return cls(ClassifierOutput.from_context(context), Tokenizer.from_file(str(context.version_dir / TOKENIZER_FILE)))

    @classmethod
    def from_files(cls, model: str, version_dir: Path, labels: Sequence[str], scores: str) -> "TokenLabels":
        return cls(ClassifierOutput(model, labels, scores), Tokenizer.from_file(str(Path(version_dir) / TOKENIZER_FILE)))

    def rows_of(self, request: Tensors) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each row's (token ids, token scores), special tokens and padding dropped; InputError if malformed."""
        scores, ids, mask = (required(request, name) for name in (SCORES, INPUT_IDS, ATTENTION_MASK))
        classes = len(self.classifier.labels)
        if scores.ndim != 3 or scores.shape[2] != classes:
            raise InputError(SCORES, f"each batch item must be [tokens, {classes}] class scores, got {list(scores.shape[1:])}")
        if ids.shape != mask.shape or ids.ndim != 2 or len(ids) != len(scores):
            raise InputError(ATTENTION_MASK, f"must match input_ids and SCORES rows, got {list(mask.shape)}, "
                                             f"{list(ids.shape)} and {list(scores.shape)}")
        if not np.isfinite(scores).all():
            raise InputError(SCORES, "must contain only finite numbers (no NaN or inf)")
        rows = []
        for row_ids, row_mask, row_scores in zip(ids, mask, scores):
            count = int(row_mask.sum())
            if count > row_scores.shape[0]:
                raise InputError(ATTENTION_MASK, f"marks {count} tokens but SCORES has {row_scores.shape[0]}")
            keep = [i for i in range(count) if int(row_ids[i]) not in self.special_ids]
            rows.append((row_ids[keep], row_scores[keep]))
        return rows

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.rows_of, lambda prepared: [self.label(rows) for rows in prepared])

    def label(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> Tensors:
        longest = max((len(ids) for ids, _ in rows), default=0)
        tokens = np.full((len(rows), longest), b"", dtype=object)
        labels = np.full((len(rows), longest), b"", dtype=object)
        probabilities = np.zeros((len(rows), longest), dtype=np.float32)
        for row, (ids, scores) in enumerate(rows):
            if not len(ids):
                continue
            answer = self.classifier.classify(scores)
            tokens[row, : len(ids)] = [self.tokenizer.id_to_token(int(i)).encode("utf-8") for i in ids]
            labels[row, : len(ids)] = answer["LABEL"][:, 0]
            probabilities[row, : len(ids)] = answer["PROBABILITIES"].max(axis=1)
        return {TOKENS: tokens, TOKEN_LABELS: labels, TOKEN_PROBABILITIES: probabilities}
