"""Protocol violations of one client: counted, logged in summary lines, and bounded.

A result or error for an instruction that is not awaited (a replay, another round's, a late
one) costs the server a little work and would cost a log line each: a client holding a valid
token could flood the log and the CPU. An honest client sends at most one such message per
instruction it received (an answer that came too late), so a connection may send that many plus
an allowance; past it, it is disconnected. The first violation is logged in full, the following
ones as one summary line per interval.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 10.0


class Conduct:
    """The protocol violations of one connection.

    Args:
        name: how the client is named in logs.
        allowance: violations tolerated beyond one per instruction the client was sent.
    """

    def __init__(self, name: str, allowance: int) -> None:
        self.name = name
        self.allowance = allowance
        self.total = 0
        self._unlogged = 0
        self._latest = ""
        self._next_summary = 0.0

    def violation(self, reason: str, instructions_sent: int) -> bool:
        """Count one violation; True when the connection is past its budget and must end."""
        self.total += 1
        self._unlogged += 1
        self._latest = reason
        now = time.monotonic()
        if now >= self._next_summary:
            self.flush()
            self._next_summary = now + SUMMARY_INTERVAL_S
        return self.total > instructions_sent + self.allowance

    def flush(self) -> None:
        """Log what was counted and not yet logged (the first violation in full)."""
        if not self._unlogged:
            return
        if self.total == 1:
            log.warning("dropped a stale message from %s: %s", self.name, self._latest)
        else:
            log.warning(
                "dropped %d more stale message(s) from %s (%d in all; latest: %s)",
                self._unlogged,
                self.name,
                self.total,
                self._latest,
            )
        self._unlogged = 0

    def budget_exceeded_reason(self, instructions_sent: int) -> str:
        return (
            f"sent {self.total} results or errors for instructions not awaited from it, "
            f"having been sent {instructions_sent} instruction(s); a client sends at most one "
            "answer per instruction"
        )
