"""`python -m modelrepo.gateway`: the OpenAI-compatible gateway (what `modelrepo serve` starts)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from modelrepo.gateway.settings import DEFAULT_PORT, GatewaySettings, KeyFileError, read_api_keys
from modelrepo.triton.admin import admin_key
from modelrepo.triton.flags import LOOPBACK


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m modelrepo.gateway", description=__doc__)
    parse.add_argument("--triton-grpc", required=True, help="Triton's gRPC address, host:port")
    parse.add_argument("--host", default=LOOPBACK)
    parse.add_argument("--port", type=int, default=DEFAULT_PORT)
    parse.add_argument("--api-keys-file", type=Path, help="one key per line (also $MODELREPO_OPENAI_API_KEYS[_FILE])")
    parse.add_argument("--requests-per-minute", type=int, default=0, help="per API key; 0: unlimited")
    parse.add_argument("--tokenizer-dir", type=Path, help="the chat models' tokenizer (usage counts)")
    parse.add_argument("--default-max-tokens", type=int, default=256)
    parse.add_argument("--response-timeout", type=float, default=300.0, metavar="SECONDS",
                       help="the longest wait for Triton's next response (a first token, the next chunk, an "
                            "embedding); then the client gets a 504 and the request is cancelled")
    parse.add_argument("--log-prompts", action="store_true", help="put prompt text in the access log")
    parse.add_argument("--http", choices=("httptools", "h11"), default="httptools",
                       help="uvicorn's HTTP parser: httptools (C) or h11 (pure Python; for comparison)")
    return parse


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from modelrepo.gateway.app import create_app

    args = parser().parse_args(argv)
    try:
        keys = read_api_keys(path=args.api_keys_file)
    except KeyFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.requests_per_minute < 0 or args.default_max_tokens < 1 or args.response_timeout <= 0:
        print("error: --requests-per-minute must be >= 0, --default-max-tokens >= 1 and --response-timeout > 0",
              file=sys.stderr)
        return 2
    settings = GatewaySettings(
        triton_grpc_url=args.triton_grpc, admin_key=admin_key()[0], api_keys=keys,
        requests_per_minute=args.requests_per_minute, tokenizer_dir=args.tokenizer_dir,
        default_max_tokens=args.default_max_tokens, log_prompts=args.log_prompts,
        response_timeout_s=args.response_timeout,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"OpenAI gateway on http://{args.host}:{args.port}/v1 -> triton {args.triton_grpc}; "
          f"{'API keys: ' + str(len(keys)) if keys else 'no API keys (open)'}", flush=True)
    # httptools by default: the C HTTP parser (uvicorn's h11 is pure Python; perf/results/openai_gateway.md)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, http=args.http, log_level="warning",
                access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
