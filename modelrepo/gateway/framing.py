"""What every request passes on its way in and out: request id, API key and rate limit, then the
metrics and the access log (no prompt text unless asked) once the response starts.

A plain ASGI middleware, not FastAPI's `@app.middleware("http")`: that one (Starlette's
BaseHTTPMiddleware) runs the route in a task of its own and passes every body chunk through a
memory stream, a hop per server-sent event of a streamed chat."""

from __future__ import annotations

import logging
import re
import time
import uuid

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request

from modelrepo.gateway.errors import OpenAIError
from modelrepo.gateway.metrics import GatewayMetrics
from modelrepo.gateway.ratelimit import RateLimiter
from modelrepo.gateway.settings import GatewaySettings

log = logging.getLogger("modelrepo.gateway.access")
OPEN_PATHS = ("/health", "/metrics")  # probes and Prometheus need no API key
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a caller's X-Request-Id is kept only when log-safe
# ASGI's types (as starlette.types spells them; starlette comes with FastAPI, which re-exports only Request)
Scope = Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Framing:
    def __init__(self, app: ASGIApp, settings: GatewaySettings, limiter: RateLimiter, metrics: GatewayMetrics):
        self.app = app
        self.settings = settings
        self.limiter = limiter
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # its state is scope["state"], which the route's Request shares
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if REQUEST_ID.fullmatch(given) else f"req-{uuid.uuid4().hex}"
        request.state.model = request.state.requested = ""
        started = time.monotonic()
        refusal = None if request.url.path in OPEN_PATHS else self.refusal(_bearer(request))
        done = False

        async def framed(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.start":
                done = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request.state.request_id.encode())]}
                code = refusal.code if refusal is not None else getattr(request.state, "error_code", None)
                self.finish(request, message["status"], started, code)
            await send(message)

        if refusal is not None:
            await refusal.response(_limit_headers(refusal))(scope, receive, framed)
            return
        try:
            await self.app(scope, receive, framed)
        except Exception:
            if not done:  # Starlette's outermost handler answers 500; count and log it here
                self.finish(request, 500, started, "internal_error")
            raise

    def refusal(self, key: str) -> OpenAIError | None:
        if self.settings.api_keys and key not in self.settings.api_keys:
            return OpenAIError(401, "Invalid or missing API key (send 'Authorization: Bearer <key>')",
                               code="invalid_api_key")
        wait = self.limiter.acquire(key or "anonymous")
        if wait > 0:
            error = OpenAIError(429, f"Rate limit of {self.settings.requests_per_minute} requests per minute reached "
                                     f"for this key; retry in {wait:.1f} s", code="rate_limit_exceeded")
            error.retry_after = RateLimiter.retry_after(wait)
            return error
        return None

    def finish(self, request: Request, status: int, started: float, error_code: str | None) -> None:
        route, model = _route_label(request), request.state.model
        elapsed = time.monotonic() - started
        self.metrics.requests.labels(route, model, str(status)).inc()
        self.metrics.latency.labels(route, model).observe(elapsed)
        if status >= 400:
            self.metrics.errors.labels(route, error_code or str(status)).inc()
        extra = f" prompt={getattr(request.state, 'prompt', '')!r}" if self.settings.log_prompts else ""
        log.info("%s %s %s %s model=%s %.3fs%s", request.state.request_id, request.method, route, status,
                 request.state.requested or "-", elapsed, extra)


def _route_label(request: Request) -> str:
    """The route's template (`/v1/models/{name}`), a known path refused before routing, or `other`:
    a label set no client can grow."""
    matched = request.scope.get("route")
    if matched is not None:
        return matched.path
    known = {getattr(route, "path", None) for route in request.app.routes}
    return request.url.path if request.url.path in known else "other"


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _limit_headers(error: OpenAIError) -> dict | None:
    retry = getattr(error, "retry_after", None)
    return {"Retry-After": retry} if retry else None
