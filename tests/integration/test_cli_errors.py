"""Every ``axb`` command, attacked with what a user gets wrong: a missing file, a malformed one
(not TOML or JSON, JSON of the wrong shape, binary garbage), a wrong config (a key file that is
not there, wrong types, a config of the wrong kind), an unreachable broker, a port in use.

Each attack runs ``axb`` as a real process and must fail with a non-zero exit and exactly one
line on stderr, ``axb: <what failed>: <message>``: the error boundary's line, never a
traceback, never click's usage screen. The commands are listed from the click tree, so a new
command without an attack fails :func:`test_every_command_is_attacked`.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.cli.common import DATE
from broker.scheme import dev as devscheme
from trust.cosignature import generate_cosigner

GARBAGE = bytes(range(256)) * 8  # not UTF-8, so not TOML, JSON or a PEM either
COUNCIL = devscheme.COUNCIL_BLUE_BADGE
PROVIDER = devscheme.DWP
STEP_TIMEOUT_S = 30
# the module's attacks run once, in the first test's setup (about 100 processes, four at a
# time): on a busy 2-core machine that took 180 s, past the suite's 120 s per test
pytestmark = pytest.mark.timeout(400)
UNREACHABLE = "Connect call failed"


@dataclass(frozen=True)
class Attack:
    """``axb COMMAND ARGS`` (``{name}`` placeholders are files of :func:`ground`), the exit
    code it must end with, and a fragment its one line must say (the file or the cause)."""

    command: str
    what: str
    exit_code: int
    says: str
    args: str

    @property
    def id(self) -> str:
        return f"{self.command}: {self.what}"

    def argv(self, ground: dict[str, str]) -> list[str]:
        """The command line, its placeholders filled in (twice: a word may name a file)."""
        names = WORDS | ground
        return [*self.command.split(), *self.args.format_map(names).format_map(names).split()]


def config_attacks(command: str, wrong_kind: str, after: str = "") -> list[Attack]:
    """What every ``--config`` command gets: a missing file, binary garbage, another kind."""
    return [
        Attack(command, "missing config", 2, "missing", f"--config {{missing}} {after}"),
        Attack(command, "config is garbage", 2, "garbage", f"--config {{garbage}} {after}"),
        Attack(command, "config of another kind", 2, "", f"--config {wrong_kind} {after}"),
    ]


# Placeholders in an attack's args, besides the files of `ground`.
WORDS = {
    "check": f"{devscheme.BLUE_BADGE_CHECK} --purpose blue-badge-application"
    " --family-name Sampleton --date-of-birth 1961-07-02",
    "subject": "--family-name Sampleton --date-of-birth 1961-07-02",
    "register": "--id new --name New --endpoint https://provider.example/v1/attributes"
    " --out {out} --public-key",
    "conform": f"http://127.0.0.1:9 --provider-id {PROVIDER} --scheme",
    "council": COUNCIL,
    "bulk": f"--check {devscheme.FSM_CHECK} --purpose free-school-meals-application",
    "log_export": "{garbage} --log-key {log_key}",
}
NO_LINK = "Cannot connect"  # what aiohttp says of a port that refuses connections

ATTACKS: tuple[Attack, ...] = (
    Attack("demo", "keep folder under a file", 1, "garbage", "--keep {under_a_file}"),
    *config_attacks("serve", "{council_config}"),
    Attack("serve", "key file missing", 2, "nobody.pem", "--config {broker_missing_key}"),
    Attack("serve", "wrong types", 2, "port", "--config {broker_wrong_types}"),
    Attack("serve", "port in use", 1, "in use", "--config {broker_port_taken}"),
    Attack(
        "serve",
        "workers without Redis",
        2,
        "redis_url",
        "--config {broker_config} --workers 2",
    ),
    Attack("healthcheck", "nothing listening", 1, NO_LINK, "--url http://127.0.0.1:9/healthz"),
    *config_attacks("check", "{broker_config}", "{check}"),
    Attack("check", "key file missing", 2, "nobody.pem", "--config {council_no_key} {check}"),
    Attack("check", "wrong types", 2, "member_id", "--config {council_wrong_types} {check}"),
    Attack("check", "broker unreachable", 1, NO_LINK, "--config {council_no_link} {check}"),
    *config_attacks("consent withdraw", "{broker_config}", "consent-1"),
    Attack("consent withdraw", "broker unreachable", 1, NO_LINK, "--config {council_no_link} c"),
    *config_attacks("provider serve", "{council_config}"),
    Attack("provider serve", "key file missing", 2, "nobody.pem", "--config {provider_no_key}"),
    Attack("provider serve", "port in use", 1, "in use", "--config {provider_port_taken}"),
    *config_attacks("provider stub", "{council_config}"),
    Attack("provider conformance", "no scheme folder", 2, "missing", "{conform} {missing}"),
    Attack(
        "provider conformance", "registry is garbage", 2, "registry", "{conform} {bad_registry}"
    ),
    Attack(
        "provider conformance",
        "subjects are a list",
        2,
        "known",
        "{conform} {scheme} --subject-json {json_list}",
    ),
    Attack("provider keygen", "out is under a file", 1, "garbage", "--out {under_a_file} --id x"),
    Attack(
        "provider registration",
        "public key is garbage",
        2,
        "not UTF-8",
        "{register} {garbage} --attributes {attributes_ok}",
    ),
    Attack(
        "provider registration",
        "public key is a list",
        2,
        "JSON object",
        "{register} {json_list} --attributes {attributes_ok}",
    ),
    Attack(
        "provider registration",
        "attributes not TOML",
        2,
        "not TOML",
        "{register} {public_jwk} --attributes {not_toml}",
    ),
    Attack(
        "provider registration",
        "attributes of the wrong shape",
        2,
        "name",
        "{register} {public_jwk} --attributes {attributes_wrong}",
    ),
    Attack("scheme review", "garbage", 2, "not UTF-8", "{garbage}"),
    Attack("scheme review", "not JSON", 2, "not JSON", "{not_json}"),
    Attack("scheme review", "a JSON list", 2, "JSON object", "{json_list}"),
    Attack("scheme review", "roles not a list", 2, "roles", "{bad_roles}"),
    Attack("scheme review", "attributes not objects", 2, "attributes", "{bad_attributes}"),
    Attack("scheme add-member", "no scheme folder", 2, "missing", "--scheme {missing} {member}"),
    Attack("scheme add-member", "garbage", 2, "not UTF-8", "--scheme {scheme} {garbage}"),
    Attack("scheme add-member", "roles not a list", 2, "roles", "--scheme {scheme} {bad_roles}"),
    Attack("scheme add-purpose", "garbage", 2, "not UTF-8", "--scheme {scheme} {garbage}"),
    Attack("scheme add-purpose", "a JSON string", 2, "object", "--scheme {scheme} {json_string}"),
    Attack("scheme add-purpose", "no fields", 2, "p3", "--scheme {scheme} {purpose_incomplete}"),
    Attack("scheme add-check", "garbage", 2, "not UTF-8", "--scheme {scheme} {garbage}"),
    Attack("scheme add-check", "a JSON list", 2, "object", "--scheme {scheme} {json_list}"),
    Attack("scheme add-check", "no versions", 2, "check", "--scheme {scheme} {check_incomplete}"),
    Attack("scheme add-key", "garbage", 2, "not UTF-8", "--scheme {scheme} {council} {garbage}"),
    Attack(
        "scheme add-key", "a JSON string", 2, "key", "--scheme {scheme} {council} {json_string}"
    ),
    Attack("scheme add-key", "private", 2, "private", "--scheme {scheme} {council} {private_jwk}"),
    Attack(
        "scheme permit", "source is garbage", 2, "not JSON", "--scheme {bad_source} {council} p"
    ),
    Attack("scheme permit", "unknown member", 2, "nobody", "--scheme {scheme} nobody p"),
    Attack("scheme suspend", "source is a list", 2, "object", "--scheme {list_source} {council}"),
    Attack("scheme suspend", "unknown member", 2, "nobody", "--scheme {scheme} nobody"),
    Attack("scheme reinstate", "source types", 2, "seq", "--scheme {mistyped_source} {council}"),
    Attack("scheme reinstate", "unknown member", 2, "nobody", "--scheme {scheme} nobody"),
    Attack("scheme retire-key", "no scheme folder", 2, "missing", "--scheme {missing} {council} k"),
    Attack("scheme retire-key", "unknown key", 2, "no-kid", "--scheme {scheme} {council} no-kid"),
    Attack(
        "scheme import-did-document",
        "garbage",
        2,
        "not UTF-8",
        f"--scheme {{scheme}} {devscheme.IDP} {{garbage}}",
    ),
    Attack(
        "scheme import-did-document",
        "a DID document that is a list",
        2,
        "JSON object",
        f"--scheme {{scheme}} {devscheme.IDP} {{json_list}}",
    ),
    Attack(
        "scheme import-did-document",
        "a member that is no identity provider",
        2,
        "identity_provider",
        "--scheme {scheme} {council} {json_list}",
    ),
    Attack(
        "identity issue",
        "unknown test identity",
        2,
        "no test identity",
        "--scheme {scheme} --identity nobody --council {council}",
    ),
    Attack(
        "identity issue",
        "no scheme folder",
        2,
        "missing",
        "--scheme {missing} --identity bb-no --council {council}",
    ),
    Attack("scheme publish", "source is garbage", 2, "not JSON", "--scheme {bad_source}"),
    Attack("scheme publish", "no operator key", 2, "operator key", "--scheme {keyless}"),
    Attack("audit verify", "export missing", 2, "missing", "{missing} --log-key {log_key}"),
    Attack("audit verify", "log key is garbage", 2, "not UTF-8", "{garbage} --log-key {garbage}"),
    Attack("audit verify", "held missing", 2, "missing", "{log_export} --held {missing}"),
    Attack("audit verify", "held is garbage", 2, "not UTF-8", "{log_export} --held {garbage}"),
    *config_attacks("audit export", "{broker_config}", "--out {out}"),
    Attack(
        "audit export", "broker unreachable", 1, NO_LINK, "--config {auditor_no_link} --out {out}"
    ),
    *config_attacks("audit subject-access", "{broker_config}", "{subject}"),
    Attack(
        "audit subject-access",
        "broker unreachable",
        1,
        NO_LINK,
        "--config {auditor_no_link} {subject}",
    ),
    *config_attacks("audit records", "{broker_config}"),
    Attack("audit records", "key file missing", 2, "nobody.pem", "--config {auditor_no_key}"),
    Attack("audit records", "wrong types", 2, "broker_url", "--config {auditor_wrong_types}"),
    Attack("audit records", "broker unreachable", 1, NO_LINK, "--config {auditor_no_link}"),
    *config_attacks("audit receipt", "{broker_config}", "{answer_token}"),
    Attack("audit receipt", "answer is garbage", 2, "UTF-8", "--config {auditor_config} {garbage}"),
    Attack(
        "audit receipt",
        "broker unreachable",
        1,
        NO_LINK,
        "--config {auditor_no_link} {answer_token}",
    ),
    *config_attacks("audit console", "{broker_config}"),
    Attack(
        "audit console",
        "port in use",
        1,
        "in use",
        "--config {auditor_config} --port {taken_port}",
    ),
    *config_attacks("bulk submit", "{broker_config}", "{bulk} {items}"),
    Attack(
        "bulk submit",
        "items file missing",
        2,
        "missing",
        "--config {council_config} {bulk} {missing}",
    ),
    Attack(
        "bulk submit", "broker unreachable", 1, NO_LINK, "--config {council_no_link} {bulk} {items}"
    ),
    *[
        attack
        for command in ("bulk status", "bulk cancel")
        for attack in (
            *config_attacks(command, "{broker_config}", "job-1"),
            Attack(command, "broker unreachable", 1, NO_LINK, "--config {council_no_link} job-1"),
        )
    ],
    *config_attacks("bulk results", "{broker_config}", "--out {out} job-1"),
    Attack(
        "bulk results",
        "broker unreachable",
        1,
        NO_LINK,
        "--config {council_no_link} --out {out} job-1",
    ),
    *config_attacks("witness serve", "{council_config}"),
    Attack("witness serve", "key file missing", 2, "nobody.skey", "--config {witness_no_key}"),
    Attack("witness serve", "port in use", 1, "in use", "--config {witness_port_taken}"),
    Attack("witness keygen", "out is under a file", 1, "garbage", "--out {under_a_file} --name w"),
    Attack("witness keygen", "bad name", 2, "witness key name", "--out {out}.skey --name a+b"),
    Attack("audit verify", "config missing", 2, "missing", "{log_export} --config {missing}"),
    *config_attacks("audit prune", "{council_config}", "--before 2020-01-01"),
    Attack(
        "audit prune",
        "key file missing",
        2,
        "nobody.pem",
        "--config {broker_missing_key} --before 2020-01-01",
    ),
)


def command_paths(group: click.Group, prefix: str = "") -> Iterator[str]:
    """Every runnable command under ``group``, as typed after ``axb``."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from command_paths(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}"


def with_line(text: str, key: str, value: str) -> str:
    """A TOML config with its first ``key = …`` line (the top-level one) replaced."""
    changed, count = re.subn(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text, count=1)
    assert count == 1, f"{key} is not a line of the config"
    return changed


def write(path: Path, content: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def scheme_variant(folder: Path, content: str | bytes, *, file: str = "registry-source") -> str:
    """A scheme folder holding only a broken registry source (or registry)."""
    relative = "registry.jwt" if file == "registry" else "operator/registry-source.json"
    write(folder / relative, content)
    return str(folder)


@pytest.fixture(scope="module")
def ground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The files and ports the attacks name: a development scheme and broken copies of its
    configs and documents. A port that refuses connections (bound, never listening) stands
    for an unreachable broker, and a listening one for a port in use; both are held open."""
    root = tmp_path_factory.mktemp("cli-errors")
    listeners = devscheme.Listeners()  # held, never served: every port in the scheme refuses
    scheme = devscheme.generate(root / "scheme", ports=listeners.ports)
    folder = scheme.folder
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    taken = socket.create_server(("127.0.0.1", 0))
    closed_url = f'"http://127.0.0.1:{closed.getsockname()[1]}"'
    taken_port = str(taken.getsockname()[1])
    council = folder.council_config(COUNCIL).read_text()
    auditor = folder.auditor_config(devscheme.AUDITOR).read_text()
    broker = folder.broker_config.read_text()
    provider = folder.provider_config(PROVIDER).read_text()
    source = json.loads(folder.registry_source.read_text())
    private_jwk = json.loads(folder.public_key(COUNCIL).read_text()) | {"d": "AAAA"}
    bad = root / "scheme-variants"
    providers = scheme.root / "broken-providers"  # not providers/: `serve --with-providers`
    nobody = '"../keys/nobody.pem"'
    variants = {  # a config with one line changed: name -> (where, config, key, new value)
        "council_no_link": (folder.council_config("no-link"), council, "broker_url", closed_url),
        "council_no_key": (folder.council_config("no-key"), council, "signing_key", nobody),
        "council_wrong_types": (folder.council_config("types"), council, "member_id", "7"),
        "auditor_no_link": (folder.auditor_config("no-link"), auditor, "broker_url", closed_url),
        "auditor_no_key": (folder.auditor_config("no-key"), auditor, "signing_key", nobody),
        "auditor_wrong_types": (folder.auditor_config("types"), auditor, "broker_url", "[1]"),
        "broker_missing_key": (
            scheme.root / "no-key.toml",
            broker,
            "signing_key",
            '"keys/nobody.pem"',
        ),
        "broker_wrong_types": (scheme.root / "types.toml", broker, "port", '"eighty"'),
        "broker_port_taken": (scheme.root / "port-taken.toml", broker, "port", taken_port),
        "provider_no_key": (providers / "no-key.toml", provider, "signing_key", nobody),
        "provider_port_taken": (providers / "port-taken.toml", provider, "port", taken_port),
    }
    files = {
        "missing": str(root / "missing"),
        "garbage": write(root / "garbage", GARBAGE),
        "not_json": write(root / "not.json", '{"id": "x", '),
        "not_toml": write(root / "not.toml", "[member\nid = "),
        "json_list": write(root / "list.json", "[1, 2, 3]"),
        "json_string": write(root / "string.json", '"a string"'),
        "under_a_file": str(root / "garbage" / "below"),
        "out": str(root / "written.json"),
        "answer_token": write(root / "answer.jwt", "not-an-answer-token\n"),
        "taken_port": taken_port,
        "items": write(
            root / "items.ndjson",
            json.dumps(
                {"ref": "r1", "subject": {"family_name": "S", "date_of_birth": "1961-07-02"}}
            ),
        ),
        "scheme": str(scheme.root),
        "log_key": str(folder.log_verifier_key),
        "public_jwk": str(folder.public_key(devscheme.AUDITOR)),
        "private_jwk": write(root / "private.jwk.json", json.dumps(private_jwk)),
        "council_config": str(folder.council_config(COUNCIL)),
        "auditor_config": str(folder.auditor_config(devscheme.AUDITOR)),
        "broker_config": str(folder.broker_config),
        "member": write(
            root / "registration.json",
            json.dumps({"id": "new-member", "name": "New", "roles": ["auditor"], "keys": []}),
        ),
        "bad_roles": write(
            root / "bad-roles.json", json.dumps({"id": "x", "name": "x", "roles": 5})
        ),
        "bad_attributes": write(
            root / "bad-attributes.json",
            json.dumps({"id": "x", "roles": [], "provider": {"attributes": ["a"]}}),
        ),
        "purpose_incomplete": write(root / "purpose-incomplete.json", '{"id": "p3"}'),
        "check_incomplete": write(root / "check-incomplete.json", '{"name": "c3"}'),
        "attributes_ok": write(
            root / "attributes.toml",
            '[[attribute]]\nname = "x"\ndescription = "y"\nrequired = ["family_name"]\n',
        ),
        "attributes_wrong": write(root / "attributes-wrong.toml", "[[attribute]]\nname = 1\n"),
        "bad_source": scheme_variant(bad / "garbage-source", GARBAGE),
        "list_source": scheme_variant(bad / "list-source", "[]"),
        "mistyped_source": scheme_variant(bad / "wrong-types", json.dumps(source | {"seq": "1"})),
        "keyless": scheme_variant(bad / "keyless", json.dumps(source)),
        "bad_registry": scheme_variant(bad / "garbage-registry", GARBAGE, file="registry"),
    }
    witness_key, _ = generate_cosigner("witness.test/cli")
    write(root / "witnesses" / "w.skey", witness_key + "\n")
    witness = (
        f'port = {taken_port}\nkey_file = "w.skey"\nstate = "w/state.sqlite3"\n'
        f'[[logs]]\nvkey_file = "{folder.log_verifier_key}"\n'
    )
    files["witness_port_taken"] = write(root / "witnesses" / "port-taken.toml", witness)
    files["witness_no_key"] = write(
        root / "witnesses" / "no-key.toml", witness.replace('"w.skey"', '"nobody.skey"')
    )
    for name, (path, config, key, value) in variants.items():
        files[name] = write(path, with_line(config, key, value))
    try:
        yield files
    finally:
        closed.close()
        listeners.close()
        taken.close()


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None: it had not ended after STEP_TIMEOUT_S
    stderr: str


async def run_axb_attack(args: list[str], limit: asyncio.Semaphore) -> Outcome:
    async with limit:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "broker.cli",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            _, err = await process.communicate()
            return Outcome(None, err.decode(errors="replace"))
        return Outcome(process.returncode, err.decode(errors="replace"))


@pytest.fixture(scope="module")
def outcomes(ground: dict[str, str], request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """Every selected attack (``-k`` runs fewer), each its own process, a few at a time."""
    chosen = [
        item.callspec.params["attack"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and hasattr(item, "callspec")
        and isinstance(item.callspec.params.get("attack"), Attack)  # not another module's
    ]

    async def run_all() -> list[Outcome]:
        limit = asyncio.Semaphore(4)
        return await asyncio.gather(*(run_axb_attack(a.argv(ground), limit) for a in chosen))

    return dict(zip((attack.id for attack in chosen), asyncio.run(run_all()), strict=True))


def test_every_command_is_attacked() -> None:
    commands = set(command_paths(main))
    attacked = {attack.command for attack in ATTACKS}
    assert commands - attacked == set(), "commands without an attack"
    assert attacked - commands == set(), "attacks on commands that do not exist"
    assert len({attack.id for attack in ATTACKS}) == len(ATTACKS), "attack ids are unique"


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.id)
def test_a_wrong_input_fails_with_one_line(attack: Attack, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[attack.id]
    assert outcome.exit_code is not None, f"still running after {STEP_TIMEOUT_S}s"
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("axb: "), lines[0]
    assert attack.says in lines[0]
    assert outcome.exit_code == attack.exit_code, lines[0]


@pytest.mark.parametrize(
    "written", ["1961-W26-7", "19610702", "1961-7-2", "1961-02-30", "", "٢٠٢٠-٠١-٠١"]
)
def test_a_date_is_written_yyyy_mm_dd_and_nothing_else(written: str) -> None:
    with pytest.raises(click.BadParameter, match="YYYY-MM-DD"):
        DATE.convert(written, None, None)
    assert DATE.convert("1961-07-02", None, None) == date(1961, 7, 2)


@pytest.mark.parametrize(
    "args",
    [
        "check --config c.toml x --purpose p --family-name F --date-of-birth 1961-W26-7",
        "check --config c.toml x --purpose p --family-name F --date-of-birth 1961-07-02"
        " --as-of 2026-W01-1",
        "audit subject-access --config a.toml --family-name F --date-of-birth 1961-W26-7",
        "audit prune --config b.toml --before 2020-W01-1",
    ],
    ids=["check --date-of-birth", "check --as-of", "subject-access --date-of-birth", "prune"],
)
def test_a_week_date_is_a_usage_error(args: str) -> None:
    result = CliRunner().invoke(main, args.split())
    assert result.exit_code == 2
    assert "is not a date written YYYY-MM-DD" in result.output
