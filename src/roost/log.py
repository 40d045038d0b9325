"""Logging set-up: roost logs through `logging`; this shows those logs when nobody else does."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_HANDLER_NAME = "roost-default"
# Clients started in threads all call ensure_logging at once: check-then-add must be one step,
# or each thread installs its own handler and every line is written once per thread.
_SETUP_LOCK = threading.Lock()


def ensure_logging(level: int = logging.INFO, console: Console | None = None) -> None:
    """Show roost's INFO logs (rich-formatted) unless the application configured logging itself."""
    # The package's logger: every module logs to logging.getLogger(__name__), a child of it.
    logger = logging.getLogger("roost")
    if logger.handlers or logging.getLogger().handlers:
        return
    from rich.logging import RichHandler  # imported here so `import roost` stays light

    with _SETUP_LOCK:
        if logger.handlers or logging.getLogger().handlers:
            return
        handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
        logger.addHandler(handler)
        logger.setLevel(level)
