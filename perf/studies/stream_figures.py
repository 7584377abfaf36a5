"""Streaming figures from perf_analyzer's profile export, with output tokens counted from the answers.

perf_analyzer (`--profile-export-file`) records, per request, its send time, every response's time
and every response's outputs. A decoupled stream ends with an empty final response (no token): it
is not a token's arrival. Output tokens are counted by tokenising each request's answer text (the
concatenated `text_output` chunks) with the model's tokenizer, as genai-perf does, never assumed
from `max_tokens`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OUTPUT = "text_output"


@dataclass(frozen=True)
class StreamedRequest:
    sent_ns: int
    token_times_ns: list[int]  # arrivals of the responses that carried text
    text: str  # the answer: every chunk, in order


def output_text(outputs: dict) -> str:
    """One response's text chunk as perf_analyzer exports it (a string, or {"b64": ...} for raw bytes)."""
    value = outputs.get(OUTPUT, "")
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"]).decode("utf-8", errors="replace")
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return str(value)


def streamed_requests(export: dict) -> list[StreamedRequest]:
    requests = []
    for experiment in export["experiments"]:
        for request in experiment["requests"]:
            stamps = request["response_timestamps"]
            outputs = request.get("response_outputs")
            if outputs is None:
                raise ValueError("the profile export has no response_outputs: output tokens cannot be counted")
            carried = [(stamp, output_text(out)) for stamp, out in zip(stamps, outputs) if output_text(out)]
            requests.append(StreamedRequest(request["timestamp"], [s for s, _ in carried], "".join(t for _, t in carried)))
    return requests


def read_export(path: Path) -> list[StreamedRequest]:
    return streamed_requests(json.loads(Path(path).read_text()))


def streaming_figures(requests: list[StreamedRequest], count_tokens: Callable[[str], int]) -> dict:
    """TTFT (first text response), TPOT (mean gap between a request's later responses), output tokens
    (counted) and output tokens/s over the span from the first send to the last token."""
    answered = [r for r in requests if r.token_times_ns]
    if not answered:
        raise ValueError("no request received a token")
    ttft = [(r.token_times_ns[0] - r.sent_ns) / 1e9 for r in answered]
    tpot = [(r.token_times_ns[-1] - r.token_times_ns[0]) / 1e9 / (len(r.token_times_ns) - 1)
            for r in answered if len(r.token_times_ns) > 1]
    tokens = [count_tokens(r.text) for r in answered]
    span = (max(r.token_times_ns[-1] for r in answered) - min(r.sent_ns for r in answered)) / 1e9
    return {
        "requests": len(requests),
        "answered": len(answered),
        "ttft_p50_s": float(np.percentile(ttft, 50)),
        "ttft_p99_s": float(np.percentile(ttft, 99)),
        "tpot_mean_s": float(np.mean(tpot)) if tpot else float("nan"),
        "tpot_p99_s": float(np.percentile(tpot, 99)) if tpot else float("nan"),
        "output_tokens": int(sum(tokens)),
        "output_tokens_per_request": float(np.mean(tokens)),
        "output_tokens_per_s": sum(tokens) / span,
        "span_s": span,
    }


def token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens in an answer text, without special tokens (a Hugging Face tokenizer's `encode`)."""
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
