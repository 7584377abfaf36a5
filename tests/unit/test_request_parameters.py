"""Request parameters a model does not read are refused by name, never silently ignored."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from modelrepo.build.credit import request_arrays
from modelrepo.python_backends.credit_router import CreditRouter
from modelrepo.python_backends.errors import InputError, refuse_unknown_parameters
from modelrepo.python_backends.metrics import InMemoryRegistry
from modelrepo.python_backends.routing import RouterPolicy
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS


def test_known_parameters_pass_and_unknown_ones_are_named_with_what_is_known():
    refuse_unknown_parameters({"user_id": "a"}, ("user_id",), "hint")
    refuse_unknown_parameters({}, (), "hint")
    with pytest.raises(InputError) as raised:
        refuse_unknown_parameters({"useer_id": "a", "zz": 1, "user_id": "b"}, ("user_id",), "send user_id")
    assert raised.value.input_name == "useer_id"
    assert raised.value.rule == ("is not a known parameter of this model (unknown: useer_id, zz; known: user_id); "
                                 "send user_id")
    with pytest.raises(InputError, match="this model reads none"):
        refuse_unknown_parameters({"temprature": 1}, (), "hint")


def test_credit_router_refuses_a_misspelt_user_id_before_calling_anything(tmp_path):
    called = []

    async def infer(*args, **kwargs):
        called.append(args)
        raise AssertionError("no model may be called for a refused request")

    metrics = InMemoryRegistry()
    router = CreditRouter(RouterPolicy.from_parameters(lambda name, default=None: default), infer,
                          tmp_path / "shadow.jsonl", metrics)
    request = {**request_arrays(np.array([[0.0, 1700.0, 30000.0]])), REQUEST_PARAMETERS: {"useer_id": "customer-42"}}
    with pytest.raises(InputError, match=r"input 'useer_id': is not a known parameter .*known: user_id"):
        asyncio.run(router.route(request))
    assert called == []
    assert metrics.value("credit_rejected_inputs_total", field="parameters", reason="unknown_parameter") == 1.0
