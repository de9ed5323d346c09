"""The operator's backup of a PostgreSQL consent log, restored into another database, is the
log: a broker started on the restore answers with the next index (no gap, nothing lost), and
the auditor's export from it verifies against the pinned log key. Done with PostgreSQL's own
``pg_dump``/``pg_restore``, as docs/operations.md tells an operator to."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from broker.scheme import dev as devscheme
from members.council import EligibilityClient
from tests.support.cli import run_axb
from tests.support.councils import blue_badge
from tests.support.logdb import log_backend
from tests.support.servers import StartBroker
from tests.support.services import PG_ADMIN_DSN

pytestmark = pytest.mark.postgres


def pg_tool(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


async def test_a_backup_restored_elsewhere_verifies_and_the_log_goes_on_without_a_gap(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    providers: object,
    pg_database: str,
    tmp_path: Path,
) -> None:
    council = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    dump = tmp_path / "consent-log.dump"
    async with log_backend("postgres") as overrides:
        schema = str(overrides["consent_log_schema"])
        first = await start_broker(**overrides)
        async with EligibilityClient.from_config(council) as client:
            for _ in range(5):
                assert await blue_badge(client) == "yes"
        await first.stop()  # the broker's orderly stop commits and checkpoints the log
        pg_tool("pg_dump", "--format=custom", f"--schema={schema}", f"--file={dump}", PG_ADMIN_DSN)
    # the original schema is gone now: the restore is all there is
    pg_tool("pg_restore", "--no-owner", f"--dbname={pg_database}", str(dump))
    await start_broker(consent_log=pg_database, consent_log_schema=schema)
    async with EligibilityClient.from_config(council) as client:
        answer = await client.check(
            devscheme.BLUE_BADGE_CHECK,
            purpose="blue-badge-application",
            subject={"family_name": "Sampleton", "date_of_birth": "1961-07-02"},
            assurance="P2",
        )
    assert answer.log_index == 5, "the restored log goes on from the backup's last index"
    auditor = scheme.folder.auditor_config(devscheme.AUDITOR)
    export = tmp_path / "export.jsonl"
    code, _, err = await run_axb("audit", "export", "--config", str(auditor), "--out", str(export))
    assert code == 0, err
    code, out, err = await run_axb(
        "audit", "verify", str(export), "--log-key", str(scheme.folder.log_verifier_key)
    )
    assert code == 0, out + err
    lines = [orjson.loads(line) for line in export.read_text().splitlines() if line.strip()]
    indices = {line["log_index"] for line in lines if "log_index" in line}
    assert indices == set(range(6))
