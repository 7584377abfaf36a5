"""TensorRT-LLM 0.14 engine build, runnable on its own in the TensorRT-LLM image.

TensorRT-LLM 0.14 ships for Python 3.10 (NGC `tritonserver:24.10-trtllm-python-py3`) while the rest
of `modelrepo` needs 3.11, so this module imports nothing from modelrepo and only the standard
library plus `tensorrt_llm`. The Dockerfile's LLM stage runs it as a script:

    python3 tensorrt_llm_engine.py HF_DIR ENGINE_DIR [--expect-version 0.14.0]

and `modelrepo build llm --target tensorrt-llm` calls `build_engine` in-process on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineLimits:
    max_batch_size: int = 8
    max_input_len: int = 1024  # = llm_preprocessing's max_prompt_tokens
    max_output_len: int = 512  # = its max_new_tokens
    kv_cache_free_gpu_mem_fraction: float = 0.5


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
    parser.add_argument("engine_dir", type=Path, help="where the engine goes (llm_engine/1/engine)")
    parser.add_argument("--expect-version", help="refuse any other TensorRT-LLM release (the project's pin)")
    args = parser.parse_args(argv)
    try:
        import tensorrt_llm
    except ImportError:
        print("error: TensorRT-LLM (Python module `tensorrt_llm`) is not installed here", file=sys.stderr)
        return 2
    if args.expect_version and tensorrt_llm.__version__ != args.expect_version:
        print(f"error: TensorRT-LLM {args.expect_version} expected, found {tensorrt_llm.__version__}", file=sys.stderr)
        return 2
    report = build_engine(args.hf_dir, args.engine_dir, EngineLimits())
    (args.engine_dir.parent / "engine.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
