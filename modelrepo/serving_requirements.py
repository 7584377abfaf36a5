"""The serving requirements: the `serving` extra of the project's wheel, read from the wheel itself.

`python -m modelrepo.serving_requirements [--extra gateway] WHEEL` prints a requirements file; the
Dockerfile's build stage writes one per extra (`serving`: what the served models import; `gateway`:
what the OpenAI gateway imports) beside `pip freeze` (constraints), and the runtime stage installs the
wheel with `--no-deps` plus exactly these. Without WHEEL it prints the extra as pyproject.toml declares it.
"""

from __future__ import annotations

import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

EXTRA = "serving"
EXTRAS = (EXTRA, "gateway")


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalised(Requirement(requirement).name)


def extra_requirements(requires_dist: list[str], extra: str = EXTRA) -> list[str]:
    """The requirements of one extra from METADATA's Requires-Dist lines, markers dropped."""
    selected = []
    for line in requires_dist:
        requirement = Requirement(line)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
            requirement.marker = None
            selected.append(str(requirement))
    return selected


def wheel_requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(metadata).decode()).get_all("Requires-Dist") or []


def declared_serving_requirements(extra: str = EXTRA) -> list[str]:
    """The extra as pyproject.toml declares it (checkouts only)."""
    from modelrepo.pins import pyproject

    return list(pyproject()["project"]["optional-dependencies"][extra])


def main(argv: list[str]) -> int:
    extra = EXTRA
    if argv[:1] == ["--extra"]:
        if len(argv) < 2 or argv[1] not in EXTRAS:
            print(f"error: --extra {' '.join(argv[1:2])!r}: must be one of {', '.join(EXTRAS)}", file=sys.stderr)
            return 2
        extra, argv = argv[1], argv[2:]
    requirements = (extra_requirements(wheel_requires_dist(Path(argv[0])), extra) if argv
                    else declared_serving_requirements(extra))
    if not requirements:
        print(f"error: no '{extra}' extra in {argv[0] if argv else 'pyproject.toml'}", file=sys.stderr)
        return 2
    print("\n".join(requirements))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
