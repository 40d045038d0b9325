"""Logging set-up: roost logs through `logging`; this shows those logs when nobody else does.

On a terminal the lines are rich-formatted (and wrap at the terminal's width); anywhere else (a
file, a pipe, CI) each record is one plain line, however long, so logs stay greppable.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console

_HANDLER_NAME = "roost-default"
# Clients started in threads all call ensure_logging at once: check-then-add must be one step,
# or each thread installs its own handler and every line is written once per thread.
_SETUP_LOCK = threading.Lock()
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
"""The format of a plain log line: time, level, message."""


class PlainHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """One unwrapped line per record, on `console`'s file or else the current standard output.

    The stream is looked up per record, so a redirected or captured stdout is honoured.
    """

    def __init__(self, console: Console | None = None) -> None:
        super().__init__(sys.stdout)
        self._console = console
        self.setFormatter(logging.Formatter(PLAIN_FORMAT, datefmt="%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        stream: TextIO = self._console.file if self._console is not None else sys.stdout
        self.setStream(stream)
        super().emit(record)


def log_handler(console: Console | None = None) -> logging.Handler:
    """The handler for roost's logs on `console` (default: rich's, on standard output): rich
    lines on a terminal, `PlainHandler` lines anywhere else."""
    from rich import get_console  # imported here so `import roost` stays light

    if not (console if console is not None else get_console()).is_terminal:
        return PlainHandler(console)
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    return handler


def ensure_logging(level: int = logging.INFO, console: Console | None = None) -> None:
    """Show roost's INFO logs unless the application configured logging itself (`log_handler`:
    rich on a terminal, plain unwrapped lines in a file, a pipe or CI)."""
    # The package's logger: every module logs to logging.getLogger(__name__), a child of it.
    logger = logging.getLogger("roost")
    if logger.handlers or logging.getLogger().handlers:
        return
    with _SETUP_LOCK:
        if logger.handlers or logging.getLogger().handlers:
            return
        handler = log_handler(console)
        handler.set_name(_HANDLER_NAME)
        logger.addHandler(handler)
        logger.setLevel(level)
