"""Triton shim for credit_preprocess; the logic is modelrepo.python_backends.credit_features.CreditFeatures."""

from modelrepo.python_backends.credit_features import CreditFeatures
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(CreditFeatures)
