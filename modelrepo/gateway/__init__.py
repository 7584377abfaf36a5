"""An OpenAI-compatible HTTP API in front of the Triton server (issue 18).

`GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings` on
FastAPI; Triton is reached over gRPC (tritonclient's asyncio client, streams for generation).
Modules: settings (keys, limits), errors (OpenAI error JSON), protocol (request schemas),
catalog (which served models are chat / embedding models), backend (the Triton calls),
generation (chat/completion responses and SSE), usage (token counts), ratelimit, metrics,
app (routes and middleware), process (the child process `modelrepo serve` starts), __main__ (CLI).
"""
