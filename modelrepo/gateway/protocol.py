"""The request bodies the gateway accepts: OpenAI's fields we serve; an unknown field is refused
by name (a setting silently ignored would be a wrong answer)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelrepo.gateway.errors import bad_request


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    # "developer" is OpenAI's newer name for system instructions.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)

    def turn(self) -> dict[str, str]:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class StreamOptions(Strict):
    include_usage: bool = False


class Sampling(Strict):
    """The knobs chat and completions share."""

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**64)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Accepted at OpenAI's defaults only: the engine has no penalties.
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    @field_validator("n")
    @classmethod
    def one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is served (one choice per request)")
        return value

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def no_penalty(cls, value: float | None) -> float | None:
        if value not in (None, 0):
            raise ValueError("must be 0 or absent: the engine has no penalties")
        return value

    @field_validator("stop")
    @classmethod
    def stop_words(cls, value):
        words = [value] if isinstance(value, str) else value
        if words is not None and (len(words) > 4 or not all(words)):
            raise ValueError("at most 4 non-empty stop sequences")
        return value

    def stop_list(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def check_stream_options(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options", "is only allowed when stream is true")


class ChatCompletionRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def turns(self) -> list[dict[str, str]]:
        return [message.turn() for message in self.messages]

    def token_budget(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class CompletionRequest(Sampling):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)  # OpenAI's default for completions
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def one_prompt(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) != 1 or not prompts[0]:
            raise ValueError("one non-empty prompt per request (n=1, no prompt batches)")
        return value

    @field_validator("echo")
    @classmethod
    def no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not served")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(Strict):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    dimensions: int | None = None

    @field_validator("input")
    @classmethod
    def texts_present(cls, value):
        texts = [value] if isinstance(value, str) else value
        if not texts or not all(texts):
            raise ValueError("one or more non-empty strings (token arrays are not served)")
        return value

    @field_validator("dimensions")
    @classmethod
    def native_dimensions(cls, value):
        if value is not None:
            raise ValueError("is not served: models answer in their own dimension")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
