"""Triton shim for llm_preprocessing; the logic is modelrepo.python_backends.llm.chat.ChatPreprocessor."""

from modelrepo.python_backends.llm.chat import ChatPreprocessor
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(ChatPreprocessor)
