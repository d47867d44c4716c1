"""The operator actions: the sample events, the answers to bad input, and the CLI through the same registry."""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any, Callable

import pytest

from chalicelib import activations, config, errors, keys, keystore, models, operator, orders, users
from tests.conftest import FakeClock, as_function
from tests.samples import segment
from tooling import cli

PROJECT = Path(__file__).resolve().parents[1]
SAMPLES = PROJECT / "events" / "operator"
PASSWORD = "a sentence nobody guesses"
KNOWN = ("create-order, show-order, disable-order, enable-order, allow-deactivations, revoke-activation, "
         "mint-key, add-user, reset-password, put-plan, show-plan, list-plans, delete-plan, show-audit, verify-audit")
KEY_PATTERN = re.compile(r"[0-9A-Z]{5}(-[0-9A-Z]{5}){3}")
INTERNAL = {"ok": False, "error": {"code": "internal", "message": "The operation failed due to an internal error."}}


def sample(name: str, **values: Any) -> dict[str, Any]:
    """A sample event with its placeholders replaced by ``values`` (each must be one)."""
    event: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    for field, value in values.items():
        assert re.fullmatch(r"<[^<>]+>", event[field]), f"{name}.json: {field} is not a placeholder"
        event[field] = value
    left = [field for field, value in event.items() if isinstance(value, str) and re.fullmatch(r"<[^<>]+>", value)]
    assert left == [], f"{name}.json: placeholders left: {left}"
    return event


def ok(event: object) -> Any:
    with as_function("operator"):  # the operator function's calls, for tests/test_iam.py
        answer = operator.handle(event, "operator:test")
    assert answer["ok"] is True, answer
    assert answer["action"] == event["action"]  # type: ignore[index]
    json.dumps(answer)  # what Lambda returns must be JSON
    return answer["result"]


def refused(event: object, actor: str = "operator:test") -> tuple[str, str]:
    answer = operator.handle(event, actor)
    assert answer["ok"] is False and set(answer) == {"ok", "error"} and set(answer["error"]) == {"code", "message"}
    return answer["error"]["code"], answer["error"]["message"]


def expected_order(key: str, clock: FakeClock, **changes: Any) -> dict[str, Any]:
    """``describe`` of the order of create-order.json, as created at the clock's time."""
    return {
        "activationKey": key,
        "customer": {"name": "Zoë Ltd"},
        "product": {"name": "Build Server", "version": "2", "template": "Default", "licenseGeneratorType": "lm_x"},
        "licenseType": "local", "bulkMax": 5, "activatedLicenses": 0,
        "hostid": {"types": [{"nameRaw": "HOSTNAME", "name": "Hostname", "min": 1, "max": 1}], "min": 1},
        "features": [{"name": "compile", "version": "2.0"}, {"name": "cache", "version": "2.0"}],
        "expirationDate": "2027-12-31", "maintenanceEndDate": "2027-06-30", "enabled": True,
        "deactivationsAllowed": 1, "deactivationsUsed": 0,
        "createdAt": int(clock.current.timestamp() * 1000), "externalOrderId": None,
        **changes,
    }


@pytest.fixture
def key(aws: None) -> str:
    """An order created from create-order.json's order, as an operator would first."""
    return orders.create_order(sample("create-order")["order"]).activation_key


# --- the sample events ---------------------------------------------------------------------

def test_there_is_one_sample_event_per_action_and_it_is_the_registry_example() -> None:
    files = sorted(path.stem for path in SAMPLES.glob("*.json"))
    assert files == sorted(operator.ACTIONS.names)
    for action in operator.ACTIONS:
        assert json.loads((SAMPLES / f"{action.name}.json").read_text(encoding="utf-8")) == action.example


def test_the_operators_guide_shows_every_sample_event() -> None:
    guide = (PROJECT / "docs" / "operators.md").read_text(encoding="utf-8")
    shown = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", guide, re.DOTALL)]
    assert [action.example for action in operator.ACTIONS if action.example not in shown] == []


def test_the_create_order_sample_creates_its_order(aws: None, clock: FakeClock) -> None:
    result = ok(sample("create-order"))
    assert KEY_PATTERN.fullmatch(result["activationKey"])
    assert result == expected_order(result["activationKey"], clock)
    assert orders.describe(orders.get_order(result["activationKey"])) == result


def test_the_show_order_sample_shows_it(key: str, clock: FakeClock) -> None:
    assert ok(sample("show-order", activationKey=key)) == expected_order(key, clock)


def test_the_disable_and_enable_samples_toggle_the_order(key: str, clock: FakeClock) -> None:
    assert ok(sample("disable-order", activationKey=key)) == expected_order(key, clock, enabled=False)
    assert orders.get_order(key).enabled is False
    assert ok(sample("enable-order", activationKey=key)) == expected_order(key, clock, enabled=True)
    assert orders.get_order(key).enabled is True


def test_the_allow_deactivations_sample_sets_the_allowance(key: str, clock: FakeClock) -> None:
    assert ok(sample("allow-deactivations", activationKey=key)) == expected_order(key, clock, deactivationsAllowed=2)


def test_the_revoke_activation_sample_frees_the_seat(key: str, clock: FakeClock) -> None:
    activations.activate(key, segment("HOSTNAME=build-01"))
    assert orders.get_order(key).activated_licenses == 1
    assert ok(sample("revoke-activation", activationKey=key)) == expected_order(key, clock, activatedLicenses=0)
    with pytest.raises(errors.LicenseDoesNotExist):
        activations.download(key, segment("HOSTNAME=build-01"))


def test_the_mint_key_sample_mints_its_key(aws: None) -> None:
    result = ok(sample("mint-key"))
    assert list(result) == ["licenseKey"]
    summary = keys.decode(result["licenseKey"], secret=keystore.license_key_secret())
    assert (summary.type_enum, summary.count, summary.expires) == (keys.KeyType.OSI, 10, date(2027, 12, 31))


def test_the_mint_key_sample_mints_with_the_deployed_stages_ssm_secret(
        aws: None, rebind: Callable[..., config.Settings]) -> None:
    rebind(local_dir=None, ssm_prefix="/keyturn/test/")
    keystore.init_ssm_secrets("/keyturn/test/")
    keystore.clear_cache()  # the function reads the secret itself
    result = ok(sample("mint-key"))
    assert keys.decode(result["licenseKey"], secret=keystore.license_key_secret()).count == 10


def test_mint_key_without_an_expiry_mints_a_key_that_never_expires(aws: None) -> None:
    result = ok({"action": "mint-key", "type": "CORE", "count": 0})
    summary = keys.decode(result["licenseKey"], secret=keystore.license_key_secret())
    assert (summary.type_enum, summary.count, summary.expires) == (keys.KeyType.CORE, 0, None)


def test_the_add_user_sample_creates_a_user_who_can_log_in(aws: None, clock: FakeClock) -> None:
    result = ok(sample("add-user", password=PASSWORD))
    stored = users.get("alice")
    assert stored is not None
    assert result == {"username": "alice", "userId": stored.user_id}
    assert stored.created_at == int(clock.current.timestamp() * 1000)
    assert users.authenticate("alice", PASSWORD).user_id == stored.user_id


def test_the_reset_password_sample_sets_the_password_and_clears_the_lock(aws: None) -> None:
    original = users.set_password("alice", "the old one")
    for _ in range(users.LOCKOUT_FAILURES + 1):
        with pytest.raises(errors.BadCredentials):
            users.authenticate("alice", "a wrong guess")
    locked = users.get("alice")
    assert locked is not None and locked.locked_until > 0
    result = ok(sample("reset-password", password=PASSWORD))
    assert result == {"username": "alice", "userId": original.user_id}
    stored = users.get("alice")
    assert stored is not None
    assert (stored.locked_until, stored.failed_logins, stored.failed_window_start) == (0, 0, 0)
    assert users.authenticate("alice", PASSWORD).user_id == original.user_id


# --- answers to bad input ------------------------------------------------------------------

@pytest.mark.parametrize(("event", "code", "message"), [
    ({"action": "allow-deactivations", "activationKey": "7K2QF-M4XDA-9PLTB-ZC3WE"}, "bad_field",
     "Invalid fields for allow-deactivations: total: Field required"),
    ({"action": "allow-deactivations", "activationKey": "7K2QF-M4XDA-9PLTB-ZC3WE", "total": "2"}, "bad_field",
     "Invalid fields for allow-deactivations: total: Input should be a valid integer"),
    ({"action": "allow-deactivations", "activationKey": "7K2QF-M4XDA-9PLTB-ZC3WE", "total": -1}, "bad_field",
     "Invalid fields for allow-deactivations: total: Input should be greater than or equal to 0"),
    ({"action": "show-order", "activationKey": 12345}, "bad_field",
     "Invalid fields for show-order: activationKey: Input should be a valid string"),
    ({"action": "mint-key", "type": "XYZ", "count": True, "expires": "31/12/2027", "colour": "red"}, "bad_field",
     "Invalid fields for mint-key: type: Input should be 'OSI', 'CPU' or 'CORE'; count: Input should be a valid "
     "integer; expires: must be a date as YYYY-MM-DD; colour: Extra inputs are not permitted"),
    ({"action": "mint-key", "type": "OSI", "count": keys.MAX_COUNT + 1, "expires": "2150-01-01"}, "bad_field",
     "Invalid fields for mint-key: count: Input should be less than or equal to 1048575; "
     "expires: must be from 1970-01-02 to 2149-06-06"),
    ({"action": "mint-key", "type": "OSI", "count": 1, "expires": 20271231}, "bad_field",
     "Invalid fields for mint-key: expires: Input should be a valid date"),
    ({"action": "create-order", "order": "order.json"}, "bad_field",
     "Invalid fields for create-order: order: Input should be a valid dictionary"),
    ({"action": "add-user", "username": "", "password": ""}, "bad_field",
     "Invalid fields for add-user: username: String should have at least 1 character; "
     "password: String should have at least 1 character"),
    ({"action": "add-user", "username": "u" * 129, "password": "x"}, "bad_field",
     "Invalid fields for add-user: username: String should have at most 128 characters"),
    ({"action": "frobnicate"}, "unknown_action", f'Unknown action "frobnicate"; known actions: {KNOWN}.'),
    ({"action": 7}, "unknown_action", f"Unknown action 7; known actions: {KNOWN}."),
    ({"activationKey": "7K2QF-M4XDA-9PLTB-ZC3WE"}, "unknown_action",
     f'The event names no "action"; known actions: {KNOWN}.'),
    (["show-order"], "bad_json", f'The event must be a JSON object: {{"action": ..., <its fields>}}; '
                                 f"known actions: {KNOWN}."),
    ("show-order", "bad_json", f'The event must be a JSON object: {{"action": ..., <its fields>}}; '
                               f"known actions: {KNOWN}."),
    (None, "bad_json", f'The event must be a JSON object: {{"action": ..., <its fields>}}; known actions: {KNOWN}.'),
], ids=["missing", "wrong-type", "negative", "key-not-text", "every-problem-at-once", "out-of-range",
        "date-not-text", "order-not-object", "empty-user", "long-username", "unknown-action", "action-not-text",
        "no-action", "list-event", "text-event", "null-event"])
def test_bad_input_is_an_answer_naming_the_problem(aws: None, event: object, code: str, message: str) -> None:
    assert refused(event) == (code, message)


@pytest.mark.parametrize("name", ["show-order", "disable-order", "enable-order", "allow-deactivations",
                                  "revoke-activation"])
@pytest.mark.parametrize("key", ["AAAAA-AAAAA-AAAAA-AAAAA", "not-a-key", " "])
def test_an_unknown_or_malformed_activation_key_is_the_apis_message(aws: None, name: str, key: str) -> None:
    assert refused({**sample(name, activationKey=key)}) == ("invalid_activation_key",
                                                            "Invalid activation key specified.")


@pytest.mark.parametrize(("name", "fields"), [
    ("show-order", "activationKey"), ("revoke-activation", "activationKey"), ("add-user", "password"),
    ("reset-password", "password"),
])
def test_a_sample_pasted_unchanged_is_refused_by_its_placeholders(aws: None, name: str, fields: str) -> None:
    event = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    assert refused(event) == ("bad_field", f"Invalid fields for {name}: {fields}: is a sample's placeholder: "
                                           "replace it with a real value")
    assert users.get("alice") is None


def test_an_invalid_order_names_every_problem(aws: None) -> None:
    event = sample("create-order")
    event["order"] = {**event["order"], "bulkMax": 0, "licenseType": "floating"}
    assert refused(event) == ("invalid_order", "Invalid order: licenseType: Input should be 'local' or 'network'; "
                                               "bulkMax: Input should be greater than or equal to 1")


def test_revoking_a_host_without_a_license_or_with_garbled_ids(key: str) -> None:
    assert refused(sample("revoke-activation", activationKey=key)) == ("license_does_not_exist",
                                                                       "License does not exist.")
    garbled = {**sample("revoke-activation", activationKey=key), "hostids": "HOSTNAME"}
    assert refused(garbled) == ("hostid_format", "Invalid HostID format provided.")


def test_add_user_of_an_existing_user_is_refused_and_keeps_its_password(aws: None) -> None:
    original = users.set_password("alice", "the old one")
    assert refused(sample("add-user", password=PASSWORD)) == (
        "user_exists", "User 'alice' already exists; reset-password gives it a new password.")
    assert users.authenticate("alice", "the old one").user_id == original.user_id


def test_reset_password_of_an_unknown_user_is_refused_and_creates_nobody(aws: None) -> None:
    event = {**sample("reset-password", password=PASSWORD), "username": "nobody"}
    assert refused(event) == ("unknown_user", "Unknown user 'nobody'; add-user creates it.")
    assert users.get("nobody") is None


def test_users_add_and_reset_refuse_empty_credentials_as_set_password_does(aws: None) -> None:
    for write in (users.add_user, users.reset_password, users.set_password):
        with pytest.raises(ValueError, match="must not be empty"):
            write("", "x")


# --- unexpected failures -------------------------------------------------------------------

def _explode(fields: dict[str, Any]) -> Any:
    raise RuntimeError("table keyturn-test-orders is on fire")


def test_an_unexpected_exception_is_logged_and_answered_generically(capsys: pytest.CaptureFixture[str]) -> None:
    registry = operator.Registry([operator.Action("explode", "always fails", (operator.TOTAL,), _explode)])
    assert registry.handle({"action": "explode", "total": 1}, "operator:test") == INTERNAL
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(entry["level"], entry["message"], entry["action"]) for entry in logged] == [
        ("ERROR", "operator action failed", "explode")]
    assert "table keyturn-test-orders is on fire" in logged[0]["exception"]
    with pytest.raises(RuntimeError, match="on fire"):  # the CLI's path: its own messages for AWS failures
        registry.answer({"action": "explode", "total": 1}, "operator:cli")


def test_a_failing_database_is_the_generic_answer_and_the_password_is_not_logged(
        aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    models.User.delete_table()
    assert operator.handle(sample("add-user", password=PASSWORD), "operator:test") == INTERNAL
    models.Order.delete_table()
    assert operator.handle({"action": "show-order", "activationKey": "7K2QF-M4XDA-9PLTB-ZC3WE"}, "t") == INTERNAL
    logged = capsys.readouterr().out
    assert [json.loads(line)["action"] for line in logged.splitlines()] == ["add-user", "show-order"]
    assert PASSWORD not in logged


def test_importing_the_actions_leaves_pydantic_out_until_an_event_is_validated() -> None:
    """Wherever the functions are wired the API imports this module too; its cold start must not pay for pydantic."""
    probe = "import sys, chalicelib.operator; print('pydantic' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr


def test_a_registry_refuses_duplicate_names_and_a_field_called_action() -> None:
    action = operator.Action("twice", "x", (), _explode)
    with pytest.raises(ValueError, match="two actions are named twice"):
        operator.Registry([action, action])
    field = operator.Field("action", "text", "x", "x", metavar="X")
    with pytest.raises(ValueError, match="field names must be unique and not 'action'"):
        operator.Registry([operator.Action("odd", "x", (field,), _explode)])


# --- the CLI answers through the same registry ---------------------------------------------

def run_cli(*argv: str, secret: Callable[[operator.Field, argparse.Namespace], str] | None = None) -> str:
    """One CLI command against the test stage (bound by conftest; main() would bind the local stack)."""
    args = cli.build_parser().parse_args(["--stage", "test", *argv])
    if secret is None:
        return str(args.run(args))
    return cli.run_action(args.run.args[0], args, secret=secret)


def test_cli_create_order_prints_the_order_then_the_key_alone(aws: None, tmp_path: Path, clock: FakeClock) -> None:
    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps(sample("create-order")["order"]), encoding="utf-8")
    printed = run_cli("create-order", str(order_file))
    *order_lines, key = printed.splitlines()
    assert json.loads("\n".join(order_lines)) == expected_order(key, clock)
    assert printed == json.dumps(expected_order(key, clock), ensure_ascii=False, indent=2) + "\n" + key


def test_cli_order_commands_print_the_order(key: str, clock: FakeClock) -> None:
    assert json.loads(run_cli("disable-order", key)) == expected_order(key, clock, enabled=False)
    assert json.loads(run_cli("allow-deactivations", key.lower(), "3")) == expected_order(
        key, clock, enabled=False, deactivationsAllowed=3)
    with pytest.raises(SystemExit, match=r"^Invalid activation key specified\.$"):
        run_cli("show-order", "AAAAA-AAAAA-AAAAA-AAAAA")


def test_cli_mint_key_prints_the_key_and_refuses_a_bad_date_in_one_line(aws: None) -> None:
    printed = run_cli("mint-key", "--type", "CPU", "--count", "3", "--expires", "2030-01-31")
    summary = keys.decode(printed, secret=keystore.license_key_secret())
    assert (summary.type_enum, summary.count, summary.expires) == (keys.KeyType.CPU, 3, date(2030, 1, 31))
    with pytest.raises(SystemExit) as caught:
        run_cli("mint-key", "--type", "CPU", "--count", "-3", "--expires", "2030-02-30")
    assert caught.value.code == ("Invalid fields for mint-key: count: Input should be greater than or equal to 0; "
                                 "expires: must be a date as YYYY-MM-DD")


def test_cli_add_user_then_reset_password(aws: None) -> None:
    created = run_cli("add-user", "bob", "--password", "first")
    user = users.get("bob")
    assert user is not None and created == f"user bob ({user.user_id}) is created and can log in"
    with pytest.raises(SystemExit) as caught:
        run_cli("add-user", "bob", "--password", "second")
    assert caught.value.code == "User 'bob' already exists; reset-password gives it a new password."
    asked: list[str] = []

    def typed(field: operator.Field, args: argparse.Namespace) -> str:
        asked.append(field.name)
        return "typed at the terminal"

    reset = run_cli("reset-password", "bob", secret=typed)
    assert (asked, reset) == (["password"], f"user bob ({user.user_id}) has a new password; its lock is cleared")
    assert users.authenticate("bob", "typed at the terminal").user_id == user.user_id


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_cli_passwords_come_from_the_option_the_environment_or_a_terminal() -> None:
    args = argparse.Namespace(username="bob", password=None)
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return "typed"

    def read(**changes: Any) -> str:
        options: dict[str, Any] = {"environ": {}, "stdin": Terminal(True), "ask": ask, **changes}
        return cli.read_secret(operator.PASSWORD, args, **options)

    assert read(environ={"KEYTURN_PASSWORD": "from the environment"}) == "from the environment"
    assert (read(), prompts) == ("typed", ["password for bob: "])
    with pytest.raises(SystemExit) as caught:
        read(stdin=Terminal(False))
    assert caught.value.code == "no password: give --password, set KEYTURN_PASSWORD, or run in a terminal to be asked"
    assert cli.read_secret(operator.PASSWORD, argparse.Namespace(username="bob", password="given"),
                           environ={"KEYTURN_PASSWORD": "ignored"}, stdin=Terminal(False)) == "given"


def test_the_audit_samples_show_and_verify_an_orders_chain(key: str) -> None:
    for name in ("show-audit", "verify-audit"):
        assert json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))["entity"].startswith("order#")
    shown = ok({"action": "show-audit", "entity": f"order#{key}"})
    assert [(r["seq"], r["action"]) for r in shown["records"]] == [(1, "order-created")]
    assert ok({"action": "verify-audit", "entity": f"order#{key}"}) == {
        "entity": f"order#{key}", "ok": True, "records": 1, "firstBad": None, "reason": None}
