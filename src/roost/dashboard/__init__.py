"""The web dashboard (`--dashboard` on `roost simulate | run | server | coordinator`).

A federation page (nodes, runs), a run page (round i of N, loss and accuracy per round,
distributed next to centralized, per-phase counts, the failure digest, ε spent against its
target) and a node page, updated live with server-sent events. It shows only what the run's
outputs show: under central DP no client statistics.

Optional: `pip install 'roost[dashboard]'` (Starlette, uvicorn, Jinja2). Nothing in roost imports
this package unless a dashboard is asked for; `require()` says what to install when it is missing.
"""

from __future__ import annotations

import importlib.util

from roost.errors import ConfigurationError

PACKAGES = ("starlette", "uvicorn", "jinja2")


def require() -> None:
    """Raise a one-line `ConfigurationError` naming the extra when a package is missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"the dashboard needs {', '.join(missing)}: pip install 'roost[dashboard]'"
        )
