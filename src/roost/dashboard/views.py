"""The pages' HTML: Jinja2 templates (autoescaped) fed with `RunView`, `FederationView` and
`NodeView`. Each page is made of named parts; a live update re-renders the parts and the page's
script swaps them in, so the first load and every update show the same markup."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from roost.dashboard.charts import Line, line_chart
from roost.dashboard.model import Failure, RunView
from roost.tracking.failures import spans

_CHART_METRIC = "accuracy"


@dataclass(frozen=True)
class NodeRow:
    """One node (a simulation's client) as the federation page lists it."""

    name: str
    online: bool | None = None
    last_seen: float | None = None
    capacity: int | None = None
    runs_served: int | None = None
    failures: int = 0


@dataclass(frozen=True)
class RunRow:
    """One run as the federation page lists it."""

    run_id: str
    title: str
    status: str
    current_round: int | None = None
    num_rounds: int | None = None
    message: str = ""


@dataclass(frozen=True)
class FederationView:
    """The federation page: its nodes and its runs."""

    title: str
    nodes: tuple[NodeRow, ...]
    runs: tuple[RunRow, ...]
    note: str = ""
    failures_label: str = "failures"
    """What the nodes' `failures` count (a coordinator's: the runs a node refused or failed)."""


@dataclass(frozen=True)
class NodeView:
    """A node's page: its row, its part in each run, and its failures."""

    name: str
    row: NodeRow | None
    runs: tuple[tuple[str, str, str], ...] = ()
    failures: tuple[Failure, ...] = ()
    note: str = ""


@cache
def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("roost.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    env.filters["ago"] = ago
    env.filters["spans"] = lambda rounds: spans(list(rounds))
    return env


def duration(seconds: float | None) -> str:
    """`75.2` as "1 min 15 s"; "–" for None."""
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def ago(timestamp: float | None) -> str:
    """A time as "12 s ago"; "never" for None."""
    return "never" if timestamp is None else f"{duration(max(time.time() - timestamp, 0))} ago"


def run_charts(view: RunView) -> list[str]:
    """The run page's charts: loss and the chart metric (distributed next to centralized), and
    ε spent against its target under DP."""
    if not view.rounds:
        empty = "no rounds yet"
    elif view.withheld:  # no distributed values, and this run has no centralized ones
        empty = "withheld under central DP (client statistics)"
    else:
        empty = "not measured in this run"
    charts = [
        line_chart(
            "chart-loss",
            "loss",
            [
                Line("distributed", view.series("loss_distributed")),
                Line("centralized", view.series("loss_centralized")),
            ],
            empty=empty,
        ),
        line_chart(
            "chart-accuracy",
            _CHART_METRIC,
            [
                Line("distributed", view.series(f"distributed_{_CHART_METRIC}")),
                Line("centralized", view.series(f"centralized_{_CHART_METRIC}")),
            ],
            empty=empty,
        ),
    ]
    if (privacy := privacy_of(view)) is not None:
        target = privacy["target"]
        charts.append(
            line_chart(
                "chart-epsilon",
                f"ε spent ({privacy['kind']} DP)",
                [Line("ε", view.series(privacy["series"]))],
                limit=("target", target) if target is not None else None,
            )
        )
    return charts


def privacy_of(view: RunView) -> dict[str, Any] | None:
    """The run's privacy budget: kind, the series name of its ε, the ε spent, δ and the target
    (None for a run without DP accounting)."""
    for kind, name in (("central", "measured_epsilon"), ("local", "measured_local_epsilon")):
        spent = view.series(name)
        if spent:
            deltas = view.series("measured_delta")
            return {
                "kind": kind,
                "series": name,
                "epsilon": spent[-1][1],
                "delta": deltas[-1][1] if deltas else None,
                "target": view.target_epsilon,
            }
    return None


def run_parts(view: RunView, prefix: str = "") -> dict[str, str]:
    """The run page's live parts by element id, as HTML."""
    module = _environment().get_template("run_parts.html").make_module({"prefix": prefix})
    recent = view.rounds[-10:][::-1]
    names = list(dict.fromkeys(name for point in recent for name in point.phases))
    return {
        "run-status": str(module.status(view)),
        "run-charts": "".join(run_charts(view)),
        "run-privacy": str(module.privacy(privacy_of(view))),
        "run-phases": str(module.phases(view, recent, names)),
        "run-digest": str(module.digest(view, prefix)),
    }


def federation_parts(view: FederationView, prefix: str = "") -> dict[str, str]:
    """The federation page's live parts by element id."""
    module = _environment().get_template("federation_parts.html").make_module()
    return {
        "fed-nodes": str(module.nodes(view, prefix)),
        "fed-runs": str(module.runs(view, prefix)),
    }


def node_parts(view: NodeView, prefix: str = "") -> dict[str, str]:
    """A node page's live parts by element id."""
    module = _environment().get_template("node_parts.html").make_module()
    return {"node-body": str(module.body(view, prefix))}


def page(template: str, title: str, parts: Mapping[str, str], events: str, **context: Any) -> str:
    """A whole page: `template` with its parts filled in; `events` is the URL of its live
    updates (server-sent events)."""
    return (
        _environment()
        .get_template(template)
        .render(title=title, parts=parts, events=events, **context)
    )
