"""Client-side helpers shared by the tests and the benchmarks (tritonclient, either protocol)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from tritonclient.utils import np_to_triton_dtype


def infer(
    module,
    client,
    model: str,
    inputs: dict[str, np.ndarray],
    outputs: Sequence[str],
    class_count: int = 0,
    datatype: dict[str, str] | None = None,
    parameters: dict | None = None,
) -> dict[str, np.ndarray]:
    """One request through `module` (tritonclient.http or .grpc). `datatype` overrides the dtype
    derived from an array (to send a wrong type on purpose); `parameters` are request parameters."""
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), (datatype or {}).get(name) or np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    requested = [module.InferRequestedOutput(name, class_count=class_count) for name in outputs]
    result = client.infer(model, tensors, outputs=requested, parameters=parameters)
    return {name: result.as_numpy(name) for name in outputs}


def reload_with_parameters(grpc_client, model: str, headers: dict[str, str], **parameters) -> dict:
    """Reload `model` with its current config and these `parameters` changed (explicit model control)."""
    config = grpc_client.get_model_config(model, as_json=True, headers=headers)["config"]
    for key, value in parameters.items():
        config["parameters"][key] = {"string_value": str(value)}
    grpc_client.load_model(model, config=json.dumps(config), headers=headers)
    return config
