"""Operator CLI: the operations an operator runs from the AWS console, on a laptop.

``--stage local`` (the default) works on the local stack that ``make run`` started
(found through its state folder, ``.local/`` or ``KEYTURN_LOCAL_DIR``); any other stage
means AWS, with the usual AWS environment variables (credentials, region) and the
stage's table names and SSM parameters from ``.chalice/config.json``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import date
from typing import Callable

from chalicelib import stages


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _needs_database(stage: str) -> None:
    if stage == "local" and "AWS_ENDPOINT_URL_DYNAMODB" not in os.environ:
        raise SystemExit(f"the local stack is not running (no {stages.local_state_dir() / stages.STACK_FILE}); "
                         "start it with `make run`")


def mint_key(args: argparse.Namespace) -> str:
    from chalicelib import keys, keystore

    try:
        return keys.mint(args.type, args.count, args.expires, secret=keystore.license_key_secret())
    except ValueError as exc:
        raise SystemExit(f"cannot mint the key: {exc}") from None


def set_password(args: argparse.Namespace) -> str:
    _needs_database(args.stage)
    from chalicelib import users

    password = args.password or os.environ.get("KEYTURN_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
    user = users.set_password(args.username, password)
    return f"user {user.username} ({user.user_id}) can log in; its lock is cleared"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.cli", description=__doc__)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stages.use_stage(args.stage)
    run: Callable[[argparse.Namespace], str] = args.run
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
