"""The one convention every server-side part follows: settings in the object, state outside it.

A part (client sampler, weighting, update transform, aggregator, server optimizer) is built with its
settings and keeps nothing else. `init(...)` returns its state and every step takes a state and
returns the next one, never changing its inputs, so that

- the round loop holds all state in one tree (`roost.server.loop.ServerState`) and a checkpoint is
  that tree: anything that learns across rounds resumes exactly, with no save/load code of its own;
- parts compose: `chain(ClipL2(1.0), AdaptiveClipL2(...))` is one transform whose state is the
  tuple of its members' states.

State is plain data: nested dicts, tuples and lists of NumPy arrays and Python scalars. A step may
also return measurements (name -> number, e.g. a clip rate) that the round loop records in
`History.measurements`.

Parts are classes with defaults for the steps they do not need; whether a part "has" a step is never
discovered with `hasattr`; a part's settings are read by name from its dataclass fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from roost.core.simclock import VirtualClock
from roost.core.types import (
    ClientId,
    Config,
    Failure,
    FitRes,
    Instruction,
    Metrics,
    Outcome,
    Parameters,
    Result,
)
from roost.errors import ConfigurationError

State = Any
"""A part's state: nested dicts/tuples/lists of NumPy arrays and Python scalars (or `()`)."""

Measurements = dict[str, float]
"""What a step measured this round, by name (recorded per round in `History.measurements`)."""

NO_STATE: State = ()


class Sampler:
    """Chooses a round's cohort from the available clients."""

    def init(self) -> State:
        """The sampler's state before the first round."""
        return NO_STATE

    def sample(
        self, client_ids: Sequence[ClientId], count: int, rng: np.random.Generator, state: State
    ) -> tuple[list[ClientId], State]:
        """`count` of `client_ids` (the strategy's fraction/minimum rule), and the next state."""
        raise NotImplementedError


@dataclass(frozen=True)
class FunctionSampler(Sampler):
    """A stateless sampler from a plain `(client_ids, count, rng) -> chosen ids` function."""

    function: Callable[[Sequence[ClientId], int, np.random.Generator], list[ClientId]]

    def sample(
        self, client_ids: Sequence[ClientId], count: int, rng: np.random.Generator, state: State
    ) -> tuple[list[ClientId], State]:
        return list(self.function(client_ids, count, rng)), state


def sample_uniformly(
    client_ids: Sequence[ClientId], count: int, rng: np.random.Generator
) -> list[ClientId]:
    """The default sampling rule: `count` distinct clients drawn uniformly, returned in the order
    of `client_ids`. (The secret samplers of private runs are `roost.privacy.sampling`'s.)"""
    chosen = np.sort(rng.choice(len(client_ids), size=count, replace=False))
    return [client_ids[index] for index in chosen]


class Weighting:
    """Gives each client's update its weight in the aggregate (finite, >= 0)."""

    def init(self) -> State:
        """The weighting's state before the first round."""
        return NO_STATE

    def weigh(self, client_id: ClientId, result: FitRes, state: State) -> tuple[float, State]:
        """The weight of `result`, and the next state."""
        raise NotImplementedError


@dataclass(frozen=True)
class FunctionWeighting(Weighting):
    """A stateless weighting from a plain `(client_id, num_examples, metrics) -> weight`."""

    function: Callable[..., float]

    def weigh(self, client_id: ClientId, result: FitRes, state: State) -> tuple[float, State]:
        return self.function(client_id, result.num_examples, result.metrics), state


class UpdateTransform:
    """Rewrites each client's update before aggregation, and may act on the aggregate after it.

    `apply` runs once per client (clipping, compression, local noise); `finish` runs once per round
    with the aggregate (noise on the sum, moving an adaptive bound) and returns the next state and
    measurements. Per-round tallies (how many updates were clipped) live in the state between
    `apply` calls and are reset by `finish`, so a state saved after a round is always clean.
    """

    withholds_client_statistics: bool = False
    """True for a transform whose guarantee covers who takes part and what they send (central
    DP): a strategy with one releases nothing about its cohorts but the transform's own
    (private) measurements — no client metrics, no counts, no other part's measurements."""

    def init(self, template: Parameters) -> State:
        """The transform's state before the first round (`template` is shaped like the model)."""
        return NO_STATE

    def start_round(self, state: State) -> State:
        """Called before each round's cohort is chosen; may raise `roost.errors.RunFinished`."""
        return state

    def apply(self, update: Parameters, state: State) -> tuple[Parameters, State]:
        """One client's transformed update, and the next state."""
        return update, state

    def finish(
        self, aggregate: Parameters | None, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        """The round's (possibly transformed) aggregate, the next state, and measurements."""
        return aggregate, state, {}

    def client_side(self, state: State) -> Config:
        """Under secure aggregation the server sees only the sum of the updates, so each client
        does this transform's per-update step itself; return what it needs (`{"clip_norm": C}`
        is the one setting clients know). The default refuses: override it for a transform that
        can run that way."""
        raise ConfigurationError(
            f"{self!r} must see each client's update, which secure aggregation hides; "
            "drop it or run without secure aggregation"
        )

    def summed(self, state: State, count: int) -> State:
        """Under secure aggregation: the state after `count` updates were applied client-side
        (what `apply` would have tallied, as far as their sum tells). Default: unchanged."""
        return state


class Chain(UpdateTransform):
    """Transforms applied in order to each update; their `finish` steps run in reverse order.

    Reverse order makes a chain behave like nested wrappers: the transform closest to the
    aggregator (the last to see each update) is the first to see the aggregate.
    """

    def __init__(self, *transforms: UpdateTransform) -> None:
        for transform in transforms:
            if not isinstance(transform, UpdateTransform):
                raise TypeError(
                    f"{transform!r} is not an UpdateTransform; subclass "
                    "roost.strategy.UpdateTransform and define apply (and finish if needed)"
                )
        self.transforms = tuple(transforms)

    def __iter__(self) -> Iterator[UpdateTransform]:
        """The members, in order (so a chain can be extended: `chain(*strategy_chain, more)`)."""
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    @property
    def withholds_client_statistics(self) -> bool:  # type: ignore[override]
        """Whether a member withholds client statistics (then the whole chain does)."""
        return any(t.withholds_client_statistics for t in self.transforms)

    def init(self, template: Parameters) -> State:
        return tuple(transform.init(template) for transform in self.transforms)

    def start_round(self, state: State) -> State:
        return tuple(t.start_round(s) for t, s in zip(self.transforms, state, strict=True))

    def apply(self, update: Parameters, state: State) -> tuple[Parameters, State]:
        states = list(state)
        for index, transform in enumerate(self.transforms):
            update, states[index] = transform.apply(update, states[index])
        return update, tuple(states)

    def finish(
        self, aggregate: Parameters | None, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        states = list(state)
        measurements: Measurements = {}
        private = self.withholds_client_statistics
        for index in reversed(range(len(self.transforms))):
            transform = self.transforms[index]
            aggregate, states[index], measured = transform.finish(aggregate, states[index])
            # Under central DP, another member's measurements (an un-noised clip rate) would
            # release client statistics that ε does not cover.
            if transform.withholds_client_statistics or not private:
                measurements.update(measured)
        return aggregate, tuple(states), measurements

    def client_side(self, state: State) -> Config:
        settings: Config = {}
        for transform, member in zip(self.transforms, state, strict=True):
            wanted = transform.client_side(member)
            if "clip_norm" in wanted and "clip_norm" in settings:  # clipping twice: the tighter
                wanted = {**wanted, "clip_norm": min(wanted["clip_norm"], settings["clip_norm"])}
            settings.update(wanted)
        return settings

    def summed(self, state: State, count: int) -> State:
        return tuple(t.summed(s, count) for t, s in zip(self.transforms, state, strict=True))

    def __repr__(self) -> str:
        return f"chain({', '.join(repr(t) for t in self.transforms)})"


def chain(*transforms: UpdateTransform) -> Chain:
    """Compose update transforms into one (state: the tuple of their states)."""
    return Chain(*transforms)


class Aggregator:
    """Combines the round's weighted updates into one.

    `aggregate` consumes the updates one by one as they stream in: mean-type aggregators keep a
    running sum (O(model) memory); robust ones keep every update (O(cohort × model)) and say so in
    their docstrings. An update with weight 0 takes no part in the round.
    """

    min_updates: int = 1
    """The fewest updates this aggregator can work with."""

    def init(self, template: Parameters) -> State:
        """The aggregator's state before the first round."""
        return NO_STATE

    def aggregate(
        self,
        updates: Iterable[tuple[Parameters, float]],
        template: Parameters,
        state: State,
    ) -> tuple[Parameters | None, State, Measurements]:
        """The aggregate of `(update, weight)` pairs (None when none had positive weight).

        Raises `NotEnoughUpdatesError` when fewer than `min_updates` updates arrived.
        """
        raise NotImplementedError


class ServerOptimizer:
    """Turns the round's pseudo-gradient Δ = aggregate − global into the next global model."""

    def init(self, parameters: Parameters) -> State:
        """The optimizer's state before the first round."""
        return NO_STATE

    def at_round(self, state: State, server_round: int) -> State:
        """The state before `apply` in round `server_round` (default: unchanged); an optimizer
        whose step depends on the round (Flower's Adam) keeps it here."""
        return state

    def apply(
        self, parameters: Parameters, delta: Parameters, state: State
    ) -> tuple[Parameters, State]:
        """The next global parameters and state."""
        raise NotImplementedError


class RoundContext(Protocol):
    """What a strategy's round sees of the loop: the clients, and one way to talk to them.

    Every phase goes through `exchange`, so all phases share the transport, the timeouts, the
    validation of results against `template` and the failure handling.
    """

    server_round: int
    rng: np.random.Generator
    clock: VirtualClock | None
    """The simulated clock the run keeps (None: real time only)."""

    def available(self, count: int) -> list[ClientId]:
        """The connected clients, once at least `count` are."""
        ...

    def exchange(
        self,
        phase: str,
        cohort: Sequence[tuple[ClientId, Instruction]],
        template: Parameters | None,
        *,
        synchronous: bool = True,
    ) -> Iterable[Outcome]:
        """Send each member its instruction; stream back one validated outcome per member.

        On a simulated clock, a `synchronous` phase takes its slowest member's virtual time;
        an asynchronous strategy passes False and keeps time itself (`clock.duration`)."""
        ...

    def send_task(
        self,
        phase: str,
        client_id: ClientId,
        instruction: Instruction,
        template: Parameters,
        tag: int,
    ) -> None:
        """Real time only (a deployment): send one client one instruction whose outcome may
        arrive in a later round (`next_arrival`), validated as `exchange` validates; `tag` comes
        back with it (an asynchronous strategy's model version). Raises ConfigurationError where
        the run has no real-time tasks (a simulation: use `exchange` on the clock)."""
        ...

    def next_arrival(self) -> Arrival:
        """The next outcome of a task sent with `send_task`, in whatever round it was sent, as
        it arrives (blocking until one does); counted in this round's record."""
        ...

    def tasks_in_flight(self) -> dict[ClientId, int]:
        """The clients whose `send_task` outcome has not arrived yet, with their tags."""
        ...


class Arrival(NamedTuple):
    """A real-time task's outcome (`RoundContext.next_arrival`): who, what was sent, its tag."""

    client_id: ClientId
    instruction: Instruction
    tag: int
    outcome: Result | Failure


class FitAggregate(NamedTuple):
    """What a round's training produced: the next model (None: unchanged) and what it measured."""

    parameters: Parameters | None
    metrics: Metrics
    state: State
    measurements: Measurements


@dataclass(frozen=True)
class PartialFit:
    """A fit round's result before it is concluded: what the cohort's updates combined into.

    However the aggregate was made (in the clear, by secure aggregation, or not at all when the
    cohort was empty), `Strategy.conclude_fit` turns this into the round's `FitAggregate`: the
    transforms' `finish`, the failure rule, the server optimizer's step, the fit metrics.
    """

    aggregate: Parameters | None
    """The aggregated update (None: nothing usable arrived)."""
    state: State
    """The strategy's state tree after sampling and aggregation."""
    fit_metrics: tuple[tuple[int, Metrics], ...] = ()
    """`(num_examples, metrics)` of each client that contributed."""
    measurements: Measurements = field(default_factory=dict)
    """What the aggregation measured."""
    failures: int = 0
    """Clients of the cohort whose update is not in the aggregate."""
