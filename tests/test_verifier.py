"""The offline verifier: grammar, canonical form, and every reason a file is refused."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import verifier
from chalicelib.licensefile import FeatureSpec, SigningKey, render_license
from chalicelib.verifier import Feature, LicenseFormatError, canonical_block, parse_license, verify_license

KEY = SigningKey.generate()
OTHER_KEY = SigningKey.generate()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
VERIFIER_SOURCE = Path(verifier.__file__)


def render(
    *,
    key: SigningKey = KEY,
    features: tuple[FeatureSpec, ...] = (FeatureSpec("feature-1", "1.0", count=5),),
    hostids: str = "CUSTOM=A,HOSTNAME=BUILD-01",
    end: date | None = date(2027, 12, 31),
) -> str:
    return render_license(
        issuer="product 1",
        activation_key="25N8D-NC35D-WD01P-8JI4K",
        features=features,
        hostids_canonical=hostids,
        generated_at=datetime(2014, 4, 29, 11, 31, 50, tzinfo=timezone.utc),
        expiration_date=end,
        signing_key=key,
    )


def signed_block(name: str, directives: list[tuple[str, str]], key: SigningKey = KEY) -> str:
    """The base64 KEY for a hand-written block, to test the grammar apart from the renderer."""
    return base64.b64encode(key.private_key.sign(canonical_block(name, directives))).decode()


def is_signed_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#") and not stripped.startswith("KEY=")


LICENSE = render()
TWO_FEATURES = render(features=(FeatureSpec("alpha", "1.0"), FeatureSpec("beta", "2.5")))


# kid and canonical form


def test_kid_is_the_first_16_hex_digits_of_the_sha256_of_the_raw_public_key() -> None:
    raw = KEY.public_raw()
    assert verifier.kid_for(raw) == hashlib.sha256(raw).hexdigest()[:16]
    assert len(verifier.kid_for(raw)) == 16 and verifier.kid_for(raw) == verifier.kid_for(raw).lower()


def test_kid_for_refuses_anything_but_a_32_byte_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        verifier.kid_for(b"\x00" * 31)


def test_canonical_block_is_a_version_tag_the_feature_line_and_each_directive_in_order() -> None:
    block = canonical_block("f1", [("VENDOR", "KEYTURN"), ("SN", "A B"), ("KEY", "ignored"), ("KEYID", "k")])
    assert block == b"keyturn-lmx-v1\nFEATURE f1\nVENDOR=KEYTURN\nSN=A B\nKEYID=k\n"


def test_canonical_block_depends_on_directive_order() -> None:
    assert canonical_block("f", [("A", "1"), ("B", "2")]) != canonical_block("f", [("B", "2"), ("A", "1")])


def test_canonical_block_encodes_unicode_as_utf8() -> None:
    assert canonical_block("f", [("NOTE", "Zoë")]).endswith("NOTE=Zoë\n".encode())


@pytest.mark.parametrize("value", ["a\nKEYID=forged", 'say "hi"', "a\rb", "a\u2028b"])
def test_canonical_block_refuses_values_that_could_forge_another_line(value: str) -> None:
    with pytest.raises(LicenseFormatError):
        canonical_block("f", [("SN", value)])


# grammar


def test_parse_license_reads_names_unquoted_directives_and_the_unwrapped_key() -> None:
    text = (
        "# header\r\n\r\nFEATURE f1\r\n{\r\n"
        'VENDOR=KEYTURN NOTE="two words" EMPTY=""\r\n'
        '# a comment inside the block\r\n   KEYID="abc"\r\n'
        "KEY=AAAA \\\r\n\tBBBB \\\r\n\tCC==\r\n}\r\n"
        "FEATURE f2\n{\nKEYID=x KEY=DDDD\n}\n"
    )
    assert parse_license(text) == [
        Feature("f1", [("VENDOR", "KEYTURN"), ("NOTE", "two words"), ("EMPTY", ""), ("KEYID", "abc")], "AAAABBBBCC=="),
        Feature("f2", [("KEYID", "x")], "DDDD"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no FEATURE block"),
        ("# only a comment\n", "no FEATURE block"),
        ("VENDOR=X\n", "expected 'FEATURE <name>'"),
        ("FEATURE a b\n{\nKEYID=k KEY=x\n}\n", "expected 'FEATURE <name>'"),
        ("FEATURE f\nKEYID=k KEY=x\n}\n", "expected '{'"),
        ("FEATURE f\n{\nKEYID=k KEY=x\n", "missing closing '}'"),
        ("FEATURE f\n{\nKEYID=k KEY=x\nFEATURE g\n{\nKEYID=k KEY=x\n}\n", "missing closing '}'"),
        ("FEATURE f\n{\nKEYID=k KEY=x VERSION=1 VERSION=2\n}\n", "duplicate directive VERSION"),
        ("FEATURE f\n{\nKEYID=k\n}\n", "missing KEY"),
        ("FEATURE f\n{\nVENDOR=X KEY=x\n}\n", "missing KEYID"),
        ('FEATURE f\n{\nKEYID=k KEY=x SN="a"b\n}\n', "unexpected"),
        ('FEATURE f\n{\nKEYID=k KEY=x SN=a"b\n}\n', "unexpected"),
        ("FEATURE f\n{\nKEYID=k KEY=x lower=1\n}\n", "expected NAME=value"),
        ("FEATURE f\n{\nKEYID=k KEY=x garbage\n}\n", "expected NAME=value"),
        ("FEATURE f\n{\nKEYID=k \\\n\tx KEY=x\n}\n", "only an unquoted KEY"),
        ("FEATURE f\n{\nKEYID=k KEY=ab \\\nCD\n}\n", "KEY continues"),
        ("FEATURE f\n{\nKEYID=k KEY=ab \\\n", "KEY continues"),
        ("FEATURE f\n{\nKEYID=k KEY=x\n}\nstray\n", "expected 'FEATURE <name>'"),
    ],
)
def test_parse_license_refuses_malformed_text_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(LicenseFormatError, match=message):
        parse_license(text)


def test_format_directive_quotes_values_that_would_not_read_back_bare() -> None:
    assert verifier.format_directive("VERSION", "1.0") == "VERSION=1.0"
    assert verifier.format_directive("VERSION", "1.0 beta") == 'VERSION="1.0 beta"'
    assert verifier.format_directive("SN", "X", quote=True) == 'SN="X"'
    with pytest.raises(ValueError):
        verifier.format_directive("SN", 'a"b')


# verification


def test_a_rendered_license_verifies() -> None:
    result = verify_license(LICENSE, [KEY.public_raw()], now=NOW)
    assert result == verifier.VerifyResult(valid=True, reason="valid", features=["feature-1"])
    assert result


def test_public_keys_may_be_given_as_a_kid_mapping() -> None:
    assert verify_license(LICENSE, {KEY.kid: KEY.public_raw()}, now=NOW).valid


def test_a_hand_written_block_with_a_narrowly_wrapped_key_verifies() -> None:
    directives = [("VENDOR", "ACME"), ("NOTE", "any words"), ("KEYID", KEY.kid)]
    sig = signed_block("tool", directives)
    wrapped = " \\\n\t".join(sig[i:i + 20] for i in range(0, len(sig), 20))
    text = f'FEATURE tool\n{{\nVENDOR=ACME NOTE="any words"\nKEYID={KEY.kid}\nKEY={wrapped}\n}}\n'
    assert verify_license(text, [KEY.public_raw()]).valid


# characters a hand edit could plausibly put in; tab and space-for-space are layout, not meaning
EDIT_CHARS = "aZ09=\"-.,#{} \\"


def test_changing_any_character_of_a_signed_line_fails_verification() -> None:
    lines = TWO_FEATURES.split("\n")
    positions = [(n, c) for n, line in enumerate(lines) if is_signed_line(line) for c in range(len(line))]
    assert len(positions) > 150
    for n, c in positions:
        for replacement in EDIT_CHARS:
            if replacement == lines[n][c]:
                continue
            edited = lines.copy()
            edited[n] = edited[n][:c] + replacement + edited[n][c + 1:]
            result = verify_license("\n".join(edited), [KEY.public_raw()], now=NOW)
            assert not result.valid, f"line {n} col {c} -> {replacement!r}: {edited[n]!r}"


def test_changing_any_character_of_the_key_fails_verification() -> None:
    line_no = next(n for n, line in enumerate(LICENSE.split("\n")) if line.startswith("KEY="))
    for c in range(len("KEY="), len(LICENSE.split("\n")[line_no])):
        lines = LICENSE.split("\n")
        for replacement in "AB/+=":
            if replacement != lines[line_no][c]:
                edited = lines.copy()
                edited[line_no] = edited[line_no][:c] + replacement + edited[line_no][c + 1:]
                assert not verify_license("\n".join(edited), [KEY.public_raw()], now=NOW).valid


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), char=st.characters())
def test_any_single_character_edit_either_fails_or_leaves_every_signed_value_unchanged(
    position: int, char: str
) -> None:
    position %= len(LICENSE)
    edited = LICENSE[:position] + char + LICENSE[position + 1:]
    result = verify_license(edited, [KEY.public_raw()], now=NOW)
    if result.valid:
        assert [(f.name, f.directives, f.key) for f in parse_license(edited)] == [
            (f.name, f.directives, f.key) for f in parse_license(LICENSE)
        ]


def test_editing_comment_lines_does_not_affect_verification() -> None:
    edited = LICENSE.replace("# This license is generated using product 1", "# Reworded by hand: Zoë's product")
    edited = edited.replace("# Activation Key:", "# Activation Key (edited):") + "# trailing note\n"
    assert edited != LICENSE
    assert verify_license(edited, [KEY.public_raw()], now=NOW).valid


def test_a_license_for_another_host_fails_naming_both_hosts() -> None:
    text = render(hostids="HOSTNAME=A")
    result = verify_license(text, [KEY.public_raw()], hostids="HOSTNAME=B", now=NOW)
    assert not result.valid
    assert result.reason == "feature feature-1: licensed for HOSTNAME=A, not HOSTNAME=B"


def test_a_subset_of_the_licensed_host_ids_is_not_the_licensed_host() -> None:
    result = verify_license(LICENSE, [KEY.public_raw()], hostids="CUSTOM=a", now=NOW)
    assert result.reason == "feature feature-1: licensed for CUSTOM=A,HOSTNAME=BUILD-01, not CUSTOM=A"


@pytest.mark.parametrize(
    "hostids", ["hostname=build-01,custom=a", "CUSTOM=A,HOSTNAME=BUILD-01", " Custom=a , HostName=Build-01"]
)
def test_matching_host_ids_pass_in_any_order_and_case(hostids: str) -> None:
    assert verify_license(LICENSE, [KEY.public_raw()], hostids=hostids, now=NOW).valid


def test_ethernet_separators_do_not_matter() -> None:
    text = render(hostids="ETHERNET=0A1B2C3D4E5F")
    for hostids in ("ETHERNET=0a-1b-2c-3d-4e-5f", "ethernet=0A:1B:2C:3D:4E:5F", "ETHERNET=0a1b2c3d4e5f"):
        assert verify_license(text, [KEY.public_raw()], hostids=hostids, now=NOW).valid


def test_malformed_host_ids_are_an_invalid_result_not_an_exception() -> None:
    result = verify_license(LICENSE, [KEY.public_raw()], hostids="not-a-host-id", now=NOW)
    assert not result.valid and "TYPE=value" in result.reason


def test_an_expired_license_fails_naming_its_end_date() -> None:
    text = render(end=date(2025, 1, 1))
    result = verify_license(text, [KEY.public_raw()], now=datetime(2025, 1, 2, tzinfo=timezone.utc))
    assert result == verifier.VerifyResult(False, "feature feature-1: expired on 2025-01-01", ["feature-1"])


def test_a_license_is_valid_until_the_end_of_its_end_day_in_utc() -> None:
    text = render(end=date(2025, 1, 1))
    last_moment = datetime(2025, 1, 1, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert verify_license(text, [KEY.public_raw()], now=last_moment).valid
    assert not verify_license(text, [KEY.public_raw()], now=last_moment + timedelta(microseconds=1)).valid
    naive_last_moment = last_moment.replace(tzinfo=None)
    assert verify_license(text, [KEY.public_raw()], now=naive_last_moment).valid


def test_a_license_ending_today_is_valid_now() -> None:
    today = datetime.now(timezone.utc).date()
    assert verify_license(render(end=today), [KEY.public_raw()]).valid


def test_a_license_without_end_never_expires() -> None:
    text = render(end=None)
    assert "END=" not in text
    assert verify_license(text, [KEY.public_raw()], now=datetime(9999, 12, 31, tzinfo=timezone.utc)).valid


def test_a_file_signed_with_a_rotated_out_key_verifies_while_its_public_key_is_still_given() -> None:
    old_file = render(key=OTHER_KEY)
    new_file = render(key=KEY)
    both = [KEY.public_raw(), OTHER_KEY.public_raw()]
    assert verify_license(old_file, both, now=NOW).valid
    assert verify_license(new_file, both, now=NOW).valid


def test_a_file_signed_with_an_old_key_fails_naming_its_kid_when_only_the_new_key_is_given() -> None:
    result = verify_license(render(key=OTHER_KEY), [KEY.public_raw()], now=NOW)
    assert not result.valid
    assert result.reason == (
        f"feature feature-1: signed with key '{OTHER_KEY.kid}', which is not among the given public keys ({KEY.kid})"
    )


def test_a_kid_mapped_to_the_wrong_public_key_fails_the_signature() -> None:
    result = verify_license(LICENSE, {KEY.kid: OTHER_KEY.public_raw()}, now=NOW)
    assert result.reason == "feature feature-1: signature does not match (file edited or wrong key)"


@pytest.mark.parametrize(
    "key",
    [
        "abc",
        "!!!!",
        "",
        base64.b64encode(b"\x00" * 64).decode(),
        base64.b64encode(b"\x00" * 63).decode(),
    ],
)
def test_a_garbled_key_is_invalid_without_raising(key: str) -> None:
    text = "\n".join(f"KEY={key}" if line.startswith("KEY=") else line for line in LICENSE.split("\n"))
    result = verify_license(text, [KEY.public_raw()], now=NOW)
    assert not result.valid
    assert result.reason.startswith(("feature feature-1: ", "not a license file: "))


def test_a_key_in_non_canonical_base64_is_refused() -> None:
    sig = LICENSE.split("KEY=")[1].split("\n")[0]
    assert sig.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    spare_bits = sig[:-3] + alphabet[alphabet.index(sig[-3]) ^ 1] + "=="  # same bytes, other text
    assert base64.b64decode(spare_bits) == base64.b64decode(sig)
    result = verify_license(LICENSE.replace(sig, spare_bits), [KEY.public_raw()], now=NOW)
    assert result.reason == "feature feature-1: KEY is not a base64 Ed25519 signature"


def test_a_missing_keyid_is_invalid_without_raising() -> None:
    text = LICENSE.replace(f' KEYID="{KEY.kid}"', "")
    result = verify_license(text, [KEY.public_raw()], now=NOW)
    assert result == verifier.VerifyResult(False, "not a license file: feature feature-1: missing KEYID", [])


@pytest.mark.parametrize("text", ["", "hello world", "{}", "\x00\xff", LICENSE[: len(LICENSE) // 2], "FEATURE\n{\n}\n"])
def test_garbage_text_is_invalid_without_raising(text: str) -> None:
    result = verify_license(text, [KEY.public_raw()], now=NOW)
    assert not result.valid and result.reason.startswith("not a license file: ")
    assert not result


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_verify_license_never_raises_on_arbitrary_text(text: str) -> None:
    assert not verify_license(text, [KEY.public_raw()], now=NOW).valid


def test_a_multi_feature_file_with_one_tampered_feature_fails_naming_that_feature() -> None:
    assert verify_license(TWO_FEATURES, [KEY.public_raw()], now=NOW).features == ["alpha", "beta"]
    tampered = TWO_FEATURES.replace("VERSION=2.5", "VERSION=9.9")
    result = verify_license(tampered, [KEY.public_raw()], now=NOW)
    assert not result.valid
    assert result.reason == "feature beta: signature does not match (file edited or wrong key)"


def test_rewriting_the_host_id_of_a_license_for_another_host_fails() -> None:
    mine = render(hostids="HOSTNAME=MINE")
    theirs = render(hostids="HOSTNAME=THEIRS").replace("HOSTNAME=THEIRS", "HOSTNAME=MINE")
    assert verify_license(mine, [KEY.public_raw()], hostids="HOSTNAME=MINE", now=NOW).valid
    assert not verify_license(theirs, [KEY.public_raw()], hostids="HOSTNAME=MINE", now=NOW).valid


def test_public_keys_must_be_raw_32_bytes() -> None:
    with pytest.raises(ValueError):
        verify_license(LICENSE, [b"short"])
    with pytest.raises(TypeError):
        verify_license(LICENSE, KEY.public_raw())  # type: ignore[arg-type]


# public keys as published


def test_load_public_key_reads_the_published_signing_key() -> None:
    published = KEY.public_jwk_like()
    assert verifier.load_public_key(published["publicKey"]) == KEY.public_raw()
    assert verifier.kid_for(verifier.load_public_key(published["publicKey"])) == published["kid"]


@pytest.mark.parametrize("b64", ["not base64!", base64.b64encode(b"\x01" * 31).decode(), ""])
def test_load_public_key_refuses_anything_but_base64_of_32_bytes(b64: str) -> None:
    with pytest.raises(ValueError):
        verifier.load_public_key(b64)


# command line


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "license_2014_04_29-11_31.lic"
    path.write_text(text, encoding="utf-8")
    return str(path)


def public_b64(key: SigningKey) -> str:
    return key.public_jwk_like()["publicKey"]


def test_main_prints_valid_with_the_features_and_returns_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, render(features=(FeatureSpec("alpha", "1"), FeatureSpec("beta", "1")), end=None))
    assert verifier.main([path, "--public-key", public_b64(KEY), "--hostids", "hostname=build-01,custom=a"]) == 0
    assert capsys.readouterr().out == "valid: alpha, beta\n"


def test_main_prints_the_reason_and_returns_1_for_an_invalid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, LICENSE)
    assert verifier.main([path, "--public-key", public_b64(KEY), "--hostids", "HOSTNAME=elsewhere"]) == 1
    assert capsys.readouterr().out == (
        "invalid: feature feature-1: licensed for CUSTOM=A,HOSTNAME=BUILD-01, not HOSTNAME=ELSEWHERE\n"
    )


def test_main_accepts_several_public_keys_for_rotation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, render(key=OTHER_KEY, end=None))
    assert verifier.main([path, "--public-key", public_b64(KEY)]) == 1
    assert OTHER_KEY.kid in capsys.readouterr().out
    assert verifier.main([path, "--public-key", public_b64(KEY), "--public-key", public_b64(OTHER_KEY)]) == 0


def test_main_reads_the_license_from_stdin_given_a_dash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(render(end=None).encode())))
    assert verifier.main(["-", "--public-key", public_b64(KEY)]) == 0
    assert capsys.readouterr().out == "valid: feature-1\n"


def test_main_reports_a_file_that_is_not_utf8_as_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.lic"
    path.write_bytes(b"\xff\xfe garbage")
    assert verifier.main([str(path), "--public-key", public_b64(KEY)]) == 1
    assert capsys.readouterr().out == "invalid: not a license file: not UTF-8 text\n"


def test_main_exits_2_for_a_bad_public_key_or_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as bad_key:
        verifier.main([write(tmp_path, LICENSE), "--public-key", "AAAA"])
    assert bad_key.value.code == 2 and "--public-key" in capsys.readouterr().err
    with pytest.raises(SystemExit) as missing:
        verifier.main([str(tmp_path / "missing.lic"), "--public-key", public_b64(KEY)])
    assert missing.value.code == 2 and "cannot read" in capsys.readouterr().err


# standalone


def test_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(VERIFIER_SOURCE.read_text(encoding="utf-8"))
    allowed = set(sys.stdlib_module_names) | {"cryptography"}
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would tie the verifier to chalicelib"
            imported.append(node.module or "")
    assert imported
    assert {name for name in imported if name.split(".")[0] not in allowed} == set()


def test_verifier_runs_as_a_lone_file_outside_the_project(tmp_path: Path) -> None:
    lone = tmp_path / "keyturn_verifier.py"
    lone.write_bytes(VERIFIER_SOURCE.read_bytes())
    license_path = write(tmp_path, render(end=None))
    done = subprocess.run(
        [sys.executable, "-I", str(lone), license_path, "--public-key", public_b64(KEY)],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert (done.returncode, done.stdout) == (0, "valid: feature-1\n"), done.stderr


def test_a_lone_surrogate_in_a_directive_is_an_invalid_file_not_an_exception() -> None:
    edited = LICENSE.replace('SN="', 'SN="\ud800', 1)
    result = verify_license(edited, [KEY.public_raw()], now=NOW)
    assert not result.valid and result.reason.startswith("not a license file")
