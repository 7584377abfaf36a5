"""The Dockerfile: linted (hadolint, checkov), its pins equal the project's, and the image runs the
same tritonserver flags and serving dependencies as `modelrepo serve`. Docker itself cannot run here."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from modelrepo.paths import REPO_ROOT
from modelrepo.pins import pins, pyproject
from modelrepo.serving_requirements import EXTRA, EXTRAS, declared_serving_requirements, extra_requirements, requirement_name
from modelrepo.tools import venv_tool
from modelrepo.triton import launch
from modelrepo.triton.flags import ALL_INTERFACES, RESTRICTED_APIS
from modelrepo.triton.server import TritonServer
from tests.deploy.dockerfile import stages

DOCKERFILE = REPO_ROOT / "Dockerfile"


def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


def arg_defaults() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile_text(), flags=re.MULTILINE))


def test_hadolint_is_clean_and_every_ignore_is_justified():
    done = subprocess.run([venv_tool("deploy", "hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile_text()
    ignored = set(re.findall(r"^# hadolint ignore=(\S+)$", text, flags=re.MULTILINE))
    assert ignored == {"DL3006", "DL3008"}, ignored
    for rule in ignored:  # each rule has a comment saying why, in place
        assert re.search(rf"^# {rule} \(.+\) ignored.{{20,}}", text, flags=re.MULTILINE) or \
               re.search(rf"^# {rule} ignored: .{{20,}}", text, flags=re.MULTILINE), f"{rule} ignored without a reason"


def test_checkov_dockerfile_passes_with_justified_skips_only():
    done = subprocess.run(
        [venv_tool("deploy", "checkov"), "-f", str(DOCKERFILE), "--framework", "dockerfile", "--skip-download",
         "--compact", "-o", "json"],
        capture_output=True, text=True,
    )
    report = json.loads(done.stdout)
    assert report["summary"]["failed"] == 0, json.dumps(report["results"]["failed_checks"], indent=1)[:3000]
    assert report["summary"]["passed"] > 100
    for skipped in report["results"]["skipped_checks"]:
        comment = re.search(rf"#checkov:skip={skipped['check_id']}:(.+)", dockerfile_text())
        assert comment and len(comment.group(1)) > 30, f"{skipped['check_id']} skipped without a reason"


def test_the_images_and_versions_are_the_project_pins():
    args, pinned = arg_defaults(), pins()
    assert args["TRITON_IMAGE"] == pinned.ngc_triton_image
    assert args["TRTLLM_IMAGE"] == pinned.ngc_trtllm_image
    assert args["TENSORRT_IMAGE"] == pinned.ngc_tensorrt_image
    assert args["TENSORRT_VERSION"] == pinned.tensorrt
    assert args["TENSORRT_LLM_VERSION"] == pinned.tensorrt_llm
    assert args["TRITON_REPO_TAG"] == f"r{pinned.ngc_release}"
    for image in (pinned.ngc_triton_image, pinned.ngc_trtllm_image, pinned.ngc_tensorrt_image):
        assert image.endswith(f":{pinned.ngc_release}-py3") or f":{pinned.ngc_release}-" in image
    # The README names the same image (one source of truth: a stale README fails here).
    assert pinned.ngc_triton_image in (REPO_ROOT / "README.md").read_text()


def test_every_from_is_a_pinned_arg_or_a_stage_of_this_file():
    text = dockerfile_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE))
    for image in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE):
        if image.startswith("${"):
            assert image[2:-1] in arg_defaults(), image
        else:
            assert image in stages or image.replace("${VARIANT}", "cpu") in stages, image
    assert {f"repository-{v}" for v in ("cpu", "onnxruntime", "tensorrt", "llm")} <= stages
    assert {f"base-{v}" for v in ("cpu", "onnxruntime", "tensorrt", "llm")} <= stages


def test_runtime_is_non_root_with_a_readiness_healthcheck_and_the_shared_launcher():
    text = dockerfile_text()
    runtime = text[text.index("AS runtime"):]
    assert re.search(r"^USER 1000$", runtime, flags=re.MULTILINE)
    assert 'CMD ["python3", "-m", "modelrepo.triton.launch", "--health"]' in runtime
    assert 'ENTRYPOINT ["python3", "-m", "modelrepo.triton.launch"]' in runtime
    assert "EXPOSE 8000 8001 8002 9000" in runtime  # Triton's HTTP, gRPC, metrics; the OpenAI gateway
    # What the image copies exists, so `docker build` does not fail on a stale path.
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            assert (REPO_ROOT / source).exists(), source


def test_the_image_and_modelrepo_serve_run_the_same_tritonserver_flags():
    key = "k" * 24
    image = launch.command({launch.ADMIN_KEY_ENV: key})
    local = TritonServer(model_repository=REPO_ROOT / "model_repository", http_port=8000, grpc_port=8001,
                         metrics_port=8002, admin_key=key, host=ALL_INTERFACES).command(Path("/backends"))
    assert image[0] == "/opt/tritonserver/bin/tritonserver"
    assert image[1] == "--model-repository=/models"
    install_specific = ("--model-repository=", "--backend-directory=", "--cache-directory=")
    assert [a for a in image[1:] if not a.startswith(install_specific)] == \
           [a for a in local[1:] if not a.startswith(install_specific)]
    assert f"--http-restricted-api={RESTRICTED_APIS}:admin-key={key}" in image
    # the image listens on every interface of its container; `modelrepo serve` on loopback by default
    assert "--http-address=0.0.0.0" in image
    assert "--http-address=127.0.0.1" in TritonServer(REPO_ROOT / "model_repository").command(Path("/backends"))


def test_the_launcher_refuses_to_start_without_an_admin_key_and_never_prints_it():
    env = {"PATH": "/usr/bin", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "modelrepo.triton.launch", "--print"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "MODELREPO_ADMIN_KEY is not set" in done.stderr and "Traceback" not in done.stderr
    secret = "s3cr3t-admin-key-value"
    done = subprocess.run([sys.executable, "-m", "modelrepo.triton.launch", "--print"],
                          env={**env, launch.ADMIN_KEY_ENV: secret, "MODEL_REPOSITORY": "s3://bucket/repo"},
                          capture_output=True, text=True)
    assert done.returncode == 0 and secret not in done.stdout + done.stderr
    assert "--model-repository=s3://bucket/repo" in done.stdout
    with pytest.raises(launch.LaunchError, match="TRITON_HTTP_PORT='http'"):
        launch.command({launch.ADMIN_KEY_ENV: secret, "TRITON_HTTP_PORT": "http"})
    assert "--exit-on-error=true" in launch.command({launch.ADMIN_KEY_ENV: secret})
    assert "--exit-on-error=false" in launch.command({launch.ADMIN_KEY_ENV: secret, "TRITON_EXIT_ON_ERROR": "false"})
    with pytest.raises(launch.LaunchError, match="TRITON_EXIT_ON_ERROR='no': must be true or false"):
        launch.command({launch.ADMIN_KEY_ENV: secret, "TRITON_EXIT_ON_ERROR": "no"})


def test_the_launcher_runs_the_gateway_beside_tritonserver_unless_turned_off():
    secret = "s3cr3t-admin-key-value"
    env = {"PATH": "/usr/bin", "PYTHONPATH": str(REPO_ROOT), launch.ADMIN_KEY_ENV: secret}
    done = subprocess.run([sys.executable, "-m", "modelrepo.triton.launch", "--print"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and secret not in done.stdout + done.stderr, done.stderr
    triton, gateway = done.stdout.splitlines()
    assert triton.startswith("supervise /opt/tritonserver/bin/tritonserver ")
    assert gateway.startswith("gateway (once tritonserver is ready) ")
    cmd = launch.gateway(env)
    assert gateway.endswith(" ".join(cmd))
    # the image's venv python (the launcher's own), on TRITON_HOST, to Triton's gRPC port on loopback
    assert cmd[:3] == [sys.executable, "-m", "modelrepo.gateway"]
    assert cmd[3:9] == ["--triton-grpc", "127.0.0.1:8001", "--host", ALL_INTERFACES, "--port", "9000"]
    assert launch.gateway({**env, "TRITON_HOST": "127.0.0.1", "TRITON_GRPC_PORT": "9101",
                           launch.OPENAI_PORT_ENV: "9100"})[3:9] == \
           ["--triton-grpc", "127.0.0.1:9101", "--host", "127.0.0.1", "--port", "9100"]
    for off in ("0", "off", "OFF"):
        assert launch.gateway({**env, launch.OPENAI_PORT_ENV: off}) is None
    done = subprocess.run([sys.executable, "-m", "modelrepo.triton.launch", "--print"],
                          env={**env, launch.OPENAI_PORT_ENV: "off"}, capture_output=True, text=True)
    assert done.returncode == 0 and "modelrepo.gateway" not in done.stdout
    with pytest.raises(launch.LaunchError, match="MODELREPO_OPENAI_PORT='nine': must be a port number 1..65535, or 0 / off"):
        launch.gateway({**env, launch.OPENAI_PORT_ENV: "nine"})
    with pytest.raises(launch.LaunchError, match="MODELREPO_OPENAI_PORT=8001: Triton's grpc port already uses it"):
        launch.gateway({**env, launch.OPENAI_PORT_ENV: "8001"})
    done = subprocess.run([sys.executable, "-m", "modelrepo.triton.launch", "--print"],
                          env={**env, launch.OPENAI_PORT_ENV: "99999"}, capture_output=True, text=True)
    assert done.returncode == 2 and "MODELREPO_OPENAI_PORT='99999'" in done.stderr and "Traceback" not in done.stderr


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside a function (lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def module_file(module: str) -> Path | None:
    """The source file of a `modelrepo.*` module (the package maps build/, perf/, python_backends/)."""
    package_dirs = {"modelrepo.build": "build", "modelrepo.perf": "perf", "modelrepo.python_backends": "python_backends"}
    for prefix, folder in sorted(package_dirs.items(), key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            relative = Path(folder, *module[len(prefix) + 1:].split(".")) if module != prefix else Path(folder)
            break
    else:
        relative = Path(*module.split("."))
    for candidate in (REPO_ROOT / relative.with_suffix(".py"), REPO_ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None  # a name imported from a module, not a module


def third_party_closure(entry_files: list[Path]) -> dict[str, str]:
    """top-level third-party module -> the file that imports it, over everything `entry_files` reach
    through modelrepo modules, lazy imports included (what a served model can import at run time)."""
    stdlib = set(sys.stdlib_module_names) | {"__future__", "triton_python_backend_utils"}
    found, seen, todo = {}, set(), list(entry_files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top == "modelrepo":
                target = module_file(name)
                if target is not None:
                    todo.append(target)
            elif top not in stdlib:
                found.setdefault(top, str(path.relative_to(REPO_ROOT)))
    return found


# top-level import name -> its distribution (the extras name distributions)
IMPORT_NAMES = {"onnxruntime": "onnxruntime", "numpy": "numpy", "scipy": "scipy", "tokenizers": "tokenizers", "jinja2": "jinja2",
                "torch": "torch", "transformers": "transformers", "safetensors": "safetensors",
                "fastapi": "fastapi", "uvicorn": "uvicorn", "pydantic": "pydantic", "prometheus_client": "prometheus-client",
                "tritonclient": "tritonclient", "grpc": "grpcio", "orjson": "orjson", "httptools": "httptools"}


def assert_extra_is_the_import_closure(extra: str, entries: list[Path], unimported: set[str] = frozenset()) -> None:
    """Every third-party module `entries` reach is provided by `extra`, and the extra provides nothing
    else but `unimported` (import names needed without being imported by us)."""
    reached = third_party_closure(entries)
    declared = {requirement_name(r) for r in declared_serving_requirements(extra)}
    provided = {module for module, package in IMPORT_NAMES.items() if package in declared}
    assert set(reached) <= provided, {m: f for m, f in reached.items() if m not in provided}
    assert provided - set(reached) <= unimported, provided - set(reached)
    assert declared <= set(IMPORT_NAMES.values()), declared - set(IMPORT_NAMES.values())


def test_everything_a_served_model_can_import_is_in_the_serving_extra():
    # model.py files and every modelrepo module they reach, lazily or not: each third-party import must
    # be a serving requirement, or the image fails at model load (a lazy modelrepo.paths did once).
    # safetensors: transformers reads llm_engine's weights with it (an optional dependency of transformers).
    assert_extra_is_the_import_closure(EXTRA, sorted((REPO_ROOT / "model_repository").glob("*/*/model.py")),
                                       unimported={"safetensors"})


def test_everything_the_gateway_can_import_is_in_the_gateway_extra():
    # `python -m modelrepo.gateway`, which the image's entrypoint starts (its app imported lazily).
    # httptools: uvicorn imports it for `--http httptools`, the gateway's default.
    assert_extra_is_the_import_closure("gateway", [REPO_ROOT / "modelrepo/gateway/__main__.py"],
                                       unimported={"httptools"})


def test_the_launcher_needs_only_the_standard_library():
    # The HEALTHCHECK and entrypoint run before anything else; the NGC image's own python3 can run it.
    assert third_party_closure([REPO_ROOT / "modelrepo/triton/launch.py"]) == {}


@pytest.mark.parametrize("extra", EXTRAS)
def test_the_image_extras_are_pinned_as_the_projects_dependencies(extra):
    # the same version (extras may differ: the gateway needs only tritonclient's gRPC client)
    pinned = {requirement_name(r): Requirement(r).specifier for r in pyproject()["project"]["dependencies"]}
    for requirement in declared_serving_requirements(extra):
        assert pinned.get(requirement_name(requirement)) == Requirement(requirement).specifier, requirement


def test_the_requirements_of_each_extra_are_read_from_the_wheels_metadata():
    requires_dist = ['numpy==1.26.4; extra == "serving"', 'tritonclient[grpc]==2.51.0; extra == "gateway"',
                     "rich==15.0.0"]
    assert extra_requirements(requires_dist) == ["numpy==1.26.4"]
    assert extra_requirements(requires_dist, "gateway") == ["tritonclient[grpc]==2.51.0"]
    done = subprocess.run([sys.executable, "-m", "modelrepo.serving_requirements", "--extra", "gateway"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0 and done.stdout.split() == declared_serving_requirements("gateway"), done.stderr
    done = subprocess.run([sys.executable, "-m", "modelrepo.serving_requirements", "--extra", "bench"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 2 and "--extra 'bench': must be one of serving, gateway" in done.stderr


def test_the_runtime_stage_installs_the_wheel_and_copies_no_source():
    runtime = stages()["runtime"]
    context_copies = [i.arguments for i in runtime.all("COPY") if i.copy_parts()[0] is None]
    assert context_copies == [], "the image must install the wheel, not copy modules: " + str(context_copies)
    installs = " ".join(i.arguments for i in runtime.all("RUN"))
    assert "pip install --no-cache-dir --no-deps /opt/modelrepo/wheels/modelrepo-*.whl" in installs
    assert "-r /opt/modelrepo/requirements/serving.txt -r /opt/modelrepo/requirements/gateway.txt" in installs
    build = " ".join(i.arguments for i in stages()["build"].all("RUN"))
    assert "pip wheel --no-deps --wheel-dir /out/wheels ." in build
    assert "modelrepo.serving_requirements /out/wheels/modelrepo-*.whl > /out/requirements/serving.txt" in build
    assert "modelrepo.serving_requirements --extra gateway /out/wheels/modelrepo-*.whl > /out/requirements/gateway.txt" in build
    assert "PYTHONPATH" not in " ".join(i.arguments for i in runtime.all("ENV"))  # the stub ignores it anyway
