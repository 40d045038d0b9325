"""`ensure_logging` installs one handler, however many threads call it at once."""

from __future__ import annotations

import logging
import threading
import time

import rich.logging

from roost.log import ensure_logging


class SlowHandler(rich.logging.RichHandler):
    """Widens the window between checking for a handler and adding one, as a slow import does."""

    def __init__(self, *args, **kwargs) -> None:
        time.sleep(0.02)
        super().__init__(*args, **kwargs)


def test_fifty_threads_install_one_handler(monkeypatch):
    roost_logger = logging.getLogger("roost")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(roost_logger, "handlers", [])
    monkeypatch.setattr(roost_logger, "level", roost_logger.level)
    monkeypatch.setattr(rich.logging, "RichHandler", SlowHandler)
    start = threading.Barrier(50)

    def set_up() -> None:
        start.wait()
        ensure_logging()

    threads = [threading.Thread(target=set_up) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(roost_logger.handlers) == 1
    assert isinstance(roost_logger.handlers[0], SlowHandler)
