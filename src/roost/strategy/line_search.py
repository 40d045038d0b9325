"""A round of several phases: FedSGD with a backtracking (Armijo) line search on the server.

Phase "fit": the cohort sends gradients at the global model x, with their training loss at x;
the strategy aggregates them into the usual proposed step x → x + m (m = −η·ḡ for FedSGD).
Phases "line_search" (at most `max_probes`): the same clients report their training loss at the
probe x + s·m, for s = 1, β, β², …; the first probe whose cohort loss f satisfies Armijo's rule

    f(x + s·m) ≤ f(x) − c · s · ‖m‖² / η          (‖m‖²/η = η·‖ḡ‖², the predicted decrease)

becomes the next global model. When no probe passes, the model stays unchanged this round.
Losses are weighted by `num_examples` and compared over the clients that answered both the fit
phase and the probe, so a client dropping out between phases does not bias the comparison.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Iterator

import numpy as np

from roost.core.types import ClientId, FitIns, FitRes, Outcome, Parameters
from roost.strategy.base import FitAggregate, RoundContext, State
from roost.strategy.strategy import Strategy

log = logging.getLogger(__name__)

Losses = dict[ClientId, tuple[int, float]]


def _loss(result: object, metric: str) -> float | None:
    """The finite loss a fit result reports under `metric`, or None."""
    if not isinstance(result, FitRes):
        return None
    value = result.metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _recording(outcomes: Iterable[Outcome], metric: str, losses: Losses) -> Iterator[Outcome]:
    """Pass outcomes through unchanged, noting each result's loss on the way."""
    for client_id, result in outcomes:
        loss = _loss(result, metric)
        if loss is not None:
            losses[client_id] = (result.num_examples, loss)  # type: ignore[union-attr]
        yield client_id, result


def _mean_loss(losses: Losses, members: Iterable[ClientId]) -> float:
    pairs = [losses[client_id] for client_id in members]
    total = sum(n for n, _ in pairs)
    if total == 0:
        return float(np.mean([loss for _, loss in pairs]))
    return sum(n * loss for n, loss in pairs) / total


def _moved(parameters: Parameters, move: list[np.ndarray], scale: float) -> Parameters:
    return [
        (p + scale * m).astype(p.dtype, copy=False) for p, m in zip(parameters, move, strict=True)
    ]


def backtracking_fit_round(
    strategy: Strategy,
    context: RoundContext,
    parameters: Parameters,
    state: dict[str, State],
    *,
    learning_rate: float,
    max_probes: int,
    shrink: float = 0.5,
    armijo: float = 1e-4,
    loss_metric: str = "train_loss",
) -> FitAggregate:
    """One round of FedSGD with a server-side backtracking line search (see the module doc)."""
    server_round = context.server_round
    available = context.available(max(strategy.min_available_clients, strategy.min_fit_clients))
    cohort, state = strategy.configure_fit(server_round, parameters, available, context.rng, state)
    if not cohort:
        return FitAggregate(None, {}, state, {})
    at_start: Losses = {}
    outcomes = _recording(context.exchange("fit", cohort, parameters), loss_metric, at_start)
    fitted = strategy.aggregate_fit(server_round, parameters, outcomes, state)
    if fitted.parameters is None:
        return fitted
    if not at_start:
        log.warning(
            "line_search_round %d: no client reported %r in its fit metrics; taking the plain step",
            server_round,
            loss_metric,
        )
        return fitted
    move = [
        np.subtract(new, old, dtype=np.float64)
        for new, old in zip(fitted.parameters, parameters, strict=True)
    ]
    predicted = sum(float(np.vdot(m, m)) for m in move) / learning_rate
    config = {**cohort[0][1].config}
    scale = 1.0
    for probe in range(1, max_probes + 1):
        candidate = _moved(parameters, move, scale)
        probe_cohort = [(client_id, FitIns(candidate, config)) for client_id in at_start]
        at_probe: Losses = {}
        for _ in _recording(
            context.exchange("line_search", probe_cohort, parameters), loss_metric, at_probe
        ):
            pass
        members = [client_id for client_id in at_start if client_id in at_probe]
        if members:
            before, after = _mean_loss(at_start, members), _mean_loss(at_probe, members)
            if after <= before - armijo * scale * predicted:
                measurements = {
                    **fitted.measurements,
                    "line_search_step": scale * learning_rate,
                    "line_search_probes": float(probe),
                }
                return FitAggregate(candidate, fitted.metrics, fitted.state, measurements)
        scale *= shrink
    log.warning(
        "line_search_round %d: no step passed Armijo's test in %d probe(s): global model unchanged",
        server_round,
        max_probes,
    )
    measurements = {
        **fitted.measurements,
        "line_search_step": 0.0,
        "line_search_probes": float(max_probes),
    }
    return FitAggregate(None, fitted.metrics, fitted.state, measurements)
