"""What a handler learns about its model when Triton loads it (server-free, so tests can build one)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelrepo.python_backends.metrics import InMemoryRegistry


@dataclass(frozen=True)
class ModelContext:
    name: str
    version_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: Any = field(default_factory=InMemoryRegistry)  # TritonRegistry inside the stub
    infer: Any = None  # async BLS call inside the stub: infer(model, inputs, outputs, version=-1)
    infer_stream: Any = None  # async iterator over a decoupled model's responses, same arguments

    @classmethod
    def from_triton_args(
        cls, args: dict[str, str], metrics: Any = None, infer: Any = None, infer_stream: Any = None
    ) -> "ModelContext":
        # args["model_repository"] is the model's own folder; the version is a sub-folder of it.
        return cls(
            name=args["model_name"],
            version_dir=Path(args["model_repository"]) / args["model_version"],
            config=json.loads(args["model_config"]),
            metrics=metrics if metrics is not None else InMemoryRegistry(),
            infer=infer,
            infer_stream=infer_stream,
        )

    @property
    def version(self) -> str:
        return self.version_dir.name

    def parameter(self, key: str, default: str) -> str:
        """A `parameters` entry of config.pbtxt (string_value), or the default."""
        entry = self.config.get("parameters", {}).get(key)
        return entry["string_value"] if entry else default

    def int_parameter(self, key: str, default: int) -> int:
        return int(self.parameter(key, str(default)))

    def float_parameter(self, key: str, default: float) -> float:
        return float(self.parameter(key, str(default)))


def non_negative_parameter(key: str, value: str, unit: str, meaning: str) -> float:
    """A config parameter that must be a finite number ≥ 0; else a ValueError naming the parameter, its
    value, the rule (`unit`) and what the number means."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 <= number < float("inf"):
        raise ValueError(f"parameter {key} {value!r} must be a number of {unit} ≥ 0 ({meaning})")
    return number
