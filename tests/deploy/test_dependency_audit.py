"""pip-audit of every pinned package in the project's environment, with the reviewed allow-list in
pyproject.toml [tool.modelrepo.pip_audit]. Packages the vulnerability service cannot look up are
listed loudly (a warning in the test summary), never passed over in silence."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

from modelrepo.pins import project_settings
from modelrepo.tools import venv_tool


def allow_list() -> dict[str, str]:
    return project_settings()["pip_audit"]["allow"]


def test_pinned_dependencies_have_no_unreviewed_known_vulnerabilities(tmp_path):
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout
    requirements = tmp_path / "requirements.txt"
    # Local-version suffixes (torch 2.13.0+cpu) are not on the index; audit the release itself.
    requirements.write_text("\n".join(line.split("+")[0] for line in freeze.splitlines() if "==" in line))
    allow = allow_list()
    for vuln_id, reason in allow.items():
        assert len(reason) > 20, f"allow-list entry {vuln_id} needs a reviewed reason"
    report_path = tmp_path / "audit.json"
    done = subprocess.run(
        [venv_tool("deploy", "pip-audit"), "-r", str(requirements), "--no-deps", "--disable-pip",
         "--progress-spinner", "off", "-f", "json", "-o", str(report_path),
         *[arg for vuln_id in allow for arg in ("--ignore-vuln", vuln_id)]],
        capture_output=True, text=True, timeout=600,
    )
    assert report_path.exists(), f"pip-audit did not run: {done.stderr[-2000:]}"
    dependencies = json.loads(report_path.read_text())["dependencies"]
    assert len(dependencies) == len(requirements.read_text().splitlines())
    vulnerable = {f"{d['name']}=={d['version']}": [v["id"] for v in d["vulns"]]
                  for d in dependencies if d.get("vulns")}
    assert not vulnerable, f"known vulnerabilities not on the reviewed allow-list: {vulnerable}"
    assert done.returncode == 0, done.stderr[-2000:]
    unaudited = sorted(d["name"] for d in dependencies if "skip_reason" in d)
    if unaudited:
        reasons = {d["skip_reason"].split(":")[0] for d in dependencies if "skip_reason" in d}
        warnings.warn(f"pip-audit could not look up {len(unaudited)} of {len(dependencies)} pinned packages "
                      f"({'; '.join(sorted(reasons))}): {', '.join(unaudited[:12])}{' …' if len(unaudited) > 12 else ''}")
