"""The Log Insight-style key codec (wire contract C)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import errors, keys

SECRET = b"k" * 32
OTHER_SECRET = b"o" * 32


def test_a_minted_key_has_the_contract_pattern_and_decodes_to_what_was_minted() -> None:
    key = keys.mint("OSI", 10, date(2027, 12, 31), secret=SECRET, serial=12345)
    assert keys.KEY_PATTERN.match(key)
    assert keys.decode(key, secret=SECRET) == keys.KeySummary(keys.KeyType.OSI, 10, date(2027, 12, 31), 12345)


def test_keys_are_accepted_in_lower_case_and_with_surrounding_spaces() -> None:
    key = keys.mint("CPU", 2, None, secret=SECRET)
    assert keys.decode(f"  {key.lower()}\n", secret=SECRET).count == 2


def test_every_single_character_change_is_an_invalid_serial_number() -> None:
    key = keys.mint("CORE", 64, date(2030, 1, 1), secret=SECRET, serial=99)
    for position, original in enumerate(key):
        if original == "-":
            continue
        for replacement in keys.ALPHABET:
            if replacement == original:
                continue
            changed = key[:position] + replacement + key[position + 1:]
            with pytest.raises(errors.InvalidSerial):
                keys.decode(changed, secret=SECRET)


@pytest.mark.parametrize("text", [
    "", "ABCDE", "ABCDE-ABCDE-ABCDE-ABCDE-ABCD", "ABCDE-ABCDE-ABCDE-ABCDE-ABCDEF",
    "ABCDEABCDEABCDEABCDEABCDE", "ABCDE_ABCDE_ABCDE_ABCDE_ABCDE", "ÄBCDE-ABCDE-ABCDE-ABCDE-ABCDE",
    "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ", "00000-00000-00000-00000-00000",
])
def test_wrong_length_alphabet_or_range_is_an_invalid_serial_number(text: str) -> None:
    with pytest.raises(errors.InvalidSerial):
        keys.decode(text, secret=SECRET)


def test_a_key_minted_under_another_secret_is_rejected() -> None:
    key = keys.mint("OSI", 1, None, secret=OTHER_SECRET)
    with pytest.raises(errors.InvalidSerial):
        keys.decode(key, secret=SECRET)


def test_keys_for_the_same_grant_look_unrelated() -> None:
    first = keys.mint("OSI", 1, None, secret=SECRET, serial=1)
    second = keys.mint("OSI", 1, None, secret=SECRET, serial=2)
    assert sum(a == b for a, b in zip(first, second, strict=True)) < 12


@pytest.mark.parametrize(("type_enum", "count", "text"), [
    ("OSI", 1, "1 Operating System Instance (OSI)"),
    ("OSI", 10, "10 Operating System Instances (OSIs)"),
    ("OSI", 0, "Unlimited Operating System Instances (OSIs)"),
    ("CPU", 1, "1 CPU"), ("CPU", 2, "2 CPUs"), ("CPU", 0, "Unlimited CPUs"),
    ("CORE", 1, "1 Core"), ("CORE", 8, "8 Cores"), ("CORE", 0, "Unlimited Cores"),
])
def test_configuration_text_follows_the_contract(type_enum: str, count: int, text: str) -> None:
    assert keys.KeySummary(keys.KeyType(type_enum), count, None, 0).configuration == text


def test_an_expiry_day_lasts_until_its_last_millisecond_utc() -> None:
    summary = keys.KeySummary(keys.KeyType.OSI, 1, date(2027, 12, 31), 0)
    end = datetime(2028, 1, 1, tzinfo=timezone.utc)
    assert summary.expiration_ms == int(end.timestamp() * 1000) - 1
    assert not summary.expired_at(datetime(2027, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
    assert summary.expired_at(end)


def test_a_key_that_never_expires_has_expiration_zero() -> None:
    summary = keys.decode(keys.mint("OSI", 0, None, secret=SECRET), secret=SECRET)
    assert summary.expires is None and summary.expiration_ms == 0
    assert not summary.expired_at(datetime(2149, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize(("count", "expires"), [(-1, None), (keys.MAX_COUNT + 1, None), (1, date(1970, 1, 1)),
                                                (1, date(2200, 1, 1))])
def test_minting_out_of_range_values_is_refused(count: int, expires: date | None) -> None:
    with pytest.raises(ValueError):
        keys.mint("OSI", count, expires, secret=SECRET)


@settings(max_examples=300)
@given(type_enum=st.sampled_from(list(keys.KeyType)), count=st.integers(0, keys.MAX_COUNT),
       expires=st.none() | st.dates(date(1970, 1, 2), keys.MAX_EXPIRY), serial=st.integers(0, 2**40 - 1))
def test_every_grant_round_trips(type_enum: keys.KeyType, count: int, expires: date | None, serial: int) -> None:
    key = keys.mint(type_enum, count, expires, secret=SECRET, serial=serial)
    assert keys.KEY_PATTERN.match(key)
    assert keys.decode(key, secret=SECRET) == keys.KeySummary(type_enum, count, expires, serial)


@settings(max_examples=200)
@given(expires=st.none() | st.dates(date(1970, 1, 2), keys.MAX_EXPIRY))
def test_the_expiry_day_is_recovered_from_expiration_ms(expires: date | None) -> None:
    summary = keys.KeySummary(keys.KeyType.OSI, 1, expires, 0)
    assert keys.expiry_day(summary.expiration_ms) == expires


@settings(max_examples=500)
@given(text=st.text(max_size=40))
def test_any_text_decodes_or_is_an_invalid_serial_number(text: str) -> None:
    try:
        keys.decode(text, secret=SECRET)
    except errors.InvalidSerial:
        pass
