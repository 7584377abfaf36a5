"""Triton shim for llm_cached; the logic is modelrepo.python_backends.llm.semantic_cache.SemanticCache."""

from modelrepo.python_backends.llm.semantic_cache import SemanticCache
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(SemanticCache)
