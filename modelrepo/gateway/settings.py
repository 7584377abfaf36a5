"""The gateway's settings: where Triton is, the API keys, the per-key rate limit, logging."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

API_KEYS_ENV = "MODELREPO_OPENAI_API_KEYS"  # comma-separated keys
API_KEYS_FILE_ENV = "MODELREPO_OPENAI_API_KEYS_FILE"  # one key per line, '#' comments
DEFAULT_PORT = 9000


@dataclass(frozen=True)
class GatewaySettings:
    triton_grpc_url: str
    admin_key: str | None = None  # reads the repository index and model configs (restricted APIs)
    api_keys: frozenset[str] = field(default_factory=frozenset)  # empty: no authentication
    requests_per_minute: int = 0  # per API key; 0: unlimited
    tokenizer_dir: Path | None = None  # the chat models' tokenizer, for usage counts
    default_max_tokens: int = 256  # a chat request without max_tokens / max_completion_tokens
    log_prompts: bool = False  # the access log never carries prompt text unless asked
    catalog_refresh_s: float = 10.0
    response_timeout_s: float = 300.0  # the longest wait for Triton's next response; then 504, cancelled


class KeyFileError(ValueError):
    pass


def read_api_keys(env: dict[str, str] | None = None, path: Path | None = None) -> frozenset[str]:
    """Keys from $MODELREPO_OPENAI_API_KEYS and from a file (the argument or
    $MODELREPO_OPENAI_API_KEYS_FILE): one per line, blank lines and '#' comments skipped."""
    env = os.environ if env is None else env
    keys = {key.strip() for key in env.get(API_KEYS_ENV, "").split(",") if key.strip()}
    path = path or (Path(env[API_KEYS_FILE_ENV]) if env.get(API_KEYS_FILE_ENV) else None)
    if path is not None:
        if not path.is_file():
            raise KeyFileError(f"API key file {path}: not found")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            key = line.split("#", 1)[0].strip()
            if key and any(c.isspace() for c in key):
                raise KeyFileError(f"API key file {path}, line {number}: a key has no spaces")
            if key:
                keys.add(key)
    return frozenset(keys)
