"""RFC 7512 ``pkcs11:`` URIs as configs name keys: what is read, and what is refused."""

from __future__ import annotations

import pytest

from connectors.errors import ConfigError
from connectors.pkcs11 import Pkcs11Uri, is_pkcs11_uri, parse_pkcs11_uri


def test_reads_token_object_module_and_pin_source() -> None:
    uri = parse_pkcs11_uri(
        "pkcs11:token=axb%20prod;object=axb-broker?module-path=/usr/lib/softhsm/libsofthsm2.so"
        "&pin-source=file:/run/secrets/pin"
    )
    assert uri == Pkcs11Uri(
        token="axb prod",
        object="axb-broker",
        module_path="/usr/lib/softhsm/libsofthsm2.so",
        pin_source="file:/run/secrets/pin",
    )


def test_a_written_uri_reads_back_the_same() -> None:
    uri = Pkcs11Uri(token="t;1", object="a=b", id=b"\x00\xff", module_path="/m.so")
    assert parse_pkcs11_uri(str(uri)) == uri


def test_id_is_read_as_bytes() -> None:
    assert parse_pkcs11_uri("pkcs11:token=t;id=%01%A0").id == b"\x01\xa0"


def test_scheme_is_recognised_whatever_its_case_and_a_path_is_not() -> None:
    assert is_pkcs11_uri("PKCS11:token=t")
    assert not is_pkcs11_uri("keys/axb-broker.pem")
    assert not is_pkcs11_uri(None)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("pkcs11:token=t;object=k?pin-value=1234", "pin-value is refused"),
        ("pkcs11:object=k", "name the token"),
        ("pkcs11:token=t;token=u", "appears twice"),
        ("pkcs11:token=t;slot-id=3", "unsupported path attribute"),
        ("pkcs11:token=t?module-name=softhsm2", "unsupported query attribute"),
        ("pkcs11:token=t;type=secret-key", "type must be private"),
        ("pkcs11:token=t;object", "malformed path attribute"),
        ("pkcs11:token=%ff", "not UTF-8"),
        ("pkcs11:token=t;id=%zz", "not percent-encoded"),
        ("file:keys/axb-broker.pem", "not a pkcs11: URI"),
    ],
)
def test_refuses_uris_it_cannot_read_exactly(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_pkcs11_uri(text)


def test_the_pin_never_appears_in_what_a_uri_shows() -> None:
    uri = parse_pkcs11_uri("pkcs11:token=t;object=k?pin-source=file:/secret/pin")
    assert "secret" not in uri.shown
