"""The independent Go verifiers in ``tests/interop/``, run with Debian's Go and
golang.org/x/mod (installed by ``.ci/tools``): JSON in on stdin, one line per check out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

GOPATH = Path("/usr/share/gocode")
INTEROP = Path(__file__).resolve().parents[1] / "interop"


def go_check(program: str, payload: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """Run ``tests/interop/<program>`` on ``payload``."""
    go = shutil.which("go")
    if go is None or not (GOPATH / "src/golang.org/x/mod/sumdb/note").is_dir():
        pytest.fail("Go and golang-golang-x-mod-dev are needed: .ci/test installs them")
    env = {
        **os.environ,
        "GOPATH": str(GOPATH),
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOCACHE": str(Path.home() / ".cache" / "axb-go-build"),
    }
    return subprocess.run(
        [go, "run", "."],
        cwd=INTEROP / program,
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
