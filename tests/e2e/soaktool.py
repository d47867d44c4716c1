"""The soak test's helpers, run as ``python -m tests.e2e.soaktool`` against the local stack
of ``KEYTURN_LOCAL_DIR`` (bound as the operator CLI binds it), each printing one JSON line:

- ``setup ORDERS KEYS USERS``: ORDERS orders provisioned through ``provisioning.provision``
  (the functions' own service), KEYS license keys minted with the stack's secret (not
  stored), and USERS users ``soak-<n>`` with the password ``soak-password-<n>``;
- ``check``: every invariant, read from the tables: seats (``activatedLicenses`` equals the
  activation records and never exceeds ``bulkMax``; deactivations within their allowance),
  no orphans (an activation without its order, a session without its user, a provisioning
  result naming a missing order or key, an item without its audit chain, a chain whose last
  record disagrees with its item), and every audit chain intact (``audit.verify``, what
  ``verify-audit`` runs); with the keys and activations found, to check acknowledged writes.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import date
from typing import Any


def setup(orders: int, keys_wanted: int, users_wanted: int) -> dict[str, Any]:
    from chalicelib import keys, keystore, provisioning, users

    for n in range(users_wanted):
        users.set_password(f"soak-{n}", f"soak-password-{n}")
    made = []
    for n in range(orders):
        result = provisioning.provision({
            "orderId": f"soak-setup-{n}", "lineItem": "1", "kind": "license-order", "customer": {"name": "Soak Ltd"},
            "product": {"name": "product 1", "version": "2", "template": "Default"}, "licenseType": "local",
            "bulkMax": 6, "hostid": {"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1}], "min": 1},
            "features": [{"name": "f1", "version": "1.0"}], "expirationDate": None, "maintenanceEndDate": None,
            "deactivationsAllowed": 1000})
        made.append(result["activationKey"])
    secret = keystore.license_key_secret()
    minted = [keys.mint("CORE", 1 + n % 50, date(2099, 12, 31), secret=secret) for n in range(keys_wanted)]
    return {"orders": made, "keys": minted}


def check() -> dict[str, Any]:
    from chalicelib import audit, licenses, models
    from chalicelib.activations import entity_of as activation_entity

    violations: list[str] = []
    checked: Counter[str] = Counter()
    orders = {o.activation_key: o for o in models.Order.scan(consistent_read=True)}
    activations = list(models.Activation.scan(consistent_read=True))
    license_keys = {k.license_key: k for k in models.LicenseKey.scan(consistent_read=True)}
    users = {u.username for u in models.User.scan(consistent_read=True)}
    sessions = list(models.Session.scan(consistent_read=True))
    provisioned = list(models.Provisioning.scan(consistent_read=True))
    records: dict[str, list[Any]] = {}
    for record in models.AuditRecord.scan(consistent_read=True):
        records.setdefault(record.entity, []).append(record)
    heads = {h.entity for h in models.AuditHead.scan(consistent_read=True)}

    per_order = Counter(a.activation_key for a in activations)
    for key, order in orders.items():
        checked["seats"] += 1
        activated, bulk_max = int(order.activated_licenses), int(order.bulk_max)
        if activated != per_order[key]:
            violations.append(f"order {key}: activatedLicenses {activated}, {per_order[key]} activation records")
        if not 0 <= activated <= bulk_max:
            violations.append(f"order {key}: activatedLicenses {activated} outside 0..bulkMax {bulk_max}")
        if int(order.deactivations_used) > int(order.deactivations_allowed):
            violations.append(f"order {key}: {order.deactivations_used} deactivations, "
                              f"{order.deactivations_allowed} allowed")
    for activation in activations:
        checked["orphans"] += 1
        if activation.activation_key not in orders:
            violations.append(f"activation {activation.activation_key}/{activation.hostids_key} has no order")
    for session in sessions:
        checked["orphans"] += 1
        if session.username not in users:
            violations.append(f"a session of {session.username} has no user")
    for line in provisioned:
        checked["orphans"] += 1
        result = json.loads(line.result)
        if line.status == "provisioned":
            if "activationKey" in result and result["activationKey"] not in orders:
                violations.append(f"provisioning {line.order_key}/{line.line_item}: order {result['activationKey']} "
                                  "is missing")
            if "licenseKey" in result and result["licenseKey"] not in license_keys and not _deleted(
                    records.get(licenses.entity_of(result["licenseKey"]), [])):
                violations.append(f"provisioning {line.order_key}/{line.line_item}: key missing, never deleted")

    def last_action(entity: str) -> str | None:
        chain = records.get(entity, [])
        return str(max(chain, key=lambda r: int(r.seq)).action) if chain else None

    expected_last = {f"order#{key}": {"order-created", "order-disabled", "order-enabled", "deactivations-allowed"}
                     for key in orders}
    expected_last.update({activation_entity(a.activation_key, a.hostids_key): {"activated"} for a in activations})
    expected_last.update({licenses.entity_of(key): {"key-added"} for key in license_keys})
    for entity, actions in expected_last.items():
        checked["orphans"] += 1
        if last_action(entity) not in actions:
            violations.append(f"{entity} exists, but its audit chain ends with {last_action(entity)}")
    for entity in records:
        if entity.startswith(("activation#", "license-key#")) and entity not in expected_last:
            checked["orphans"] += 1
            if last_action(entity) in ("activated", "key-added"):
                violations.append(f"{entity}: its chain ends with {last_action(entity)}, but the item is gone")
    for entity in sorted(heads | set(records)):
        checked["audit chains"] += 1
        verdict = audit.verify(entity)
        if not verdict["ok"]:
            violations.append(f"audit chain {entity}: {verdict['reason']}")
    return {
        "checked": dict(checked), "violations": violations,
        "licenseIds": sorted(k.license_id for k in license_keys.values()),
        "activations": sorted(f"{a.activation_key}/{a.hostids_key}" for a in activations),
        "orders": {key: int(o.activated_licenses) for key, o in orders.items()},
    }


def _deleted(chain: list[Any]) -> bool:
    return bool(chain) and max(chain, key=lambda r: int(r.seq)).action == "key-deleted"


def main(argv: list[str]) -> int:
    from chalicelib import audit
    from tooling import stages

    stages.bind("local")
    if argv[:1] == ["setup"]:
        with audit.acting_as("soak-test"):
            print(json.dumps(setup(int(argv[1]), int(argv[2]), int(argv[3]))))
    elif argv[:1] == ["check"]:
        print(json.dumps(check()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
