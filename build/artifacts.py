"""Content-addressed build steps: an artifact folder is rebuilt only when the hash of its inputs changes.

Each step writes its files into a temporary folder, then moves them into the model version folder
and writes `.build-stamp.json` last, so an interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAMP_FILENAME = ".build-stamp.json"


def hash_files(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path) -> str:
    return hash_files(p for p in Path(root).rglob("*") if p.is_file())


def package_versions(*names: str) -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in names}


def source_of(*objects: Any) -> str:
    """Hash of the source files that define `objects`: editing the step's code rebuilds it."""
    return hash_files({Path(inspect.getfile(obj)) for obj in objects})


def input_hash(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StepResult:
    name: str
    output_dir: Path
    input_hash: str
    report: dict[str, Any]
    cached: bool


def read_stamp(output_dir: Path) -> dict[str, Any] | None:
    path = Path(output_dir) / STAMP_FILENAME
    return json.loads(path.read_text()) if path.exists() else None


def run_step(
    name: str,
    output_dir: Path,
    inputs: dict[str, Any],
    produce: Callable[[Path], dict[str, Any]],
    force: bool = False,
) -> StepResult:
    """Run `produce(tmp_dir) -> report` unless `output_dir` already holds this input hash."""
    digest = input_hash(inputs)
    stamp = read_stamp(output_dir)
    if not force and stamp and stamp["input_hash"] == digest and all(
        (Path(output_dir) / f).exists() for f in stamp["files"]
    ):
        return StepResult(name, Path(output_dir), digest, stamp["report"], cached=True)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / STAMP_FILENAME).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=output_dir.parent) as tmp:
        report = produce(Path(tmp))
        files = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file())
        for relative in files:
            target = output_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(tmp) / relative), target)
    # What the previous run of this step wrote and this one did not would linger beside the new files
    # (a renamed artifact, still found by `modelrepo check` or Triton); only the step's own files go.
    for leftover in set(stamp["files"] if stamp else ()) - set(files):
        (output_dir / leftover).unlink(missing_ok=True)
    stamp = {"step": name, "input_hash": digest, "inputs": inputs, "files": files, "report": report}
    (output_dir / STAMP_FILENAME).write_text(json.dumps(stamp, indent=2, default=str))
    return StepResult(name, output_dir, digest, report, cached=False)
