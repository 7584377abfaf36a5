"""Triton shim for llm_engine; the logic is modelrepo.python_backends.llm.engine.LlmEngine."""

from modelrepo.python_backends.llm.engine import LlmEngine
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(LlmEngine)
