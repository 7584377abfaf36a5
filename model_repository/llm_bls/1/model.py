"""Triton shim for llm_bls; the logic is modelrepo.python_backends.llm.bls.LlmBls."""

from modelrepo.python_backends.llm.bls import LlmBls
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(LlmBls)
