"""What every Lambda function does on its first event: bind the stage from its environment.

The function's environment (from the template, or from ``chalice local``) names the
stage, its tables and its secrets; it is read here, at the entry point, once per
process, never when a module is imported.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from chalicelib import config


def bind_stage(event: Any, get_response: Callable[[Any], Any]) -> Any:
    config.bind_once(os.environ)
    return get_response(event)
