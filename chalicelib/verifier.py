"""Offline verifier for Keyturn's LM-X-style license files (wire contract, section C).

Vendors copy this one file into their software, so it imports only the standard
library and ``cryptography``, never anything from ``chalicelib``.  It is also the single
definition of the file grammar and of the bytes that are signed: the service's signer
(``chalicelib.licensefile``) imports both from here, so signer and verifier cannot drift.

Grammar (one line per item; ``\\n`` or ``\\r\\n`` line ends)::

    # comment                   anywhere; never signed, so product names may be any text
    FEATURE <name>              <name>: no whitespace, no '"', no control characters
    {
    NAME=value NAME="a value"   space-separated; a quoted value may hold spaces, never '"'
    KEY=<base64> \\              only KEY may wrap: ' \\' at the end of the line,
    \\t<more base64>             the next line starts with a tab (spaces are tolerated)
    }

Several FEATURE blocks may follow each other; blank lines are ignored.  Directive names
are ``[A-Z][A-Z0-9_]*`` and appear at most once per block; every block needs KEY and
KEYID.  Which directives exist (VENDOR, VERSION, END, COUNT, SN, HOSTID, KEYID) is the
signer's business: unknown directives are signed like the others, so they are kept.

Canonical signed form of a block (see ``canonical_block``), UTF-8::

    keyturn-lmx-v1\\n
    FEATURE <name>\\n
    NAME=value\\n              for every directive except KEY, in file order, unquoted

KEY is base64 (standard alphabet, padded) of the 64-byte Ed25519 signature of those
bytes under the key whose fingerprint is KEYID (``kid_for``).  Usage::

    python -m chalicelib.verifier license.lic --public-key <base64> [--hostids HOSTNAME=a]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CANONICAL_VERSION = b"keyturn-lmx-v1\n"  # bump if the canonical form ever changes
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
KEY_DIRECTIVE = "KEY"
KEYID_DIRECTIVE = "KEYID"
CONTINUATION = " \\"  # end of a wrapped KEY line; the next line starts with a tab

_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*")
_FEATURE_RE = re.compile(r"FEATURE[ \t]+(\S+)")
_TOKEN_RE = re.compile(r'([A-Z][A-Z0-9_]*)=(?:"([^"]*)"|([^\s"]+))')
_SEPARATOR_RE = re.compile(r"[ \t]+")
_WRAPPED_RE = re.compile(r"(.*?)[ \t]+\\")
_CONTINUED_RE = re.compile(r"[ \t]+([^\s\"\\]+)(?:[ \t]+\\)?")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BARE_VALUE_RE = re.compile(r'[^\s"]+')
_BREAKING = frozenset({"Cc", "Zl", "Zp", "Cs"})  # control chars, line/paragraph separators, lone surrogates


class LicenseFormatError(ValueError):
    """The text does not follow the license file grammar (message says where and why)."""


@dataclass
class Feature:
    """One parsed FEATURE block: its directives in file order (KEY kept apart) and KEY."""

    name: str
    directives: list[tuple[str, str]]
    key: str

    def get(self, name: str) -> str | None:
        """Look a directive up by name, since blocks hold each name at most once."""
        return next((value for n, value in self.directives if n == name), None)


@dataclass
class VerifyResult:
    """Outcome of ``verify_license``; falsy when invalid so ``if verify_license(...)`` is safe."""

    valid: bool
    reason: str
    features: list[str] = field(default_factory=list)  # every FEATURE name in the file

    def __bool__(self) -> bool:
        return self.valid


def kid_for(public_key_raw: bytes) -> str:
    """Fingerprint a public key, so a file names the key that signed it across rotations."""
    if len(public_key_raw) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public_key_raw)}")
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


def load_public_key(b64: str) -> bytes:
    """Decode a ``publicKey`` from ``GET /rest/v1/signing-keys`` into its raw 32 bytes."""
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key is not base64") from exc
    if len(raw) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError(f"public key is {len(raw)} bytes, an Ed25519 public key is 32")
    return raw


def check_feature_name(name: str) -> None:
    """Refuse names that would not read back as the one token after ``FEATURE``."""
    if not name or any(c.isspace() or c == '"' or unicodedata.category(c) in _BREAKING for c in name):
        raise LicenseFormatError(f"feature name {name!r} must be one token: no spaces, quotes or control characters")


def check_directive(name: str, value: str) -> None:
    """Refuse a directive the file cannot carry, which would also make the canonical form ambiguous."""
    if not _NAME_RE.fullmatch(name):
        raise LicenseFormatError(f"directive name {name!r} must be upper-case letters, digits and '_'")
    if any(c == '"' or unicodedata.category(c) in _BREAKING for c in value):
        raise LicenseFormatError(f"{name} value {value!r} must not contain '\"' or control characters")


def format_directive(name: str, value: str, *, quote: bool = False) -> str:
    """Render ``NAME=value``, quoting when asked or when the value would not read back bare."""
    check_directive(name, value)
    if quote or not _BARE_VALUE_RE.fullmatch(value):
        return f'{name}="{value}"'
    return f"{name}={value}"


def canonical_block(feature_name: str, directives: Sequence[tuple[str, str]]) -> bytes:
    """Return the exact bytes a block's KEY signs.

    A version tag, ``FEATURE <name>``, then ``NAME=value`` per directive except KEY, each
    on its own line, in the given (file) order: order is signed, so the signer emits a
    fixed order.  Quoting is not signed (it only carries spaces); comments are not part
    of it, so headers can be reworded without re-signing.  Names and values are checked
    so no value can smuggle a line break and forge another directive.
    """
    check_feature_name(feature_name)
    lines = [f"FEATURE {feature_name}\n"]
    for name, value in directives:
        check_directive(name, value)
        if name != KEY_DIRECTIVE:
            lines.append(f"{name}={value}\n")
    return CANONICAL_VERSION + "".join(lines).encode("utf-8")


def _tokens(text: str, lineno: int) -> list[tuple[str, str, bool]]:
    """Split a directive line into (name, value, quoted), rejecting anything in between."""
    tokens: list[tuple[str, str, bool]] = []
    pos = 0
    while pos < len(text):
        if gap := _SEPARATOR_RE.match(text, pos):
            pos = gap.end()
            continue
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise LicenseFormatError(f"line {lineno}: expected NAME=value at {text[pos:pos + 30]!r}")
        quoted = m.group(2) is not None
        value = m.group(2) if quoted else m.group(3)
        try:
            check_directive(m.group(1), value)
        except LicenseFormatError as exc:
            raise LicenseFormatError(f"line {lineno}: {exc}") from None
        tokens.append((m.group(1), value, quoted))
        pos = m.end()
        if pos < len(text) and text[pos] not in " \t":
            raise LicenseFormatError(f"line {lineno}: unexpected {text[pos:pos + 30]!r} after {m.group(1)}")
    return tokens


def parse_license(text: str) -> list[Feature]:
    """Read every FEATURE block, raising ``LicenseFormatError`` on anything malformed.

    Strict on purpose: anything the grammar does not allow is an error rather than
    guessed at, so a file that parses has exactly one meaning.
    """
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    features: list[Feature] = []
    i = 0

    def next_content_line() -> tuple[int, str] | None:
        nonlocal i
        while i < len(lines):
            stripped = lines[i].strip()
            i += 1
            if stripped and not stripped.startswith("#"):
                return i, stripped
        return None

    while (found := next_content_line()) is not None:
        lineno, stripped = found
        m = _FEATURE_RE.fullmatch(stripped)
        if not m:
            raise LicenseFormatError(f"line {lineno}: expected 'FEATURE <name>', got {stripped[:40]!r}")
        name = m.group(1)
        try:
            check_feature_name(name)
        except LicenseFormatError as exc:
            raise LicenseFormatError(f"line {lineno}: {exc}") from None
        opening = next_content_line()
        if opening is None or opening[1] != "{":
            raise LicenseFormatError(f"line {lineno}: feature {name}: expected '{{' on the line after FEATURE")
        directives: list[tuple[str, str]] = []
        key: str | None = None
        seen: set[str] = set()
        while True:
            found = next_content_line()
            if found is None:
                raise LicenseFormatError(f"feature {name}: missing closing '}}'")
            lineno, stripped = found
            if stripped == "}":
                break
            if stripped == "{" or _FEATURE_RE.fullmatch(stripped):
                raise LicenseFormatError(f"line {lineno}: feature {name}: missing closing '}}'")
            wrapped = _WRAPPED_RE.fullmatch(lines[lineno - 1].rstrip(" \t"))
            tokens = _tokens(wrapped.group(1) if wrapped else stripped, lineno)
            if wrapped:
                if not tokens or tokens[-1][0] != KEY_DIRECTIVE or tokens[-1][2]:
                    raise LicenseFormatError(f"line {lineno}: only an unquoted KEY may continue with ' \\'")
                chunks = [tokens[-1][1]]
                while True:
                    cont = _CONTINUED_RE.fullmatch(lines[i].rstrip(" \t")) if i < len(lines) else None
                    if cont is None:
                        raise LicenseFormatError(f"line {i + 1}: KEY continues, expected a tab-indented line")
                    chunks.append(cont.group(1))
                    i += 1
                    if not lines[i - 1].rstrip(" \t").endswith("\\"):
                        break
                tokens[-1] = (KEY_DIRECTIVE, "".join(chunks), False)
            for dname, value, _quoted in tokens:
                if dname in seen:
                    raise LicenseFormatError(f"line {lineno}: feature {name}: duplicate directive {dname}")
                seen.add(dname)
                if dname == KEY_DIRECTIVE:
                    key = value
                else:
                    directives.append((dname, value))
        if key is None:
            raise LicenseFormatError(f"feature {name}: missing KEY")
        if KEYID_DIRECTIVE not in seen:
            raise LicenseFormatError(f"feature {name}: missing KEYID")
        features.append(Feature(name=name, directives=directives, key=key))
    if not features:
        raise LicenseFormatError("no FEATURE block found")
    return features


def parse_hostids(text: str) -> frozenset[tuple[str, str]]:
    """Normalise ``TYPE=value,...`` so the same host compares equal however it is written.

    Types and values are upper-cased (values compare case-insensitively) and ETHERNET
    drops its ``-``/``:`` separators; order does not matter.
    """
    pairs: set[tuple[str, str]] = set()
    for item in text.split(","):
        kind, eq, value = item.strip().partition("=")
        if not eq or not _NAME_RE.fullmatch(kind.strip().upper()) or not value.strip():
            raise ValueError(f"host ids {text!r} are not TYPE=value[,TYPE=value...]")
        kind, value = kind.strip().upper(), value.strip().upper()
        if kind == "ETHERNET":
            value = value.replace("-", "").replace(":", "")
        pairs.add((kind, value))
    return frozenset(pairs)


def format_hostids(pairs: Iterable[tuple[str, str]]) -> str:
    """The canonical text of a host id set: sorted ``TYPE=VALUE`` items joined by commas."""
    return ",".join(f"{kind}={value}" for kind, value in sorted(pairs))


def _decode_signature(key: str) -> bytes | None:
    """Strict base64 of exactly 64 bytes, re-encoded identically (no malleable spare bits)."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != ED25519_SIGNATURE_SIZE or base64.b64encode(raw).decode("ascii") != key:
        return None
    return raw


def _public_keys(public_keys: Mapping[str, bytes] | Iterable[bytes]) -> dict[str, Ed25519PublicKey]:
    if isinstance(public_keys, (bytes, bytearray, str)):
        raise TypeError("public_keys must be a {kid: raw} mapping or a list of raw keys, not one key")
    if isinstance(public_keys, Mapping):
        items = list(public_keys.items())
    else:
        items = [(kid_for(raw), raw) for raw in public_keys]
    keys: dict[str, Ed25519PublicKey] = {}
    for kid, raw in items:
        kid_for(raw)  # length check
        keys[kid] = Ed25519PublicKey.from_public_bytes(bytes(raw))
    return keys


def _check_feature(
    feature: Feature,
    keys: Mapping[str, Ed25519PublicKey],
    host: frozenset[tuple[str, str]] | None,
    now: datetime,
) -> str | None:
    """Guard clauses in order of trust: signature first, so nothing unsigned is reported."""
    where = f"feature {feature.name}"
    kid = feature.get(KEYID_DIRECTIVE) or ""
    public_key = keys.get(kid)
    if public_key is None:
        known = ", ".join(sorted(keys)) or "none"
        return f"{where}: signed with key {kid!r}, which is not among the given public keys ({known})"
    signature = _decode_signature(feature.key)
    if signature is None:
        return f"{where}: KEY is not a base64 Ed25519 signature"
    try:
        public_key.verify(signature, canonical_block(feature.name, feature.directives))
    except InvalidSignature:
        return f"{where}: signature does not match (file edited or wrong key)"
    if host is not None:
        try:
            licensed = parse_hostids(feature.get("HOSTID") or "")
        except ValueError:
            licensed = frozenset()
        if licensed != host:
            return f"{where}: licensed for {format_hostids(licensed) or 'no host id'}, not {format_hostids(host)}"
    end = feature.get("END")
    if end is not None:
        try:
            if not _DATE_RE.fullmatch(end):
                raise ValueError(end)
            last_day = date.fromisoformat(end)
        except ValueError:
            return f"{where}: END={end} is not a YYYY-MM-DD date"
        if now >= datetime.combine(last_day + timedelta(days=1), time(), timezone.utc):
            return f"{where}: expired on {end}"
    return None


def verify_license(
    text: str,
    public_keys: Mapping[str, bytes] | Iterable[bytes],
    *,
    hostids: str | None = None,
    now: datetime | None = None,
) -> VerifyResult:
    """Check every FEATURE: known KEYID, valid signature, this host, not expired.

    Never raises for a bad file (or bad ``hostids``): the answer is ``valid=False`` with
    the first problem found, since callers embed this in product start-up code.  Bad
    public keys are a programming error and raise ``ValueError``/``TypeError``.
    ``now`` defaults to the current time; a naive ``now`` is taken as UTC.
    """
    keys = _public_keys(public_keys)
    try:
        if not isinstance(text, str):
            raise LicenseFormatError("license text must be str")
        features = parse_license(text)
    except LicenseFormatError as exc:
        return VerifyResult(valid=False, reason=f"not a license file: {exc}", features=[])
    names = [feature.name for feature in features]
    host = None
    if hostids is not None:
        try:
            host = parse_hostids(hostids)
        except ValueError as exc:
            return VerifyResult(valid=False, reason=str(exc), features=names)
    moment = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    for feature in features:
        problem = _check_feature(feature, keys, host, moment)
        if problem is not None:
            return VerifyResult(valid=False, reason=problem, features=names)
    return VerifyResult(valid=True, reason="valid", features=names)


def main(argv: list[str] | None = None) -> int:
    """``verify-license FILE --public-key B64 ...``: exit 0 valid, 1 invalid, 2 usage error."""
    parser = argparse.ArgumentParser(prog="verify-license", description="Check a Keyturn license file offline.")
    parser.add_argument("file", metavar="FILE", help="license file, or - to read standard input")
    parser.add_argument(
        "--public-key", dest="public_keys", action="append", required=True, metavar="B64",
        help="base64 publicKey from GET /rest/v1/signing-keys; repeat to accept rotated keys",
    )
    parser.add_argument("--hostids", metavar="TYPE=value,...", help="require the license to be for this host")
    args = parser.parse_args(argv)
    try:
        keys = [load_public_key(b64) for b64 in args.public_keys]
    except ValueError as exc:
        parser.error(f"--public-key: {exc}")
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        parser.error(f"cannot read {args.file}: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        print("invalid: not a license file: not UTF-8 text")
        return 1
    result = verify_license(text, keys, hostids=args.hostids)
    if result.valid:
        print(f"valid: {', '.join(result.features)}")
        return 0
    print(f"invalid: {result.reason}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
