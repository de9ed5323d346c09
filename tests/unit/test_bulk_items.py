"""The pure half of bulk checks: manifests, items files read row by row, results files."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from trust import bulk, jws
from trust.bulk import BulkManifest, InvalidItems, ItemsReader
from trust.errors import InvalidMessage, VerificationError
from trust.keys import SigningKey

TODAY = date(2026, 12, 1)
ROW = b'{"ref":"r1","subject":{"family_name":"Sampleton","date_of_birth":"1961-07-02"}}\n'
CSV = b"ref,family_name,date_of_birth\r\nr1,Sampleton,1961-07-02\r\nr2,Other,1970-01-01\r\n"


def manifest(body: bytes, *, items: int, fmt: bulk.ItemsFormat = "ndjson") -> BulkManifest:
    return BulkManifest(
        requester="council-x",
        jti="j" * 24,
        issued_at=0,
        expires_at=60,
        check="free-school-meals",
        purpose="free-school-meals-application",
        lawful_basis="public-task",
        as_of=TODAY,
        assurance=None,
        items=items,
        items_sha256=bulk.digest_of(body),
        format=fmt,
    )


def read(
    body: bytes, *, items: int, fmt: bulk.ItemsFormat = "ndjson", piece: int = 7, **kw: object
) -> list[bulk.BulkRow]:
    reader = ItemsReader(
        manifest(body, items=items, fmt=fmt),
        required_fields=kw.pop("required", ("family_name", "date_of_birth")),  # type: ignore[arg-type]
        consent_required=bool(kw.pop("consent", False)),
        today=TODAY,
        max_items=int(kw.pop("max_items", 100_000)),  # type: ignore[call-overload]
    )
    rows: list[bulk.BulkRow] = []
    for start in range(0, len(body), piece):
        rows += reader.feed(body[start : start + piece])
    return rows + reader.finish()


def test_reads_ndjson_rows_fed_in_small_pieces() -> None:
    rows = read(ROW + ROW.replace(b"r1", b"r2"), items=2)
    assert [r.ref for r in rows] == ["r1", "r2"]
    assert rows[0].subject.fields["family_name"] == "Sampleton"
    assert "Sampleton" not in repr(rows[0])


def test_reads_csv_rows_with_a_header() -> None:
    rows = read(CSV, items=2, fmt="csv")
    assert [(r.row, r.ref) for r in rows] == [(1, "r1"), (2, "r2")]


def test_refuses_a_digest_that_does_not_match_the_file() -> None:
    reader = ItemsReader(
        manifest(b"other", items=1),
        required_fields=(),
        consent_required=False,
        today=TODAY,
        max_items=10,
    )
    reader.feed(ROW)
    with pytest.raises(InvalidItems) as refused:
        reader.finish()
    assert refused.value.field == "items_sha256"


def test_refuses_a_count_that_does_not_match_the_file() -> None:
    with pytest.raises(InvalidItems) as refused:
        read(ROW, items=2)
    assert refused.value.field == "items"


def test_names_the_row_and_field_of_a_bad_date_without_echoing_it() -> None:
    bad = ROW.replace(b"r1", b"r2").replace(b"1961-07-02", b"1961-13-02")
    with pytest.raises(InvalidItems) as refused:
        read(ROW + bad, items=2)
    assert (refused.value.row, refused.value.field) == (2, "date_of_birth")
    assert "1961-13-02" not in str(refused.value)


def test_refuses_duplicate_row_references() -> None:
    with pytest.raises(InvalidItems) as refused:
        read(ROW + ROW, items=2)
    assert (refused.value.row, refused.value.field) == (2, "ref")


def test_refuses_rows_beyond_the_limit() -> None:
    body = b"".join(ROW.replace(b"r1", f"r{i}".encode()) for i in range(5))
    with pytest.raises(InvalidItems) as refused:
        read(body, items=5, max_items=3)
    assert refused.value.row == 4


def test_refuses_invalid_utf8_naming_the_row() -> None:
    bad = ROW.replace(b"r1", b"r2").replace(b"Sampleton", b"Sam\xffpleton")
    with pytest.raises(InvalidItems) as refused:
        read(ROW + bad, items=2)
    assert refused.value.row == 2
    assert "UTF-8" in str(refused.value)


def test_refuses_a_ten_thousand_character_name() -> None:
    bad = ROW.replace(b"Sampleton", b"S" * 10_000)
    with pytest.raises(InvalidItems) as refused:
        read(bad, items=1)
    assert (refused.value.row, refused.value.field) == (1, "family_name")


def test_refuses_a_line_longer_than_the_bound_before_it_ends() -> None:
    reader = ItemsReader(
        manifest(b"", items=1), required_fields=(), consent_required=False, today=TODAY, max_items=1
    )
    reader.feed(b"x" * 1000)  # a line in progress is held, up to the bound
    with pytest.raises(InvalidItems, match="longer"):
        reader.feed(b"x" * bulk.MAX_LINE_BYTES)


def test_refuses_a_formula_as_a_reference_and_never_echoes_it() -> None:
    body = b"ref,family_name,date_of_birth\r\n=cmd|' /C calc'!A0,Sampleton,1961-07-02\r\n"
    with pytest.raises(InvalidItems) as refused:
        read(body, items=1, fmt="csv")
    assert refused.value.field == "ref"
    assert "cmd" not in str(refused.value)


def test_a_formula_in_a_name_is_data_not_an_echo() -> None:
    body = b"ref,family_name,date_of_birth\r\nr1,=HYPERLINK(x),1961-07-02\r\n"
    rows = read(body, items=1, fmt="csv")
    assert rows[0].subject.fields["family_name"] == "=HYPERLINK(x)"  # sent to no spreadsheet


def test_requires_the_fields_and_consent_the_job_needs() -> None:
    with pytest.raises(InvalidItems) as refused:
        read(ROW, items=1, required=("family_name", "date_of_birth", "nino"))
    assert refused.value.field == "nino"
    with pytest.raises(InvalidItems) as refused:
        read(ROW, items=1, consent=True)
    assert refused.value.field == "consent"


def test_results_csv_cells_are_spreadsheet_safe() -> None:
    assert bulk.result_csv("=cmd", "yes") == b"'=cmd,yes\r\n"
    assert bulk.result_csv("a,b", "no") == b'"a,b",no\r\n'


def test_duplicate_subjects_share_one_key_whatever_their_spacing() -> None:
    body = ROW + ROW.replace(b"r1", b"r2").replace(b"Sampleton", b"  Sampleton ")
    first, second = read(body, items=2)
    assert first.subject_key() == second.subject_key()


def test_results_manifest_round_trips_and_binds_the_file() -> None:
    key = SigningKey.generate()
    digests = bulk.ResultsDigests()
    digests.add("r1", "yes")
    body = bulk.result_ndjson("r1", "yes")
    results = bulk.BulkResults(
        broker="broker",
        requester="council-x",
        jti="k" * 24,
        job="J" * 22,
        manifest_jti="j" * 24,
        status="completed",
        items=1,
        results=1,
        records=1,
        sha256=digests.digests(),
        first_index=4,
        last_index=4,
    )
    token = jws.sign(bulk.results_claims(results, now=100), key, bulk.BULK_RESULTS)
    verified = jws.verify(
        token,
        bulk.BULK_RESULTS,
        keys=lambda kid: jws.TrustedKey("broker", key.verifying_key),
        audience="council-x",
        now=100,
    )
    parsed = bulk.parse_results(verified, requester="council-x")
    assert (parsed.first_index, parsed.last_index) == (4, 4)
    bulk.verify_results_file(parsed, body, "ndjson")
    with pytest.raises(VerificationError):
        bulk.verify_results_file(parsed, body.replace(b"yes", b"no"), "ndjson")


def claims_of_manifest(**changes: Any) -> dict[str, Any]:
    """A council's manifest claims: one CSV item unless ``changes`` say otherwise."""
    options: dict[str, Any] = {"items": 1, **changes}
    return bulk.manifest_claims(
        requester="c",
        broker="b",
        now=0,
        check="free-school-meals",
        purpose="p",
        items_sha256=bulk.digest_of(b""),
        format="csv",
        **options,
    )


def test_manifest_over_the_item_limit_is_refused() -> None:
    claims = claims_of_manifest(items=11)
    verified = jws.Verified("c", "k", claims["jti"], 0, 120, claims)
    with pytest.raises(InvalidMessage, match="at most 10"):
        bulk.parse_manifest(verified, today=TODAY, max_items=10)


def test_a_jobs_items_in_flight_never_exceed_what_its_providers_take_at_once() -> None:
    """Batches fill when many items are in flight, but a provider without batches takes only
    ``max_concurrency`` calls: more items in flight would queue for it and spend their check
    deadline there."""
    from broker.bulk.runner import items_in_flight
    from trust.policy import PlannedCall

    def call(max_batch: int, max_concurrency: int = 32) -> PlannedCall:
        return PlannedCall(
            "p",
            "https://p.test",
            1000,
            ("a",),
            ("family_name",),
            max_concurrency=max_concurrency,
            max_batch=max_batch,
        )

    assert items_in_flight(250, [call(250), call(250)]) == 250
    assert items_in_flight(250, [call(250), call(1)]) == 32  # the one without batches
    assert items_in_flight(250, [call(4, max_concurrency=8)]) == 32
    assert items_in_flight(10, [call(250)]) == 10
    assert items_in_flight(250, []) == 250  # nothing to call (every provider skipped)


def _results(**changes: object) -> bulk.BulkResults:
    digests = bulk.ResultsDigests()
    digests.add("r1", "yes")
    digests.add("r2", "no")
    fields: dict[str, object] = {
        "broker": "broker",
        "requester": "council-x",
        "jti": bulk.notice_jti("J" * 32),
        "job": "J" * 32,
        "manifest_jti": "j" * 24,
        "status": "completed",
        "items": 2,
        "results": 2,
        "records": 2,
        "sha256": digests.digests(),
        "first_index": 4,
        "last_index": 5,
    }
    return bulk.BulkResults(**{**fields, **changes})  # type: ignore[arg-type]


def _verified_notice(claims: dict[str, object], key: SigningKey, now: int = 100) -> jws.Verified:
    token = jws.sign(claims, key, bulk.BULK_NOTICE)
    return jws.verify(
        token,
        bulk.BULK_NOTICE,
        keys=lambda kid: jws.TrustedKey("broker", key.verifying_key),
        audience="council-x",
        now=now,
    )


def test_a_notice_round_trips_and_refuses_what_does_not_add_up() -> None:
    key = SigningKey.generate()
    counts = {"yes": 1, "no": 1, "no-match": 0, "undetermined": 0, "refused": 0}
    notice = bulk.BulkNotice(results=_results(), counts=counts, reason=None)
    claims = bulk.notice_claims(notice, now=100)
    parsed = bulk.parse_notice(_verified_notice(claims, key), requester="council-x")
    assert parsed == notice
    refused = [
        {**claims, "counts": {**counts, "yes": 2}},  # more rows than results
        {**claims, "counts": {"yes": 2}},  # an outcome missing
        {**claims, "counts": {**counts, "maybe": 0}},
        {**claims, "jti": "k" * 24},  # not its job's notice
        {**claims, "status": "running"},  # not an end
        {**claims, "reason": "x" * 201},
    ]
    for bad in refused:
        with pytest.raises(InvalidMessage):
            bulk.parse_notice(_verified_notice(bad, key), requester="council-x")
    with pytest.raises(VerificationError):  # a results manifest is not a notice
        jws.verify(
            jws.sign(claims, key, bulk.BULK_RESULTS),
            bulk.BULK_NOTICE,
            keys=lambda kid: jws.TrustedKey("broker", key.verifying_key),
            audience="council-x",
            now=100,
        )


def test_a_manifest_asks_for_a_notice_only_with_a_boolean() -> None:
    base = claims_of_manifest(notify=True)
    verified = jws.Verified("c", "k", base["jti"], 0, 120, base)
    parsed = bulk.parse_manifest(verified, today=TODAY, max_items=10)
    assert parsed.notify is True
    assert bulk.manifest_from_json(bulk.manifest_json(parsed)) == parsed
    kept_before = {k: v for k, v in bulk.manifest_json(parsed).items() if k != "notify"}
    assert bulk.manifest_from_json(kept_before).notify is False  # a job stored before notices
    for value in ("yes", 1, None):
        claims = {**base, "notify": value}
        with pytest.raises(InvalidMessage, match="notify"):
            bulk.parse_manifest(
                jws.Verified("c", "k", base["jti"], 0, 120, claims), today=TODAY, max_items=10
            )
    callback = {**base, "callback_url": "https://evil.example/"}  # the manifest names no URL
    with pytest.raises(InvalidMessage, match="unknown"):
        bulk.parse_manifest(
            jws.Verified("c", "k", base["jti"], 0, 120, callback), today=TODAY, max_items=10
        )
