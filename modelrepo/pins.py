"""Pinned releases (Triton, NGC image, TensorRT), read from pyproject.toml's [tool.modelrepo.pins];
`pyproject()` is the one reader of that file (tools, serving requirements and the audit allow-list use it)."""

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
def pyproject() -> dict:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def project_settings() -> dict:
    """pyproject.toml's [tool.modelrepo] table."""
    return pyproject()["tool"]["modelrepo"]


@functools.cache
def pins() -> Pins:
    return Pins(**project_settings()["pins"])
