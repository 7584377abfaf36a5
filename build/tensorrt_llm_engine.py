"""TensorRT-LLM 0.14 engine build, run on its own in the pinned TensorRT-LLM image.

TensorRT-LLM 0.14 ships for Python 3.10 (NGC `tritonserver:24.10-trtllm-python-py3`) while the rest
of `modelrepo` needs 3.11, so this module imports nothing from modelrepo, only the standard library
plus `tensorrt_llm`, and always runs as a script inside that image (the Dockerfile's llm stage, and
the `docker run` command `modelrepo build llm --target tensorrt-llm` runs or prints):

    python3 tensorrt_llm_engine.py HF_DIR ENGINE_DIR [--expect-version 0.14.0]

The engine's limits come from `engine_limits.json` beside ENGINE_DIR, which the repository render
writes from the served configs, so the engine, the `llm_engine` config and the ensemble agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

LIMITS_FILE = "engine_limits.json"
REPORT_FILE = "engine.json"


@dataclass(frozen=True)
class EngineLimits:
    max_batch_size: int  # = llm_engine's max_batch_size (the ensemble's and the BLS's too)
    max_input_len: int  # = its max_prompt_tokens
    max_output_len: int  # = its max_new_tokens
    kv_cache_free_gpu_mem_fraction: float = 0.5

    @classmethod
    def read(cls, path: Path) -> "EngineLimits":
        data = json.loads(path.read_text())
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown engine limits {sorted(unknown)}")
        return cls(**data)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def build_engine(hf_dir: Path, engine_dir: Path, limits: EngineLimits) -> dict:
    """TensorRT-LLM 0.14 LLM API (its recommended path, replacing convert_checkpoint + trtllm-build):
    HF folder → fp16 engine with paged KV cache for in-flight batching; returns the build report."""
    import tensorrt_llm
    from tensorrt_llm import LLM, BuildConfig

    build_config = BuildConfig(
        max_batch_size=limits.max_batch_size,
        max_input_len=limits.max_input_len,
        max_seq_len=limits.max_input_len + limits.max_output_len,
    )
    llm = LLM(model=str(hf_dir), dtype="float16", build_config=build_config)
    llm.save(str(engine_dir))
    return {"tensorrt_llm": tensorrt_llm.__version__, "dtype": "float16", **asdict(limits)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hf_dir", type=Path, help="SmolLM2 safetensors + tokenizer folder (llm_engine/1/<weights>)")
    parser.add_argument("engine_dir", type=Path, help=f"where the engine goes (llm_engine/1/engine; {LIMITS_FILE} beside it)")
    parser.add_argument("--expect-version", help="refuse any other TensorRT-LLM release (the project's pin)")
    args = parser.parse_args(argv)
    limits_file = args.engine_dir.parent / LIMITS_FILE
    if not limits_file.exists():
        print(f"error: {limits_file} is missing: render the repository first (modelrepo build llm --target "
              "tensorrt-llm --config-only)", file=sys.stderr)
        return 2
    try:
        import tensorrt_llm
    except ImportError:
        print("error: TensorRT-LLM (Python module `tensorrt_llm`) is not installed here", file=sys.stderr)
        return 2
    if args.expect_version and tensorrt_llm.__version__ != args.expect_version:
        print(f"error: TensorRT-LLM {args.expect_version} expected, found {tensorrt_llm.__version__}", file=sys.stderr)
        return 2
    report = build_engine(args.hf_dir, args.engine_dir, EngineLimits.read(limits_file))
    (args.engine_dir.parent / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
