"""The image's runtime stage, rehearsed on this host from the Dockerfile itself (no Docker here).

A folder stands for the image's `/`. The build stage's own RUN lines make the wheel, its serving
requirements and the served repository (as the cpu variant does); then every instruction of the
runtime stage is carried out in order: COPY, ENV, USER, WORKDIR and the RUN lines that install the
wheel, with the image's absolute paths moved under that folder. What only the base images provide is
provided the same way: tritonserver and its Python backend at /opt/tritonserver (from the embedded
server's wheel), the 3.11 stub the `stub` stage would build, and python3.11 from the host. An
instruction the rehearsal does not know fails it, so the Dockerfile and the rehearsal cannot drift.

The entrypoint then runs as uid 1000 with only HOME and a temp dir writable, the checkout on no path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from modelrepo.paths import REPO_ROOT
from modelrepo.triton.server import tritonserver_home
from tests.deploy.dockerfile import Instruction, Stage, stages

UID = GID = 1000  # the Dockerfile's USER (asserted below)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the NGC images' PATH
HOST_PYTHON = "/usr/bin/python3.11"  # what the runtime stage apt-installs (Debian's here, Ubuntu's there)
# Image paths the rehearsal relocates under its root, longest first.
IMAGE_PATHS = ("/opt/tritonserver", "/opt/modelrepo", "/home/modelrepo", "/models", "/out", "/src", "/tmp")
# Base-image provisioning in the runtime stage: what it installs must exist on this host already.
APT_PACKAGES = {"python3.11", "python3.11-venv"}


class RehearsalError(AssertionError):
    """The Dockerfile holds something the rehearsal cannot reproduce (so it would drift unseen)."""


@dataclass
class Rehearsal:
    root: Path
    variant: str = "cpu"
    env: dict[str, str] = field(default_factory=lambda: {"PATH": BASE_PATH})
    user: str = "root"
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    healthcheck: str = ""
    done: list[str] = field(default_factory=list)  # one line per instruction: what was done for it

    # ------------------------------------------------------------------ paths
    def host(self, image_path: str) -> Path:
        if image_path == "/":
            return self.root
        for prefix in IMAGE_PATHS:
            if image_path == prefix or image_path.startswith(prefix + "/"):
                return self.root / image_path.lstrip("/")
        raise RehearsalError(f"image path {image_path} is not one the rehearsal relocates ({IMAGE_PATHS})")

    def relocate(self, text: str) -> str:
        pattern = "|".join(re.escape(p) for p in IMAGE_PATHS)
        return re.sub(rf"(?<![\w./-])({pattern})(?=[/\s\"']|$)", lambda m: str(self.host(m.group(1))), text)

    def expand(self, value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.env.get(m.group(1), self.variant if m.group(1) == "VARIANT" else ""), value)

    # ------------------------------------------------------------------ the build stage
    def build_stage(self, stage: Stage, build_venv: Path) -> None:
        """The build stage's wheel and repository steps, in a copy of its build context."""
        src = self.host("/src")
        for instruction in stage.instructions:
            if instruction.keyword == "COPY":
                _, sources, destination = instruction.copy_parts()
                target = src / destination if destination not in ("./", ".") else src
                for source in sources:
                    copy_context(REPO_ROOT / source, target / Path(source).name if destination in ("./", ".") else target)
            elif instruction.keyword == "RUN":
                command = instruction.arguments
                if command.startswith("apt-get update"):
                    self.done.append("build: apt-get (the build venv already exists here)")
                elif command.startswith("make build"):
                    # `make test` built the repository and its venv already: the context copy holds them.
                    (src / ".venv").symlink_to(build_venv)
                    self.done.append("build: make build (done by `make test`; its venv linked)")
                else:
                    self.run_shell(command, cwd=src, extra_env={"VARIANT": self.variant})
                    self.done.append(f"build: RUN {command[:60]}...")
            elif instruction.keyword not in ("ARG", "SHELL", "WORKDIR"):
                raise RehearsalError(f"build stage: {instruction.keyword} is not rehearsed")

    # ------------------------------------------------------------------ the runtime stage
    def runtime_stage(self, stage: Stage, stage_outputs: dict[str, Path]) -> None:
        self.provide_tritonserver()
        for instruction in stage.instructions:
            getattr(self, f"do_{instruction.keyword.lower()}", self.unknown)(instruction, stage_outputs)

    def unknown(self, instruction: Instruction, _outputs) -> None:
        raise RehearsalError(f"runtime stage: {instruction.keyword} {instruction.arguments[:60]} is not rehearsed")

    def do_arg(self, instruction: Instruction, _outputs) -> None:
        self.done.append(f"ARG {instruction.arguments} = {self.variant}")

    def do_shell(self, instruction: Instruction, _outputs) -> None:
        if instruction.exec_form()[:2] != ["/bin/bash", "-o"]:
            raise RehearsalError(f"SHELL {instruction.arguments}: the rehearsal runs RUN lines with bash")

    def do_expose(self, instruction: Instruction, _outputs) -> None:
        self.done.append(f"EXPOSE {instruction.arguments} (ports given by TRITON_*_PORT)")

    def do_healthcheck(self, instruction: Instruction, _outputs) -> None:
        self.healthcheck = instruction.arguments

    def healthcheck_command(self) -> list[str]:
        """The HEALTHCHECK's command (its exec form after CMD; the options before it are Docker's)."""
        _options, cmd, command = self.healthcheck.partition("CMD ")
        if not cmd:
            raise RehearsalError(f"HEALTHCHECK {self.healthcheck[:60]}: the rehearsal runs its CMD's exec form")
        return json.loads(command)

    def do_env(self, instruction: Instruction, _outputs) -> None:
        for key, value in instruction.env_pairs():
            self.env[key] = self.relocate(self.expand(value))

    def do_user(self, instruction: Instruction, _outputs) -> None:
        if instruction.arguments != str(UID):
            raise RehearsalError(f"USER {instruction.arguments}: the rehearsal runs as uid {UID}")
        self.user = instruction.arguments

    def do_workdir(self, instruction: Instruction, _outputs) -> None:
        self.workdir = instruction.arguments
        self.host(self.workdir).mkdir(parents=True, exist_ok=True)

    def do_entrypoint(self, instruction: Instruction, _outputs) -> None:
        self.entrypoint = instruction.exec_form()

    def do_copy(self, instruction: Instruction, outputs: dict[str, Path]) -> None:
        stage, sources, destination = instruction.copy_parts()
        target = self.host(destination)
        for source in sources:
            if stage is None:
                origin = REPO_ROOT / source
            elif stage == "stub":
                origin = tritonserver_home() / f"python_backend_stubs/{sys.version_info.major}.{sys.version_info.minor}" / Path(source).name
            elif stage in outputs:
                origin = outputs[stage] / Path(source).relative_to("/out")
            else:
                raise RehearsalError(f"COPY --from={stage}: no such stage output in the rehearsal")
            if not origin.exists():
                raise RehearsalError(f"COPY {source}: {origin} does not exist")
            copy_context(origin, target / origin.name if destination.endswith("/") else target)
        self.done.append(f"COPY {'--from=' + stage + ' ' if stage else ''}{' '.join(sources)} {destination}")

    def do_run(self, instruction: Instruction, _outputs) -> None:
        command = instruction.arguments
        if command.startswith("apt-get update"):
            packages = set(re.findall(r"--no-install-recommends ([\w.\- ]+?)(?: &&|$)", command)[0].split())
            if not packages <= APT_PACKAGES:
                raise RehearsalError(f"runtime apt packages {sorted(packages - APT_PACKAGES)} are not rehearsed")
            if subprocess.run([HOST_PYTHON, "-c", "import venv, ensurepip"]).returncode:
                raise RehearsalError(f"{HOST_PYTHON} with venv is needed (the image's {sorted(packages)})")
            self.done.append(f"RUN apt-get install {' '.join(sorted(packages))} (the host's {HOST_PYTHON})")
        elif "useradd" in command:
            home = self.host(re.search(r"mkdir -p (\S+)", command).group(1))
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, UID, GID)
            self.done.append(f"RUN useradd: uid {UID} owns {home}")
        else:
            # --no-cache-dir keeps the image small; here pip's cache spares a download per run.
            self.run_shell(command.replace("python3.11 -m venv", f"{HOST_PYTHON} -m venv").replace(" --no-cache-dir", ""),
                           cwd=self.root)
            self.done.append(f"RUN {command[:70]}...")

    # ------------------------------------------------------------------ helpers
    def run_shell(self, command: str, cwd: Path, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env.update(extra_env or {})
        done = subprocess.run(["/bin/bash", "-o", "pipefail", "-c", self.relocate(command)], cwd=cwd, env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise RehearsalError(f"RUN failed ({done.returncode}): {self.relocate(command)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}")

    def provide_tritonserver(self) -> None:
        """The base image's /opt/tritonserver: the embedded server's binary, Python backend and caches;
        `bin/tritonserver` passes the relocated defaults the image's binary has built in. The wheel's
        shared libraries sit where its RPATHs ($ORIGIN/../../../nvidia_pytriton.libs) find them."""
        home, opt = tritonserver_home(), self.host("/opt/tritonserver")
        for part in ("bin", "caches"):
            shutil.copytree(home / part, opt / part, symlinks=True)
        shutil.copytree(home.parent.parent / "nvidia_pytriton.libs", self.root / "nvidia_pytriton.libs")
        python_backend = opt / "backends" / "python"
        python_backend.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(home / "backends/python" / name, python_backend / name)
        binary = opt / "bin" / "tritonserver"
        binary.rename(opt / "bin" / "tritonserver.real")
        binary.write_text(f'#!/bin/sh\nexec "{opt}/bin/tritonserver.real" "$@" '
                          f'--backend-directory={opt}/backends --cache-directory={opt}/caches\n')
        binary.chmod(0o755)

    def entrypoint_env(self, extra: dict[str, str]) -> dict[str, str]:
        """The image's environment plus `docker run -e` settings: the relocated default paths given
        explicitly (TRITONSERVER, MODEL_REPOSITORY) since the launcher's defaults name the image's, and
        loopback as the interface (the image binds every interface of its own network namespace; here
        that would be the host's, which `docker run -p 127.0.0.1:…` would not expose either)."""
        temp = self.host("/tmp")
        temp.mkdir(exist_ok=True)
        os.chown(temp, UID, GID)
        return {**self.env, "TMPDIR": str(temp), "TRITONSERVER": str(self.host("/opt/tritonserver/bin/tritonserver")),
                "MODEL_REPOSITORY": str(self.host("/models")), "TRITON_HOST": "127.0.0.1", **extra}


def copy_context(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", ".venv", ".cache"))
    else:
        shutil.copy2(source, destination)


def rehearse(build_venv: Path, variant: str = "cpu") -> Rehearsal:
    """Build the image's filesystem under a fresh world-readable folder (outside the checkout)."""
    root = Path(tempfile.mkdtemp(prefix="modelrepo-image-"))
    root.chmod(0o755)  # uid 1000 must traverse it, as it traverses the image's /
    rehearsal = Rehearsal(root, variant)
    found = stages()
    rehearsal.build_stage(found["build"], build_venv)
    outputs = {"build": rehearsal.host("/out"), "repository": rehearsal.host("/out")}
    rehearsal.runtime_stage(found["runtime"], outputs)
    return rehearsal
