"""The admin key that unlocks Triton's restricted model-repository and model-config APIs.

Taken from $MODELREPO_ADMIN_KEY; otherwise `modelrepo serve` generates one into .cache/admin-key
(mode 600), and local tools such as `modelrepo perf-analyzer` read it from there.
"""

from __future__ import annotations

import os
import secrets

from modelrepo.paths import cache_dir
from modelrepo.triton.flags import ADMIN_HEADER
from modelrepo.triton.launch import ADMIN_KEY_ENV

GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"


def key_file():
    return cache_dir() / "admin-key"


def admin_key(create: bool = False) -> tuple[str | None, str]:
    """(key, where it came from). With `create`, a missing key is generated and saved."""
    key = os.environ.get(ADMIN_KEY_ENV)
    if key:
        return key, f"${ADMIN_KEY_ENV}"
    path = key_file()
    if not path.exists():
        if not create:
            return None, "nowhere (set $MODELREPO_ADMIN_KEY)"
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip(), f"{path} (set ${ADMIN_KEY_ENV} to choose your own)"
