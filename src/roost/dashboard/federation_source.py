"""The coordinator's dashboard: the federation from its store (nodes, runs, assignments), and
each run's progress from what its `roost server` already writes in `DATA/runs/ID/`:

- `state/state.sqlite`: the History after every completed round (`--state`), read-only;
- `out/history.json`: the History at the end (`--out`);
- `log.txt`: the server's progress lines (`round i/N`, for N) and its failure lines (the first
  of each distinct error names the node and the reason; the History names every failed node).

Nothing new is written for the dashboard, and it shows what those files show: a run under
central DP records no client statistics, so neither do its pages.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Hashable
from contextlib import closing
from pathlib import Path
from typing import Any

from roost.dashboard.model import Failure, RunView, history_points
from roost.dashboard.views import FederationView, NodeRow, NodeView, RunRow
from roost.federation.runs import ONLINE_S
from roost.federation.store import Store
from roost.server.history import History

_PROGRESS = re.compile(r"\bround (\d+)/(\d+)\b")
_FAILURE = re.compile(
    r"\b\w+_round (\d+): client (\S+): (error|timeout|invalid|disconnected): (.*)"
)
_FIRST_NOTE = " (first of this error"
_LOG_TAIL = 1 << 16
_LOG_MAX = 8 << 20
_STATUS = {"completed": "finished"}
FAILED_RUNS = "runs refused or failed"
"""What a node's `failures` count in the store (its failed fits are on its page, by run)."""
NODE_RUNS = 10
"""A node's page reads the files of its latest runs only, so it loads fast on a busy node."""
RUNS_SHOWN = 50
"""The federation page lists the latest runs (each one's files are read for its round)."""


def read_history(run_dir: Path) -> History | None:
    """The run's History: `out/history.json` once written, else the latest round recorded in
    `state/state.sqlite` (None before the first round)."""
    final = run_dir / "out" / "history.json"
    if final.is_file():
        try:
            return History.from_json(final.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # being replaced: the state store has the same rounds
    database = run_dir / "state" / "state.sqlite"
    if not database.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2)) as db:
            row = db.execute(
                "SELECT history FROM rounds ORDER BY server_round DESC LIMIT 1"
            ).fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if row is None else History.from_json(row[0])


def _read_log(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(max(size - limit, 0))
            return file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def planned_rounds(log_text: str) -> int | None:
    """N of the last `round i/N` progress line in a run's log."""
    found = _PROGRESS.findall(log_text)
    return int(found[-1][1]) if found else None


def log_reasons(log_text: str) -> dict[str, tuple[str, str]]:
    """The last (kind, reason) logged for each failed node."""
    reasons: dict[str, tuple[str, str]] = {}
    for match in _FAILURE.finditer(log_text):
        reason = match.group(4).split(_FIRST_NOTE)[0].strip()
        reasons[match.group(2)] = (match.group(3), reason)
    return reasons


def history_failures(history: History, reasons: dict[str, tuple[str, str]]) -> tuple[Failure, ...]:
    """The failures of a run's History (every failed fit names its node), grouped by the reason
    its log gave for that node."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for record in history.rounds:
        if record.withheld:
            continue
        for node in record.failed_clients:
            key = reasons.get(node, ("error", "see the run's log"))
            group = groups.setdefault(key, {"count": 0, "nodes": {}, "rounds": []})
            group["count"] += 1
            group["nodes"][node] = group["nodes"].get(node, 0) + 1
            if record.server_round not in group["rounds"]:
                group["rounds"].append(record.server_round)
    ordered = sorted(groups.items(), key=lambda item: -item[1]["count"])
    return tuple(
        Failure(kind, reason, g["count"], tuple(g["nodes"]), tuple(g["rounds"]), g["nodes"])
        for (kind, reason), g in ordered
    )


def node_failures(
    history: History, reasons: dict[str, tuple[str, str]], name: str, run_id: int
) -> list[Failure]:
    """The fits node `name` failed in one run's History (none in withheld rounds)."""
    rounds = tuple(
        r.server_round for r in history.rounds if not r.withheld and name in r.failed_clients
    )
    if not rounds:
        return []
    kind, reason = reasons.get(name, ("error", "see the run's log"))
    return [Failure(f"run {run_id}: {kind}", reason, len(rounds), (name,), rounds)]


class FederationSource:
    """The pages of a coordinator's federation, read from its store and run directories."""

    def __init__(self, store: Store, data_dir: str | Path, title: str = "federation") -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.title = title

    def run_dir(self, run_id: int) -> Path:
        """Where run `run_id` keeps its state, outputs and log."""
        return self.data_dir / "runs" / str(run_id)

    def version(self) -> Hashable:
        """The store's nodes and runs, and when each active run's files last changed."""
        files = []
        runs = self.store.runs()
        for run in runs:
            if run["status"] in ("starting", "running"):
                for name in ("state/state.sqlite", "log.txt", "out/history.json"):
                    path = self.run_dir(run["id"]) / name
                    files.append(path.stat().st_mtime_ns if path.exists() else 0)
        now = time.time()
        nodes = tuple(
            (n["name"], (n["last_seen"] or 0) >= now - ONLINE_S, n["runs_served"], n["failures"])
            for n in self.store.nodes()
        )
        return nodes, tuple((r["id"], r["status"], r["message"]) for r in runs), tuple(files)

    def _row(self, node: dict[str, Any]) -> NodeRow:
        return NodeRow(
            node["name"],
            online=(node["last_seen"] or 0) >= time.time() - ONLINE_S,
            last_seen=node["last_seen"],
            capacity=node["capacity"],
            runs_served=node["runs_served"],
            failures=node["failures"],
        )

    def federation(self) -> FederationView:
        """Every node and every run (newest first)."""
        runs = []
        for run in self.store.runs()[::-1][:RUNS_SHOWN]:
            history = read_history(self.run_dir(run["id"])) if run["started"] else None
            done = history.rounds[-1].server_round if history and history.rounds else None
            log_text = _read_log(self.run_dir(run["id"]) / "log.txt", _LOG_TAIL)
            runs.append(
                RunRow(
                    str(run["id"]),
                    f"{run['project']} #{run['id']}",
                    _STATUS.get(run["status"], run["status"]),
                    done,
                    planned_rounds(log_text),
                    run["message"],
                )
            )
        nodes = tuple(self._row(node) for node in self.store.nodes())
        note = f"{len(nodes)} nodes, {sum(1 for n in nodes if n.online)} online"
        return FederationView(self.title, nodes, tuple(runs), note, FAILED_RUNS)

    def run(self, run_id: str) -> RunView | None:
        """A run's progress, from its files; None for an unknown id."""
        if not run_id.isdigit() or (run := self.store.run(int(run_id))) is None:
            return None
        run_dir = self.run_dir(run["id"])
        history = read_history(run_dir) or History()
        log_text = _read_log(run_dir / "log.txt", _LOG_MAX)
        points = history_points(history)
        withheld = any(point.withheld for point in points)
        started = run["started"]
        elapsed = None if started is None else (run["finished"] or time.time()) - started
        config: dict[str, Any] = {
            "project": run["project"],
            "owner": run["owner"],
            "federation": run["federation"],
            "nodes": ", ".join(a["node"] for a in self.store.assignments(run=run["id"])),
            "run config": " ".join(json.loads(run["run_config"] or "[]")) or "(the project's)",
        }
        return RunView(
            run_id=str(run["id"]),
            title=f"{run['project']} #{run['id']}",
            status=_STATUS.get(run["status"], run["status"]),
            num_rounds=planned_rounds(log_text[-_LOG_TAIL:]),
            rounds=points,
            elapsed=elapsed,
            message=run["message"],
            failures=() if withheld else history_failures(history, log_reasons(log_text)),
            config=config,
        )

    def node(self, name: str) -> NodeView | None:
        """A registered node: its row, its part in each run (status and reason), and its
        failures: the runs it refused or crashed in, and the fits it failed in its latest
        runs (read from their files, as the run pages are)."""
        node = self.store.node(name)
        if node is None:
            return None
        parts = self.store.assignments(node=name)
        runs = tuple((str(a["run"]), a["status"], a["reason"]) for a in reversed(parts))
        failures = [
            Failure(
                f"run {a['run']}: {a['status']}", a["reason"] or "no reason given", 1, (name,), ()
            )
            for a in parts
            if a["status"] in ("failed", "refused")
        ]
        for part in parts[-NODE_RUNS:]:
            run_dir = self.run_dir(part["run"])
            history = read_history(run_dir)
            if history is not None:
                reasons = log_reasons(_read_log(run_dir / "log.txt", _LOG_MAX))
                failures.extend(node_failures(history, reasons, name, part["run"]))
        return NodeView(name, self._row(node), runs, tuple(failures))
