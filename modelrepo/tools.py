"""External tools the tests and deployment checks run: Debian packages and linters in venvs of their own.

Pinned in pyproject.toml ([tool.modelrepo] apt_tools, [tool.modelrepo.tool_venvs]); `make tools`
(part of `make test`) runs `python -m modelrepo.tools` to install what is missing.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from modelrepo.paths import REPO_ROOT, cache_dir


class ToolMissing(RuntimeError):
    """A tool is not installed; the message says how to get it."""


@functools.cache
def _settings() -> dict:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["modelrepo"]


def venv_requirements(venv: str) -> list[str]:
    return list(_settings()["tool_venvs"][venv])


def venv_dir(venv: str) -> Path:
    return cache_dir() / "tools" / venv


def _marker(venv: str) -> Path:
    # Named after the requirements, so changing a pin reinstalls.
    import hashlib

    digest = hashlib.sha256("\n".join(venv_requirements(venv)).encode()).hexdigest()[:12]
    return venv_dir(venv) / f".installed-{digest}"


def install_venv(venv: str) -> Path:
    if not _marker(venv).exists():
        path = venv_dir(venv)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "--quiet", *venv_requirements(venv)], check=True)
        _marker(venv).touch()
    return venv_dir(venv) / "bin"


def venv_tool(venv: str, executable: str) -> str:
    """Path of `executable` in tool venv `venv`; ToolMissing if `make tools` has not installed it."""
    path = venv_dir(venv) / "bin" / executable
    if not _marker(venv).exists() or not path.exists():
        raise ToolMissing(f"{executable} is not installed in {venv_dir(venv)}: run `make tools`")
    return str(path)


def system_tool(executable: str) -> str:
    """Path of a Debian-packaged tool (kubectl, promtool, prometheus, amtool); ToolMissing if absent."""
    path = shutil.which(executable)
    if path is None:
        raise ToolMissing(f"{executable} is not on PATH: run `make tools` (installs {', '.join(apt_packages())})")
    return path


def apt_packages() -> list[str]:
    return list(_settings()["apt_tools"])


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
        for venv in _settings()["tool_venvs"]:
            print(f"tool venv {venv}: {install_venv(venv)}", flush=True)
    except (ToolMissing, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
