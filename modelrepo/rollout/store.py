"""Where rollouts are kept: one state file per model and one append-only history for all of them.

    $MODELREPO_ROLLOUT_DIR (default .cache/rollouts/)
      MODEL.json       the model's rollout now: phase, serving and candidate versions, step, policy
      history.jsonl    one JSON line per decision: time, who, model, event, versions, step, gates, decision

The history is only ever appended to (never rewritten); `modelrepo rollout history` reads it.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path

from modelrepo.paths import cache_dir

ROLLOUT_DIR_ENV = "MODELREPO_ROLLOUT_DIR"
HISTORY = "history.jsonl"
# running: stepping; awaiting_promote: every step passed, `promote` finishes it; promoted / rolled_back: done
ACTIVE_PHASES = ("running", "awaiting_promote")


def default_dir() -> Path:
    return Path(os.environ.get(ROLLOUT_DIR_ENV) or cache_dir() / "rollouts")


def operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return f"uid {os.getuid()}"


class RolloutStore:
    def __init__(self, folder: Path | None = None, who: str | None = None):
        self.folder = Path(folder) if folder else default_dir()
        self.who = who or operator()

    def state(self, model: str) -> dict | None:
        path = self.folder / f"{model}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save(self, model: str, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{model}.json"
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state, indent=2))
        os.replace(partial, path)  # a reader never sees half a state

    def record(self, model: str, event: str, **fields) -> dict:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unix_time": round(time.time(), 3), "who": self.who,
                 "model": model, "event": event, **fields}
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / HISTORY, "a", encoding="utf-8") as history:
            history.write(json.dumps(entry) + "\n")
        return entry

    def history(self, model: str | None = None) -> list[dict]:
        path = self.folder / HISTORY
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [e for e in entries if model is None or e["model"] == model]
