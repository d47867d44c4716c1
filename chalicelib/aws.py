"""One botocore session per process, and one client per service made from it.

Every client a process makes (PynamoDB's, SSM's) comes from this session, so the
service models, credential chain and endpoint data are loaded once: seven botocore
clients from seven sessions made a process that had served every route peak at
134 MB, over a 128 MB Lambda.  Sessions are not thread-safe while they create clients
(``chalice local`` serves requests in threads), so clients are created under a lock;
a client itself is thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import botocore.session
from botocore.client import BaseClient, Config

_lock = threading.RLock()
_session: botocore.session.Session | None = None
_clients: dict[tuple[str, str, str | None], BaseClient] = {}
_made: list[BaseClient] = []  # every client made from the session: ours and adopted ones


def session() -> botocore.session.Session:
    global _session
    with _lock:
        if _session is None:
            _session = botocore.session.get_session()
        return _session


def resolved_region() -> str | None:
    """The region botocore resolves (``AWS_DEFAULT_REGION``, else the profile's), or None."""
    region = session().get_config_variable("region")
    return str(region) if region else None


def client(service: str, region: str, endpoint_url: str | None = None, config: Config | None = None) -> BaseClient:
    """The process's client for ``service`` in ``region`` (created once)."""
    key = (service, region, endpoint_url)
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = session().create_client(service, region_name=region, endpoint_url=endpoint_url, config=config)
            _clients[key] = found
            _made.append(found)
        return found


def adopt(made: BaseClient) -> None:
    """Count a client made from :func:`session` elsewhere (PynamoDB's) as one of ours, for :func:`observe`."""
    with _lock:
        _made.append(made)


def observe(observer: Callable[..., Any]) -> None:
    """Call ``observer(model=..., params=..., ...)`` before every AWS call of every client (tests, benchmarks).

    A client copies the session's handlers when it is made, so the observer goes on the
    session (clients to come) and on every client made so far.
    """
    with _lock:
        session().register("before-call.*.*", observer)
        for made in _made:
            made.meta.events.register("before-call.*.*", observer)


def unobserve(observer: Callable[..., Any]) -> None:
    with _lock:
        session().unregister("before-call.*.*", observer)
        for made in _made:
            made.meta.events.unregister("before-call.*.*", observer)
