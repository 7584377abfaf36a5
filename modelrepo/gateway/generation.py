"""Chat and text completions: one request → a Triton generation → OpenAI's response or SSE stream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cached_property

from fastapi.responses import JSONResponse, StreamingResponse

from modelrepo.gateway.backend import Generation, TritonBackend
from modelrepo.gateway.catalog import ServedModel
from modelrepo.gateway.errors import OpenAIError, bad_request
from modelrepo.gateway.metrics import GatewayMetrics
from modelrepo.gateway.protocol import ChatCompletionRequest, CompletionRequest, Sampling
from modelrepo.gateway.usage import TokenCounter
from modelrepo.python_backends.llm import protocol as p

DONE = "data: [DONE]\n\n"


def generation_for_chat(request: ChatCompletionRequest, model: ServedModel, default_max_tokens: int) -> Generation:
    turns = request.turns()
    if turns[-1]["role"] != "user":
        raise bad_request("messages", "the last message must be a user turn")
    last_user = turns[-1]["content"]
    single_turn = len(turns) == 1
    if not single_turn and not model.accepts(p.MESSAGES):
        raise bad_request("messages", f"model '{model.name}' takes one user turn (it has no `messages` input); "
                                      "use llm_bls for conversations")
    return Generation(last_user, request.token_budget(default_max_tokens), None if single_turn else turns,
                      **sampling(request))


def generation_for_completion(request: CompletionRequest) -> Generation:
    return Generation(request.text(), request.max_tokens, **sampling(request))


def sampling(request: Sampling) -> dict:
    return {"temperature": request.temperature, "top_p": request.top_p, "seed": request.seed, "stop": request.stop_list()}


@dataclass
class Job:
    """One generation in flight, with what its responses need."""

    kind: str  # "chat" or "completion"
    request_id: str
    model: ServedModel
    generation: Generation
    count_prompt_tokens: Callable[[], int]  # called once the answer is done: tokenising is off the TTFT path
    include_usage: bool
    created: int = 0

    def __post_init__(self):
        self.created = self.created or int(time.time())
        self.object = "chat.completion" if self.kind == "chat" else "text_completion"

    @cached_property
    def prompt_tokens(self) -> int:
        return self.count_prompt_tokens()

    @property
    def prompt_field(self) -> str:
        return "messages" if self.kind == "chat" else "prompt"

    def usage(self, completion_tokens: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}

    def finish_reason(self, completion_tokens: int) -> str:
        return "length" if completion_tokens >= self.generation.max_tokens else "stop"

    def choice(self, text: str | None, finish_reason: str | None, chunk: bool, role: bool = False) -> dict:
        if self.kind == "chat":
            if chunk:
                delta = {} if text is None else {"content": text}
                if role:
                    delta["role"] = "assistant"
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish_reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def body(self, choices: list[dict], chunk: bool, usage: dict | None = None) -> dict:
        kind = f"{self.object}.chunk" if chunk and self.kind == "chat" else self.object
        body = {"id": self.request_id, "object": kind, "created": self.created, "model": self.model.name,
                "system_fingerprint": None, "choices": choices}
        if usage is not None or not chunk:
            body["usage"] = usage
        return body


class Generator:
    def __init__(self, backend: TritonBackend, counter: TokenCounter, metrics: GatewayMetrics):
        self.backend = backend
        self.counter = counter
        self.metrics = metrics

    async def respond(self, job: Job, stream: bool):
        chunks = self.backend.generate(job.model, job.generation, job.request_id, stream, job.prompt_field)
        if not stream:
            text = "".join([chunk async for chunk in chunks])
            completion = self.counter.text_tokens(text)
            self.metrics.count_tokens(job.model.name, job.prompt_tokens, completion)
            choice = job.choice(text, job.finish_reason(completion), chunk=False)
            return JSONResponse(job.body([choice], chunk=False, usage=job.usage(completion)))
        started = time.monotonic()
        try:  # the first chunk before answering: a refusal still gets its own status code
            first = await anext(chunks)
        except StopAsyncIteration:
            first = ""
        self.metrics.first_token.labels(job.model.name).observe(time.monotonic() - started)
        return StreamingResponse(self._events(job, first, chunks), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Request-Id": job.request_id})

    async def _events(self, job: Job, first: str, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
        parts = [first]
        finished = False
        try:
            if job.kind == "chat":
                yield _event(job.body([job.choice("", None, chunk=True, role=True)], chunk=True))
            if first:
                yield _event(job.body([job.choice(first, None, chunk=True)], chunk=True))
            try:
                async for text in chunks:
                    parts.append(text)
                    yield _event(job.body([job.choice(text, None, chunk=True)], chunk=True))
            except OpenAIError as err:  # the status line has left: the error travels as an event
                err.report(job.request_id)
                yield _event(err.body())
                finished = True
                yield DONE
                return
            completion = self.counter.text_tokens("".join(parts))
            self.metrics.count_tokens(job.model.name, job.prompt_tokens, completion)
            yield _event(job.body([job.choice(None, job.finish_reason(completion), chunk=True)], chunk=True))
            if job.include_usage:
                yield _event(job.body([], chunk=True, usage=job.usage(completion)))
            finished = True
            yield DONE
        finally:
            if not finished:  # our client went away: cancel the generation upstream
                self.metrics.cancelled.labels(job.model.name).inc()
            await chunks.aclose()


def _event(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
