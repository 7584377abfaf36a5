"""Request texts the benchmarks share: real test reviews (long), short queries cut from them and chat prompts."""

from __future__ import annotations

import json
from pathlib import Path

# Chat prompts sent in rotation by the LLM benchmarks (streaming, the OpenAI gateway).
PROMPTS = [
    "Write a short poem about the sea.", "Explain how a rainbow forms.", "Give three tips for learning to cook.",
    "Describe a busy train station.", "What is photosynthesis?", "Tell me about the history of tea.",
    "Why do cats purr?", "Summarise the plot of a detective story.",
]
SHORT_WORDS = range(2, 11)  # words per short text: 3 to 15 tokens with [CLS] and [SEP] for these reviews


def reviews(count: int = 64) -> list[str]:
    """The first `count` reviews of the held-out test split (long texts: tens to hundreds of tokens)."""
    from modelrepo.build.review_data import reviews as review_frame

    return review_frame("testing_data").review.tolist()[:count]


def short_texts(count: int = 64) -> list[str]:
    """Queries / titles: the first 2 to 10 plain words (letters only) of each review, cycling through
    those lengths."""
    lengths = list(SHORT_WORDS)
    words = [[word for word in review.split() if word.isalpha()] for review in reviews(count)]
    return [" ".join(plain[: lengths[i % len(lengths)]]) for i, plain in enumerate(words)]


def text_input_data(texts: list[str], path: Path) -> Path:
    """perf_analyzer's --input-data file: one single-text request per text, sent in turn."""
    path.write_text(json.dumps({"data": [{"TEXT": {"content": [text], "shape": [1]}} for text in texts]}))
    return path
