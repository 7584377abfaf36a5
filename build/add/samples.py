"""Reading `--sample FILE`: rows for a graph (.npy, .npz with one array per input, .csv) or texts (.txt, .json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modelrepo.build.add.recipes import AddError


def require_sample(path: Path | None, what: str) -> Path:
    if path is None:
        raise AddError(f"--sample FILE is required for {what} (rows the model takes: parity, warm-up and tuning use them)")
    if not Path(path).is_file():
        raise AddError(f"the sample {path} is not a file")
    return Path(path)


def read_arrays(path: Path, single_input: str) -> dict[str, np.ndarray]:
    """Named sample batches: .npz holds one array per graph input; .npy and .csv hold `single_input`."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        if suffix == ".npy":
            return {single_input: np.load(path, allow_pickle=False)}
        if suffix == ".csv":
            return {single_input: read_csv(path)}
    except (ValueError, OSError) as err:
        raise AddError(f"the sample {path} cannot be read ({err})") from None
    raise AddError(f"the sample {path} must be .npy, .npz or .csv")


def read_csv(path: Path) -> np.ndarray:
    """Numeric rows; a header line is skipped."""
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError:
        return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=1)


def read_feature_rows(path: Path, n_features: int) -> np.ndarray:
    """A tabular model's sample: [rows, n_features] finite numbers."""
    rows = read_arrays(path, "INPUT").get("INPUT")
    if rows is None or rows.ndim != 2 or rows.shape[1] != n_features or len(rows) == 0:
        shape = None if rows is None else list(rows.shape)
        raise AddError(f"the sample {path} does not fit the model: it needs rows of {n_features} features, got shape {shape}")
    if rows.dtype.kind not in "fiu" or not np.isfinite(rows).all():
        raise AddError(f"the sample {path} does not fit the model: every value must be a finite number")
    return rows.astype(np.float32)


def read_texts(path: Path) -> list[str]:
    """One text per line (.txt) or a JSON list of strings."""
    if path.suffix.lower() == ".json":
        texts = json.loads(path.read_text(encoding="utf-8"))
    else:
        texts = path.read_text(encoding="utf-8").splitlines()
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise AddError(f"the sample {path} has no texts (one per line, or a JSON list of strings)")
    return texts
