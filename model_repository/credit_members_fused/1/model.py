"""Triton shim for credit_members_fused; the logic is modelrepo.python_backends.onnx_runner.OnnxRunner."""

from modelrepo.python_backends.onnx_runner import OnnxRunner
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(OnnxRunner)
