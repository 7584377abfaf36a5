"""Triton shim for sentiment_head; the logic is modelrepo.python_backends.linear_head.LinearClassifierHead."""

from modelrepo.python_backends.linear_head import LinearClassifierHead
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(LinearClassifierHead)
