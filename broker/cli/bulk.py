"""``axb bulk submit|status|results|cancel``: a council's bulk jobs from a spreadsheet export.

CSV in (a header row: ``ref`` and the subject fields, consent columns where the purpose needs
them), CSV out (``ref,outcome``, safe to open in a spreadsheet). ``submit --wait`` follows the
job with a progress bar on a terminal and plain progress lines otherwise, then writes the
results once the signed results manifest verifies.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import click

from broker.cli.common import CONFIG, DATE, INPUT_FILE, open_binary_input


def _format_of(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    return "ndjson" if path.suffix.lower() in (".ndjson", ".jsonl") else "csv"


class ProgressView:
    """A progress bar (``rich``) on a terminal; a plain line per change otherwise."""

    def __init__(self, *, terminal: bool) -> None:
        self._terminal = terminal
        self._bar: Any = None
        self._task: Any = None
        self._last: tuple[str, int] | None = None

    def __call__(self, job: Mapping[str, Any]) -> None:
        status, done, total = str(job["status"]), int(job["processed"]), int(job["items"])
        if self._terminal:
            if self._bar is None:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TimeRemainingColumn,
                )

                self._bar = Progress(
                    "{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
                )
                self._bar.start()
                self._task = self._bar.add_task(f"job {job['id'][:8]}", total=total)
            self._bar.update(self._task, completed=done, description=f"{status:9}")
            return
        if self._last != (status, done):
            self._last = (status, done)
            percent = 100 * done / total if total else 100.0
            click.echo(f"job {job['id']}: {status} {done}/{total} ({percent:.0f}%)", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _run(work: Callable[[Any], Any], config: Path) -> Any:
    from members.bulk import BulkJobs
    from members.council import EligibilityClient

    async def run() -> Any:
        async with EligibilityClient.from_config(config) as client:
            return await work(BulkJobs(client))

    return asyncio.run(run())


def _echo(document: Mapping[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2))


async def _write_results(jobs: Any, job_id: str, out: Path, fmt: str) -> dict[str, Any]:
    signed, body = await jobs.results(job_id, fmt)
    await asyncio.to_thread(out.write_bytes, body)
    return {
        "job": signed.job,
        "status": signed.status,
        "results": signed.results,
        "records": signed.records,
        "log_index_range": None
        if signed.first_index is None
        else [signed.first_index, signed.last_index],
        "written": str(out),
        "verified": True,
    }


@click.group("bulk")
def bulk() -> None:
    """A council's bulk jobs: many residents checked as one signed job."""


@bulk.command("submit")
@click.option("--config", "config", type=CONFIG, required=True, help="councils/X.toml")
@click.option("--check", "check_name", required=True)
@click.option("--purpose", required=True)
@click.option("--lawful-basis", default="public-task")
@click.option("--as-of", type=DATE, default=None, help="default: today")
@click.option("--assurance", default=None, help="P0..P4")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default=None,
              help="default: by the file's extension (.ndjson, .jsonl; else csv)")  # fmt: skip
@click.option("--wait", is_flag=True, help="follow the job until it ends")
@click.option("--notify", is_flag=True,
              help="post a signed notice to your bulk_callback when it ends")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="with --wait: write the verified results here (CSV unless .ndjson)")  # fmt: skip
@click.argument("items", type=INPUT_FILE)
def submit(
    config: Path,
    check_name: str,
    purpose: str,
    lawful_basis: str,
    as_of: date | None,
    assurance: str | None,
    fmt: str | None,
    wait: bool,
    notify: bool,
    out: Path | None,
    items: Path,
) -> None:
    """Submit ITEMS (CSV or NDJSON) as one job; print the job (and, with --wait, follow it)."""
    from members.bulk import describe_items
    from members.errors import CheckFailed

    kind = _format_of(items, fmt)
    with open_binary_input(items, "items file") as stream:
        described = describe_items(stream, kind)  # type: ignore[arg-type]
    view = ProgressView(terminal=sys.stderr.isatty())

    async def work(jobs: Any) -> int:
        with open_binary_input(items, "items file") as stream:
            try:
                job = await jobs.submit(
                    stream,
                    described,
                    check=check_name,
                    purpose=purpose,
                    lawful_basis=lawful_basis,
                    as_of=as_of,
                    assurance=assurance,
                    notify=notify,
                )
            except CheckFailed as failed:  # the problem names the row and the field
                _echo(failed.problem)
                return 2
        if not wait:
            _echo(job)
            return 0
        try:
            ended = await jobs.wait(job["id"], on_progress=view)
        finally:
            view.close()
        _echo(ended)
        if out is not None:
            results_format = "ndjson" if out.suffix.lower() == ".ndjson" else "csv"
            _echo(await _write_results(jobs, job["id"], out, results_format))
        return 0 if ended["status"] == "completed" else 1

    sys.exit(_run(work, config))


@bulk.command("status")
@click.option("--config", "config", type=CONFIG, required=True, help="councils/X.toml")
@click.argument("job_id")
def status(config: Path, job_id: str) -> None:
    """Print a job's status: counts per outcome and progress."""
    _echo(_run(lambda jobs: jobs.status(job_id), config))


@bulk.command("cancel")
@click.option("--config", "config", type=CONFIG, required=True, help="councils/X.toml")
@click.argument("job_id")
def cancel(config: Path, job_id: str) -> None:
    """Cancel a job (at once if queued, at its next chunk if running)."""
    _echo(_run(lambda jobs: jobs.cancel(job_id), config))


@bulk.command("results")
@click.option("--config", "config", type=CONFIG, required=True, help="councils/X.toml")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="csv")
@click.argument("job_id")
def results(config: Path, out: Path, fmt: str, job_id: str) -> None:
    """Write an ended job's results to OUT once its signed results manifest verifies."""
    _echo(_run(lambda jobs: _write_results(jobs, job_id, out, fmt), config))
