"""One place per model: the registry that `modelrepo build`, its renders and the CLI loop over.

An entry is one pipeline of the repository: the models it serves through, the cached steps that
make their artifacts (what is exported, from which data, held to which tolerance), the INT8
calibration of a graph where calibration data is defined for it, and the engine targets beyond the
ONNX ones. The shipped pipelines are entries (build/shipped.py); so is every model `modelrepo add`
wrote, read from its manifest. `add` built those artifacts, so such an entry has no steps, and its
INT8 graph comes from `add --precision int8` with the user's calibration data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelrepo.build.artifacts import StepResult

Done = dict[str, StepResult]  # the steps run so far in this build, by step name


@dataclass(frozen=True)
class Step:
    """One cached artifact folder (build/artifacts.run_step), rebuilt only when its inputs change."""

    name: str
    folder: Callable[[Path], Path]  # repository -> the folder it fills
    inputs: Callable[[Path, Done], dict]  # what the artifact is made from: a change rebuilds it
    produce: Callable[[Path, Done], Callable[[Path], dict]]  # -> produce(temporary folder) -> report
    install: Callable[[Path, Done], None] | None = None  # afterwards: place its files into the repository
    summary: Callable[[dict], str] | None = None  # the line `modelrepo build` prints from its report


@dataclass(frozen=True)
class EngineTarget:
    """A target rendering a whole pipeline for an engine other than a compiled graph (TensorRT-LLM)."""

    name: str
    require: Callable[[], None]  # raises TargetError naming what this machine lacks, before anything is written
    render: Callable[[Path, Path], object]  # (repository, output): the repository without its engine
    engine_command: Callable[[Path, Path], list[str]]  # (output, repository): what builds the engine on a GPU host
    image: Callable[[], str]  # where the rendered repository is served


@dataclass(frozen=True)
class Entry:
    name: str
    describe: str
    models: tuple[str, ...]  # the repository models it owns (its public model first)
    steps: tuple[Step, ...] = ()
    int8: dict[str, Callable] = field(default_factory=dict)  # graph model -> calibration step (repository, request, force)
    engine_targets: dict[str, EngineTarget] = field(default_factory=dict)
    added: bool = False  # written by `modelrepo add` (its manifest), not shipped

    def in_repository(self, repository: Path) -> bool:
        """Whether `repository` serves this pipeline (its public model's config is there)."""
        return (Path(repository) / self.models[0] / "config.pbtxt").exists()


def shipped_entries() -> list[Entry]:
    from modelrepo.build.shipped import ENTRIES  # heavy imports (torch, transformers) only when used

    return list(ENTRIES)


def added_entries(repository: Path) -> list[Entry]:
    from modelrepo.build.add.layout import MANIFEST

    entries = []
    for manifest_file in sorted(Path(repository).glob(f"*/{MANIFEST}")):
        manifest = json.loads(manifest_file.read_text())
        source = Path(manifest.get("source", "?")).name
        entries.append(Entry(manifest_file.parent.name, f"added by `modelrepo add` from {source} ({manifest.get('recipe', '?')})",
                             tuple(manifest["models"]), added=True))
    return entries


def entries(repository: Path) -> list[Entry]:
    """Every pipeline `repository` serves, in build order: the shipped ones, then the added ones."""
    return [entry for entry in [*shipped_entries(), *added_entries(repository)] if entry.in_repository(repository)]


def entry_for(repository: Path, name: str) -> Entry | None:
    """The entry of `repository` called `name`, or the one owning the model `name`."""
    for entry in entries(repository):
        if name == entry.name or name in entry.models:
            return entry
    return None


def engine_targets() -> dict[str, EngineTarget]:
    """The engine targets any shipped entry renders for (the CLI's --target choices beyond the ONNX ones)."""
    return {name: target for entry in shipped_entries() for name, target in entry.engine_targets.items()}


def int8_models(repository: Path) -> list[str]:
    return [model for entry in entries(repository) for model in entry.int8]
