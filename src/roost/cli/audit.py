"""`roost privacy audit`'s run: canary clients in a real run of an app, scored afterwards.

The audit is client-level, as roost's central DP is (DP-FedAvg protects each client's whole
contribution). It adds m canary clients to the app's N clients; each canary takes part with
probability 1/2, by a secret coin from the OS CSPRNG (`roost.privacy.audit.secret_bits`).
A canary that takes part answers every `fit` it is sampled for with the global model moved by
its own update, B·uᵢ: a random direction uᵢ (orthonormal to the other canaries'), B the
canary norm: the run's clip norm C when it clips (under DP the most the mechanism lets through:
a longer update is clipped to C anyway), else as long as an ordinary client's first update
(`probe`: client 0 asked once before the run). It claims as many examples as that client, so
that it weighs as much under a weighted mean. A canary that does not take part answers with
the global model unchanged and 0 examples: the weighted mean leaves a 0-weight update out,
and DP-FedAvg's sum (with its fixed denominator) does not change by a zero update, so the
released models are those of a run without it. The canaries stay in the population every
round, so the secret sampler draws from all N + m clients and the accountant's N is N + m: the
run is the real mechanism, built by the app's `RunSettings.build_strategy`, run by `run_simulation`.

After the run the auditor sees only what was released, the initial and final global models:
canary i's score is ⟨final − initial, uᵢ⟩ (the sum of the round aggregates along uᵢ);
`roost.privacy.audit.audit` turns the scores into guesses and the guesses into a lower bound on ε.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, replace

import numpy as np
from rich.console import Console

from roost.app import App, Simulation
from roost.cli.report import configure_logging
from roost.cli.settings import settings_from_args
from roost.client.client import Client, ClientFn, Context
from roost.core.config_keys import RETURN_GRADIENTS
from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError
from roost.privacy.accounting import default_delta
from roost.privacy.audit import DEFAULT_CONFIDENCE, AuditResult, audit, canary_directions
from roost.privacy.audit import secret_bits as draw_secret_bits
from roost.server.loop import ServerConfig
from roost.settings import RunSettings
from roost.simulation import run_simulation
from roost.strategy.transforms import AdaptiveClipL2, ClipL2


def _float_indices(parameters: Parameters) -> list[int]:
    return [i for i, array in enumerate(parameters) if np.asarray(array).dtype.kind == "f"]


def flat_floats(parameters: Parameters) -> np.ndarray:
    """The model's float arrays as one float64 vector (integer counters take no part)."""
    chosen = [np.asarray(parameters[i], np.float64).ravel() for i in _float_indices(parameters)]
    return np.concatenate(chosen) if chosen else np.zeros(0)


def _moved(parameters: Parameters, step: np.ndarray) -> Parameters:
    """`parameters` plus `step` laid out over their float arrays."""
    moved = [np.array(array, copy=True) for array in parameters]
    offset = 0
    for i in _float_indices(parameters):
        size = moved[i].size
        moved[i] = (moved[i] + step[offset : offset + size].reshape(moved[i].shape)).astype(
            moved[i].dtype
        )
        offset += size
    return moved


@dataclass(frozen=True)
class CanaryClient(Client):
    """A canary: the global model plus its update when it takes part, unchanged when not.

    Args:
        update: its update B·u, flat over the model's float arrays.
        included: its secret coin: whether it takes part.
        examples: the number of examples it claims when it takes part (its weight under a
            weighted mean; DP-FedAvg weighs every client equally).
    """

    update: np.ndarray
    included: bool
    examples: int

    def get_parameters(self, config: Config) -> Parameters:
        raise ConfigurationError("a canary has no model of its own: give initial_parameters")

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        if not self.included:
            return [np.array(array, copy=True) for array in parameters], 0, {}
        return _moved(parameters, self.update), self.examples, {}

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        return 0.0, 0, {}  # no data: a 0-example answer takes no part in the means


@dataclass(frozen=True)
class CanaryClientFn:
    """The app's `client_fn` for partitions below `num_real` (as if there were `num_real`
    partitions in all), canary `pid − num_real` for the others (picklable)."""

    client_fn: ClientFn
    num_real: int
    updates: np.ndarray
    included: np.ndarray
    examples: int

    def __call__(self, context: Context) -> object:
        index = context.partition_id - self.num_real
        if index < 0:  # a real client holds its share of the app's data, split N ways
            real = Context.for_partition(
                context.partition_id,
                self.num_real,
                run_config=context.run_config,
                node_id=context.node_id,
                state=context.state,
            )
            return self.client_fn(real)
        return CanaryClient(self.updates[index], bool(self.included[index]), self.examples)


@dataclass(frozen=True)
class AuditRun:
    """An audit's result, the run's own ε (None without DP) and its final model."""

    result: AuditResult
    epsilon: float | None
    canary_norm: float
    rounds: int
    model: Parameters


def run_audit(
    app: App,
    settings: RunSettings,
    *,
    canaries: int,
    guesses: int,
    canary_norm: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    secret_bits: np.ndarray | None = None,
) -> AuditRun:
    """Run `app` as `settings` ask, with `canaries` canary clients added, and audit it.

    Args:
        app: the app whose clients and strategy run (it builds them from `settings`).
        settings: the run; `num_clients` counts the canaries too (the population N + m the
            accountant uses), the app gets `num_clients − canaries` clients of its own.
        canaries: m.
        guesses: r, the canaries the auditor guesses (the highest and lowest scores).
        canary_norm: B, the length of a canary's update (default: the clip norm; without
            one, as long as client 0's first update: `choose_canary_norm`).
        confidence: 1 − β of the bound.
        secret_bits: the coins, for tests that need to know them ahead; default: fresh ones
            from the OS CSPRNG.
    """
    num_real = settings.num_clients - canaries
    if num_real < 1 or canaries < 1:
        raise ConfigurationError(
            f"an audit needs at least 1 client and 1 canary, got {num_real} and {canaries}"
        )
    simulation = app.simulation(replace(settings, num_clients=num_real))
    strategy = simulation.strategy
    initial = strategy.initial_parameters
    if initial is None:
        raise ConfigurationError("the audit needs the app's strategy to set initial_parameters")
    measured = probe(simulation.client_fn, num_real, initial, _first_fit_config(simulation))
    norm = choose_canary_norm(settings, canary_norm, measured)
    start = flat_floats(initial)
    directions = canary_directions(canaries, start.size)
    bits = draw_secret_bits(canaries) if secret_bits is None else np.asarray(secret_bits, bool)
    client_fn = CanaryClientFn(
        simulation.client_fn, num_real, norm * directions, bits, measured.examples
    )
    history = run_simulation(
        client_fn,
        settings.num_clients,
        strategy=strategy,
        config=ServerConfig(num_rounds=settings.num_rounds),
        seed=settings.seed,
        engine=simulation.engine,
    )
    change = flat_floats(history.parameters) - start
    privacy = settings.privacy
    delta = privacy.params.delta if privacy is not None else default_delta(settings.num_clients)
    result = audit(directions @ change, bits, guesses, delta, confidence)
    spent = history.privacy
    epsilon = spent.epsilon[-1][1] if spent is not None and spent.epsilon else None
    return AuditRun(result, epsilon, norm, settings.num_rounds, history.parameters)


def _first_fit_config(simulation: Simulation) -> Config:
    """The config of round 1's fits, refused where the canaries could not answer it."""
    if simulation.engine == "vectorized":
        raise ConfigurationError(
            "the vectorized engine trains the app's own clients only: audit on the sequential "
            "or process engine"
        )
    strategy = simulation.strategy
    config = {
        **strategy.fit_config_defaults,
        **(strategy.on_fit_config_fn(1) if strategy.on_fit_config_fn is not None else {}),
    }
    if config.get(RETURN_GRADIENTS):
        raise ConfigurationError(
            "the canaries send model updates and this strategy asks clients for gradients "
            "(FedSGD): audit a strategy that averages updates"
        )
    return config


@dataclass(frozen=True)
class Probe:
    """How much an ordinary client weighs and moves the model: its examples and update norm."""

    examples: int
    update_norm: float


def probe(client_fn: ClientFn, num_real: int, initial: Parameters, config: Config) -> Probe:
    """Client 0's first `fit` at the initial model, answered once before the run (outside it):
    a canary claims as many examples, and without a clip bound moves the model as far."""
    client = client_fn(Context.for_partition(0, num_real))
    parameters, examples, _ = client.fit([np.array(a, copy=True) for a in initial], config)
    norm = float(np.linalg.norm(flat_floats(parameters) - flat_floats(initial)))
    return Probe(max(1, int(examples)), norm)


def clip_bound(settings: RunSettings) -> float | None:
    """The L2 bound on every update the run applies (the DP clip norm, or `--clip-norm`'s)."""
    if settings.privacy is not None:
        return float(settings.privacy.params.clip_norm)
    clip = settings.strategy.clip
    if isinstance(clip, ClipL2):
        return float(clip.max_norm)
    if isinstance(clip, AdaptiveClipL2):
        return float(clip.initial_norm)
    return None


def choose_canary_norm(settings: RunSettings, given: float | None, measured: Probe) -> float:
    """B: `given`, else the run's clip bound (the longest update that passes whole), else as
    long as an ordinary client's first update (nothing bounds an update then)."""
    if given is not None:
        if not given > 0:
            raise ConfigurationError(f"--canary-norm must be > 0, got {given}")
        return float(given)
    bound = clip_bound(settings)
    if bound is not None:
        return bound
    if not measured.update_norm > 0:
        raise ConfigurationError("client 0's update is zero: give --canary-norm B")
    return measured.update_norm


def audit_text(args: argparse.Namespace, app: App) -> str:
    """`roost privacy audit`: run the audit `args` ask for on `app`; its report as text."""
    if args.dp == "local":
        raise ConfigurationError(
            "the audit inserts its canaries on the server's side of the clients, where local DP "
            "has already noised every update; audit --dp central, or no DP"
        )
    num_clients = args.clients + args.canaries
    args.round_timeout, args.fraction_evaluate = None, 0.0  # the canaries evaluate nothing
    settings = settings_from_args(args, num_clients=num_clients)
    guesses = args.guesses if args.guesses is not None else max(1, args.canaries // 2)
    if guesses > args.canaries:
        raise ConfigurationError(
            f"--guesses {guesses} exceeds --canaries {args.canaries}: guess at most every canary"
        )
    configure_logging(Console(stderr=False), logging.WARNING)  # the report, not every round
    found = run_audit(
        app,
        settings,
        canaries=args.canaries,
        guesses=guesses,
        canary_norm=args.canary_norm,
        confidence=args.confidence,
    )
    return report(found, settings)


def report(found: AuditRun, settings: RunSettings) -> str:
    """The audit's result as the lines `roost privacy audit` prints."""
    result = found.result
    privacy = settings.privacy
    mechanism = privacy.describe() if privacy is not None else "no DP"
    accountant = (
        f"{found.epsilon:.4g} (what the accountant spent after {found.rounds} rounds)"
        if found.epsilon is not None
        else "∞ (no differential privacy: nothing bounds ε)"
    )
    return "\n".join(
        [
            f"One-run privacy audit of {settings.num_clients - result.canaries} clients and "
            f"{result.canaries} canaries, {found.rounds} rounds",
            f"  run          {mechanism}",
            f"  canaries     {result.canaries}, {result.included} in the run (secret coins), "
            f"updates of norm {found.canary_norm:.4g}",
            f"  guesses      {result.guesses} (the highest scores in, the lowest out)",
            f"  correct      {result.correct}",
            f"  ε >=         {result.epsilon:.4g} at δ = {result.delta:.3g}, with confidence "
            f"{result.confidence:g} (Steinke, Nasr, Jagielski 2023)",
            f"  ε            {accountant}",
        ]
    )
