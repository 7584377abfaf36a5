"""The Dockerfile as data: its stages and their instructions, continuation lines joined, comments
dropped. The container rehearsal reads the runtime stage from here, so the file is the one truth."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from modelrepo.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ENV, ...
    arguments: str  # the rest of the (joined) line

    def exec_form(self) -> list[str]:
        """ENTRYPOINT / CMD / SHELL in JSON (exec) form."""
        return json.loads(self.arguments)

    def copy_parts(self) -> tuple[str | None, list[str], str]:
        """COPY [--from=STAGE] SRC... DST -> (stage or None, sources, destination)."""
        words = shlex.split(self.arguments)
        stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")]
        return stage, paths[:-1], paths[-1]

    def env_pairs(self) -> list[tuple[str, str]]:
        """ENV KEY=VALUE ... (in order; values unexpanded)."""
        return [tuple(word.split("=", 1)) for word in shlex.split(self.arguments)]


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """name (or the base image for an unnamed stage) -> Stage, in file order."""
    found: dict[str, Stage] = {}
    base, name, body = None, None, []

    def close():
        if base is not None:
            found[name or base] = Stage(base, name, tuple(body))

    for line in logical_lines(path.read_text()):
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            close()
            match = re.fullmatch(r"(\S+)(?: AS (\S+))?", arguments.strip(), flags=re.IGNORECASE)
            base, name, body = match.group(1), match.group(2), []
        else:
            body.append(Instruction(keyword.upper(), re.sub(r"\s+", " ", arguments).strip()))
    close()
    return found
