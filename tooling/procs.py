"""Child-process hygiene for the local stack: no orphan outlives its parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere).

    The local stack starts its servers in their own process groups, so a terminal's
    Ctrl-C reaches only the orchestrator, which stops them in order; this covers the
    case where the orchestrator itself is killed outright.
    """
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
