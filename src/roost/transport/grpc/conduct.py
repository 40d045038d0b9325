"""Events a client can repeat at will, logged in summary lines; protocol violations bounded.

A result or error for an instruction that is not awaited (a replay, another round's, a late
one) costs the server a little work and would cost a log line each: a client holding a valid
token could flood the log and the CPU. An honest client sends at most one such message per
instruction it received (an answer that came too late), so a connection may send that many plus
an allowance; past it, it is disconnected. Refused connections (a wrong token, a refused hello)
cost an outsider nothing to repeat. Both are logged the same way (`Summary`): the first in full,
the following ones as one summary line per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 10.0


class Summary:
    """Events of one kind: the first logged in full, then at most one summary line per interval.

    Args:
        first: the first event's line, a %-format of (detail,).
        more: a summary line, a %-format of (events since the last line, all events, the
            latest event's detail).
        interval: seconds between summary lines.
        clock: the time in seconds, for tests.
    """

    def __init__(
        self,
        first: str,
        more: str,
        interval: float = SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first = first
        self._more = more
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self.total = 0
        self._unlogged = 0
        self._latest = ""
        self._next_line = 0.0

    def add(self, detail: str) -> None:
        """Count one event; log it, or what was counted since the last line, when a line is due."""
        with self._lock:
            self.total += 1
            self._unlogged += 1
            self._latest = detail
            now = self._clock()
            if now >= self._next_line:
                self._next_line = now + self._interval
                self._log_unlogged()

    def flush(self) -> None:
        """Log what was counted and not yet logged."""
        with self._lock:
            self._log_unlogged()

    def _log_unlogged(self) -> None:
        if not self._unlogged:
            return
        if self.total == 1:
            log.warning(self._first, self._latest)
        else:
            log.warning(self._more, self._unlogged, self.total, self._latest)
        self._unlogged = 0


class Conduct:
    """The protocol violations of one connection.

    Args:
        name: how the client is named in logs.
        allowance: violations tolerated beyond one per instruction the client was sent.
    """

    def __init__(self, name: str, allowance: int) -> None:
        self.name = name
        self.allowance = allowance
        self._stale = Summary(
            "dropped a stale message %s",
            "dropped %d more stale message(s) (%d in all from this client; latest: %s)",
        )

    @property
    def total(self) -> int:
        return self._stale.total

    def violation(self, reason: str, instructions_sent: int) -> bool:
        """Count one violation; True when the connection is past its budget and must end."""
        self._stale.add(f"from {self.name}: {reason}")
        return self.total > instructions_sent + self.allowance

    def flush(self) -> None:
        """Log what was counted and not yet logged."""
        self._stale.flush()

    def budget_exceeded_reason(self, instructions_sent: int) -> str:
        return (
            f"sent {self.total} results or errors for instructions not awaited from it, "
            f"having been sent {instructions_sent} instruction(s); a client sends at most one "
            "answer per instruction"
        )
