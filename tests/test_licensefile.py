"""The license file renderer and signer: the contract's layout, signed as the verifier reads it."""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chalicelib import licensefile, verifier
from chalicelib.licensefile import FeatureSpec, SigningKey, filename_for, render_license

KEY = SigningKey.generate()
GENERATED = datetime(2014, 4, 29, 11, 31, 50, tzinfo=timezone.utc)


def render(**overrides: object) -> str:
    arguments: dict[str, object] = {
        "issuer": "product 1",
        "activation_key": "25N8D-NC35D-WD01P-8JI4K",
        "features": [FeatureSpec("feature-1", "1.0", count=5)],
        "hostids_canonical": "CUSTOM=A",
        "generated_at": GENERATED,
        "expiration_date": date(2027, 12, 31),
        "signing_key": KEY,
    }
    arguments.update(overrides)
    return render_license(**arguments)  # type: ignore[arg-type]


def key_text(block_lines: list[str]) -> str:
    return "".join(line.removeprefix("KEY=").removeprefix("\t").removesuffix(" \\") for line in block_lines)


# signing keys


def test_a_signing_key_kid_is_the_verifier_fingerprint_of_its_public_key() -> None:
    assert KEY.kid == verifier.kid_for(KEY.public_raw())
    assert len(KEY.public_raw()) == 32


def test_a_signing_key_round_trips_through_unencrypted_pkcs8_pem() -> None:
    pem = KEY.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = SigningKey.from_pem(pem)
    assert loaded == KEY and loaded.public_raw() == KEY.public_raw()


def test_from_pem_refuses_a_key_that_is_not_ed25519() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="Ed25519"):
        SigningKey.from_pem(pem)


def test_a_signing_key_refuses_a_kid_that_is_not_its_fingerprint() -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        SigningKey(kid="0000000000000000", private_key=KEY.private_key)


def test_a_signing_key_does_not_show_its_private_key_in_repr() -> None:
    assert repr(KEY) == f"SigningKey(kid={KEY.kid!r})"


def test_public_jwk_like_is_the_published_form_in_order() -> None:
    published = KEY.public_jwk_like()
    assert list(published) == ["kid", "alg", "publicKey"]
    assert published == {"kid": KEY.kid, "alg": "Ed25519", "publicKey": base64.b64encode(KEY.public_raw()).decode()}
    assert verifier.load_public_key(published["publicKey"]) == KEY.public_raw()


# layout


def test_a_rendered_license_has_the_lmx_layout_of_the_contract() -> None:
    lines = render().split("\n")
    assert lines[:9] == [
        "# This license is generated using product 1 License Activation Center",
        "# Generation Time: 2014-04-29 11:31:50 GMT",
        "# Activation Key: 25N8D-NC35D-WD01P-8JI4K",
        "",
        "FEATURE feature-1",
        "{",
        "VENDOR=KEYTURN VERSION=1.0 END=2027-12-31 COUNT=5",
        f'SN="25N8D-NC35D-WD01P-8JI4K" HOSTID="CUSTOM=A" KEYID="{KEY.kid}"',
        f"KEY={key_text(lines[8:9])}",
    ]
    assert lines[9:] == ["}", ""]
    assert len(base64.b64decode(key_text(lines[8:9]), validate=True)) == 64


def test_end_is_left_out_when_the_license_never_expires() -> None:
    assert "VENDOR=KEYTURN VERSION=1.0 COUNT=5\n" in render(expiration_date=None)


def test_count_appears_only_for_features_that_have_one() -> None:
    text = render(features=[FeatureSpec("local", "2"), FeatureSpec("floating", "2", count=12)], vendor="ACME")
    assert "FEATURE local\n{\nVENDOR=ACME VERSION=2 END=2027-12-31\n" in text
    assert "FEATURE floating\n{\nVENDOR=ACME VERSION=2 END=2027-12-31 COUNT=12\n" in text


def test_feature_blocks_are_separated_by_one_blank_line_and_the_file_ends_with_a_newline() -> None:
    text = render(features=[FeatureSpec("a", "1"), FeatureSpec("b", "1"), FeatureSpec("c", "1")])
    assert text.count("}\n\nFEATURE ") == 2
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert "\n\n\n" not in text


def test_a_version_with_spaces_is_quoted_so_it_reads_back() -> None:
    text = render(features=[FeatureSpec("f", "2 beta")])
    assert 'VERSION="2 beta"' in text
    assert verifier.parse_license(text)[0].get("VERSION") == "2 beta"


def test_the_header_shows_generation_time_in_gmt_and_keeps_a_unicode_issuer_name() -> None:
    in_paris = GENERATED.astimezone(timezone(timedelta(hours=2)))
    text = render(generated_at=in_paris, issuer="Zoë's Suite")
    assert text.startswith("# This license is generated using Zoë's Suite License Activation Center\n"
                           "# Generation Time: 2014-04-29 11:31:50 GMT\n")


def test_rendering_is_deterministic_so_a_repeated_activation_gets_the_same_file() -> None:
    assert render() == render()


def test_filename_for_is_the_generation_minute_in_utc() -> None:
    assert filename_for(GENERATED) == "license_2014_04_29-11_31.lic"
    assert filename_for(GENERATED.astimezone(timezone(timedelta(hours=-5)))) == "license_2014_04_29-11_31.lic"
    assert filename_for(datetime(2026, 1, 2, 3, 4, 59)) == "license_2026_01_02-03_04.lic"


# signature


def test_key_signs_the_canonical_block_of_the_directives_in_emitted_order() -> None:
    text = render()
    block = verifier.canonical_block("feature-1", [
        ("VENDOR", "KEYTURN"), ("VERSION", "1.0"), ("END", "2027-12-31"), ("COUNT", "5"),
        ("SN", "25N8D-NC35D-WD01P-8JI4K"), ("HOSTID", "CUSTOM=A"), ("KEYID", KEY.kid),
    ])
    signature = base64.b64decode(verifier.parse_license(text)[0].key)
    Ed25519PublicKey.from_public_bytes(KEY.public_raw()).verify(signature, block)  # raises if not


def test_a_rendered_license_verifies_for_its_host() -> None:
    result = verifier.verify_license(render(), [KEY.public_raw()], hostids="custom=a",
                                     now=datetime(2027, 12, 31, 23, 0, tzinfo=timezone.utc))
    assert result == verifier.VerifyResult(True, "valid", ["feature-1"])


def test_the_key_wraps_at_the_given_width_with_a_backslash_and_a_tab() -> None:
    text = render(key_wrap_width=20)
    lines = text.split("\n")
    start = lines.index("}") - 5
    key_lines = lines[start:lines.index("}")]
    assert key_lines[0].startswith("KEY=") and all(line.startswith("\t") for line in key_lines[1:])
    assert all(line.endswith(" \\") for line in key_lines[:-1]) and not key_lines[-1].endswith("\\")
    assert [len(key_text([line])) for line in key_lines] == [20, 20, 20, 20, 8]
    assert verifier.parse_license(text)[0].key == key_text(key_lines)
    assert verifier.verify_license(text, [KEY.public_raw()], now=GENERATED).valid


def test_the_default_width_keeps_a_64_byte_signature_on_one_line() -> None:
    assert licensefile.KEY_WRAP_WIDTH >= 88
    assert " \\\n\t" not in render()


def test_wrap_key_splits_any_text_into_width_sized_chunks() -> None:
    assert licensefile.wrap_key("abcdefg", 3) == "KEY=abc \\\n\tdef \\\n\tg"
    assert licensefile.wrap_key("abc", 3) == "KEY=abc"
    with pytest.raises(ValueError):
        licensefile.wrap_key("abc", 0)


# refusals


@pytest.mark.parametrize(
    "overrides",
    [
        {"issuer": "product\n1"},
        {"issuer": 'product "1"'},
        {"issuer": ""},
        {"activation_key": 'A"B'},
        {"activation_key": "A\nKEYID=x"},
        {"features": []},
        {"features": [FeatureSpec("two words", "1")]},
        {"features": [FeatureSpec("", "1")]},
        {"features": [FeatureSpec('quo"te', "1")]},
        {"features": [FeatureSpec("new\nline", "1")]},
        {"features": [FeatureSpec("tab\tbed", "1")]},
        {"features": [FeatureSpec("f", "")]},
        {"features": [FeatureSpec("f", '1"')]},
        {"features": [FeatureSpec("f", "1", count=0)]},
        {"features": [FeatureSpec("f", "1", count=True)]},
        {"hostids_canonical": ""},
        {"hostids_canonical": "CUSTOM"},
        {"hostids_canonical": 'CUSTOM=a"b'},
        {"vendor": "X\nY"},
    ],
)
def test_render_license_refuses_text_that_would_break_the_grammar(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        render(**overrides)
