"""Build reports: JSON for machines, a short markdown table for people, written beside the artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_JSON = "build_report.json"
REPORT_MD = "build_report.md"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def write_report(directory: Path, title: str, report: dict[str, Any], notes: str = "") -> dict[str, Any]:
    (directory / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {key} | {_format(value)} |" for key, value in report.items() if not isinstance(value, (dict, list))]
    if notes:
        lines += ["", notes]
    (directory / REPORT_MD).write_text("\n".join(lines) + "\n")
    return report
