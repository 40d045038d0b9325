"""Client failures, digested: each distinct error logged once (with its traceback), the rest
counted, and a summary at the end.

The round loop logs every failure as it happens (`"<phase>_round N: client 3: error: ..."`).
With 100 clients hitting the same bug in every round that is thousands of identical lines, and
the traceback that would explain it is nowhere. `FailureDigest` is a logging filter on roost's
logger: the first failure of each distinct error (same kind, same reason) passes, with the
traceback of its exception when one was caught; later ones are only counted. `summary()` then
lists every distinct error with how often it happened and which clients hit it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from roost.core.types import Failure

ROOST_LOGGER = "roost"

_ROUND = re.compile(r"round (\d+)")


@dataclass
class FailureGroup:
    """Every failure of one distinct error (same kind and reason)."""

    kind: str
    reason: str
    detail: str = ""
    count: int = 0
    client_ids: list[str] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    client_counts: dict[str, int] = field(default_factory=dict)
    """How often each client hit this error."""
    level: int = logging.NOTSET
    """The highest level it was logged at: a run that withholds client statistics (central
    DP) logs failures at DEBUG only, for the server's operator, not for release."""

    def add(self, failure: Failure, server_round: int | None) -> None:
        """Count one more failure of this error."""
        self.count += 1
        self.client_counts[failure.client_id] = self.client_counts.get(failure.client_id, 0) + 1
        if failure.client_id not in self.client_ids:
            self.client_ids.append(failure.client_id)
        if server_round is not None and server_round not in self.rounds:
            self.rounds.append(server_round)


def _failure_in(record: logging.LogRecord) -> tuple[Failure, str] | None:
    """The Failure a log record reports, and the label logged with it (e.g. "fit_round 3")."""
    args = record.args if isinstance(record.args, tuple) else ()
    for position, value in enumerate(args):
        if isinstance(value, Failure):
            label = args[0] if position > 0 and isinstance(args[0], str) else ""
            return value, label
    return None


class FailureDigest(logging.Filter):
    """Lets the first failure of each distinct error through roost's logger, counts the rest.

    Use as a context manager (`with FailureDigest() as digest:`), or `install()` and
    `uninstall()`; `groups` and `summary_lines()` tell what failed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[tuple[str, str], FailureGroup] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Count a failure record; keep it only if it is the first of its error."""
        found = _failure_in(record)
        if found is None:
            return True
        failure, label = found
        match = _ROUND.search(label)
        key = (failure.kind, failure.reason)
        group = self.groups.get(key)
        first = group is None
        if group is None:
            group = self.groups[key] = FailureGroup(failure.kind, failure.reason, failure.detail)
        group.add(failure, int(match.group(1)) if match else None)
        group.level = max(group.level, record.levelno)
        if first:
            note = " (first of this error; repeats are counted in the failure summary)"
            if failure.detail:
                note += "\n" + failure.detail.rstrip()
            record.msg = f"{record.msg}{note.replace('%', '%%')}"  # args still to format
        return first

    def install(self) -> FailureDigest:
        """Start digesting the failures roost's logger reports."""
        logging.getLogger(ROOST_LOGGER).addFilter(self)
        return self

    def uninstall(self) -> None:
        """Stop digesting; what was counted stays readable."""
        logging.getLogger(ROOST_LOGGER).removeFilter(self)

    def __enter__(self) -> FailureDigest:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    @property
    def total(self) -> int:
        """How many failures were reported."""
        return sum(group.count for group in self.groups.values())

    def summary_lines(self, max_clients: int = 8) -> list[str]:
        """One line per distinct error, most frequent first: how often, which clients, when."""
        lines = []
        for group in sorted(self.groups.values(), key=lambda g: -g.count):
            clients = ", ".join(group.client_ids[:max_clients])
            if len(group.client_ids) > max_clients:
                clients += f", … ({len(group.client_ids)} clients)"
            when = f" in rounds {spans(group.rounds)}" if group.rounds else ""
            lines.append(f"{group.count} × {group.kind}: {group.reason} (clients {clients}{when})")
        return lines


def spans(numbers: list[int]) -> str:
    """`[1, 2, 3, 5]` as "1–3, 5"."""
    parts: list[str] = []
    ordered = sorted(numbers)
    start = previous = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}–{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(parts)
