"""Update transforms: rewrite each client's update before it is aggregated.

A transform is called as `transform(update, client_id, server_round) -> update`. A transform that
learns across rounds may also define `end_round(server_round)` (called once the round's updates
were all seen) and `state_dict()` / `load_state_dict(state)`; the strategy then checkpoints its
state with the server optimizer's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from roost.core.types import ClientId, Parameters
from roost.errors import ConfigurationError


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


class ClipL2:
    """Clip every client's update to L2 norm at most `max_norm` (fixed bound)."""

    def __init__(self, max_norm: float) -> None:
        if not max_norm > 0:
            raise ConfigurationError(f"ClipL2 max_norm must be > 0, got {max_norm}")
        self.max_norm = float(max_norm)

    def __call__(self, update: Parameters, client_id: ClientId, server_round: int) -> Parameters:
        return clip_to_norm(update, self.max_norm)[0]

    def __repr__(self) -> str:
        return f"ClipL2(max_norm={self.max_norm})"


class AdaptiveClipL2:
    """Clip to an L2 bound C that follows a target quantile of the update norms.

    Andrew et al. (2021), "Differentially Private Learning with Adaptive Clipping", geometric rule
    without noise: after each round, with b the share of that round's updates whose norm was at
    most C,

        C ← C · exp(−learning_rate · (b − target_quantile))

    so C settles where a `target_quantile` share of updates is left unclipped. The current bound
    is `clip_norm` and is part of the strategy's checkpointed state.
    """

    def __init__(
        self,
        initial_norm: float = 0.1,
        target_quantile: float = 0.5,
        learning_rate: float = 0.2,
    ) -> None:
        if not initial_norm > 0:
            raise ConfigurationError(f"initial_norm must be > 0, got {initial_norm}")
        if not 0 <= target_quantile <= 1:
            raise ConfigurationError(f"target_quantile must be in [0, 1], got {target_quantile}")
        if not learning_rate > 0:
            raise ConfigurationError(f"learning_rate must be > 0, got {learning_rate}")
        self.initial_norm = float(initial_norm)
        self.target_quantile = float(target_quantile)
        self.learning_rate = float(learning_rate)
        self.clip_norm = float(initial_norm)
        self._round: int | None = None
        self._seen = 0
        self._unclipped = 0

    def __call__(self, update: Parameters, client_id: ClientId, server_round: int) -> Parameters:
        if server_round != self._round:
            self._round, self._seen, self._unclipped = server_round, 0, 0
        clipped, norm = clip_to_norm(update, self.clip_norm)
        self._seen += 1
        self._unclipped += int(norm <= self.clip_norm)
        return clipped

    def end_round(self, server_round: int) -> None:
        """Move the bound toward the target quantile using the round's updates."""
        if self._round == server_round and self._seen:
            share = self._unclipped / self._seen
            self.clip_norm = float(
                self.clip_norm * np.exp(-self.learning_rate * (share - self.target_quantile))
            )
        self._round, self._seen, self._unclipped = None, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip_norm = float(state["clip_norm"])
        self._round, self._seen, self._unclipped = None, 0, 0

    def __repr__(self) -> str:
        return (
            f"AdaptiveClipL2(clip_norm={self.clip_norm:g}, target_quantile={self.target_quantile}, "
            f"learning_rate={self.learning_rate})"
        )
