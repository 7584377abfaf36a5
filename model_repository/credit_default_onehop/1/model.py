"""Triton shim for credit_default_onehop; the logic is modelrepo.python_backends.credit_onehop.CreditOneHop."""

from modelrepo.python_backends.credit_onehop import CreditOneHop
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(CreditOneHop)
