"""Where things live: a checkout (editable install) or an installed wheel (the container image).

In a checkout the repository root is found from this file and generated files go to its `.cache/`.
Installed from the wheel (no checkout around the package), nothing is written next to the install,
which is read-only in the image: caches, logs and keys go under the user's cache folder.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
PERF_RESULTS = REPO_ROOT / "perf" / "results"
CACHE_DIR_ENV = "MODELREPO_CACHE_DIR"


def in_checkout() -> bool:
    """True when this package runs from a source checkout rather than an installed wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and MODEL_REPOSITORY.is_dir()


def cache_dir() -> Path:
    """Scratch space for generated runtime files (backend dir, logs, keys): $MODELREPO_CACHE_DIR, else
    the checkout's git-ignored `.cache/`, else $XDG_CACHE_HOME/modelrepo (default ~/.cache/modelrepo)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        path = Path(configured)
    elif in_checkout():
        path = REPO_ROOT / ".cache"
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelrepo"
    path.mkdir(parents=True, exist_ok=True)
    return path
