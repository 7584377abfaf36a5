"""Triton shim for credit_aggregate; the logic is modelrepo.python_backends.ensemble_stats.EnsembleAggregate."""

from modelrepo.python_backends.ensemble_stats import EnsembleAggregate
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(EnsembleAggregate)
