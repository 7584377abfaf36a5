"""One way to call a model over either protocol, so each test runs on HTTP and gRPC alike."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from modelrepo.triton.client import infer

PROTOCOLS = ("http", "grpc")


@dataclass
class Caller:
    protocol: str
    client: object

    @property
    def module(self):
        return httpclient if self.protocol == "http" else grpcclient

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str], **options) -> dict[str, np.ndarray]:
        """Send `inputs` as given; options: class_count, datatype overrides, request parameters."""
        return infer(self.module, self.client, model, inputs, outputs, **options)


def input_tensors(module, inputs: dict[str, np.ndarray]) -> list:
    """`module`'s (tritonclient.http or .grpc) InferInputs holding `inputs`; object arrays are BYTES."""
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def texts(*values: str | bytes) -> np.ndarray:
    """A [batch, 1] BYTES tensor, the TEXT input of both pipelines."""
    encoded = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    return np.array(encoded, dtype=object).reshape(-1, 1)


__all__ = ["Caller", "InferenceServerException", "PROTOCOLS", "input_tensors", "texts"]


def scrape_metrics(server) -> dict[str, dict[tuple, float]]:
    """Every sample on the metrics port: name -> {sorted label items: value}."""
    return server.metrics()

def scrape_metrics_until(server, ready, timeout_s: float = 15.0) -> dict[str, dict[tuple, float]]:
    """Scrape until `ready(samples)` holds (the last scrape either way): a model with the config parameter
    metrics_export_interval_s shows a request in its metrics up to that many seconds later."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape_metrics(server)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def settled_counter(server, family: str, key: tuple, export_interval_s: float = 1.0, timeout_s: float = 15.0) -> float:
    """A counter's value once no model holds changes to it: the same in two scrapes more than one export
    interval apart (credit_default_onehop exports credit_aggregate's setting, so its refusals of a test
    just before arrive up to a second late)."""
    deadline = time.monotonic() + timeout_s
    value = scrape_metrics(server).get(family, {}).get(key, 0.0)
    while True:
        time.sleep(1.5 * export_interval_s)
        latest = scrape_metrics(server).get(family, {}).get(key, 0.0)
        if latest == value:
            return value
        assert time.monotonic() < deadline, f"{family}{key} still moving: {value} -> {latest}"
        value = latest
