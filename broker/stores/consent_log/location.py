"""Where the consent log lives, decided once when the settings are read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class SqliteLocation:
    """An embedded log: one SQLite file, one broker process."""

    path: Path


@dataclass(frozen=True, slots=True)
class PostgresLocation:
    """A shared log: tables in ``schema`` of the database at ``dsn``, one sequence for every
    broker process."""

    dsn: str
    schema: str = "axb"


LogLocation = SqliteLocation | PostgresLocation
