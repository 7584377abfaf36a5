"""Triton shim for credit_router; the logic is modelrepo.python_backends.credit_router.CreditRouter."""

from modelrepo.python_backends.credit_router import CreditRouter
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(CreditRouter)
