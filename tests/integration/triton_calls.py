"""One way to call a model over either protocol, so each test runs on HTTP and gRPC alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

PROTOCOLS = ("http", "grpc")


@dataclass
class Caller:
    protocol: str
    client: object

    @property
    def module(self):
        return httpclient if self.protocol == "http" else grpcclient

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str],
        class_count: int = 0,
        datatype: dict[str, str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Send `inputs` as given (datatype overrides let a test send a wrong type on purpose)."""
        tensors = []
        for name, array in inputs.items():
            dtype = (datatype or {}).get(name) or np_to_triton_dtype(array.dtype)
            tensor = self.module.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        requested = [self.module.InferRequestedOutput(name, class_count=class_count) for name in outputs]
        result = self.client.infer(model, tensors, outputs=requested)
        return {name: result.as_numpy(name) for name in outputs}


def texts(*values: str | bytes) -> np.ndarray:
    """A [batch, 1] BYTES tensor, the TEXT input of both pipelines."""
    encoded = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    return np.array(encoded, dtype=object).reshape(-1, 1)


__all__ = ["Caller", "InferenceServerException", "PROTOCOLS", "texts"]
