"""A run's History as a table (`history.csv`) and a chart (`plot.png`).

The chart has two panels, accuracy and loss per round, each with the distributed series (the
clients' evaluation, aggregated) next to the centralized one (the server's `evaluate_fn`). It is
drawn with matplotlib's Agg renderer, without pyplot, so it works headless, in threads and in
notebooks alike. matplotlib is imported only when a chart is drawn.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from roost.core.files import atomic_write_bytes
from roost.errors import ConfigurationError
from roost.server.history import History


def load_history(path: str | Path) -> History:
    """Read a `history.json` written by `roost simulate --out` / `save_run`."""
    path = Path(path)
    try:
        return History.from_json(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"{path} does not exist; pass the history.json of a run") from None
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as error:
        raise ConfigurationError(f"{path} is not a roost history.json: {error}") from error


def _rounds(history: History) -> list[int]:
    rounds = {record.server_round for record in history.rounds}
    for pairs in (history.losses_distributed, history.losses_centralized):
        rounds.update(r for r, _ in pairs)
    for series in (
        history.metrics_distributed_fit,
        history.metrics_distributed,
        history.metrics_centralized,
    ):
        for pairs in series.values():
            rounds.update(r for r, _ in pairs)
    return sorted(rounds)


def history_rows(history: History) -> tuple[list[str], list[list[object]]]:
    """One row per round: counts, both losses, every metric (`fit_`, `distributed_`,
    `centralized_` prefixes) and what strategy parts measured (`measured_`, as trackers name
    it); None where a round has no value."""
    columns: dict[str, dict[int, object]] = {}
    records = {r.server_round: r for r in history.rounds if not r.withheld}
    for field in ("fit_results", "fit_failures", "evaluate_results", "evaluate_failures"):
        columns[field] = {r: getattr(record, field) for r, record in records.items()}
    timed = {r: record for r, record in records.items() if record.virtual_time is not None}
    for field in ("virtual_time", "wall_time") if timed else ():  # a run on a simulated clock
        columns[field] = {r: getattr(record, field) for r, record in timed.items()}
    columns["loss_distributed"] = dict(history.losses_distributed)
    columns["loss_centralized"] = dict(history.losses_centralized)
    for prefix, series in (
        ("fit_", history.metrics_distributed_fit),
        ("distributed_", history.metrics_distributed),
        ("centralized_", history.metrics_centralized),
    ):
        for name, pairs in series.items():
            columns[prefix + name] = dict(pairs)
    if (privacy := history.privacy) is not None:  # ε per round and the δ it is reported at
        columns["epsilon" if privacy.kind == "central" else "local_epsilon"] = dict(privacy.epsilon)
        columns["delta"] = {r: privacy.delta for r, _ in privacy.epsilon}
    for name, pairs in history.measurements.items():  # bytes_up, staleness_max, clip_norm, ...
        if name not in columns:  # ε and δ have their columns above
            columns["measured_" + name] = dict(pairs)
    header = ["round", *columns]
    rows = [[r, *(values.get(r) for values in columns.values())] for r in _rounds(history)]
    return header, rows


def history_csv(history: History) -> str:
    """`history_rows` as CSV text (empty cells where a round has no value)."""
    header, rows = history_rows(history)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


def metric_names(history: History) -> list[str]:
    """The metrics `history` holds per round (distributed or centralized), sorted."""
    return sorted(set(history.metrics_distributed) | set(history.metrics_centralized))


def _accuracy_key(history: History, preferred: str) -> str | None:
    names = set(metric_names(history))
    if preferred in names:
        return preferred
    candidates = sorted(name for name in names if "acc" in name.lower())
    return candidates[0] if candidates else None


def _numeric(pairs: list[tuple[int, object]]) -> tuple[list[int], list[float]]:
    kept = [
        (r, float(v))
        for r, v in pairs
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    return [r for r, _ in kept], [v for _, v in kept]


def render_plot(
    history: History, *, accuracy_key: str = "accuracy", title: str | None = None
) -> bytes:
    """The chart as PNG bytes (see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    key = _accuracy_key(history, accuracy_key)
    panels = (
        (
            accuracy_axes,
            f"{key or 'accuracy'} per round",
            key or "accuracy",
            [
                ("distributed (clients)", history.metrics_distributed.get(key, []) if key else []),
                ("centralized (server)", history.metrics_centralized.get(key, []) if key else []),
            ],
        ),
        (
            loss_axes,
            "loss per round",
            "loss",
            [
                ("distributed (clients)", history.losses_distributed),
                ("centralized (server)", history.losses_centralized),
            ],
        ),
    )
    for axes, panel_title, ylabel, series in panels:
        drawn = 0
        for (label, pairs), style in zip(series, ("o-", "s--"), strict=True):
            rounds, values = _numeric(pairs)
            if values:
                axes.plot(rounds, values, style, label=label, linewidth=2, markersize=5)
                drawn += 1
        axes.set_title(panel_title)
        axes.set_xlabel("round")
        axes.set_ylabel(ylabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        if drawn:
            axes.legend()
        else:
            axes.text(
                0.5,
                0.5,
                "nothing recorded",
                ha="center",
                va="center",
                transform=axes.transAxes,
                color="gray",
            )
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    # No "Software" stamp: the same history gives byte-identical PNGs.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def plot_history(
    history: History | str | Path,
    path: str | Path,
    *,
    accuracy_key: str = "accuracy",
    title: str | None = None,
) -> Path:
    """Write the chart of `history` (a History or a history.json path) to `path` as PNG."""
    if not isinstance(history, History):
        history = load_history(history)
    path = Path(path)
    atomic_write_bytes(path, render_plot(history, accuracy_key=accuracy_key, title=title))
    return path
