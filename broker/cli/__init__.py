"""The ``axb`` command line, split by audience.

General layout:

- ``common``    what every command shares: path and date types, input readers, the event loop,
                serving until stopped
- ``serve``     ``axb demo``, ``axb serve`` and ``axb healthcheck``
- ``workers``   ``axb serve --workers N``: a supervisor of N broker processes on one socket
- ``demo``      the journey ``axb demo`` runs: a development scheme, providers, broker, checks
- ``council``   ``axb check`` and ``axb consent withdraw``: what a council service runs
- ``bulk``      ``axb bulk submit|status|results|cancel``: a council's bulk jobs, CSV in and out
- ``provider``  ``axb provider serve|stub|conformance|keygen|registration``
- ``scheme``    ``axb scheme …``: the scheme operator's tools
- ``audit``     ``axb audit …``: the auditor's tools, and the operator's prune
- ``witness``   ``axb witness serve|keygen``: what a witness operator runs
- ``identity``  ``axb identity issue``: credentials from the reference identity provider

One error boundary: the ``main`` group turns every project error (the roots ``BrokerError``,
``TrustError``, ``ConnectorError``, ``MembersError``) and every failure of the environment a
user can cause (``OSError``, ``aiohttp.ClientError``, ``TimeoutError``) into one line on stderr,
``axb: <what failed>: <message>``, without a traceback. Commands do not catch these
themselves; anything else escaping is a bug and keeps its traceback.

Exit codes:

- 0  done
- 1  the operation failed: the broker refused or could not be reached, an answer was not
     trusted, a file could not be written, a port was taken; also ``axb audit verify`` and
     ``axb audit receipt`` when the evidence does not verify, ``axb provider conformance``
     when a check fails
- 2  the input is wrong: a file is missing, unreadable or of the wrong shape, a config is
     invalid, a scheme change is refused, a key or signed document is malformed; click's own
     usage errors; and ``axb check`` when the broker refuses the check (the problem document
     is printed on stdout)
- 3  ``axb check --prove-receipt``: the answer was verified but its receipt was not proven
"""

from __future__ import annotations

import functools
from typing import IO, Any

import aiohttp
import click

from broker.cli import audit, bulk, council, identity, provider, scheme, serve, witness
from broker.errors import BadInput, BrokerError, SettingsError
from connectors.errors import ConfigError, ConnectorError
from members.errors import AnswerNotTrusted, CheckFailed, MembersError
from trust.errors import TrustError


class CommandFailed(click.ClickException):
    """A project or environment error, shown as ``axb: <what failed>: <message>``: the
    operation failed (exit 1)."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"axb: {self.format_message()}", err=True, file=file)


class InputRefused(CommandFailed):
    """The input is wrong: a file, a config, a document, a key (exit 2, as click's own usage
    errors)."""

    exit_code = 2


# What the boundary catches: the package roots and the environment's failures.
BOUNDARY_KINDS = (
    BrokerError,
    TrustError,
    ConnectorError,
    MembersError,
    aiohttp.ClientError,
    OSError,
)


@functools.cache
def boundary_table() -> tuple[tuple[type[Exception], str, type[CommandFailed]], ...]:
    """The first kind an error is an instance of says what failed and how it exits. Order
    matters: aiohttp's connection errors are also OSErrors, and so is TimeoutError. (Built on
    the first error, so that a command that succeeds does not import the scheme tools.)"""
    from broker.scheme.admin import SchemeAdminError

    return (
        (CheckFailed, "the broker refused", CommandFailed),
        (AnswerNotTrusted, "the broker's answer is not trusted", CommandFailed),
        (BadInput, "bad input", InputRefused),
        (SettingsError, "bad broker config", InputRefused),
        (ConfigError, "bad config", InputRefused),
        (SchemeAdminError, "refused", InputRefused),
        (TrustError, "invalid key or signed document", InputRefused),
        (MembersError, "member client", CommandFailed),
        (ConnectorError, "provider", CommandFailed),
        (BrokerError, "broker", CommandFailed),
        (aiohttp.ClientError, "cannot reach the server", CommandFailed),
        (TimeoutError, "timed out", CommandFailed),
        (OSError, "system error", CommandFailed),
    )


def one_line(exc: BaseException) -> str:
    """The error's own message on one line (a file name and the OS's reason for an OSError
    that has one), or its kind when it has no message."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc)
    return " ".join(text.split()) or type(exc).__name__


def shown(exc: Exception) -> CommandFailed:
    """What the user reads for a project or environment error."""
    what, kind = next(
        (what, kind) for cause, what, kind in boundary_table() if isinstance(exc, cause)
    )
    return kind(f"{what}: {one_line(exc)}")


class ErrorBoundary(click.Group):
    """The one place a command's errors become what the user reads (see the module doc)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BOUNDARY_KINDS as exc:
            raise shown(exc) from exc


@click.group(cls=ErrorBoundary)
def main() -> None:
    """ax-broker: signed eligibility checks between councils and attribute providers."""


main.add_command(serve.demo)
main.add_command(serve.serve)
main.add_command(serve.healthcheck)
main.add_command(council.check)
main.add_command(council.consent)
main.add_command(bulk.bulk)
main.add_command(provider.provider)
main.add_command(scheme.scheme)
main.add_command(audit.audit)
main.add_command(witness.witness)
main.add_command(identity.identity)
