"""OpenAI's error JSON, and Triton's refusals translated into it with the matching HTTP status."""

from __future__ import annotations

import logging
import re

from fastapi.responses import JSONResponse

log = logging.getLogger("modelrepo.gateway.errors")

# Triton's words when a queue policy refuses (queue full / timed out), and our adapter's prefix.
_OVERLOADED = re.compile(r"Exceeds maximum queue size|Request timeout expired|^overloaded: ")
# How our models name a bad input (python_backends/errors.InputError), maybe behind a BLS/ensemble prefix.
_INPUT_ERROR = re.compile(r"input '([^']+)'")
_NOT_FOUND = re.compile(r"Request for unknown model|is not found|unknown model")
# Triton input → the OpenAI field a client sent it as.
FIELD_OF_INPUT = {
    "text_input": "messages", "QUERY": "messages", "MESSAGES": "messages", "messages": "messages",
    "max_tokens": "max_tokens", "REQUEST_OUTPUT_LEN": "max_tokens", "temperature": "temperature",
    "top_p": "top_p", "random_seed": "seed", "stop_words": "stop", "STOP_WORDS_DICT": "stop", "TEXT": "input",
}
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         429: "rate_limit_error", 503: "overloaded_error"}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    def report(self, request_id: str) -> None:
        """A server-side failure's cause in the log, under the request's id (the access line has
        only the status). Not a client's mistake, nor an overload refusal: those are expected."""
        if self.status >= 500 and self.code != "overloaded":
            log.warning("%s %s %s", request_id, self.status, self.message)


def bad_request(param: str, rule: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: {rule}", param=param, code="invalid_value")


def unknown_model(name: str, kind: str) -> OpenAIError:
    return OpenAIError(404, f"The model '{name}' does not exist or is not a {kind} model (GET /v1/models lists them)",
                       param="model", code="model_not_found")


def from_triton(message: str, prompt_field: str = "messages") -> OpenAIError:
    """A Triton refusal as the client's error: overload → 503, a named bad input → 400 naming the
    field the client sent it as, an unknown model → 404, anything else → 500."""
    if _OVERLOADED.search(message):
        return OpenAIError(503, f"The server is overloaded, retry later ({message})", code="overloaded")
    named = _INPUT_ERROR.search(message)
    if named:
        field = FIELD_OF_INPUT.get(named.group(1), named.group(1))
        field = prompt_field if field == "messages" else field
        return OpenAIError(400, message, param=field, code="invalid_value")
    if _NOT_FOUND.search(message):
        return OpenAIError(404, message, param="model", code="model_not_found")
    return OpenAIError(500, f"The inference server failed: {message}", code="server_error")
