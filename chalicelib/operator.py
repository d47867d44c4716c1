"""Operator actions, defined once for the ``operator`` Lambda function and the CLI.

An :class:`Action` is a name (``show-order``: the event's ``action`` and the CLI
command), a one-line help, its fields (:class:`Field`), an example event and the function
that does it.  The ``operator`` function answers ``{"action": name, <fields>}`` events
with :func:`handle`; ``tooling/cli.py`` builds one subcommand per action from the same
:data:`ACTIONS`, so a name, a field, its validation and its help exist in one place and
the console and a laptop cannot drift apart.

Every answer is ``{"ok": true, "action": ..., "result": ...}`` or
``{"ok": false, "error": {"code": ..., "message": ...}}``: bad input is reported, never
raised, and an unexpected failure is logged and answered with a generic message, so
neither a stack trace nor an exception's text (which may hold a table name, a key)
reaches whoever sent the event.

Fields are validated with pydantic (strict, unknown fields refused), every problem at
once and each named by its field.  pydantic is imported on the first validation only:
this module is imported wherever the functions are wired, and the API's cold start must
not pay for it (``orderspec`` and ``provisioning`` do the same).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

from chalicelib import audit, errors, keys, users
from chalicelib.logs import logger

UNKNOWN_ACTION = "unknown_action"  # an errors.Code member once that module gains it
INTERNAL_MESSAGE = errors.Internal.message

Kind = Literal["text", "integer", "date", "object"]


@dataclass(frozen=True)
class Field:
    """One field of an action: its event name, its command-line form, its rules and its help.

    ``name`` is the event's (camelCase) key.  On the command line a field is a
    positional named ``metavar`` (``KEY``), or the ``option`` (``--type``).  ``example``
    is the value in the action's example event (``<...>`` placeholders included);
    ``cli_example`` replaces it in the CLI's example when the command line takes
    something else (a file name for an order) or a placeholder would not read as one.
    ``secret`` fields are left out of CLI examples and, on the command line, fall back
    to ``$KEYTURN_PASSWORD`` and then a terminal prompt, so they need not be typed
    where the shell's history keeps them.
    """

    name: str
    kind: Kind
    help: str
    example: Any
    metavar: str | None = None
    option: str | None = None
    required: bool = True
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: Any = None
    maximum: Any = None
    min_length: int | None = None
    max_length: int | None = None
    secret: bool = False
    cli_example: str | None = None

    def __post_init__(self) -> None:
        if self.option is None and self.metavar is None:
            raise ValueError(f"field {self.name}: a positional needs a metavar")
        if self.option is None and not self.required:
            raise ValueError(f"field {self.name}: an optional field must be an option on the command line")


@dataclass(frozen=True, eq=False)
class Action:
    """One operator action; ``run`` gets the validated fields and returns a JSON-serialisable result.

    ``needs_database`` is False for actions that touch no table (``mint-key``), which
    the CLI may then run without the local stack's database.
    """

    name: str
    help: str
    fields: tuple[Field, ...]
    run: Callable[[dict[str, Any]], Any]
    description: str = ""
    needs_database: bool = True

    @property
    def example(self) -> dict[str, Any]:
        """A complete event for this action (what ``events/operator/<name>.json`` holds)."""
        return {"action": self.name, **{field.name: field.example for field in self.fields}}


class _Refused(Exception):
    """An event the registry cannot even hand to an action (no such action, not an object, bad fields)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class Registry:
    """The actions by name, each event's validation, and the answers of :func:`handle`."""

    def __init__(self, actions: Iterable[Action]) -> None:
        self._actions: dict[str, Action] = {}
        for action in actions:
            if action.name in self._actions:
                raise ValueError(f"two actions are named {action.name}")
            if len({field.name for field in action.fields} | {"action"}) != len(action.fields) + 1:
                raise ValueError(f"{action.name}: field names must be unique and not 'action'")
            self._actions[action.name] = action
        self._models: dict[str, Any] = {}  # pydantic models by action name, built on first use

    def __iter__(self) -> Iterator[Action]:
        return iter(self._actions.values())

    def __getitem__(self, name: str) -> Action:
        return self._actions[name]

    @property
    def names(self) -> list[str]:
        return list(self._actions)

    def _known(self) -> str:
        return ", ".join(self._actions)

    def action_of(self, event: Mapping[str, Any]) -> Action:
        """The action an event names, or :class:`_Refused` saying which ones are known."""
        if "action" not in event:
            raise _Refused(UNKNOWN_ACTION, f'The event names no "action"; known actions: {self._known()}.')
        name = event["action"]
        if not isinstance(name, str) or name not in self._actions:
            shown = json.dumps(name, ensure_ascii=False, default=str)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise _Refused(UNKNOWN_ACTION, f"Unknown action {shown}; known actions: {self._known()}.")
        return self._actions[name]

    def fields_of(self, action: Action, event: Mapping[str, Any]) -> dict[str, Any]:
        """The event's fields validated (defaults filled in), or :class:`_Refused` naming every bad one."""
        from pydantic import ValidationError

        model = self._models.get(action.name)
        if model is None:
            model = self._models[action.name] = _model(action)
        try:
            validated = model.model_validate({name: value for name, value in event.items() if name != "action"})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'event'}: {e['msg']}"
                                 for e in exc.errors())
            raise _Refused(errors.Code.BAD_FIELD.value, f"Invalid fields for {action.name}: {problems}") from None
        fields: dict[str, Any] = validated.model_dump()
        return fields

    def answer(self, event: object, actor: str) -> dict[str, Any]:
        """:func:`handle` without its safety net: bad input and domain errors are answers,
        anything else propagates.

        The CLI calls this, so its own one-line messages for missing credentials or an
        undeployed stage still apply; ``actor`` (``operator:cli``, the function's
        caller) is who the audit trail records.
        """
        with audit.acting_as(actor):  # every change the action makes is recorded as this actor's
            return self._answer(event)

    def _answer(self, event: object) -> dict[str, Any]:
        if not isinstance(event, dict):
            return _failure(errors.Code.BAD_JSON.value, f'The event must be a JSON object: {{"action": ..., '
                                                        f"<its fields>}}; known actions: {self._known()}.")
        try:
            action = self.action_of(event)
            result = action.run(self.fields_of(action, event))
        except _Refused as exc:
            return _failure(exc.code, exc.message)
        except errors.KeyturnError as exc:
            return _failure(exc.code.value, exc.message)
        return {"ok": True, "action": action.name, "result": result}

    def handle(self, event: object, actor: str) -> dict[str, Any]:
        """Answer one event; never raises for it, never returns a stack trace or an exception's text."""
        try:
            return self.answer(event, actor)
        except Exception:
            name = event.get("action") if isinstance(event, dict) else None
            # The traceback goes to the log only; the event is not logged (it may hold a password).
            logger.exception("operator action failed", extra={"action": name if isinstance(name, str) else None})
            return _failure(errors.Code.INTERNAL.value, INTERNAL_MESSAGE)


# --- validation ----------------------------------------------------------------------------

def _not_placeholder(value: str) -> str:
    from pydantic_core import PydanticCustomError

    if len(value) > 2 and value.startswith("<") and value.endswith(">"):
        raise PydanticCustomError("placeholder", "is a sample's placeholder: replace it with a real value")
    return value


def _iso_date(value: Any) -> Any:
    """``YYYY-MM-DD`` text becomes a date; anything but text is left to pydantic's strict check."""
    from pydantic_core import PydanticCustomError

    if not isinstance(value, str):
        return value
    try:
        if len(value) == 10 and value[4] == value[7] == "-":
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise PydanticCustomError("date_format", "must be a date as YYYY-MM-DD")


def _date_within(field: Field) -> Callable[[date], date]:
    """A date's range check whose message shows the dates as an operator types them."""
    def check(value: date) -> date:
        from pydantic_core import PydanticCustomError

        low, high = field.minimum, field.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low} to {high}" if low and high else f"on or after {low}" if low else f"by {high}"
            raise PydanticCustomError("date_range", f"must be {bounds}")
        return value

    return check


def _annotation(field: Field) -> Any:
    """The pydantic type of a field: its kind with its rules."""
    from typing import Annotated

    from pydantic import AfterValidator, BeforeValidator
    from pydantic import Field as Rules

    annotation: Any
    if field.choices:
        annotation = Literal[field.choices]
    elif field.kind == "text":
        annotation = Annotated[str, Rules(min_length=field.min_length, max_length=field.max_length),
                               AfterValidator(_not_placeholder)]
    elif field.kind == "integer":
        annotation = Annotated[int, Rules(ge=field.minimum, le=field.maximum)]
    elif field.kind == "date":
        annotation = Annotated[date, BeforeValidator(_iso_date), AfterValidator(_date_within(field))]
    else:
        annotation = dict[str, Any]
    if not field.required and field.default is None:
        annotation = annotation | None
    return annotation


def _model(action: Action) -> Any:
    """The pydantic model of an action's fields (the event without ``action``)."""
    from pydantic import ConfigDict, create_model

    definitions: dict[str, Any] = {field.name: (_annotation(field), ... if field.required else field.default)
                                   for field in action.fields}
    return create_model(f"Operator_{action.name.replace('-', '_')}", __config__=ConfigDict(extra="forbid", strict=True),
                        **definitions)


# --- the actions ---------------------------------------------------------------------------

SAMPLE_ORDER: dict[str, Any] = {  # a valid order with every field, for the example event
    "customer": {"name": "Zoë Ltd"},
    "product": {"name": "Build Server", "version": "2", "template": "Default"},
    "licenseType": "local", "bulkMax": 5,
    "hostid": {"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1}], "min": 1},
    "features": [{"name": "compile", "version": "2.0"}, {"name": "cache", "version": "2.0"}],
    "expirationDate": "2027-12-31", "maintenanceEndDate": "2027-06-30", "deactivationsAllowed": 1,
}

ORDER = Field("order", "object", "the order as JSON (docs/operators.md, Orders); the CLI reads it from FILE, "
                                 "or standard input for -", SAMPLE_ORDER, metavar="FILE|-", cli_example="order.json")
ACTIVATION_KEY = Field("activationKey", "text", "the order's activation key, XXXXX-XXXXX-XXXXX-XXXXX",
                       "<activation key>", metavar="KEY", cli_example="7K2QF-M4XDA-9PLTB-ZC3WE")
TOTAL = Field("total", "integer", "deactivations end users may make in total (those already made count)", 2,
              metavar="N", minimum=0)
HOSTIDS = Field("hostids", "text", "the host's ids as text, e.g. HOSTNAME=build-01 (not base64)",
                "HOSTNAME=build-01", metavar="HOSTIDS", min_length=1)
KEY_TYPE = Field("type", "text", "what the key counts", "OSI", option="--type", choices=("OSI", "CPU", "CORE"))
COUNT = Field("count", "integer", "units granted; 0 means unlimited", 10, option="--count",
              minimum=0, maximum=keys.MAX_COUNT)
EXPIRES = Field("expires", "date", "last valid day (UTC) as YYYY-MM-DD; null, or on the command line no "
                                   "--expires, for a key that never expires", "2027-12-31",
                option="--expires", metavar="YYYY-MM-DD", required=False,
                minimum=keys.EPOCH + timedelta(days=1), maximum=keys.MAX_EXPIRY)
USERNAME = Field("username", "text", "the user's login name", "alice", metavar="USER",
                 min_length=1, max_length=users.MAX_USERNAME)
ENTITY = Field("entity", "text", "whose chain: order#KEY, activation#KEY#HOSTIDS, license-key#KEY, user#NAME, "
               "message#ID", "order#7K2QF-M4XDA-9PLTB-ZC3WE", metavar="ENTITY", min_length=3, max_length=2048)
PASSWORD = Field("password", "text", "the password (CLI: else $KEYTURN_PASSWORD, else asked at a terminal)",
                 "<password>", option="--password", min_length=1, secret=True)


SAMPLE_PLAN: dict[str, Any] = {  # the plan of docs/shops.md, for the example event
    "planId": "pro-annual", "kind": "license-order",
    "order": {"product": {"name": "product 1", "version": "2", "template": "Default"}, "licenseType": "local",
              "hostid": {"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1}], "min": 1},
              "features": [{"name": "f1", "version": "1.0"}], "deactivationsAllowed": 1},
    "seatsPerUnit": 1, "termMonths": 12,
    "match": {"shopify": {"skus": ["PRO-1Y"]}, "stripe": {"prices": ["price_1PRO"]}},
}
PLAN = Field("plan", "object", "the plan as JSON (docs/shops.md, Plans); the CLI reads it from FILE, or standard "
                               "input for -", SAMPLE_PLAN, metavar="FILE|-", cli_example="plan.json")
PLAN_ID = Field("planId", "text", "the plan's id", "pro-annual", metavar="PLAN_ID", min_length=1, max_length=128)


def _put_plan(fields: dict[str, Any]) -> dict[str, Any]:
    from chalicelib import plans

    return plans.put(fields["plan"])


def _show_plan(fields: dict[str, Any]) -> dict[str, Any]:
    from chalicelib import plans

    return plans.show(fields["planId"])


def _list_plans(fields: dict[str, Any]) -> list[dict[str, Any]]:
    from chalicelib import plans

    return plans.all_plans()


def _delete_plan(fields: dict[str, Any]) -> dict[str, Any]:
    from chalicelib import plans

    return plans.delete(fields["planId"])


def _key(fields: Mapping[str, Any]) -> str:
    """The stored form of the event's key; a malformed one is refused before any read."""
    from chalicelib import activations

    return activations.normalise_key(fields["activationKey"])


def _show_audit(fields: dict[str, Any]) -> dict[str, Any]:
    return {"entity": fields["entity"], "records": audit.show(fields["entity"])}


def _verify_audit(fields: dict[str, Any]) -> dict[str, Any]:
    return audit.verify(fields["entity"])


def _create_order(fields: dict[str, Any]) -> dict[str, Any]:
    from chalicelib import orders

    return orders.describe(orders.create_order(fields["order"]))


def _show_order(fields: dict[str, Any]) -> dict[str, Any]:
    from chalicelib import orders

    return orders.describe(orders.get_order(_key(fields)))


def _set_enabled(enabled: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(fields: dict[str, Any]) -> dict[str, Any]:
        from chalicelib import orders

        return orders.describe(orders.set_enabled(_key(fields), enabled))

    return run


def _allow_deactivations(fields: dict[str, Any]) -> dict[str, Any]:
    from chalicelib import orders

    return orders.describe(orders.allow_deactivations(_key(fields), fields["total"]))


def _revoke_activation(fields: dict[str, Any]) -> dict[str, Any]:
    from chalicelib import activations, hostids, orders

    key = _key(fields)
    activations.revoke(key, hostids.encode_segment(fields["hostids"]))
    return orders.describe(orders.get_order(key))


def _mint_key(fields: dict[str, Any]) -> dict[str, Any]:
    from chalicelib import keystore

    return {"licenseKey": keys.mint(fields["type"], fields["count"], fields["expires"],
                                    secret=keystore.license_key_secret())}


def _user(user: Any) -> dict[str, Any]:
    return {"username": user.username, "userId": user.user_id}  # never the password or its hash


def _add_user(fields: dict[str, Any]) -> dict[str, Any]:
    return _user(users.add_user(fields["username"], fields["password"]))


def _reset_password(fields: dict[str, Any]) -> dict[str, Any]:
    return _user(users.reset_password(fields["username"], fields["password"]))


ACTIONS = Registry([
    Action("create-order", "create a license order from JSON; the result has its activation key", (ORDER,),
           _create_order,
           description="Create a license order: customer, product, licenseType, bulkMax, hostid, features, "
                       "expirationDate, maintenanceEndDate, deactivationsAllowed (docs/operators.md). Every "
                       "problem of an invalid order is reported at once, named by its field."),
    Action("show-order", "show an order, its seats and its allowances", (ACTIVATION_KEY,), _show_order),
    Action("disable-order", "refuse every end-user call for this order (403)", (ACTIVATION_KEY,),
           _set_enabled(False)),
    Action("enable-order", "serve a disabled order again", (ACTIVATION_KEY,), _set_enabled(True)),
    Action("allow-deactivations", "set the total number of deactivations end users may make",
           (ACTIVATION_KEY, TOTAL), _allow_deactivations,
           description="Set the order's deactivation allowance to N in total; deactivations already made count "
                       "against it, so N below that number allows no more."),
    Action("revoke-activation", "free a host's seat (not counted against the deactivation allowance)",
           (ACTIVATION_KEY, HOSTIDS), _revoke_activation,
           description="Delete the license of one host and give its seat back to the order, whatever the "
                       "order's deactivation allowance."),
    Action("mint-key", "mint a Log Insight-style license key", (KEY_TYPE, COUNT, EXPIRES), _mint_key,
           description="Mint a license key for /api/v1/licenses, signed with the stage's license-key secret; "
                       "the key carries its own summary (type, count, expiry). It is not stored.",
           needs_database=False),
    Action("add-user", "create a user that does not exist yet", (USERNAME, PASSWORD), _add_user,
           description="Create a user of the Log Insight-style API. An existing username is refused "
                       "(reset-password changes a password), so nobody's password is replaced by mistake."),
    Action("reset-password", "give an existing user a new password and clear its lockout",
           (USERNAME, PASSWORD), _reset_password,
           description="Set the password of an existing user and clear its login lockout. An unknown username "
                       "is refused (add-user creates users), so a typo does not create an account."),
    Action("put-plan", "create or replace a plan: what a Shopify sku or Stripe price grants", (PLAN,), _put_plan,
           description="Create or replace a plan (docs/shops.md): an order template (kind license-order) or a key "
                       "template (kind license-key), seats per unit, the term of one-off purchases, and the Shopify "
                       "skus and Stripe prices it matches. A sku or price another plan claims is refused."),
    Action("show-plan", "show one plan", (PLAN_ID,), _show_plan),
    Action("list-plans", "list every plan", (), _list_plans),
    Action("delete-plan", "delete a plan and free its skus and prices (granted lines keep what they have)",
           (PLAN_ID,), _delete_plan),
    Action("show-audit", "show the audit trail of one entity: who changed what, when", (ENTITY,), _show_audit,
           description="Print every audit record of one entity, oldest first: when (ms), who (user, operator, "
                       "event), what, and the digests that chain them."),
    Action("verify-audit", "check an entity's audit trail and name the first bad record", (ENTITY,), _verify_audit,
           description="Check the chain of one entity's audit records: an edited, removed or reordered record is "
                       "named (firstBad) with the reason; ok is true when the chain is intact."),
])


def handle(event: object, actor: str) -> dict[str, Any]:
    """Answer one operator event (the ``operator`` Lambda function's body); see the module's docstring.

    ``actor`` says who sent it (``operator:cli``, the function's caller): the audit
    trail records it with every change the action makes.
    """
    return ACTIONS.handle(event, actor)
