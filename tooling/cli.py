"""Operator CLI: the operations an operator runs from the AWS console, on a laptop.

``--stage local`` (the default) works on the local stack that ``make run`` started
(found through its state folder, ``.local/`` or ``KEYTURN_LOCAL_DIR``); any other stage
means AWS, with the usual AWS configuration (``AWS_PROFILE`` or credentials, and the
region botocore resolves: ``AWS_DEFAULT_REGION`` or the profile's) and the stage's
table names and SSM parameters from ``.chalice/config.json``.  Failures are one line on
standard error and exit status 1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import date
from typing import TYPE_CHECKING, Callable, TypeVar

from chalicelib import config
from tooling import stages

if TYPE_CHECKING:
    from chalicelib.models import Order

_T = TypeVar("_T")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _needs_database(stage: str) -> None:
    if stage == "local" and config.current().endpoint_url is None:
        raise SystemExit(f"the local stack of {stages.local_state_dir()} is not running; start it with `make run`")


def mint_key(args: argparse.Namespace) -> str:
    from chalicelib import keys, keystore

    try:
        return keys.mint(args.type, args.count, args.expires, secret=keystore.license_key_secret())
    except ValueError as exc:
        raise SystemExit(f"cannot mint the key: {exc}") from None


def set_password(args: argparse.Namespace) -> str:
    _needs_database(args.stage)
    from chalicelib import users

    password = args.password or os.environ.get("KEYTURN_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise SystemExit("no password: give --password, set KEYTURN_PASSWORD, or run in a terminal to be asked")
        password = getpass.getpass(f"password for {args.username}: ")
    try:
        user = users.set_password(args.username, password)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return f"user {user.username} ({user.user_id}) can log in; its lock is cleared"


def _read_json(source: str) -> object:
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"cannot read {source}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{source}: not JSON: {exc}") from None


def _show(order: "Order") -> str:
    from chalicelib import orders

    return json.dumps(orders.describe(order), ensure_ascii=False, indent=2)


def _domain(call: Callable[[], _T]) -> _T:
    """Run an operation; a domain error ends the CLI with its message (exit status 1)."""
    from chalicelib import errors

    try:
        return call()
    except errors.KeyturnError as exc:
        raise SystemExit(exc.message) from None


def create_order(args: argparse.Namespace) -> str:
    _needs_database(args.stage)
    from chalicelib import orders

    order = _domain(lambda: orders.create_order(_read_json(args.file)))
    return f"{_show(order)}\n{order.activation_key}"


def show_order(args: argparse.Namespace) -> str:
    _needs_database(args.stage)
    from chalicelib import orders

    return _domain(lambda: _show(orders.get_order(args.key)))


def set_enabled(enabled: bool) -> Callable[[argparse.Namespace], str]:
    def run(args: argparse.Namespace) -> str:
        _needs_database(args.stage)
        from chalicelib import orders

        return _domain(lambda: _show(orders.set_enabled(args.key, enabled)))

    return run


def allow_deactivations(args: argparse.Namespace) -> str:
    _needs_database(args.stage)
    from chalicelib import orders

    if args.total < 0:
        raise SystemExit("the allowance cannot be negative")
    return _domain(lambda: _show(orders.allow_deactivations(args.key, args.total)))


def revoke_activation(args: argparse.Namespace) -> str:
    _needs_database(args.stage)
    from chalicelib import activations, hostids, orders

    def run() -> str:
        activations.revoke(args.key, hostids.encode_segment(args.hostids))
        return _show(orders.get_order(args.key))

    return _domain(run)


def signing_keys(args: argparse.Namespace) -> str:
    from chalicelib import keystore

    return json.dumps({"keys": [key.public_jwk_like() for key in keystore.signing_keys()]}, indent=2)


def init_secrets(args: argparse.Namespace) -> str:
    from chalicelib import keystore

    current = config.current()
    if current.local_dir is not None:
        keystore.ensure_local_secrets(current.local_dir)
        return f"local secrets are in {current.local_dir / 'secrets'}"
    created = keystore.init_ssm_secrets(current.ssm_prefix)
    return "created " + ", ".join(created) if created else "every secret already exists; nothing changed"


def rotate_signing_key(args: argparse.Namespace) -> str:
    from chalicelib import keystore

    key = keystore.rotate_signing_key()
    return (f"new signing key {key.kid} is current; older keys stay published for files they signed "
            "(restart `make run`, or wait for new Lambda instances, to sign with it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tooling.cli", description=__doc__)
    parser.add_argument("--stage", default="local", help="Chalice stage to act on (default: local)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mint = commands.add_parser(
        "mint-key", help="mint a Log Insight-style license key",
        description="Mint a license key for /api/v1/licenses; prints the key as the last line. "
                    "The key is signed with the stage's license-key secret and carries its own summary.")
    mint.add_argument("--type", required=True, choices=["OSI", "CPU", "CORE"], help="what the key counts")
    mint.add_argument("--count", required=True, type=int, help="units granted; 0 means unlimited")
    mint.add_argument("--expires", type=_date, default=None, metavar="YYYY-MM-DD",
                      help="last valid day (UTC); omit for a key that never expires")
    mint.set_defaults(run=mint_key)

    user = commands.add_parser("set-password", help="create a user or reset its password (clears a lockout)")
    user.add_argument("username")
    user.add_argument("--password", help="the new password (default: $KEYTURN_PASSWORD, else asked)")
    user.set_defaults(run=set_password)

    create = commands.add_parser(
        "create-order", help="create a license order from JSON; prints the activation key last",
        description="Create a license order. FILE (or - for standard input) holds the order as JSON: customer, "
                    "product, licenseType, bulkMax, hostid, features, expirationDate, maintenanceEndDate, "
                    "deactivationsAllowed (see docs/operators.md). Prints the order, then its activation key "
                    "as the last line.")
    create.add_argument("file", metavar="FILE|-")
    create.set_defaults(run=create_order)

    show = commands.add_parser("show-order", help="print an order, its seats and its allowances")
    show.add_argument("key", metavar="KEY")
    show.set_defaults(run=show_order)
    for name, enabled, text in (("disable-order", False, "refuse every end-user call for this order (403)"),
                                ("enable-order", True, "serve a disabled order again")):
        toggle = commands.add_parser(name, help=text)
        toggle.add_argument("key", metavar="KEY")
        toggle.set_defaults(run=set_enabled(enabled))
    allow = commands.add_parser(
        "allow-deactivations", help="set the total number of deactivations end users may make",
        description="Set the order's deactivation allowance to N in total; deactivations already made count "
                    "against it, so N below that number allows no more.")
    allow.add_argument("key", metavar="KEY")
    allow.add_argument("total", metavar="N", type=int)
    allow.set_defaults(run=allow_deactivations)

    revoke = commands.add_parser(
        "revoke-activation", help="free a host's seat (not counted against the deactivation allowance)",
        description="Delete the license of one host and give its seat back to the order, whatever the "
                    "order's deactivation allowance. HOSTIDS is the plain text, e.g. HOSTNAME=build-01.")
    revoke.add_argument("key", metavar="KEY")
    revoke.add_argument("hostids", metavar="HOSTIDS")
    revoke.set_defaults(run=revoke_activation)

    keys_command = commands.add_parser("signing-keys", help="print the public keys that verify license files")
    keys_command.set_defaults(run=signing_keys)
    init = commands.add_parser("init-secrets", help="create the stage's missing secrets (SSM in AWS; never overwrites)")
    init.set_defaults(run=init_secrets)
    rotate = commands.add_parser("rotate-signing-key", help="make a new license-file signing key current")
    rotate.set_defaults(run=rotate_signing_key)

    verify = commands.add_parser(
        "verify-license", add_help=False,
        help="check a license file offline (see: verify-license --help)")
    verify.set_defaults(run=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command_at = 2 if argv[:1] == ["--stage"] else 1 if argv[:1] and argv[0].startswith("--stage=") else 0
    if argv[command_at:command_at + 1] == ["verify-license"]:  # offline: the verifier's own CLI
        from chalicelib import verifier

        return verifier.main(argv[command_at + 1:])
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], str] = args.run
    try:
        stages.bind(args.stage)
        print(run(args))
    except Exception as exc:  # every failure is one line, never a traceback
        message = failure_message(exc, args.stage)
        if message is None:
            raise
        raise SystemExit(message) from None
    return 0


def failure_message(exc: BaseException, stage: str) -> str | None:
    """One line for what went wrong talking to AWS (or the local stack), or None for a bug."""
    from botocore import exceptions as aws_errors

    from chalicelib.keystore import MissingSecret

    if isinstance(exc, (config.ConfigError, MissingSecret)):
        return str(exc)
    cause: BaseException | None = exc
    while cause is not None:  # PynamoDB and Powertools wrap botocore's errors: find the first botocore one
        if isinstance(cause, aws_errors.NoCredentialsError):
            return (f"no AWS credentials for stage {stage}: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY)")
        if isinstance(cause, aws_errors.NoRegionError):
            return "no AWS region: set AWS_DEFAULT_REGION or AWS_PROFILE (a profile with a region)"
        if isinstance(cause, aws_errors.EndpointConnectionError):
            return f"cannot reach AWS: {cause}"
        if isinstance(cause, aws_errors.ClientError):
            error = cause.response.get("Error", {})
            code, text = error.get("Code", "Error"), error.get("Message", "")
            region = config.current().region if _bound() else "?"
            if code == "ResourceNotFoundException":
                return (f"{text} (region {region}): is stage {stage} deployed in this region? "
                        "See docs/deploy.md")
            if code == "ParameterNotFound":
                return (f"a secret of stage {stage} is missing in SSM (region {region}): run "
                        f"`python -m tooling.cli --stage {stage} init-secrets`")
            return f"AWS refused the request ({code}, region {region}): {text}"
        if isinstance(cause, aws_errors.BotoCoreError):
            return f"AWS request failed: {cause}"
        cause = getattr(cause, "cause", None) or cause.__cause__ or cause.__context__
    return None


def _bound() -> bool:
    try:
        config.current()
    except config.ConfigError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
