"""Every recorded figure goes to perf/results/<name>.{json,md} with the command that produced it,
the date and the machine, written here once for all benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from typing import Any

from modelrepo.paths import PERF_RESULTS


def provenance(command: str) -> dict[str, str]:
    return {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
    }


def record(name: str, title: str, command: str, data: dict[str, Any], body: list[str], note: str = "") -> str:
    """Write <name>.json (provenance + data) and <name>.md (title, provenance, body); return the markdown."""
    meta = provenance(command)
    PERF_RESULTS.mkdir(parents=True, exist_ok=True)
    (PERF_RESULTS / f"{name}.json").write_text(json.dumps({**meta, **data}, indent=2, default=str))
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`  ",
        f"Date: {meta['date']}; machine: {meta['machine']}. {note}".rstrip(),
        "",
        *body,
    ]
    markdown = "\n".join(lines) + "\n"
    (PERF_RESULTS / f"{name}.md").write_text(markdown)
    return markdown
