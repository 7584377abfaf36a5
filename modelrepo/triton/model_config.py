"""config.pbtxt as data: parsed and written through Triton's own protobuf schema."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

ModelConfig = model_config_pb2.ModelConfig
CONFIG_FILENAME = "config.pbtxt"


def parse_config(text: str) -> ModelConfig:
    return text_format.Parse(text, ModelConfig())


def format_config(config: ModelConfig) -> str:
    return text_format.MessageToString(config)


def read_config(model_dir: Path) -> ModelConfig:
    return parse_config((Path(model_dir) / CONFIG_FILENAME).read_text())


def write_config(model_dir: Path, config: ModelConfig) -> None:
    (Path(model_dir) / CONFIG_FILENAME).write_text(format_config(config))


def parameter(config: ModelConfig, key: str, default: str | None = None) -> str | None:
    """A `parameters { key: ... value: { string_value: ... } }` entry, or `default`."""
    if key in config.parameters:
        return config.parameters[key].string_value
    return default


def repository_models(repository: Path) -> dict[str, ModelConfig]:
    """Every model in a repository folder, by name (the folder name)."""
    return {
        path.parent.name: read_config(path.parent)
        for path in sorted(Path(repository).glob(f"*/{CONFIG_FILENAME}"))
    }
