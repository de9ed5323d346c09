"""The ``axb`` command line, split by audience.

General layout:

- ``common``    what every command shares: path types, the event loop, serving until stopped
- ``serve``     ``axb demo`` and ``axb serve``
- ``demo``      the journey ``axb demo`` runs: a development scheme, providers, broker, checks
- ``council``   ``axb check`` and ``axb consent withdraw``: what a council service runs
- ``provider``  ``axb provider serve|conformance|keygen|registration``
- ``scheme``    ``axb scheme …``: the scheme operator's tools
- ``audit``     ``axb audit …``: the auditor's tools, and the operator's prune
"""

from __future__ import annotations

import click

from broker.cli import audit, council, provider, scheme, serve


@click.group()
def main() -> None:
    """ax-broker: signed eligibility checks between councils and attribute providers."""


main.add_command(serve.demo)
main.add_command(serve.serve)
main.add_command(council.check)
main.add_command(council.consent)
main.add_command(provider.provider)
main.add_command(scheme.scheme)
main.add_command(audit.audit)
