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
SHORT_PER_LONG = 4  # the mixed workload: four short requests to one long review (80 % / 20 %)


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


def mixed_texts(count: int = 80) -> list[str]:
    """The mixed workload in sending order: `SHORT_PER_LONG` short texts, then one long review, repeated."""
    longs = count // (SHORT_PER_LONG + 1)
    shorts = short_texts(count - longs)
    texts = []
    for turn, review in enumerate(reviews(longs)):
        texts += [*shorts[turn * SHORT_PER_LONG:(turn + 1) * SHORT_PER_LONG], review]
    return texts + shorts[longs * SHORT_PER_LONG:]


TEXT_WORKLOADS = {"reviews": reviews, "short": short_texts, "mixed": mixed_texts}  # name -> texts(count)


def text_input_data(texts: list[str], path: Path) -> Path:
    """perf_analyzer's --input-data file: one single-text request per text, sent in turn."""
    path.write_text(json.dumps({"data": [{"TEXT": {"content": [text], "shape": [1]}} for text in texts]}))
    return path
