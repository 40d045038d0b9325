"""`flwr.common.logger`: the `log` function and `logger` apps write their progress with.

    from logging import INFO
    from flwr.common import log
    log(INFO, "round %s: loss %.3f", server_round, loss)

Flower's logger is named "flwr"; here it is `roost.flwr`, a child of roost's own logger, so an
app's lines appear wherever roost's do (`roost.log.ensure_logging`) and follow the same levels.
"""

from __future__ import annotations

import logging

from roost.compat.flwr.unsupported import missing_names

LOGGER_NAME = "roost.flwr"
"""The name of the logger behind `log` (a child of roost's logger)."""

logger = logging.getLogger(LOGGER_NAME)
"""The logger behind `log`."""

log = logger.log
"""`log(level, message, *args)`: log one line at `level` (`logging.INFO`, …), %-formatted."""


def update_console_handler(
    level: int | str | None = None, timestamps: bool = False, colored: bool = False
) -> None:
    """Show the app's log lines from `level` on (e.g. `logging.DEBUG`).

    roost's console handler formats the lines (it always stamps them with the time and chooses
    colours by whether it writes to a terminal), so `timestamps` and `colored` are accepted and
    change nothing.
    """
    if level is not None:
        logger.setLevel(level)


__all__ = ["LOGGER_NAME", "log", "logger", "update_console_handler"]

__getattr__ = missing_names("flwr.common.logger", __all__)
