"""What a council's bulk job is in a test: rows of residents, submitted as a free-school-meals
job."""

from __future__ import annotations

from typing import Any

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.bulk import BulkJobs, ItemsFile
from trust import bulk


def strangers(n: int) -> list[dict[str, Any]]:
    """``n`` rows of distinct residents no provider knows (each a real check: ``no-match``)."""
    return [
        {"ref": f"r{i}", "subject": {**subject_of("fsm-no"), "family_name": f"Resident{i}"}}
        for i in range(n)
    ]


async def submit_fsm(jobs: BulkJobs, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``rows`` as one NDJSON free-school-meals job; the accepted job's status document."""
    items = bulk.items_ndjson(rows)
    return await jobs.submit(
        items,
        ItemsFile("ndjson", len(rows), bulk.digest_of(items)),
        check=devscheme.FSM_CHECK,
        purpose="free-school-meals-application",
        assurance="P2",
    )
