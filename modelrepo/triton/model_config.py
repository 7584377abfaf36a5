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


def copy_config(config: ModelConfig) -> ModelConfig:
    """A copy to change without touching `config`."""
    copy = ModelConfig()
    copy.CopyFrom(config)
    return copy


def set_cpu_instances(config: ModelConfig, count: int) -> None:
    """`config` runs `count` CPU instances, in one instance group, whatever groups it had."""
    del config.instance_group[:]
    config.instance_group.add(count=count, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)


def read_config(model_dir: Path) -> ModelConfig:
    return parse_config((Path(model_dir) / CONFIG_FILENAME).read_text())


def write_config(model_dir: Path, config: ModelConfig) -> None:
    (Path(model_dir) / CONFIG_FILENAME).write_text(format_config(config))


def parameter(config: ModelConfig, key: str, default: str | None = None) -> str | None:
    """A `parameters { key: ... value: { string_value: ... } }` entry, or `default`."""
    if key in config.parameters:
        return config.parameters[key].string_value
    return default


def ensemble_steps(config: ModelConfig) -> list[str]:
    """The models an ensemble's steps call, in order; [] for any other model."""
    if config.platform != "ensemble":
        return []
    return [step.model_name for step in config.ensemble_scheduling.step]


def repository_models(repository: Path) -> dict[str, ModelConfig]:
    """Every model in a repository folder, by name (the folder name)."""
    return {
        path.parent.name: read_config(path.parent)
        for path in sorted(Path(repository).glob(f"*/{CONFIG_FILENAME}"))
    }


def comment_header(model_dir: Path) -> str:
    """The leading comment lines of a config.pbtxt, indented or not (protobuf's text format drops
    comments on a rewrite)."""
    lines = (Path(model_dir) / CONFIG_FILENAME).read_text().splitlines(keepends=True)
    header = []
    for line in lines:
        if not line.lstrip().startswith("#"):
            break
        header.append(line.lstrip(" \t"))
    return "".join(header)


def rewrite_config(model_dir: Path, config: ModelConfig) -> None:
    """`write_config`, keeping the file's comment header."""
    header = comment_header(model_dir)
    (Path(model_dir) / CONFIG_FILENAME).write_text(header + format_config(config))


def version_folders(model_dir: Path) -> list[int]:
    return sorted(int(path.name) for path in Path(model_dir).iterdir() if path.is_dir() and path.name.isdigit())


def served_versions(model_dir: Path, config: ModelConfig) -> list[int]:
    """The versions Triton serves under `version_policy` (default: the latest one)."""
    versions = version_folders(model_dir)
    policy = config.version_policy.WhichOneof("policy_choice")
    if policy == "specific":
        return sorted(v for v in config.version_policy.specific.versions if v in versions)
    if policy == "all":
        return versions
    count = config.version_policy.latest.num_versions if policy == "latest" else 1
    return versions[-max(count, 1):]


def serve_only(config: ModelConfig, versions: list[int]) -> None:
    """version_policy: specific { versions: ... }."""
    config.version_policy.specific.ClearField("versions")
    config.version_policy.specific.versions.extend(sorted(set(versions)))
