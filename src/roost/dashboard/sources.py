"""Where the pages' data comes from: a `Source` answers for the federation page, a run page and
a node page, and says (`version`) when what it shows may have changed.

`LiveSource` serves one run of this process (`roost simulate | run | server --dashboard`); the
coordinator's source is `roost.dashboard.federation_source.FederationSource`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from roost.dashboard.model import RunModel, RunView
from roost.dashboard.views import FederationView, NodeRow, NodeView, RunRow


class Source(Protocol):
    """What the dashboard's pages read."""

    def federation(self) -> FederationView:
        """The federation page's data."""
        ...

    def run(self, run_id: str) -> RunView | None:
        """A run page's data (None: no such run)."""
        ...

    def node(self, name: str) -> NodeView | None:
        """A node page's data (None: no such node)."""
        ...

    def version(self) -> Hashable:
        """Changes whenever the pages may show something new (cheap: read several times a
        second while a page is open)."""
        ...


class LiveSource:
    """The one run of this process, as a federation of one run whose nodes are its clients.

    A simulation's clients have no "last seen": the node list shows those that failed, with how
    often, and nothing at all for a run that withholds client statistics (central DP).
    """

    def __init__(self, model: RunModel, title: str = "this process") -> None:
        self.model = model
        self.title = title

    def version(self) -> Hashable:
        """The model's version and the number of failures so far (they arrive mid-round)."""
        failures = self.model.failures(False)
        return self.model.version, sum(f.count for f in failures)

    def federation(self) -> FederationView:
        """One run; the clients that failed."""
        view = self.model.view()
        run = RunRow(
            view.run_id, view.title, view.status, view.current_round, view.num_rounds, view.message
        )
        counts: dict[str, int] = {}
        for failure in view.failures:
            for node in failure.node_ids:
                counts[node] = counts.get(node, 0) + failure.node_counts.get(node, 0)
        nodes = tuple(NodeRow(name, failures=count) for name, count in sorted(counts.items()))
        note = (
            "client statistics are withheld under central DP"
            if view.withheld
            else "a run of this process: its clients are listed once they fail"
        )
        return FederationView(self.title, nodes, (run,), note)

    def run(self, run_id: str) -> RunView | None:
        """The run, if `run_id` names it."""
        return self.model.view() if run_id == self.model.run_id else None

    def node(self, name: str) -> NodeView | None:
        """A client's failures in this run (None under central DP: that is client data)."""
        view = self.model.view()
        if view.withheld:
            return None
        failures = tuple(f for f in view.failures if name in f.node_ids)
        runs = ((view.run_id, "failed in this run" if failures else "no failures", ""),)
        return NodeView(name, None, runs, failures, "a client of this process's run")
