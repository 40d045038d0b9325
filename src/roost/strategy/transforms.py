"""Update transforms: rewrite each client's update before it is aggregated.

Each is a `roost.strategy.UpdateTransform`: `init(template) -> state`, `apply(update, state) ->
(update, state)` per client, `finish(aggregate, state) -> (aggregate, state, measurements)` once per
round. Compose them with `roost.strategy.chain`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roost.core.types import Config, Parameters
from roost.errors import ConfigurationError
from roost.strategy.base import Measurements, State, UpdateTransform


def l2_norm(update: Parameters) -> float:
    """The L2 norm of a whole update, all arrays together, computed in float64."""
    total = 0.0
    for array in update:
        flat = np.asarray(array, dtype=np.float64).ravel()
        total += float(flat @ flat)
    return float(np.sqrt(total))


def clip_to_norm(update: Parameters, max_norm: float) -> tuple[Parameters, float]:
    """Scale `update` down so its L2 norm is at most `max_norm`; return it and its original norm."""
    norm = l2_norm(update)
    if norm <= max_norm:
        return list(update), norm
    scale = max_norm / norm
    return [np.multiply(a, scale).astype(a.dtype, copy=False) for a in update], norm


@dataclass(frozen=True)
class ClipL2(UpdateTransform):
    """Clip every client's update to L2 norm at most `max_norm` (fixed bound)."""

    max_norm: float

    def __post_init__(self) -> None:
        if not self.max_norm > 0:
            raise ConfigurationError(f"ClipL2 max_norm must be > 0, got {self.max_norm}")

    def apply(self, update: Parameters, state: State) -> tuple[Parameters, State]:
        return clip_to_norm(update, self.max_norm)[0], state

    def client_side(self, state: State) -> Config:
        return {"clip_norm": self.max_norm}


@dataclass(frozen=True)
class AdaptiveClipL2(UpdateTransform):
    """Clip to an L2 bound C that follows a target quantile of the update norms.

    Andrew et al. (2021), "Differentially Private Learning with Adaptive Clipping", geometric rule
    without noise: after each round, with b the share of that round's updates whose norm was at
    most C,

        C ← C · exp(−learning_rate · (b − target_quantile))

    so C settles where a `target_quantile` share of updates is left unclipped. The state is
    `{"clip_norm": C, "seen": n, "unclipped": u}`; the counts cover the round in progress and are
    zero between rounds. Each round measures `clip_norm` (the bound it used) and `unclipped_share`.
    """

    initial_norm: float = 0.1
    target_quantile: float = 0.5
    learning_rate: float = 0.2

    def __post_init__(self) -> None:
        if not self.initial_norm > 0:
            raise ConfigurationError(f"initial_norm must be > 0, got {self.initial_norm}")
        if not 0 <= self.target_quantile <= 1:
            raise ConfigurationError(
                f"target_quantile must be in [0, 1], got {self.target_quantile}"
            )
        if not self.learning_rate > 0:
            raise ConfigurationError(f"learning_rate must be > 0, got {self.learning_rate}")

    def init(self, template: Parameters) -> State:
        return {"clip_norm": self.initial_norm, "seen": 0, "unclipped": 0}

    def apply(self, update: Parameters, state: State) -> tuple[Parameters, State]:
        clipped, norm = clip_to_norm(update, state["clip_norm"])
        return clipped, {
            "clip_norm": state["clip_norm"],
            "seen": state["seen"] + 1,
            "unclipped": state["unclipped"] + int(norm <= state["clip_norm"]),
        }

    def finish(
        self, aggregate: Parameters | None, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        """Move the bound toward the target quantile using the round's updates."""
        clip_norm, seen = state["clip_norm"], state["seen"]
        if not seen:
            return aggregate, state, {}
        share = state["unclipped"] / seen
        next_norm = float(clip_norm * np.exp(-self.learning_rate * (share - self.target_quantile)))
        measurements = {"clip_norm": clip_norm, "unclipped_share": share}
        return aggregate, {"clip_norm": next_norm, "seen": 0, "unclipped": 0}, measurements
