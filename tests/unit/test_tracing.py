"""``traceparent`` as W3C Trace Context defines it: a well-formed header is taken, anything
else is ignored (never refused), and a provider gets a child with the same trace id."""

from __future__ import annotations

import contextvars

import pytest

from connectors.tracing import accept, outgoing_headers, parse_traceparent

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_well_formed_traceparent_is_taken() -> None:
    parsed = parse_traceparent(GOOD)
    assert parsed is not None
    assert (parsed.trace_id, parsed.parent_id, parsed.flags) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "01",
    )
    assert parsed.header == GOOD


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        GOOD + "-extra",  # version 00 has exactly four fields
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    parsed = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
    assert parsed is not None
    assert parsed.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_the_provider_gets_a_child_of_the_current_request_and_nothing_without_one() -> None:
    def within_a_request(value: str | None) -> dict[str, str]:
        accept(value)
        return outgoing_headers()

    sent = contextvars.copy_context().run(within_a_request, GOOD)
    child = parse_traceparent(sent["traceparent"])
    assert child is not None
    assert child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child.parent_id != "00f067aa0ba902b7"
    assert child.flags == "01"
    assert contextvars.copy_context().run(within_a_request, "garbage") == {}
    assert contextvars.copy_context().run(within_a_request, None) == {}
