"""Triton shim for minilm_tokenizer; the logic is modelrepo.python_backends.text_tokenizer.TextTokenizer."""

from modelrepo.python_backends.text_tokenizer import TextTokenizer
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(TextTokenizer)
