"""Triton shim for llm_postprocessing; the logic is modelrepo.python_backends.llm.detokenizer.Detokenizer."""

from modelrepo.python_backends.llm.detokenizer import Detokenizer
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(Detokenizer)
