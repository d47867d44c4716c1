"""Orders: validation of incoming orders, activation keys, operator actions."""

from __future__ import annotations

import re
from typing import Any

import pytest

from chalicelib import errors, orders, runtime
from chalicelib.orderspec import parse_order
from tests.samples import DESIGN_ORDER, order

ORDER = DESIGN_ORDER


def changed(**changes: Any) -> dict[str, Any]:
    return order(DESIGN_ORDER, **changes)


def problems(data: Any) -> str:
    with pytest.raises(errors.InvalidOrder) as caught:
        parse_order(data)
    return caught.value.message


def test_the_design_example_is_a_valid_order() -> None:
    spec = parse_order(ORDER)
    assert (spec.customer.name, spec.bulkMax, spec.product.licenseGeneratorType) == ("Zoë Ltd", 5, "lm_x")


def test_every_problem_is_reported_at_once_by_field() -> None:
    message = problems(changed(bulkMax=0, licenseType="floating", customer={"name": ""}))
    assert message.startswith("Invalid order: ")
    for field in ("bulkMax", "licenseType", "customer.name"):
        assert field in message


@pytest.mark.parametrize(("changes", "field"), [
    ({"bulkMax": "5"}, "bulkMax"),
    ({"bulkMax": True}, "bulkMax"),
    ({"bulkMax": 1_000_001}, "bulkMax"),
    ({"surprise": 1}, "surprise"),
    ({"expirationDate": "31/12/2027"}, "expirationDate"),
    ({"hostid": {"types": [{"nameRaw": "MAC", "min": 1, "max": 1}], "min": 1}}, "nameRaw"),
    ({"hostid": {"types": [{"nameRaw": "HOSTNAME", "min": 2, "max": 1}], "min": 1}}, "min must not exceed max"),
    ({"hostid": {"types": [{"nameRaw": "HOSTNAME"}, {"nameRaw": "HOSTNAME"}], "min": 1}}, "listed once"),
    ({"hostid": {"types": [{"nameRaw": "HOSTNAME", "max": 1}], "min": 2}}, "min exceeds"),
    ({"features": []}, "features"),
    ({"features": [{"name": "has space", "version": "1"}]}, "features.0.name"),
    ({"features": [{"name": "f1", "version": "1"}, {"name": "f1", "version": "2"}]}, "unique"),
    ({"features": [{"name": "f1", "version": "1", "count": 3}]}, "only network licenses have a count"),
    ({"licenseType": "network"}, "network licenses need a count"),
    ({"product": {"name": "a\nb", "version": "1"}}, "product.name"),
    ({"deactivationsAllowed": -1}, "deactivationsAllowed"),
])
def test_invalid_orders_are_refused_naming_the_problem(changes: dict[str, Any], field: str) -> None:
    assert field in problems(changed(**changes))


def test_network_orders_carry_feature_counts_and_dates_parse() -> None:
    spec = parse_order(changed(licenseType="network", features=[{"name": "f1", "version": "1", "count": 3}],
                               expirationDate="2027-12-31"))
    assert spec.features[0].count == 3 and spec.expirationDate.isoformat() == "2027-12-31"


def test_activation_keys_are_four_groups_of_five_from_the_full_alphabet() -> None:
    keys = {orders.new_activation_key() for _ in range(300)}
    assert len(keys) == 300
    assert all(re.fullmatch(r"[0-9A-Z]{5}(-[0-9A-Z]{5}){3}", key) for key in keys)
    assert set("".join(keys).replace("-", "")) == set(orders.KEY_ALPHABET)


def test_activation_keys_come_from_the_injected_random_source() -> None:
    previous = runtime.configure(random_bytes=lambda n: bytes(range(n)))
    try:
        assert orders.new_activation_key() == "01234-56789-ABCDE-FGHIJ"
    finally:
        runtime.restore(previous)


def test_a_created_order_is_described_for_operators(aws: None) -> None:
    order = orders.create_order(ORDER, external_order_id="shop-1001")
    described = orders.describe(orders.get_order(order.activation_key.lower()))
    assert described["customer"] == {"name": "Zoë Ltd"}
    assert described["hostid"] == {"types": [{"nameRaw": "HOSTNAME", "name": "Hostname", "min": 1, "max": 1}], "min": 1}
    assert (described["bulkMax"], described["activatedLicenses"], described["enabled"]) == (5, 0, True)
    assert (described["deactivationsAllowed"], described["deactivationsUsed"]) == (1, 0)
    assert described["externalOrderId"] == "shop-1001"


def test_operator_actions_on_an_unknown_order_say_so(aws: None) -> None:
    for action in (lambda: orders.set_enabled("AAAAA-AAAAA-AAAAA-AAAAA", False),
                   lambda: orders.allow_deactivations("AAAAA-AAAAA-AAAAA-AAAAA", 3),
                   lambda: orders.get_order("AAAAA-AAAAA-AAAAA-AAAAA")):
        with pytest.raises(errors.InvalidActivationKey):
            action()


def test_operator_updates_return_the_stored_order(aws: None) -> None:
    key = orders.create_order(ORDER).activation_key
    assert orders.set_enabled(key, False).enabled is False
    assert orders.allow_deactivations(key, 4).deactivations_allowed == 4
    with pytest.raises(ValueError):
        orders.allow_deactivations(key, -1)
