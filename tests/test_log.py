"""`ensure_logging` installs one handler, however many threads call it at once, and its lines
wrap only on a terminal."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time

import rich.logging
from rich.console import Console

import roost.log
from roost.log import PlainHandler, ensure_logging, log_handler


class SlowHandler(PlainHandler):
    """Widens the window between checking for a handler and adding one, as a slow import does."""

    def __init__(self, *args, **kwargs) -> None:
        time.sleep(0.02)
        super().__init__(*args, **kwargs)


def test_fifty_threads_install_one_handler(monkeypatch):
    roost_logger = logging.getLogger("roost")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(roost_logger, "handlers", [])
    monkeypatch.setattr(roost_logger, "level", roost_logger.level)
    monkeypatch.setattr(roost.log, "PlainHandler", SlowHandler)
    start = threading.Barrier(50)

    def set_up() -> None:
        start.wait()
        ensure_logging(console=Console(file=io.StringIO()))

    threads = [threading.Thread(target=set_up) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(roost_logger.handlers) == 1
    assert isinstance(roost_logger.handlers[0], SlowHandler)


LONG = "connection to 127.0.0.1:1 failed: " + "a long reason " * 30 + "THE END"


def test_a_long_log_line_written_to_a_pipe_stays_on_one_line():
    script = (
        "import logging, roost.log; roost.log.ensure_logging(); "
        f"logging.getLogger('roost.transport').warning({LONG!r})"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    assert lines[0].endswith(f"WARNING {LONG}")


def test_a_file_console_gets_plain_lines_and_a_terminal_rich_ones():
    file = io.StringIO()
    handler = log_handler(Console(file=file, width=80))
    assert isinstance(handler, PlainHandler)
    handler.emit(logging.LogRecord("roost", logging.INFO, __file__, 1, LONG, None, None))
    assert file.getvalue().count("\n") == 1
    assert f"INFO {LONG}\n" in file.getvalue()
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(log_handler(terminal), rich.logging.RichHandler)
