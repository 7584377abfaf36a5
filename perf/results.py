"""Every recorded figure goes to perf/results/<name>.{json,md} with the command that produced it,
the date and the machine, written here once for all benchmark scripts.

Figures from repeated runs are quoted as median and range (`repeat`, `Spread`, `spread_of`): never the
better of two runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from modelrepo.cpu_features import describe_cpu
from modelrepo.paths import PERF_RESULTS


T = TypeVar("T")


@dataclass(frozen=True)
class Spread:
    """One figure over repeated runs: the median and the range (lowest, highest) of every run's value."""

    median: float
    low: float
    high: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> "Spread":
        runs = tuple(float(v) for v in values)
        if not runs:
            raise ValueError("a spread needs at least one run's value")
        return cls(statistics.median(runs), min(runs), max(runs), runs)

    def text(self, digits: int = 2, scale: float = 1.0) -> str:
        """The median, then the range, e.g. `0.83 (0.80–0.91)`; one run shows its value alone."""
        median, low, high = (f"{scale * v:.{digits}f}" for v in (self.median, self.low, self.high))
        return median if len(self.runs) == 1 else f"{median} ({low}–{high})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "runs": list(self.runs)}


def repeat(times: int, run: Callable[[int], T], log: Callable[[str], None] = print) -> list[T]:
    """`run(i)` for i in 0..times-1, one after the other (each a complete, independent measurement)."""
    if times < 1:
        raise ValueError(f"runs: must be at least 1, got {times}")
    results = []
    for i in range(times):
        results.append(run(i))
        log(f"run {i + 1} of {times} done")
    return results


def spread_of(runs: Sequence[dict[str, Any]], keys: Iterable[str]) -> dict[str, Spread]:
    """key -> Spread of that key's value across `runs` (each run a dict of figures)."""
    return {key: Spread.of(run[key] for run in runs) for key in keys}


def provenance(command: str) -> dict[str, str]:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # The load average at writing time: on a shared machine it says how much else was running.
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({describe_cpu()}), {platform.platform()}, "
                   f"load average (1, 5, 15 min) {load}",
    }


def record(name: str, title: str, command: str, data: dict[str, Any], body: list[str], note: str = "",
           folder: Path = PERF_RESULTS) -> str:
    """Write <name>.json (provenance + data) and <name>.md (title, provenance, body) in `folder`
    (default perf/results/); return the markdown."""
    meta = provenance(command)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({**meta, **data}, indent=2, default=str))
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`  ",
        f"Date: {meta['date']}; machine: {meta['machine']}. {note}".rstrip(),
        "",
        *body,
    ]
    markdown = "\n".join(lines) + "\n"
    (folder / f"{name}.md").write_text(markdown)
    return markdown
