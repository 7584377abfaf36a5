"""The one bridge between Triton's Python backend and the plain handlers in this package.

A handler is any class with `from_context(ModelContext)` and
`execute_batch(list[dict[str, ndarray]]) -> list[dict[str, ndarray] | Exception]`, one entry per
request. An `InputError` (or any exception) for one request becomes that request's error response;
its neighbours in the same dynamic batch are answered normally.
"""

from __future__ import annotations

import traceback
from typing import Any

import numpy as np

from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.metrics import TritonRegistry


def triton_model(handler_class: Any) -> type:
    """Build the `TritonPythonModel` class for a model.py shim around `handler_class`."""

    class TritonPythonModel:
        def initialize(self, args: dict[str, str]) -> None:
            import triton_python_backend_utils as pb_utils  # exists only inside the stub

            self.pb_utils = pb_utils
            # The registry owns the MetricFamily objects, which must outlive their Metrics: keep it here.
            self.metrics = TritonRegistry(pb_utils)
            context = ModelContext.from_triton_args(args, metrics=self.metrics)
            self.input_names = [spec["name"] for spec in context.config.get("input", [])]
            self.output_dtypes = {
                spec["name"]: pb_utils.triton_string_to_numpy(spec["data_type"])
                for spec in context.config.get("output", [])
            }
            self.handler = handler_class.from_context(context)

        def execute(self, requests: list) -> list:
            pb_utils = self.pb_utils
            batch = []
            for request in requests:
                tensors = {}
                for name in self.input_names:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    tensors[name] = None if tensor is None else tensor.as_numpy()
                batch.append(tensors)
            try:
                results = self.handler.execute_batch(batch)
            except Exception as err:  # a bug must not take the model down: fail this batch only
                pb_utils.Logger.log_error(traceback.format_exc())
                results = [err] * len(requests)
            return [self._response(result) for result in results]

        def _response(self, result: Any) -> Any:
            pb_utils = self.pb_utils
            if isinstance(result, Exception):
                code = (
                    pb_utils.TritonError.INVALID_ARG
                    if isinstance(result, InputError)
                    else pb_utils.TritonError.INTERNAL
                )
                message = str(result) if isinstance(result, InputError) else f"internal error: {result}"
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(array, dtype=self.output_dtypes[name]))
                for name, array in result.items()
                if name in self.output_dtypes
            ]
            return pb_utils.InferenceResponse(output_tensors=tensors)

        def finalize(self) -> None:
            close = getattr(self.handler, "close", None)
            if close:
                close()
            del self.handler  # its Metric objects go before the registry's MetricFamily objects
            del self.metrics

    TritonPythonModel.__name__ = f"TritonPythonModel[{handler_class.__name__}]"
    return TritonPythonModel
