"""Where things live in a checkout. The repository root is found from this file (editable install)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
PERF_RESULTS = REPO_ROOT / "perf" / "results"


def cache_dir() -> Path:
    """Scratch space for generated, git-ignored runtime files (backend dir, logs, keys)."""
    path = Path(os.environ.get("MODELREPO_CACHE_DIR", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path
