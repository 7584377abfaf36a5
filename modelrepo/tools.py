"""External tools the tests and deployment checks run: Debian packages and linters in venvs of their own.

Pinned in pyproject.toml ([tool.modelrepo] apt_tools, [tool.modelrepo.tool_venvs]); `make tools`
(part of `make test`) runs `python -m modelrepo.tools` to install what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from modelrepo.paths import cache_dir
from modelrepo.pins import project_settings


class ToolMissing(RuntimeError):
    """A tool is not installed; the message says how to get it."""


def venv_requirements(venv: str) -> list[str]:
    return list(project_settings()["tool_venvs"][venv])


def venv_dir(venv: str) -> Path:
    return cache_dir() / "tools" / venv


def _marker(path: Path, requirements: list[str]) -> Path:
    # Named after the requirements, so changing a pin reinstalls.
    import hashlib

    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    return path / f".installed-{digest}"


def ensure_venv(path: Path, requirements: list[str]) -> Path:
    """The bin/ folder of a venv at `path` holding `requirements`, installed once (again when they
    change): tools whose dependencies clash with ours (checkov, Model Analyzer, genai-perf need numpy 2)."""
    marker = _marker(path, requirements)
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "--quiet", *requirements], check=True)
        marker.touch()
    return path / "bin"


def install_venv(venv: str) -> Path:
    return ensure_venv(venv_dir(venv), venv_requirements(venv))


def venv_tool(venv: str, executable: str) -> str:
    """Path of `executable` in tool venv `venv`; ToolMissing if `make tools` has not installed it."""
    path = venv_dir(venv) / "bin" / executable
    if not _marker(venv_dir(venv), venv_requirements(venv)).exists() or not path.exists():
        raise ToolMissing(f"{executable} is not installed in {venv_dir(venv)}: run `make tools`")
    return str(path)


def system_tool(executable: str) -> str:
    """Path of a Debian-packaged tool (kubectl, promtool, prometheus, amtool); ToolMissing if absent."""
    path = shutil.which(executable)
    if path is None:
        raise ToolMissing(f"{executable} is not on PATH: run `make tools` (installs {', '.join(apt_packages())})")
    return path


def apt_packages() -> list[str]:
    return list(project_settings()["apt_tools"])


# Debian package → an executable it provides (how we tell whether it is installed).
_APT_EXECUTABLE = {"kubectl": "kubectl", "prometheus": "promtool", "prometheus-alertmanager": "amtool"}


def install_apt_packages() -> None:
    missing = [p for p in apt_packages() if shutil.which(_APT_EXECUTABLE.get(p, p)) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ToolMissing(f"missing Debian packages {missing}: run `sudo apt-get install {' '.join(missing)}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Debian's prometheus package would start a service on a systemd machine; policy-rc.d-less
    # containers and CI have no init, so nothing starts (we run our own on loopback in tests).
    if subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env, check=True)


def main() -> int:
    try:
        install_apt_packages()
        for venv in project_settings()["tool_venvs"]:
            print(f"tool venv {venv}: {install_venv(venv)}", flush=True)
    except (ToolMissing, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
