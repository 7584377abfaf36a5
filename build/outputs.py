"""Rendered repositories (`--output`): written whole or not at all, and never over a folder we did not make.

A render goes to a temporary folder beside the output and is moved into place at the end, so an
interrupted or failed render leaves the previous output as it was. An existing output is replaced
only if it is empty or holds the marker an earlier render wrote: `--output .` or `--output ~` is
refused in one sentence instead of deleting the project or the home directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from modelrepo.build.artifacts import STAMP_FILENAME
from modelrepo.build.targets import TargetError

MARKER = ".modelrepo-render"
# Files this large are artifacts (weights, graphs), which builds replace and never rewrite in place:
# a render hard-links them (when on the same filesystem) instead of copying half a gigabyte per render.
LINK_AT_BYTES = 1 << 20


def check_output(output: Path, source: Path) -> None:
    """Refuse (TargetError, one sentence) an output the render must not replace."""
    output, source = Path(output).resolve(), Path(source).resolve()
    if output == source or output in source.parents:
        raise TargetError(f"--output {output} holds the source repository {source}: choose a new or empty folder")
    if output == Path(output.anchor) or output == Path.home().resolve():
        raise TargetError(f"--output {output} is the root or home folder: choose a new or empty folder")
    if output.exists() and not output.is_dir():
        raise TargetError(f"--output {output} is a file: choose a new or empty folder")
    if output.is_dir() and any(output.iterdir()) and not (output / MARKER).exists():
        raise TargetError(
            f"--output {output} is not empty and was not made by `modelrepo build` (no {MARKER} in it): "
            "choose a new or empty folder"
        )


def copy_repository(source: Path, destination: Path) -> None:
    """The source repository as a render starts from it: caches, build stamps and markers left out."""

    def link_or_copy(src: str, dst: str) -> None:
        if os.path.getsize(src) >= LINK_AT_BYTES:
            try:
                os.link(src, dst)
                return
            except OSError:
                pass  # another filesystem: copy
        shutil.copy2(src, dst)

    shutil.copytree(source, destination, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__", STAMP_FILENAME, MARKER))


def render_into(output: Path, source: Path, fill: Callable[[Path], None]) -> Path:
    """`fill(folder)` writes the repository into a temporary folder, which then replaces `output`."""
    output = Path(output)
    check_output(output, source)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        fill(staging / "repository")
        (staging / "repository" / MARKER).write_text(f"rendered by `modelrepo build` from {Path(source).resolve()}\n")
        if output.exists():
            retired = staging / "previous"
            output.rename(retired)  # ours (checked above); removed with the staging folder
        (staging / "repository").rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output
