"""`axb demo` as a newcomer runs it: a real process, reference providers as their own
processes, and every outcome on the table."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path


def test_demo_shows_all_four_outcomes_and_keeps_a_servable_scheme(tmp_path: Path) -> None:
    keep = tmp_path / "scheme"
    result = subprocess.run(
        [sys.executable, "-m", "broker.cli", "demo", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    table = result.stdout
    for outcome in (" yes ", " no ", " no-match ", " undetermined "):
        assert outcome in table
    assert "(DWP provider stopped)" in table
    # Blue Badge checks from credentials; a council-asserted online application refused
    assert table.count("(credential)") == 4
    refused = next(line for line in table.splitlines() if "credential-required" in line)
    assert " refused 403 " in refused
    assert "21 of 21 receipts proven" in table  # each council proved its answers' records
    # ... under the scheme's witness policy: both witnesses (their own processes) cosigned
    assert "cosigned by 2 of 2 witnesses (policy: 2 of 2 in dev-witnesses)" in table
    # two councils' bands for the same resident, and the old band before Coventry's change
    ctr = [line.split() for line in table.splitlines() if " council-tax-reduction " in line]
    assert [(row[2], row[4]) for row in ctr] == [
        ("today", "reduction-75"),
        ("2026-03-31", "reduction-85"),
        ("today", "standard-50"),
    ]
    # free school meals through DWP's CIS API: the adapter joined the running scheme
    cis = [row.split() for row in table.splitlines() if " free-school-meals-from-dwp-cis " in row]
    assert [row[4] for row in cis] == ["yes", "no"]
    assert (keep / "providers" / "dwp-cis.toml").is_file()
    assert (keep / "stubs" / "dwp-cis-stub.toml").is_file()
    travel = [line for line in table.splitlines() if "concessionary-travel-disabled" in line]
    assert len(travel) == 1
    assert " yes " in travel[0]
    config = tomllib.loads((keep / "broker.toml").read_text())
    assert config["broker_id"] == "axb-broker"
    assert (keep / "registry.jwt").read_text().count(".") == 2
    assert (
        (keep / "keys" / "council-warwickshire-blue-badge.pem")
        .read_text()
        .startswith("-----BEGIN PRIVATE KEY-----")
    )
