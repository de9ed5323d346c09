"""Podman as the image and compose tests drive it: the checkout's containers.conf, the images
``deploy/build-images`` makes (once per test session), containers' exit codes and logs.

Podman and its tools come from Debian packages (``.ci/tools``, which the build script runs
when they are missing); a test is skipped only when they cannot be installed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "deploy" / "containers.conf"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
BROKER_IMAGE = f"localhost/ax-broker:{VERSION}"
IMAGE_UID = 10001
BUILD_TIMEOUT_S = 900  # a cold build: two Debian bases with mmdebstrap, then every image


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout_s: float = 60, check: bool = True) -> str:
    """``podman ARGS`` with the checkout's containers.conf; its stdout."""
    done = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def require_podman() -> None:
    """Install podman and its tools when they are missing; skip when they cannot be."""
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        subprocess.run(["bash", str(ROOT / ".ci" / "tools")], check=False, timeout=600)
    missing = [t for t in ("podman", "mmdebstrap", "runc") if shutil.which(t) is None]
    if missing:
        absent = ", ".join(missing)
        pytest.skip(f"podman cannot be installed here ({absent} missing after .ci/tools)")


@functools.cache
def _build(broker_only: bool) -> None:
    flags = ["--broker-only"] if broker_only else []
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "build-images"), *flags],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"deploy/build-images failed:\n{done.stderr[-4000:]}"


def built_images(*, broker_only: bool = False) -> None:
    """Every image deploy/ names, built by ``deploy/build-images`` (once per session: a run
    with the service images also serves a later broker-only request)."""
    require_podman()
    if broker_only and _build.cache_info().currsize:
        return
    _build(broker_only)


def container_logs(name: str) -> str:
    done = subprocess.run(
        ["podman", "logs", name],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return (done.stdout + done.stderr)[-4000:]
