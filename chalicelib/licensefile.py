"""Render and sign LM-X-style license files (wire contract, section C).

The grammar and the signed bytes are defined once, in ``chalicelib.verifier`` (the file
vendors embed); this module only decides what goes in a file and in which order, so a
file the service hands out is always one the offline verifier accepts.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chalicelib import verifier

KEY_WRAP_WIDTH = 100  # signature characters per KEY line, as LM-X files wrap at about 100
ALWAYS_QUOTED = frozenset({"SN", "HOSTID", "KEYID"})  # quoted in LM-X files, so here too


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its ``kid``, which files carry as KEYID for rotation."""

    kid: str
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise ValueError("signing keys are Ed25519")
        if self.kid != verifier.kid_for(self.public_raw()):
            raise ValueError(f"kid {self.kid!r} is not the fingerprint of this key")

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        """Load the unencrypted PKCS8 PEM kept in the secret store."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("signing key PEM is not an Ed25519 private key")
        return cls._of(key)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key, for first start-up and for rotation."""
        return cls._of(Ed25519PrivateKey.generate())

    @classmethod
    def _of(cls, key: Ed25519PrivateKey) -> SigningKey:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(kid=verifier.kid_for(raw), private_key=key)

    def to_pem(self) -> bytes:
        """Unencrypted PKCS8: the secret store (SSM SecureString or a local file) protects it."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_raw(self) -> bytes:
        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def public_jwk_like(self) -> dict[str, str]:
        """One entry of ``GET /rest/v1/signing-keys``, keys in the published order."""
        return {"kid": self.kid, "alg": "Ed25519", "publicKey": base64.b64encode(self.public_raw()).decode("ascii")}


@dataclass(frozen=True)
class FeatureSpec:
    """A feature of an order; ``count`` only for network licenses (rendered as COUNT)."""

    name: str
    version: str
    count: int | None = None


def _check_comment_text(label: str, text: str) -> None:
    """Header values sit in comment lines: a line break would start an unsigned directive."""
    if not text or '"' in text or any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise ValueError(f"{label} {text!r} must be non-empty, without '\"', line breaks or control characters")


def _utc(moment: datetime) -> datetime:
    """Naive times are taken as UTC, since the service's clock is UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def wrap_key(signature_b64: str, width: int = KEY_WRAP_WIDTH) -> str:
    """``KEY=`` plus the signature in chunks of ``width``, continued with ' \\' + newline + tab."""
    if width < 1:
        raise ValueError("wrap width must be positive")
    chunks = [signature_b64[i:i + width] for i in range(0, len(signature_b64), width)] or [""]
    return f"{verifier.KEY_DIRECTIVE}=" + f"{verifier.CONTINUATION}\n\t".join(chunks)


def render_license(
    *,
    issuer: str,
    activation_key: str,
    features: Sequence[FeatureSpec],
    hostids_canonical: str,
    generated_at: datetime,
    expiration_date: date | None,
    signing_key: SigningKey,
    vendor: str = "KEYTURN",
    key_wrap_width: int = KEY_WRAP_WIDTH,
) -> str:
    """The license file text: a comment header, then one signed FEATURE block per feature.

    ``issuer`` names who runs the activation center (the seed's "X-Formation"); it is
    the stage's vendor name, which is also the files' ``VENDOR``.

    Each block signs ``verifier.canonical_block`` over its directives in the order
    emitted (VENDOR VERSION [END] [COUNT] / SN HOSTID KEYID), so SN, HOSTID, END and the
    KEYID itself are bound to the signature.  Bad input raises ``ValueError`` rather than
    producing a file that reads back differently; the result is parsed back as a check.
    """
    _check_comment_text("issuer", issuer)
    _check_comment_text("activation key", activation_key)
    if not features:
        raise ValueError("a license file needs at least one feature")
    verifier.parse_hostids(hostids_canonical)  # raises ValueError unless TYPE=value items
    moment = _utc(generated_at)
    lines = [
        f"# This license is generated using {issuer} License Activation Center",
        f"# Generation Time: {moment:%Y-%m-%d %H:%M:%S} GMT",
        f"# Activation Key: {activation_key}",
    ]
    signed: list[bytes] = []
    for spec in features:
        verifier.check_feature_name(spec.name)
        if not spec.version or not vendor:
            raise ValueError(f"feature {spec.name}: VENDOR and VERSION must not be empty")
        if spec.count is not None and (isinstance(spec.count, bool) or spec.count < 1):
            raise ValueError(f"feature {spec.name}: COUNT must be a positive whole number, not {spec.count!r}")
        first = [("VENDOR", vendor), ("VERSION", spec.version)]
        if expiration_date is not None:
            first.append(("END", expiration_date.isoformat()))
        if spec.count is not None:
            first.append(("COUNT", str(spec.count)))
        second = [("SN", activation_key), ("HOSTID", hostids_canonical), (verifier.KEYID_DIRECTIVE, signing_key.kid)]
        block = verifier.canonical_block(spec.name, first + second)
        signature = base64.b64encode(signing_key.private_key.sign(block)).decode("ascii")
        signed.append(block)
        lines += [
            "",
            f"FEATURE {spec.name}",
            "{",
            " ".join(verifier.format_directive(n, v, quote=n in ALWAYS_QUOTED) for n, v in first),
            " ".join(verifier.format_directive(n, v, quote=n in ALWAYS_QUOTED) for n, v in second),
            wrap_key(signature, key_wrap_width),
            "}",
        ]
    text = "\n".join(lines) + "\n"
    read_back = [verifier.canonical_block(f.name, f.directives) for f in verifier.parse_license(text)]
    if read_back != signed:  # the grammar and this renderer disagree: never ship such a file
        raise RuntimeError("rendered license does not read back as signed")
    return text


def filename_for(generated_at: datetime) -> str:
    """The download name LM-X tools expect: ``license_YYYY_MM_DD-HH_MM.lic`` (UTC)."""
    return f"license_{_utc(generated_at):%Y_%m_%d-%H_%M}.lic"
