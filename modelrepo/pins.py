"""Pinned releases (Triton, NGC image, TensorRT), read from pyproject.toml's [tool.modelrepo.pins]."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass

from modelrepo.paths import REPO_ROOT


@dataclass(frozen=True)
class Pins:
    triton_server: str
    ngc_release: str
    ngc_triton_image: str
    ngc_trtllm_image: str
    ngc_tensorrt_image: str
    kubernetes: str
    tensorrt: str
    tensorrt_llm: str
    model_analyzer: str
    genai_perf: str


@functools.cache
def pins() -> Pins:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        table = tomllib.load(f)["tool"]["modelrepo"]["pins"]
    return Pins(**table)
