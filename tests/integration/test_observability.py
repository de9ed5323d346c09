"""What an operator's Prometheus and Grafana read, checked with Prometheus's own ``promtool``
(Debian's ``prometheus`` package, installed by ``.ci/tools``): the alert rules in
deploy/prometheus parse and fire on the series they are meant for (``promtool test rules``);
a serving broker's /metrics page passes ``promtool check metrics``; every query of the
Grafana dashboard in deploy/grafana is valid PromQL and names only metrics the broker
exports (or Prometheus's own ``up``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.councils import blue_badge
from tests.support.servers import RunningBroker

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ax-broker.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        subprocess.run(["bash", str(ROOT / ".ci" / "tools")], check=False, timeout=600)
        found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is needed: .ci/tools installs Debian's prometheus package")
    return found


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_alert_rules_parse_and_fire_on_the_series_they_are_for() -> None:
    checked = run_promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run_promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_broken_alert_rule_is_refused_by_the_same_check(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yaml"
    broken.write_text(RULES.read_text().replace("sum by (le) (rate(", "sum by (le (rate(", 1))
    checked = run_promtool("check", "rules", str(broken))
    assert checked.returncode != 0


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 6
    rules = tmp_path / "dashboard-queries.yaml"
    rules.write_text(  # promtool parses recording rules: one per dashboard query
        json.dumps(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"dashboard:query{n}", "expr": q}
                            for n, q in enumerate(queries)
                        ],
                    }
                ]
            }
        )
    )
    checked = run_promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_the_metrics_page_passes_promtool_and_has_every_series_the_dashboard_and_alerts_use(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    assert await blue_badge(blue_badge_client) == "yes"
    async with aiohttp.ClientSession() as session, session.get(f"{broker.url}/metrics") as got:
        assert got.status == 200
        page = await got.text()
    checked = run_promtool("check", "metrics", stdin=page)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    exported = set(re.findall(r"^# TYPE (\w+) ", page, flags=re.MULTILINE))
    used = set()
    for query in [*dashboard_queries(), RULES.read_text()]:
        used |= set(re.findall(r"\b(axb_\w+?)(?:_bucket|_sum|_count)?\b[\[{(]", query))
    assert used, "the dashboard and the rules query the broker's metrics"
    counters = {name.removesuffix("_total") for name in used}
    assert counters <= {name.removesuffix("_total") for name in exported}, used - exported


def sample(page: str, name: str, **labels: str) -> float:
    """The value of the series ``name`` with exactly ``labels`` on a /metrics page."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in page.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, _, value = line.rpartition(" ")
        head, _, rest = series.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if head == name and found == wanted:
            return float(value)
    raise AssertionError(f"no {name}{{{wanted}}} on the page")


async def test_the_metrics_count_outcomes_by_check_and_requester_and_time_providers_and_the_log(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    """The issue's metric set, each series moved by the work that should move it: outcomes by
    check and requester (a refusal too), provider call time, circuit state and calls in
    flight, the log's append and group-commit times and batch sizes, its size and checkpoint
    age, admission errors, and this process (with its pid, to tell workers apart)."""
    assert await blue_badge(blue_badge_client) == "yes"
    assert await blue_badge(blue_badge_client, "bb-no") == "no"
    with pytest.raises(CheckFailed):
        await blue_badge_client.check(
            "free-school-meals",
            purpose="free-school-meals-application",
            subject=subject_of("fsm-no"),
            assurance="P2",
        )
    async with aiohttp.ClientSession() as session, session.get(f"{broker.url}/metrics") as got:
        page = await got.text()
    council = blue_badge_client.member_id
    outcome = "axb_check_outcomes_total"
    assert sample(page, outcome, check="blue-badge-automatic", requester=council, outcome="yes")
    assert sample(page, outcome, check="blue-badge-automatic", requester=council, outcome="no")
    assert sample(page, outcome, check="free-school-meals", requester=council, outcome="refused")
    assert sample(page, "axb_provider_call_seconds_count", provider="dwp-reference") >= 2
    assert sample(page, "axb_provider_circuit_state", provider="dwp-reference") == 0  # closed
    assert sample(page, "axb_provider_in_flight", provider="dwp-reference") == 0
    assert sample(page, "axb_log_append_seconds_count") >= 3  # two answers and the refusal
    assert sample(page, "axb_log_batch_records_count") >= 1
    assert sample(page, "axb_log_batch_records_sum") >= 3
    assert sample(page, "axb_log_commit_seconds_count") >= 1
    assert sample(page, "axb_log_records") >= 3
    assert sample(page, "axb_admission_errors_total") == 0
    assert sample(page, "axb_worker_info", pid=str(os.getpid())) == 1  # the broker runs here
    assert sample(page, "process_resident_memory_bytes") > 0
    assert "axb_checkpoint_age_seconds " in page
