"""The serving requirements: what the Python-backend models import, at the project's pinned versions.

`python -m modelrepo.serving_requirements` prints a requirements file; the Dockerfile's build stage
writes it beside `pip freeze` (constraints), and the runtime stage installs exactly that.
"""

from __future__ import annotations

import re

from modelrepo.pins import pyproject


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_dependencies() -> dict[str, str]:
    """normalised name -> the requirement as pinned in [project.dependencies] ("name==version")."""
    pinned = {}
    for requirement in pyproject()["project"]["dependencies"]:
        name = re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0]
        pinned[_normalise(name)] = requirement
    return pinned


def serving_requirements() -> list[str]:
    pinned = pinned_dependencies()
    names = pyproject()["tool"]["modelrepo"]["serving_requirements"]
    unpinned = [n for n in names if _normalise(n) not in pinned]
    if unpinned:
        raise ValueError(f"serving_requirements {unpinned} are not pinned in [project.dependencies]")
    return [pinned[_normalise(n)] for n in names]


if __name__ == "__main__":
    print("\n".join(serving_requirements()))
