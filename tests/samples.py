"""Sample orders shared by the tests: the seed's (LAC doc) and the design's example."""

from __future__ import annotations

import base64
import copy
from typing import Any

# The seed document's order: customer "customer1ó?", one CUSTOM host id, 10 seats.
SEED_ORDER: dict[str, Any] = {
    "customer": {"name": "customer1ó?"},
    "product": {"name": "product 1", "version": "2", "template": "Default"},
    "licenseType": "local", "bulkMax": 10,
    "hostid": {"types": [{"nameRaw": "CUSTOM", "min": 1, "max": 1}], "min": 1},
    "features": [{"name": "feature-1", "version": "1.0"}],
    "expirationDate": None, "maintenanceEndDate": None, "deactivationsAllowed": 0,
}

# DESIGN.md's provisioning example (its order fields).
DESIGN_ORDER: dict[str, Any] = {
    **SEED_ORDER,
    "customer": {"name": "Zoë Ltd"}, "bulkMax": 5,
    "hostid": {"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1}], "min": 1},
    "features": [{"name": "f1", "version": "1.0"}], "deactivationsAllowed": 1,
}

HOSTNAME_TEMPLATE = {"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1}], "min": 1}


def order(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with top-level fields replaced."""
    result = copy.deepcopy(base)
    result.update(changes)
    return result


def segment(text: str) -> str:
    """The ``{hostids}`` path segment for ``TYPE=value,...`` text (standard base64, padded)."""
    return base64.b64encode(text.encode()).decode()
