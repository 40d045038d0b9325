"""Retrying with exponential backoff: one rule for every reconnecting part (a gRPC client
looking for its server, a node looking for its coordinator)."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter: `initial`·`factor`^n seconds, capped at `maximum`, each
    delay drawn in [½, 1] of that so that many nodes cut off together do not return together.

    The jitter comes from its own `random.Random` (never the global one, which a run's code may
    seed): spreading retries protects nobody's secrets, so it need not come from the OS.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.rng = rng if rng is not None else random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one failed attempt."""
        ceiling = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return ceiling * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        """A success: the next failure starts again from `initial`."""
        self.attempts = 0
