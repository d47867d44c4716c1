"""Operator CLI: the operations an operator runs from the AWS console, on a laptop.

``--stage local`` (the default) works on the local stack that ``make run`` started
(found through its state folder, ``.local/`` or ``KEYTURN_LOCAL_DIR``); any other stage
means AWS, with the usual AWS configuration (``AWS_PROFILE`` or credentials, and the
region botocore resolves: ``AWS_DEFAULT_REGION`` or the profile's) and the stage's
table names and SSM parameters from ``.chalice/config.json``.  Failures are one line on
standard error and exit status 1.

The order, key and user commands are built from the operator actions
(``chalicelib.operator``): their names, arguments, help and example come from the
registry the ``operator`` Lambda function answers with, and each command answers
through it, so the CLI only reads files, asks for passwords and prints.  The other
commands (secrets, signing keys, ``set-password``, ``verify-license``) are the CLI's own.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import json
import os
import shlex
import sys
import textwrap
from typing import IO, Any, Callable, Mapping

from chalicelib import audit, config
from chalicelib import operator as operator_actions
from tooling import stages

PROG = "python -m tooling.cli"
CLI_ACTOR = "operator:cli"  # who the operator actions are told acted (for the audit trail to come)
NO_PASSWORD = "no password: give --password, set KEYTURN_PASSWORD, or run in a terminal to be asked"


def _needs_database(stage: str) -> None:
    if stage == "local" and config.current().endpoint_url is None:
        raise SystemExit(f"the local stack of {stages.local_state_dir()} is not running; start it with `make run`")


def read_secret(field: operator_actions.Field, args: argparse.Namespace, *, environ: Mapping[str, str] = os.environ,
            stdin: IO[str] | None = None, ask: Callable[[str], str] = getpass.getpass) -> str:
    """A secret field's value: its option, else ``$KEYTURN_PASSWORD``, else asked at a terminal.

    The fallbacks keep passwords out of the shell's history; without a terminal to ask
    at, it is the one-line :data:`NO_PASSWORD` message.
    """
    given: str | None = getattr(args, field.name, None) or environ.get("KEYTURN_PASSWORD")
    if given:
        return given
    if not (stdin or sys.stdin).isatty():
        raise SystemExit(NO_PASSWORD)
    username = getattr(args, "username", None)
    return ask(f"{field.name} for {username}: " if username else f"{field.name}: ")


def _read_json(source: str) -> object:
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"cannot read {source}: {exc}") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # malformed, 5,000-digit numbers, nested too deeply
        raise SystemExit(f"{source}: not JSON: {str(exc)[:200]}") from None


# --- the operator actions, one subcommand each ---------------------------------------------

def _indented(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2)


# How the CLI prints an action's result (default: indented JSON), and what its --help says about it.
_OUTPUTS: dict[str, tuple[Callable[[Any], str], str]] = {
    # The README and scripts take the key with `| tail -n 1`: it stays alone on the last line.
    "create-order": (lambda order: f"{_indented(order)}\n{order['activationKey']}",
                     "Prints the order as JSON, then its activation key alone as the last line."),
    "mint-key": (lambda result: str(result["licenseKey"]), "Prints the key as the last line."),
    "add-user": (lambda user: f"user {user['username']} ({user['userId']}) is created and can log in",
                 "Prints the user's name and id (never the password)."),
    "reset-password": (lambda user: f"user {user['username']} ({user['userId']}) has a new password; "
                                    "its lock is cleared",
                       "Prints the user's name and id (never the password)."),
}
_DEFAULT_OUTPUT: tuple[Callable[[Any], str], str] = (_indented, "Prints the result as JSON.")


def run_action(action: operator_actions.Action, args: argparse.Namespace, *,
               secret: Callable[[operator_actions.Field, argparse.Namespace], str] = read_secret) -> str:
    """Turn the command line into the action's event and answer it as the operator function does.

    Same registry, same validation, same action function: only reading an order file
    and asking for a password are the CLI's own.  An ``ok: false`` answer ends the CLI
    with its message on one line (exit status 1); anything unexpected propagates to
    :func:`main`, whose messages name missing credentials or an undeployed stage.
    """
    if action.needs_database:
        _needs_database(args.stage)
    event: dict[str, Any] = {"action": action.name}
    for field in action.fields:
        value = getattr(args, field.name)
        if field.kind == "object":
            value = _read_json(value)
        elif field.secret:
            value = secret(field, args)
        if value is not None:  # an option not given: the action's default applies
            event[field.name] = value
    answer = operator_actions.ACTIONS.answer(event, CLI_ACTOR)
    if not answer["ok"]:
        raise SystemExit(" ".join(str(answer["error"]["message"]).split()))
    render, _ = _OUTPUTS.get(action.name, _DEFAULT_OUTPUT)
    return render(answer["result"])


def _add_field(command: argparse.ArgumentParser, field: operator_actions.Field, *, in_event: bool = True) -> None:
    """One field as an argparse argument; an action's field's help names the event field it fills."""
    options: dict[str, Any] = {"help": f"{field.help} (event field {field.name})" if in_event else field.help}
    if field.choices:
        options["choices"] = field.choices
    if field.metavar and field.option:
        options["metavar"] = field.metavar
    if field.kind == "integer":
        options["type"] = int
    if field.option is None:
        command.add_argument(field.name, metavar=field.metavar, **options)
    else:  # a secret is never required here: read_secret falls back to the environment, then a prompt
        command.add_argument(field.option, dest=field.name, required=field.required and not field.secret,
                             default=None, **options)


def example_command(action: operator_actions.Action) -> str:
    """The action's example event as a command line (secret fields left to the prompt)."""
    words = [action.name]
    for field in action.fields:
        if field.secret:
            continue
        value = field.cli_example if field.cli_example is not None else field.example
        if value is None:
            continue
        words.extend([field.option, str(value)] if field.option else [str(value)])
    return " ".join([PROG, *map(shlex.quote, words)])


def _wrapped(text: str) -> str:
    return textwrap.fill(text, width=88, break_on_hyphens=False)


def _epilog(examples: list[str], *notes: str) -> str:
    """``example:`` and its command lines as they are, then the notes as wrapped paragraphs."""
    return "\n\n".join(["example:\n" + "\n".join(f"  {line}" for line in examples), *map(_wrapped, notes)])


def _add_action(commands: Any, action: operator_actions.Action) -> None:
    _, prints = _OUTPUTS.get(action.name, _DEFAULT_OUTPUT)
    event = json.dumps(action.example, ensure_ascii=False)
    command = commands.add_parser(
        action.name, help=action.help, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrapped(f"{action.description or _sentence(action.help)} {prints}"),
        epilog=_epilog([example_command(action)])
        + f"\n\nthe same as this event to the `operator` Lambda function (docs/operators.md):\n  {event}")
    for field in action.fields:
        _add_field(command, field)
    command.set_defaults(run=functools.partial(run_action, action))


# --- the other commands --------------------------------------------------------------------

def set_password(args: argparse.Namespace) -> str:
    _needs_database(args.stage)
    from chalicelib import users

    password = read_secret(operator_actions.PASSWORD, args)
    try:
        user = users.set_password(args.username, password)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return f"user {user.username} ({user.user_id}) can log in; its lock is cleared"


def _customer_key(stage: str) -> str | None:
    """The KMS key the deployed stage's SecureStrings use (``keyturn_deploy.ssm_kms_key_arn``), or None."""
    from tooling import template

    return template.deployment(stage).ssm_kms_key_arn


def signing_keys(args: argparse.Namespace) -> str:
    from chalicelib import keystore

    return json.dumps({"keys": [key.public_jwk_like() for key in keystore.signing_keys()]}, indent=2)


def init_secrets(args: argparse.Namespace) -> str:
    from chalicelib import keystore

    current = config.current()
    if current.local_dir is not None:
        keystore.ensure_local_secrets(current.local_dir)
        return f"local secrets are in {current.local_dir / 'secrets'}"
    created = keystore.init_ssm_secrets(current.ssm_prefix, kms_key_id=_customer_key(args.stage))
    return "created " + ", ".join(created) if created else "every secret already exists; nothing changed"


def rotate_signing_key(args: argparse.Namespace) -> str:
    from chalicelib import keystore

    key = keystore.rotate_signing_key(kms_key_id=_customer_key(args.stage) if args.stage != "local" else None)
    return (f"new signing key {key.kid} is current; older keys stay published for files they signed "
            "(restart `make run`, or wait for new Lambda instances, to sign with it)")


def provision(args: argparse.Namespace) -> str:
    """One event through the provisioning service, as the functions feed it: its result, as JSON."""
    _needs_database(args.stage)
    import uuid

    from chalicelib import provisioning
    from chalicelib.functions import is_shop_event, line_of, provision_shop, shop_source

    data: Any = _read_json(args.file)
    if is_shop_event(data):  # a Shopify or Stripe event, whole
        try:
            return json.dumps(provision_shop(data), ensure_ascii=False)
        except provisioning.Rejected as exc:
            provisioning.reject(exc.message, message_id=f"cli:{uuid.uuid4()}", source=shop_source(data))
            raise SystemExit(exc.message) from None
    line = line_of(data)
    try:
        return json.dumps(provisioning.provision(line), ensure_ascii=False)
    except provisioning.Rejected as exc:
        provisioning.reject(exc.message, message_id=f"cli:{uuid.uuid4()}", data=line)
        raise SystemExit(exc.message) from None


def provisioning_show(args: argparse.Namespace) -> str:
    """The stored result of a line (or a list of every line of the order): JSON only."""
    _needs_database(args.stage)
    from chalicelib import provisioning

    if not args.order_id.strip() or (args.line_item is not None and not args.line_item.strip()):
        raise SystemExit("ORDER_ID and LINE_ITEM must not be empty")
    if args.shop is not None and args.source != "shopify":
        raise SystemExit("--shop is Shopify's: use it with --source shopify")
    if args.source == "shopify":
        if not args.shop:
            raise SystemExit("--source shopify needs --shop DOMAIN (the store's myshopify.com domain)")
        found = provisioning.show(f"{args.shop}#{args.order_id}", args.line_item, source="shopify")
    else:
        found = provisioning.show(args.order_id, args.line_item, source=args.source or provisioning.KEYTURN_SOURCE)
    if found is None:
        line = f"line {args.line_item} of " if args.line_item is not None else ""
        raise SystemExit(f"no provisioning event was seen for {line}order {args.order_id}")
    return json.dumps(found, ensure_ascii=False)


FUNCTIONS = ("operator", "provision_queue", "provision_events")


class _InvokeContext:
    """What a function may read of Lambda's context object, for a local run."""

    def __init__(self, name: str) -> None:
        import uuid

        self.function_name = f"keyturn-local-{name}"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{stages.LOCAL_REGION}:000000000000:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 28_000


def invoke(args: argparse.Namespace) -> str:
    """Run the app's Lambda function NAME with an event, as ``sam local invoke`` would: its return value."""
    if args.stage != "local":
        raise SystemExit("invoke runs the functions locally, on the local stack; for a deployed stage use the "
                         "Lambda console's Test tab or `aws lambda invoke`")
    _needs_database(args.stage)
    event = _read_json(args.file)
    from app import app

    handler = app.handler_map[args.name]
    return json.dumps(handler(event, _InvokeContext(args.name)), ensure_ascii=False, separators=(",", ":"))


VERIFY_EPILOG = _epilog(
    [f'{PROG} verify-license license.lic --public-key "$PUB" --hostids HOSTNAME=build-01'],
    "PUB is a publicKey of GET /rest/v1/signing-keys (or of the signing-keys command); give one "
    "--public-key per published key so files signed before a rotation still verify. Offline: no stage, "
    "no AWS. Exit status 0 valid, 1 invalid, 2 a usage error.")


def verify_license(argv: list[str]) -> int:
    """The verifier's own CLI (``chalicelib.verifier``, offline); its --help gets this CLI's example."""
    from chalicelib import verifier

    try:
        return verifier.main(argv)
    except SystemExit as exc:
        if exc.code in (0, None):  # argparse printed the verifier's help and stops
            print(f"\n{VERIFY_EPILOG}")
        raise


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _add_command(commands: Any, name: str, run: Callable[[argparse.Namespace], str], help: str,
                 examples: list[str], description: str = "") -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=_wrapped(description or _sentence(help)),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog(examples))
    command.set_defaults(run=run)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"Every command's --help lists its fields and an example, "
                                            f"e.g. {PROG} mint-key --help.")
    parser.add_argument("--stage", default="local", help="Chalice stage to act on (default: local)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for action in operator_actions.ACTIONS:
        _add_action(commands, action)

    user = _add_command(
        commands, "set-password", set_password, "create a user or reset its password (clears a lockout)",
        [f"{PROG} set-password admin", f"KEYTURN_PASSWORD=... {PROG} --stage dev set-password ci-bot"],
        description="Create a user, or give an existing one a new password, and clear its lockout (one upsert: "
                    "make run seeds admin with it). add-user and reset-password do one of the two and refuse "
                    "the other. Prints the user's name and id.")
    for field in (operator_actions.USERNAME, operator_actions.PASSWORD):
        _add_field(user, field, in_event=False)
    _add_command(commands, "signing-keys", signing_keys, "print the public keys that verify license files",
                 [f"{PROG} signing-keys", f"{PROG} --stage dev signing-keys"])
    _add_command(commands, "init-secrets", init_secrets,
                 "create the stage's missing secrets (SSM in AWS; never overwrites)",
                 [f"{PROG} --stage dev init-secrets"],
                 description="Create the stage's missing secrets: the license-key MAC secret and a first "
                             "license-file signing key (SSM SecureStrings in AWS, files for the local stack). "
                             "Existing ones are never overwritten: a new MAC secret would invalidate every key.")
    _add_command(commands, "rotate-signing-key", rotate_signing_key, "make a new license-file signing key current",
                 [f"{PROG} --stage prod rotate-signing-key"],
                 description="Make a new license-file signing key current; the older ones stay published so the "
                             "files they signed still verify. Running functions pick it up within the secrets' "
                             "cache time (make run: at its next start).")
    shown = _add_command(
        commands, "provisioning-show", provisioning_show,
        "print what became of a shop order's line (or of every line): the stored result, as JSON",
        [f"{PROG} provisioning-show shop-1001 1", f"{PROG} --stage dev provisioning-show shop-1001",
         f"{PROG} provisioning-show --source shopify --shop zoe-tools.myshopify.com 6158849654871",
         f"{PROG} provisioning-show --source stripe sub_1QyZaBcDeFgHiJkLmNoPqRsT price_1PRO"],
        description="Print the stored result of one line of a shop's order, exactly as every delivery of its event "
                    "reported it (the activation key or license key, or the reason it was rejected), or without "
                    "LINE_ITEM a JSON list of every line of the order. Exit status 1 when no event of that order "
                    "was ever seen.")
    shown.add_argument("order_id", metavar="ORDER_ID", help="the event's orderId; Shopify: the order's id; Stripe: "
                                                          "the checkout session's or the subscription's id")
    shown.add_argument("line_item", metavar="LINE_ITEM", nargs="?",
                       help="the event's lineItem (default: every line); Shopify: the line item's id; Stripe: the "
                            "session's keyturn_plan, or the subscription's price id")
    shown.add_argument("--source", choices=("shopify", "stripe"), default=None,
                       help="whose order: a Shopify or a Stripe one (default: Keyturn's own provisioning events)")
    shown.add_argument("--shop", metavar="DOMAIN", default=None,
                       help="with --source shopify: the store's domain, e.g. zoe-tools.myshopify.com")
    fed = _add_command(
        commands, "provision", provision, "feed one provisioning event through the same service the functions use",
        [f"{PROG} provision events/provisioning/order-line.json", f"... | {PROG} --stage dev provision -"],
        description="Provision one order line (Keyturn's provisioning JSON, or a whole EventBridge event whose "
                    "detail is the line), exactly once: the same orderId and lineItem always give the same result. "
                    "Prints the result as JSON; a rejected event is recorded with its reason, which is printed, "
                    "exit status 1.")
    fed.add_argument("file", metavar="FILE|-", help="the event as JSON (- reads standard input)")
    invoked = _add_command(
        commands, "invoke", invoke, "run one of the app's Lambda functions locally with an event",
        [f"{PROG} invoke provision_queue events/provisioning/provision_queue-order-and-key.json",
         f"{PROG} invoke operator events/operator/mint-key.json"],
        description="Run the app's Lambda function NAME (operator, provision_queue, provision_events) with the "
                    "event in FILE against the local stack, as `sam local invoke` would: the function's return "
                    "value is the last line of standard output, as compact JSON (logs go to standard error). "
                    "Exit status 0 whenever the function returned, {\"ok\": false} included.")
    invoked.add_argument("name", metavar="NAME", choices=FUNCTIONS, help="the function: " + ", ".join(FUNCTIONS))
    invoked.add_argument("file", metavar="FILE|-", help="the event as JSON (- reads standard input)")
    verify = commands.add_parser(
        "verify-license", add_help=False,
        help="check a license file offline (see: verify-license --help)")
    verify.set_defaults(run=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command_at = 2 if argv[:1] == ["--stage"] else 1 if argv[:1] and argv[0].startswith("--stage=") else 0
    if argv[command_at:command_at + 1] == ["verify-license"]:  # offline: the verifier's own CLI
        return verify_license(argv[command_at + 1:])
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], str] = args.run
    try:
        stages.bind(args.stage)
        # Standard output is the result alone (scripts parse it, or take its last line):
        # whatever the services write while they work (logs, embedded metrics) goes to stderr.
        with contextlib.redirect_stdout(sys.stderr), audit.acting_as("operator:cli"):
            output = run(args)
        print(output)
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
