"""Plans: what a shop sells (a Shopify sku, a Stripe price) mapped to what Keyturn grants.

A plan is an order template (``kind: license-order``: everything of an order but its
customer, seats and dates) or a key template (``kind: license-key``), the seats one unit
bought grants (``seatsPerUnit`` or ``key.countPerUnit``), the term of a one-off purchase
(``termMonths``, null: no expiry) and what it matches.  A line's seats are its quantity
times the per-unit figure.

Each sku and price belongs to at most one plan: a claim item per sku or price
(``PlanClaim``) is written in the plan's own transaction, under the condition that no
other plan holds it, so two plans claiming one sku cannot both be stored, even racing.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import audit, errors, runtime
from chalicelib.models import Plan, PlanClaim

if TYPE_CHECKING:
    from pydantic import BaseModel

MAX_CLAIMS = 40  # skus and prices of one plan: its transaction stays far below DynamoDB's 100 items
SHOPIFY_SKU, STRIPE_PRICE = "shopify-sku#", "stripe-price#"


class PlanError(errors.KeyturnError):
    code = errors.Code.INVALID_PLAN
    message = "Invalid plan."


class UnknownPlan(errors.KeyturnError):
    code = errors.Code.UNKNOWN_PLAN
    message = "No such plan."


_MODEL: Any = None


def _model() -> Any:
    global _MODEL
    if _MODEL is None:
        from typing import Annotated, Literal

        from pydantic import Field, ValidationError, model_validator

        from chalicelib import keys
        from chalicelib.orderspec import MAX_BULK, Feature, HostIdTemplate, OrderSpec, Product, Strict

        ident = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")

        class OrderTemplate(Strict):
            product: Product
            licenseType: Literal["local", "network"] = "local"
            hostid: HostIdTemplate
            features: list[Feature] = Field(min_length=1, max_length=100)
            deactivationsAllowed: int = Field(default=0, ge=0, le=MAX_BULK)

        class KeyTemplate(Strict):
            typeEnum: Literal["OSI", "CPU", "CORE"]
            countPerUnit: int = Field(ge=1, le=keys.MAX_COUNT)

        class ShopifyMatch(Strict):
            skus: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(min_length=1)

        class StripeMatch(Strict):
            prices: list[Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]] = Field(
                min_length=1)

        class Match(Strict):
            shopify: ShopifyMatch | None = None
            stripe: StripeMatch | None = None

        class PlanSpec(Strict):
            planId: Annotated[str, ident]
            kind: Literal["license-order", "license-key"]
            order: OrderTemplate | None = None
            key: KeyTemplate | None = None
            seatsPerUnit: int = Field(default=1, ge=1, le=MAX_BULK)
            termMonths: int | None = Field(default=None, ge=1, le=1200)
            match: Match = Match()

            @model_validator(mode="after")
            def _one_template(self) -> "PlanSpec":
                wanted, other = ("order", "key") if self.kind == "license-order" else ("key", "order")
                if getattr(self, wanted) is None:
                    raise ValueError(f'a {self.kind} plan needs "{wanted}"')
                if getattr(self, other) is not None:
                    raise ValueError(f'a {self.kind} plan has no "{other}"')
                claims = claims_of(self.model_dump())
                if len(claims) > MAX_CLAIMS:
                    raise ValueError(f"a plan may match at most {MAX_CLAIMS} skus and prices")
                if len(set(claims)) != len(claims):
                    raise ValueError("a sku or price is listed twice")
                if self.order is not None:  # the order's own rules, with a stand-in customer and seats
                    try:
                        OrderSpec.model_validate({**self.order.model_dump(), "customer": {"name": "plan"},
                                                  "bulkMax": 1})
                    except ValidationError as exc:
                        raise ValueError("order: " + "; ".join(str(e["msg"]).removeprefix("Value error, ")
                                                               for e in exc.errors())) from None
                return self

        _MODEL = PlanSpec
    return _MODEL


def parse(data: Any) -> "BaseModel":
    """A valid plan, or :class:`PlanError` naming every problem by field."""
    from pydantic import ValidationError

    try:
        spec: BaseModel = _model().model_validate(data)
        return spec
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors()[:20])
        raise PlanError(f"Invalid plan: {problems}") from None


def _problem(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {message}" if where else message


def claims_of(spec: dict[str, Any]) -> list[str]:
    match = spec.get("match") or {}
    skus = (match.get("shopify") or {}).get("skus") or []
    prices = (match.get("stripe") or {}).get("prices") or []
    return [SHOPIFY_SKU + s for s in skus] + [STRIPE_PRICE + p for p in prices]


def put(data: Any) -> dict[str, Any]:
    """Create or replace a plan; refused when another plan claims one of its skus or prices."""
    spec = parse(data).model_dump(mode="json")
    plan_id = spec["planId"]
    wanted = claims_of(spec)
    for _ in range(5):
        old = get(plan_id)
        try:
            audit.transact(f"plan#{plan_id}", "plan-put", spec, functools.partial(_put_change, spec, old))
            return spec
        except TransactWriteError:
            taken = {c: holder for c, holder in _holders(wanted).items() if holder != plan_id}
            if taken:
                named = "; ".join(f"{_shown(c)} is claimed by plan {holder}" for c, holder in sorted(taken.items()))
                raise PlanError(f"Invalid plan: {named}") from None
            # the plan changed meanwhile: read it again
    raise RuntimeError(f"plan {plan_id} kept changing")


def _put_change(spec: dict[str, Any], old: dict[str, Any] | None, transaction: TransactWrite) -> None:
    plan_id, wanted = spec["planId"], claims_of(spec)
    item = Plan(plan_id, spec=json.dumps(spec, ensure_ascii=False, sort_keys=True), updated_at=runtime.now_ms())
    transaction.save(item, condition=(Plan.updated_at == old["_updatedAt"]) if old else Plan.plan_id.does_not_exist())
    for claim in wanted:
        transaction.save(PlanClaim(claim, plan_id=plan_id),
                         condition=PlanClaim.claim.does_not_exist() | (PlanClaim.plan_id == plan_id))
    for claim in set(claims_of(old)) - set(wanted) if old else ():
        transaction.delete(PlanClaim(claim), condition=PlanClaim.plan_id == plan_id)


def _shown(claim: str) -> str:
    kind, _, value = claim.partition("#")
    return f"{'sku' if kind == 'shopify-sku' else 'price'} {value}"


def _holders(claims: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(claims), 100):
        for item in PlanClaim.batch_get(claims[start:start + 100], consistent_read=True):
            found[item.claim] = item.plan_id
    return found


def get(plan_id: str) -> dict[str, Any] | None:
    """The plan as put (with ``_updatedAt``, the version its next put is conditioned on), or None."""
    try:
        item = Plan.get(plan_id, consistent_read=True)
    except DoesNotExist:
        return None
    spec: dict[str, Any] = json.loads(item.spec)
    spec["_updatedAt"] = int(item.updated_at)
    return spec


def show(plan_id: str) -> dict[str, Any]:
    spec = get(plan_id)
    if spec is None:
        raise UnknownPlan(f"No such plan: {plan_id}.")
    spec.pop("_updatedAt")
    return spec


def all_plans() -> list[dict[str, Any]]:
    plans = [json.loads(item.spec) for item in Plan.scan(consistent_read=True)]
    return sorted(plans, key=lambda p: p["planId"])


def delete(plan_id: str) -> dict[str, Any]:
    """Delete a plan and free its skus and prices; lines granted under it keep what they have."""
    spec = show(plan_id)

    def change(transaction: TransactWrite) -> None:
        transaction.delete(Plan(plan_id), condition=Plan.plan_id.exists())
        for claim in claims_of(spec):
            transaction.delete(PlanClaim(claim), condition=PlanClaim.plan_id == plan_id)

    try:
        audit.transact(f"plan#{plan_id}", "plan-deleted", {"planId": plan_id}, change)
    except TransactWriteError:
        raise UnknownPlan(f"No such plan: {plan_id}.") from None
    return {"planId": plan_id, "deleted": True}


def for_claims(claims: list[str]) -> dict[str, dict[str, Any]]:
    """The plan of each claim that has one (``shopify-sku#..`` / ``stripe-price#..``): two batched reads."""
    holders = _holders(sorted(set(claims)))
    if not holders:
        return {}
    plans = {item.plan_id: json.loads(item.spec)
             for item in Plan.batch_get(sorted(set(holders.values())), consistent_read=True)}
    return {claim: plans[plan_id] for claim, plan_id in holders.items() if plan_id in plans}


def by_id(plan_id: str) -> dict[str, Any] | None:
    spec = get(plan_id)
    if spec is not None:
        spec.pop("_updatedAt")
    return spec

