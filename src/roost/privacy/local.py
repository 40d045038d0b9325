"""Local differential privacy: each client clips and noises its own update before sending it.

Where central DP trusts the server with the raw updates, local DP trusts nobody: a wrapped client
computes its update Δ = trained − received, clips it to L2 norm C, adds Gaussian noise of std σ·C
to every coordinate and sends received + noised Δ. Whatever the server (or anyone on the wire)
does with it, each release is an (ε, δ)-DP Gaussian mechanism on that client's data, with the ε of
`local_epsilon(σ, δ)` per round — see `LocalDP.epsilon_per_round`.

What that ε means: with the default ``relation="replace"``, for *any* two datasets the client
might hold, the distributions of what it sends differ by at most e^ε (up to δ): the clipped update
can be anywhere in the ball of radius C, so the sensitivity is the ball's diameter, 2C. Releases in
several rounds compose (`local_epsilon(..., rounds=k)`). The price is noise: the server's average
of n local releases carries noise of std σ·C/√n per coordinate, far more than central DP's σ·C/n.

What it does not cover is not sent, unless ``send_metrics=True`` sends it unprotected: the fit
metrics (dropped), the true `num_examples` (reported as 1, so the server weighs every client the
same) and `evaluate` results (evaluation is refused: evaluate on the server, or not at all).
`get_parameters` passes through unprotected (give the strategy `initial_parameters` so no client
is asked). Integer arrays (counters) are sent back exactly as received. Who takes part is not
protected either: the server knows whom it asked.

With a FedSGD round (``config["return_gradients"]``) the client's answer *is* the update: the
gradient is clipped and noised and sent as a gradient.

On the server, `LocalDPAccountant` (an update transform that leaves updates alone) records each
round the ε a client has spent if it took part in every round so far, and can stop the run at a
target ε; it trusts that the clients run with the σ it is given.

Works around any client object (`get_parameters/fit/evaluate`: the framework adapters and the
bundled demo client alike) with `LocalDP(client, ...)`, or around a `client_fn` with
`LocalDPClientFn(client_fn, ...)`. Noise comes from `SecureRandom`, a fresh `os.urandom` key
per release; a research `seed` derives it from (seed, round, partition) instead and makes the run
NOT private.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass

import numpy as np

from roost.client.client import ClientFn, ClientLike, Context
from roost.core.config_keys import RETURN_GRADIENTS, SERVER_ROUND
from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError, InvalidMessageError, RunFinished
from roost.privacy.accounting import local_epsilon
from roost.privacy.noise import SecureRandom, noise_source, warn_not_private
from roost.strategy.base import Measurements, State, UpdateTransform


def clip_l2(update: Parameters, max_norm: float) -> list[np.ndarray]:
    """`update` in float64, scaled down (all arrays together) to L2 norm at most `max_norm`."""
    arrays = [np.asarray(a, np.float64) for a in update]
    norm = math.sqrt(sum(float(np.vdot(a, a)) for a in arrays))
    if norm <= max_norm:
        return arrays
    return [a * (max_norm / norm) for a in arrays]


def clipped_and_noised(
    trained: Parameters,
    bases: Sequence[np.ndarray | float],
    clip_norm: float,
    std: float,
    source: SecureRandom,
) -> list[np.ndarray]:
    """bases + clip(trained − bases, C) + N(0, std²) on every entry, each in `trained`'s dtype.

    Integer arrays (counters) go back as their base, a zero update: nothing of the client's
    escapes through them. No noise is drawn when `std` is 0.
    """
    floats = [np.asarray(t).dtype.kind == "f" for t in trained]
    update = [
        np.asarray(t, np.float64) - np.asarray(base, np.float64)
        if is_float
        else np.zeros(np.shape(t))
        for t, base, is_float in zip(trained, bases, floats, strict=True)
    ]
    sent = []
    for delta, base, t, is_float in zip(
        clip_l2(update, clip_norm), bases, trained, floats, strict=True
    ):
        if is_float and std > 0:
            delta = delta + source.normal(std, delta.shape)
        sent.append(np.asarray(np.asarray(base, np.float64) + delta).astype(np.asarray(t).dtype))
    return sent


class _LocalSettings:
    """C, σ, the research seed and the metrics rule, checked once, shared by both wrappers."""

    def __init__(
        self, clip_norm: float, noise_multiplier: float, seed: int | None, send_metrics: bool
    ) -> None:
        if not clip_norm > 0 or math.isinf(clip_norm):
            raise ConfigurationError(f"clip_norm must be a finite number > 0, got {clip_norm}")
        if not noise_multiplier >= 0 or math.isinf(noise_multiplier):
            raise ConfigurationError(
                f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}"
            )
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.seed = seed
        self.send_metrics = send_metrics

    def epsilon_per_round(self, delta: float, *, relation: str = "replace") -> float:
        """ε of one release at `delta` (∞ when σ = 0); see the module doc for its meaning."""
        return local_epsilon(self.noise_multiplier, delta, relation=relation)


class LocalDP(_LocalSettings):
    """A client whose every `fit` answer is clipped and noised on the client (local DP).

    Args:
        client: any object with `get_parameters`, `fit` and `evaluate`.
        clip_norm: C, the L2 bound of the client's update.
        noise_multiplier: σ: Gaussian noise of std σ·C is added to every coordinate.
        partition_id: which client this is (separates research-seeded noise streams).
        seed: research only: noise from (seed, round, partition); needs `config["server_round"]`
            in every fit config; the run is NOT private.
        send_metrics: also send what local DP does not protect: the fit metrics, the true
            `num_examples` and evaluation results (default False: none of them).
    """

    def __init__(
        self,
        client: ClientLike,
        clip_norm: float,
        noise_multiplier: float,
        *,
        partition_id: int = 0,
        seed: int | None = None,
        send_metrics: bool = False,
    ) -> None:
        super().__init__(clip_norm, noise_multiplier, seed, send_metrics)
        self.client = client
        self.partition_id = partition_id
        if seed is not None:
            warn_not_private("LocalDP", seed)

    @classmethod
    def _sharing(cls, client: ClientLike, settings: _LocalSettings, partition_id: int) -> LocalDP:
        """A wrapper with checked settings, built without repeating the research-seed warning."""
        wrapped = cls.__new__(cls)
        wrapped.__dict__.update(vars(settings))
        wrapped.client = client
        wrapped.partition_id = partition_id
        return wrapped

    def __repr__(self) -> str:
        return (
            f"LocalDP({self.client!r}, clip_norm={self.clip_norm:g}, "
            f"noise_multiplier={self.noise_multiplier:g})"
        )

    def get_parameters(self, config: Config) -> Parameters:
        """The wrapped client's parameters, unprotected (prefer the strategy's initial ones)."""
        return self.client.get_parameters(config)

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        """The wrapped client's evaluation, unprotected: refused unless `send_metrics`."""
        if not self.send_metrics:
            raise ConfigurationError(
                "a client with local DP sends no evaluation results (its loss and metrics are "
                "its data, un-noised); evaluate on the server (fraction_evaluate=0), or pass "
                "send_metrics=True to send them unprotected"
            )
        return self.client.evaluate(parameters, config)

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        """Train with the wrapped client, then send the clipped and noised update."""
        received = [np.array(p, copy=True) for p in parameters]  # the client may train in place
        trained, num_examples, metrics = self.client.fit(parameters, config)
        if len(trained) != len(received):
            raise InvalidMessageError(
                f"the wrapped client's fit returned {len(trained)} arrays for a model of "
                f"{len(received)}"
            )
        sent = self._privatized(trained, received, config)
        if self.send_metrics:
            return sent, num_examples, dict(metrics)
        return sent, 1, {}  # the dataset's size is the client's data too

    def _privatized(self, trained: Parameters, received: Parameters, config: Config) -> Parameters:
        """received + clip(trained − received) + noise; for gradients, clip(gradient) + noise."""
        gradients = bool(config.get(RETURN_GRADIENTS, False))
        bases = [0.0 if gradients else r for r in received]
        source = noise_source(self.seed, *self._context(config))
        std = self.noise_multiplier * self.clip_norm
        return clipped_and_noised(trained, bases, self.clip_norm, std, source)

    def _context(self, config: Config) -> tuple:
        if self.seed is None:
            return ()
        if SERVER_ROUND not in config:
            raise ConfigurationError(
                f"LocalDP with a research seed needs config[{SERVER_ROUND!r}] in every fit "
                f"config to vary its noise by round; send it with on_fit_config_fn=lambda r: "
                f"{{{SERVER_ROUND!r}: r}}"
            )
        return ("LocalDP", int(config[SERVER_ROUND]), self.partition_id)


class LocalDPClientFn(_LocalSettings):
    """A `client_fn` whose clients are wrapped in `LocalDP` (picklable when `client_fn` is).

    Args:
        client_fn: builds the clients to wrap.
        clip_norm, noise_multiplier, seed, send_metrics: as for `LocalDP`; each client's
            `partition_id` comes from its context.
    """

    def __init__(
        self,
        client_fn: ClientFn,
        clip_norm: float,
        noise_multiplier: float,
        *,
        seed: int | None = None,
        send_metrics: bool = False,
    ) -> None:
        super().__init__(clip_norm, noise_multiplier, seed, send_metrics)
        self.client_fn = client_fn
        if seed is not None:
            warn_not_private("LocalDPClientFn", seed)

    def __call__(self, context: Context) -> LocalDP:
        settings = _LocalSettings(
            self.clip_norm, self.noise_multiplier, self.seed, self.send_metrics
        )
        return LocalDP._sharing(self.client_fn(context), settings, context.partition_id)


@dataclass(frozen=True)
class LocalDPAccountant(UpdateTransform):
    """The server's record of what local DP costs each client; it does not touch the updates.

    Each finished round measures ``local_epsilon``: the ε at `delta` of `rounds` local releases
    (`local_epsilon(σ, δ, rounds=r)`), which bounds every client's loss after round r, whatever
    rounds it took part in; and ``delta`` (`History.privacy` reads both). The clients must really
    use noise multiplier `noise_multiplier`: the server cannot check it.

    Args:
        noise_multiplier: σ of the clients' `LocalDP` (0: no privacy, nothing is measured).
        delta: the δ of the reported ε.
        target_epsilon: stop the run (`RunFinished`) before the round that would exceed it.

    State: ``{"rounds": r}``, the rounds started so far.
    """

    noise_multiplier: float
    _: KW_ONLY
    delta: float
    target_epsilon: float | None = None

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0 or math.isinf(self.noise_multiplier):
            raise ConfigurationError(
                f"noise_multiplier must be a finite number >= 0, got {self.noise_multiplier}"
            )
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ConfigurationError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        self.epsilon(1)  # refuse a δ the accountant cannot use now, not after round 1

    def epsilon(self, rounds: int) -> float:
        """A client's ε after `rounds` releases, at `delta` (∞ when σ = 0)."""
        # A coarse PLD step keeps a per-round report cheap over many rounds (still an upper bound).
        return local_epsilon(self.noise_multiplier, self.delta, rounds=rounds, discretization=1e-2)

    def init(self, template: Parameters) -> State:
        return {"rounds": 0}

    def start_round(self, state: State) -> State:
        """Count the coming round, or end the run if it would exceed `target_epsilon`."""
        rounds = state["rounds"] + 1
        if self.target_epsilon is not None and self.noise_multiplier > 0:
            next_epsilon = self.epsilon(rounds)
            if next_epsilon > self.target_epsilon:
                raise RunFinished(
                    f"the privacy budget is spent: round {rounds} would raise a client's local "
                    f"ε to {next_epsilon:.4g} > target_epsilon {self.target_epsilon:g} "
                    f"(δ = {self.delta:.3g})"
                )
        return {"rounds": rounds}

    def finish(
        self, aggregate: Parameters | None, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        """Report the ε spent so far."""
        if self.noise_multiplier == 0:
            return aggregate, state, {}
        spent = self.epsilon(state["rounds"])
        return aggregate, state, {"local_epsilon": spent, "delta": float(self.delta)}
