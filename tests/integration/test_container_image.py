"""The image deploy/build-images makes (deploy/Dockerfile on the Debian base made with
mmdebstrap, installed from the pinned wheelhouse) serves a check through a container as an
operator runs it: the scheme mounted read-only, the log in the image's writable state folder,
the keys readable by the image's group by the documented convention, and ``podman stop``
an orderly stop in under 2 s with exit code 0 and a final checkpoint in the log.

The container shares the host's network namespace and serves a socket this test bound first
(``--preserve-fds``), so it listens on loopback only and no port is probed.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from broker.scheme import dev as devscheme
from members.council import EligibilityClient
from tests.support.containers import (
    BROKER_IMAGE,
    BUILD_TIMEOUT_S,
    IMAGE_UID,
    ROOT,
    built_images,
    container_logs,
    podman,
    podman_env,
)
from tests.support.councils import blue_badge
from tests.support.processes import tail, until_answers
from tests.support.servers import RunningProvider

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 120)


def run_broker_container(
    name: str, scheme: Path, state: Path, fd: int, log: Path
) -> subprocess.Popen[bytes]:
    """``podman run`` of the broker image in the foreground, serving socket ``fd`` (handed in
    as the container's fd 3), the scheme read-only, the consent log in ``state``."""
    command = (
        f"exec podman run --name {name} --network host --preserve-fds 1 "
        f"-v {scheme}:/etc/axb:ro -v {state}:/var/lib/axb "
        f"-e AXB_CONSENT_LOG=/var/lib/axb/consent-log.sqlite3 "
        f"{BROKER_IMAGE} serve --config /etc/axb/broker.toml --listen-fd 3 3<&{fd}"
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            ["bash", "-c", command], pass_fds=[fd], stdout=out, stderr=out, env=podman_env()
        )


def test_the_image_runs_as_uid_10001_listens_on_8080_and_stops_on_sigterm() -> None:
    built_images(broker_only=True)
    (config,) = json.loads(podman("image", "inspect", BROKER_IMAGE))
    image = config["Config"]
    assert image["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert image["StopSignal"] == "SIGTERM"
    assert "8080/tcp" in image["ExposedPorts"]
    env = dict(item.split("=", 1) for item in image["Env"])
    assert (env["AXB_HOST"], env["AXB_PORT"]) == ("0.0.0.0", "8080")  # noqa: S104
    assert image["Entrypoint"] == ["axb"]
    assert image["Cmd"] == ["serve", "--config", "/etc/axb/broker.toml"]
    # built in Docker format, so the health check is kept (OCI images drop HEALTHCHECK)
    assert config["Healthcheck"]["Test"] == ["CMD", "axb", "healthcheck"]
    assert config["ManifestType"].endswith("docker.distribution.manifest.v2+json")
    # every dependency is the pinned one: what CI tests is what the image runs
    pip = ("run", "--rm", "--entrypoint", "/opt/axb/bin/pip", BROKER_IMAGE)
    frozen = podman(*pip, "list", "--format=freeze", "--disable-pip-version-check")
    pins = {
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    skip = ("ax-broker==", "pip==", "setuptools==")
    installed = {line for line in frozen.splitlines() if not line.startswith(skip)}
    assert installed
    assert installed <= pins, installed - pins


async def test_a_check_through_the_container_then_podman_stop_exits_0_in_under_2_s(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    providers: dict[str, RunningProvider],
    tmp_path: Path,
) -> None:
    built_images(broker_only=True)
    assert devscheme.share_with_image(scheme) == []  # root here: group 10001, mode 0640
    state = tmp_path / "state"  # the image's writable /var/lib/axb
    state.mkdir()
    os.chown(state, IMAGE_UID, IMAGE_UID)
    name = f"axb-image-test-{secrets.token_hex(4)}"
    log = tmp_path / "container.log"
    process = run_broker_container(name, scheme.root, state, listeners.broker.fileno(), log)
    listeners.broker.close()  # the container has it now
    try:
        await until_answers(scheme.broker_url + "/readyz", process, log)
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        ) as client:
            assert await blue_badge(client) == "yes"
        assert podman("exec", name, "id", "-u").strip() == str(IMAGE_UID)
        port = scheme.broker_port
        podman("exec", "-e", f"AXB_PORT={port}", name, "axb", "healthcheck")
        started = time.monotonic()
        podman("stop", "--time", "10", name)
        stopped_in = time.monotonic() - started
        assert process.wait(timeout=15) == 0, tail(log)
        assert podman("inspect", "--format", "{{.State.ExitCode}}", name).strip() == "0"
        assert stopped_in < 2.0, f"podman stop took {stopped_in:.2f} s"
        assert "Traceback" not in container_logs(name)
    finally:
        podman("rm", "--force", "--volumes", name, check=False)
        if process.poll() is None:
            process.kill()
    with sqlite3.connect(state / "consent-log.sqlite3") as db:
        indices = {row[0] for row in db.execute("SELECT log_index FROM records")}
        (latest,) = db.execute("SELECT MAX(size) FROM checkpoints").fetchone()
    assert indices == {0}, "the answered check's record, and no other"
    assert latest == 1, "the final checkpoint covers the answered check"


def test_a_key_the_image_cannot_read_stops_the_container_with_the_file_named(
    scheme: devscheme.DevScheme,
) -> None:
    built_images(broker_only=True)
    # keys as a root-owned 0600 file: the image's user cannot read it, and says which file
    done = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "-v",
            f"{scheme.root}:/etc/axb:ro",
            BROKER_IMAGE,
            "serve",
            "--config",
            "/etc/axb/broker.toml",
        ],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"/etc/axb/keys/{devscheme.BROKER}.pem" in done.stderr
    assert "Permission denied" in done.stderr
