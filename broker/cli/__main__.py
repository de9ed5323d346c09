"""``python -m broker.cli``: the same as ``axb``."""

from broker.cli import main

main()
