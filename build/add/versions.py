"""`modelrepo add NAME SOURCE --version N`: a new version folder of a model `add` wrote before.

The new version goes into the folder of NAME's graph model (NAME itself, or NAME_model behind an
ensemble), beside the serving one. Its inputs and outputs must be the served ones (a model's config
is shared by its versions) and a classifier's labels must not change. The config's version_policy is
pinned to the versions served before, so Triton keeps serving them until `modelrepo rollout` says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from modelrepo.build.add.layout import MANIFEST
from modelrepo.build.add.recipes import AddError
from modelrepo.triton.model_config import (
    parameter,
    read_config,
    rewrite_config,
    serve_only,
    served_versions,
    version_folders,
)


def graph_model(models: list[str], folder: Path) -> str:
    """The model among `models` (folders under `folder`) that serves the graph: the one with versions of its own."""
    return next(model for model in models if parameter(read_config(folder / model), "onnx_file"))


def check_new_version(name: str, version: int, repository: Path, manifest: dict | None) -> None:
    """Before minutes of exporting: NAME exists (written by add) and version N is free."""
    if manifest is None:
        raise AddError(f"--version {version}: there is no model {name!r} written by `modelrepo add` in {repository}; "
                       f"add its first version without --version")
    if version < 2:
        raise AddError(f"--version must be 2 or more (version 1 is what `add` writes first), got {version}")
    graph = graph_model(manifest["models"], repository)
    if version in version_folders(repository / graph):
        raise AddError(f"--version {version}: {graph}/{version} already exists; choose the next free version "
                       f"({max(version_folders(repository / graph)) + 1})")


def same_io(served, new) -> str | None:
    """What differs between two configs' inputs and outputs (None: the same)."""
    for what in ("input", "output"):
        ours = [(t.name, t.data_type, list(t.dims)) for t in getattr(served, what)]
        theirs = [(t.name, t.data_type, list(t.dims)) for t in getattr(new, what)]
        if ours != theirs:
            return f"{what}s {theirs} instead of the served {ours}"
    return None


def install_version(name: str, version: int, repository: Path, staged: Path, new_models: list[str], labels,
                    source: Path) -> str:
    """Move the staged graph model's version 1 into the repository as version N; pin the served versions."""
    manifest = json.loads((repository / name / MANIFEST).read_text())
    if manifest.get("labels") != (list(labels) if labels is not None else None):
        raise AddError(f"--version {version}: the labels {labels} differ from the served {manifest.get('labels')} "
                       f"(the labels step is shared by every version); add it under another NAME")
    graph = graph_model(new_models, staged)
    if graph not in manifest["models"]:
        raise AddError(f"--version {version}: SOURCE becomes model {graph!r}, not one of {name!r}'s {manifest['models']} "
                       f"(a different kind of model); add it under another NAME")
    target = repository / graph
    served = read_config(target)
    difference = same_io(served, read_config(staged / graph))
    if difference:
        raise AddError(f"--version {version}: SOURCE has {difference}; every version of {graph!r} shares one config")
    keep = served_versions(target, served)
    serve_only(served, keep)
    rewrite_config(target, served)  # pinned first: the new folder is never served by accident
    os.rename(staged / graph / "1", target / str(version))
    manifest.setdefault("versions", {})[str(version)] = {"source": str(Path(source).resolve()), "model": graph}
    (repository / name / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return graph
