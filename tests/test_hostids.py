"""Host ids in the LAC path (wire contract B.1) and the order template checks (B.3)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chalicelib import errors
from chalicelib.hostids import (
    HOSTID_TYPES,
    MAX_SEGMENT_CHARS,
    HostId,
    _decode_segment,
    canonical,
    check_template,
    encode_segment,
    parse_hostids,
)

FORMAT = (errors.HostIdFormat, "Invalid HostID format provided.")
UNSUPPORTED = (errors.HostIdTypeUnsupported, "HostID type is not supported.")
MISSING = (errors.HostIdMissing, "The required HostID is missing.")
TOO_MANY = (errors.HostIdTooMany, "Too many HostIDs of one type.")


def raised_by(call: Callable[[], object]) -> tuple[type, str]:
    """The exact class and message of the domain error ``call`` raises."""
    with pytest.raises(errors.KeyturnError) as caught:
        call()
    return type(caught.value), str(caught.value)


def parse_text(text: str) -> tuple[HostId, ...]:
    return parse_hostids(encode_segment(text))


def canonical_of(text: str) -> str:
    return canonical(parse_text(text))


# Decoding the segment.


def test_contract_example_segment_is_one_custom_host_id() -> None:
    assert parse_hostids("Q1VTVE9NPWE=") == (HostId("CUSTOM", "a"),)


def test_padding_is_optional() -> None:
    assert parse_hostids("Q1VTVE9NPWE") == parse_hostids("Q1VTVE9NPWE=")


def test_percent_encoded_padding_is_decoded() -> None:
    assert parse_hostids("Q1VTVE9NPWE%3D") == (HostId("CUSTOM", "a"),)


def test_segment_is_percent_decoded_only_once() -> None:
    assert raised_by(lambda: parse_hostids("Q1VTVE9NPWE%253D")) == FORMAT


def test_url_safe_base64_without_padding_decodes_like_standard() -> None:
    text = "HOSTNAME=build-01,USERNAME=ops@example"
    url_safe = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    assert parse_hostids(url_safe) == parse_text(text)


# Valid host id text never encodes to "+", "/", "-" or "_", so the alphabet rules are
# only visible in the decoded bytes: these tests look one level down.


def test_plus_is_a_base64_character_not_a_space() -> None:
    assert _decode_segment("Pj4+") == _decode_segment("Pj4%2B") == b">>>"


def test_url_safe_characters_decode_like_their_standard_counterparts() -> None:
    assert _decode_segment("Pj4-Pz8_") == _decode_segment("Pj4+Pz8/") == b">>>???"


def test_a_segment_mixing_both_alphabets_is_a_format_error() -> None:
    assert raised_by(lambda: _decode_segment("Pj4-Pz8/")) == FORMAT


@pytest.mark.parametrize(
    "segment",
    [
        "!!!",
        "Q1VTVE9NPWE!",  # a character outside both alphabets
        "Q1VT VE9NPWE=",  # whitespace
        "Q1VTVE9NPWE==",  # too much padding
        "=Q1VTVE9NPWE",  # padding in front
        "Q1VT=VE9NPWE",  # padding inside
        "Q1VTVE9NPWE=Q",  # data after padding
        "Q1VTV",  # a length no encoder produces
        "Q1VTVE9NPWF",  # non-zero unused bits: decodes to "CUSTOM=a" only if lax
        "Q1VTVE9NPWE%ZZ",  # a broken percent escape stays literal
    ],
)
def test_anything_that_is_not_strict_base64_is_a_format_error(segment: str) -> None:
    assert raised_by(lambda: parse_hostids(segment)) == FORMAT


@pytest.mark.parametrize("segment", ["", "=", "===="])
def test_an_empty_segment_is_a_format_error(segment: str) -> None:
    assert raised_by(lambda: parse_hostids(segment)) == FORMAT


def test_bytes_that_are_not_utf8_are_a_format_error() -> None:
    segment = base64.b64encode(b"CUSTOM=\xff").decode()
    assert raised_by(lambda: parse_hostids(segment)) == FORMAT


# Items and values.


def test_types_are_upper_cased_and_values_kept_as_sent_in_the_clients_order() -> None:
    assert parse_text("hostname=Build01,Custom=a") == (HostId("HOSTNAME", "Build01"), HostId("CUSTOM", "a"))


@pytest.mark.parametrize("text", ["CUSTOM=a,CUSTOM=a", "CUSTOM=a,CUSTOM=A",
                                  "ETHERNET=001A2B3C4D5E,ETHERNET=00-1a-2b-3c-4d-5e"])
def test_the_same_host_id_twice_is_a_format_error(text: str) -> None:
    assert raised_by(lambda: parse_text(text)) == FORMAT


def test_thirty_two_host_ids_parse_and_thirty_three_are_a_format_error() -> None:
    assert len(parse_text(",".join(f"CUSTOM=h{n}" for n in range(32)))) == 32
    assert raised_by(lambda: parse_text(",".join(f"CUSTOM=h{n}" for n in range(33)))) == FORMAT


def test_a_segment_over_2048_characters_is_a_format_error() -> None:
    encoded = encode_segment(f"CUSTOM={'v' * 250},HOSTNAME={'w' * 250}")
    assert parse_hostids(encoded) == (HostId("CUSTOM", "v" * 250), HostId("HOSTNAME", "w" * 250))
    percent_encoded = "".join(f"%{ord(c):02X}" for c in encoded)  # the same text, 2,076 characters
    assert len(percent_encoded) > MAX_SEGMENT_CHARS
    assert raised_by(lambda: parse_hostids(percent_encoded)) == FORMAT


def test_contract_doc_example_is_a_format_error_because_its_types_are_unknown() -> None:
    assert raised_by(lambda: parse_hostids("dHlwZTE9dmFsdWUxLHR5cGUyPXZhbHVlPTI=")) == FORMAT


def test_an_item_splits_on_its_first_equals_so_an_equals_in_the_value_is_a_format_error() -> None:
    assert raised_by(lambda: parse_text("CUSTOM=value=2")) == FORMAT


@pytest.mark.parametrize("text", ["CUSTOM", "CUSTOM=", "=a", "CUSTOM=a,", ",CUSTOM=a", "CUSTOM=a,,HOSTNAME=b"])
def test_items_that_are_not_type_equals_value_are_a_format_error(text: str) -> None:
    assert raised_by(lambda: parse_text(text)) == FORMAT


@pytest.mark.parametrize("text", ["NOPE=a", " CUSTOM=a", "CUSTOM =a", "b\u0131os=a"])
def test_unknown_types_are_a_format_error(text: str) -> None:
    # "b\u0131os" (dotless i) would upper-case to "BIOS" with str.upper(): types are ASCII.
    assert raised_by(lambda: parse_text(text)) == FORMAT


@pytest.mark.parametrize("text", ["CUSTOM=a b", "CUSTOM= a", "CUSTOM=a ", "CUSTOM=a\tb", "CUSTOM=a\n"])
def test_whitespace_in_a_value_is_a_format_error(text: str) -> None:
    assert raised_by(lambda: parse_text(text)) == FORMAT


@pytest.mark.parametrize("text", ["CUSTOM=a/b", "CUSTOM=a,b", "CUSTOM=\u00e9", "IPADDRESS=::1%eth0", "CUSTOM=a@b"])
def test_characters_outside_the_value_alphabet_are_a_format_error(text: str) -> None:
    assert raised_by(lambda: parse_text(text)) == FORMAT


def test_every_allowed_punctuation_character_is_accepted() -> None:
    assert parse_text("CUSTOM=a_b.c*d:e\\f-g") == (HostId("CUSTOM", "a_b.c*d:e\\f-g"),)


def test_a_value_of_255_characters_is_accepted() -> None:
    assert parse_text("CUSTOM=" + "x" * 255) == (HostId("CUSTOM", "x" * 255),)


def test_a_value_of_256_characters_is_a_format_error() -> None:
    assert raised_by(lambda: parse_text("CUSTOM=" + "x" * 256)) == FORMAT


def test_username_allows_an_at_sign() -> None:
    assert parse_text("USERNAME=ops@example") == (HostId("USERNAME", "ops@example"),)


def test_hostname_does_not_allow_an_at_sign() -> None:
    assert raised_by(lambda: parse_text("HOSTNAME=ops@example")) == FORMAT


@pytest.mark.parametrize("mac", ["00-1A-2B-3C-4D-5E", "001a2b3c4d5e", "00:1a:2b:3c:4d:5e", "001A2B3C4D5E"])
def test_ethernet_accepts_twelve_hex_digits_with_optional_separators(mac: str) -> None:
    assert parse_text(f"ETHERNET={mac}") == (HostId("ETHERNET", mac),)


@pytest.mark.parametrize(
    "mac",
    [
        "00-1A-2B-3C-4D",  # too short
        "001A2B3C4D5E6F",  # too long
        "00-1A-2B-3C-4D-5G",  # not hex
        "00-1A:2B-3C-4D-5E",  # mixed separators
        "001A-2B3C-4D5E",  # separators not between every pair
        "0-01A-2B-3C-4D-5E",  # separator inside a pair
        "00-1A-2B-3C-4D-5E-",  # trailing separator
        "001a.2b3c.4d5e",  # Cisco dots
    ],
)
def test_ethernet_rejects_anything_but_a_mac_address(mac: str) -> None:
    assert raised_by(lambda: parse_text(f"ETHERNET={mac}")) == FORMAT


def test_constructing_an_invalid_host_id_is_a_format_error() -> None:
    assert raised_by(lambda: HostId("custom", "a")) == FORMAT
    assert raised_by(lambda: HostId("CUSTOM", "a b")) == FORMAT


# Wire form and canonical key.


def test_types_and_display_names_are_listed_in_contract_order() -> None:
    assert list(HOSTID_TYPES.items())[:5] == [
        ("ETHERNET", "Ethernet"),
        ("USERNAME", "Username"),
        ("HOSTNAME", "Hostname"),
        ("IPADDRESS", "IP Address"),
        ("CUSTOM", "Custom"),
    ]
    assert list(HOSTID_TYPES)[5:] == [
        "DONGLE_HASPHL",
        "HARDDISK",
        "LONG",
        "BIOS",
        "WIN_PRODUCT_ID",
        "AWS_INSTANCE_ID",
        "GCE_ID",
        "AZURE_ID",
    ]


def test_to_wire_gives_name_raw_display_name_and_the_value_as_sent_in_that_order() -> None:
    (hostid,) = parse_text("ipaddress=10.0.0.1")
    assert list(hostid.to_wire().items()) == [("nameRaw", "IPADDRESS"), ("name", "IP Address"), ("value", "10.0.0.1")]


def test_canonical_upper_cases_values_and_strips_mac_separators() -> None:
    assert canonical_of("ETHERNET=00-1a-2b-3c-4d-5e,custom=Abc") == "CUSTOM=ABC,ETHERNET=001A2B3C4D5E"


def test_canonical_is_the_same_across_order_case_and_mac_separators() -> None:
    assert canonical_of("ETHERNET=00:1a:2b:3c:4d:5e,CUSTOM=abc") == canonical_of("custom=ABC,ethernet=001A2B3C4D5E")


def test_canonical_sorts_by_type_then_value() -> None:
    assert canonical_of("HOSTNAME=b,CUSTOM=z,HOSTNAME=a") == "CUSTOM=Z,HOSTNAME=A,HOSTNAME=B"


def test_canonical_collapses_the_same_host_id_given_twice_by_a_caller() -> None:
    ids = [HostId("CUSTOM", "a"), HostId("CUSTOM", "A"), HostId("ETHERNET", "001A2B3C4D5E"),
           HostId("ETHERNET", "00-1a-2b-3c-4d-5e")]
    assert canonical(ids) == "CUSTOM=A,ETHERNET=001A2B3C4D5E"


# Template checks.

TEMPLATE = {
    "types": [
        {"nameRaw": "CUSTOM", "name": "Custom", "min": 1, "max": 1},
        {"nameRaw": "HOSTNAME", "min": 0, "max": 2},
    ],
    "min": 1,
}


def check(text: str, template: dict[str, object] = TEMPLATE) -> None:
    check_template(parse_text(text), template)


def test_host_ids_within_the_template_pass() -> None:
    check("CUSTOM=a,HOSTNAME=b,HOSTNAME=c")


def test_a_type_the_template_does_not_list_is_unsupported() -> None:
    assert raised_by(lambda: check("CUSTOM=a,USERNAME=u")) == UNSUPPORTED


def test_an_unsupported_type_is_reported_before_a_missing_one() -> None:
    assert raised_by(lambda: check("USERNAME=u")) == UNSUPPORTED


def test_fewer_ids_of_a_type_than_its_min_is_missing() -> None:
    assert raised_by(lambda: check("HOSTNAME=b")) == MISSING


def test_fewer_ids_than_the_overall_min_is_missing() -> None:
    template = {"types": [{"nameRaw": "CUSTOM", "min": 0, "max": 5}], "min": 2}
    assert raised_by(lambda: check("CUSTOM=a", template)) == MISSING


def test_a_missing_type_is_reported_before_too_many_of_another() -> None:
    assert raised_by(lambda: check("HOSTNAME=a,HOSTNAME=b,HOSTNAME=c")) == MISSING


def test_more_ids_of_a_type_than_its_max_is_too_many() -> None:
    assert raised_by(lambda: check("CUSTOM=a,CUSTOM=b")) == TOO_MANY


def test_the_same_id_given_twice_counts_once_against_max() -> None:
    check_template([HostId("CUSTOM", "a"), HostId("CUSTOM", "A")], TEMPLATE)


def test_the_same_id_given_twice_counts_once_towards_min() -> None:
    template = {"types": [{"nameRaw": "CUSTOM", "min": 2}]}
    assert raised_by(lambda: check_template([HostId("CUSTOM", "a"), HostId("CUSTOM", "A")], template)) == MISSING


def test_absent_min_and_max_mean_none_required_and_no_limit() -> None:
    check("CUSTOM=a,CUSTOM=b,CUSTOM=c", {"types": [{"nameRaw": "CUSTOM"}]})


def test_a_template_without_types_supports_none() -> None:
    assert raised_by(lambda: check("CUSTOM=a", {"min": 1})) == UNSUPPORTED


# Properties.

_PLAIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.*:\\-"


@st.composite
def hostid_items(draw: st.DrawFn) -> tuple[str, str]:
    """A valid (type as a client might spell it, value) pair."""
    name = draw(st.sampled_from(sorted(HOSTID_TYPES)))
    if name == "ETHERNET":
        pairs = [draw(st.binary(min_size=1, max_size=1)).hex() for _ in range(6)]
        value = draw(st.sampled_from(["", "-", ":"])).join(pairs)
        value = "".join(c.upper() if draw(st.booleans()) else c for c in value)
    else:
        alphabet = _PLAIN + "@" if name == "USERNAME" else _PLAIN
        value = draw(st.text(alphabet, min_size=1, max_size=255))
    return draw(st.sampled_from([name, name.lower(), name.title()])), value


def _same_host_id(item: tuple[str, str]) -> tuple[str, str]:
    name, value = item
    return name.upper(), (value.replace("-", "").replace(":", "") if name.upper() == "ETHERNET" else value).upper()


@given(items=st.lists(hostid_items(), min_size=1, max_size=8, unique_by=_same_host_id), data=st.data())
def test_valid_host_ids_round_trip_and_canonical_is_order_invariant(
    items: list[tuple[str, str]], data: st.DataObject
) -> None:
    assume(len(encode_segment(",".join(f"{name}={value}" for name, value in items))) <= MAX_SEGMENT_CHARS)
    parsed = parse_text(",".join(f"{name}={value}" for name, value in items))
    assert [(h.name_raw, h.value) for h in parsed] == [(name.upper(), value) for name, value in items]
    shuffled = data.draw(st.permutations(parsed))
    assert canonical(shuffled) == canonical(parsed)
    assert canonical(HostId(h.name_raw, h.value.swapcase()) for h in parsed) == canonical(parsed)
    url_safe = base64.urlsafe_b64encode(",".join(f"{n}={v}" for n, v in items).encode()).decode().rstrip("=")
    assert parse_hostids(url_safe) == parsed


@settings(max_examples=1000)
@given(segment=st.text())
def test_any_segment_parses_or_is_a_format_error(segment: str) -> None:
    try:
        canonical(parse_hostids(segment))
    except errors.HostIdFormat:
        pass
