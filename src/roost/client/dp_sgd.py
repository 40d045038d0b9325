"""Record-level DP-SGD for PyTorch clients, through Opacus.

    client = TorchClient(Net(), (x, y), dp_sgd=DPSGD(noise_multiplier=1.1, max_grad_norm=1.0,
                         delta=1e-5), state=context.state)

Each local step clips every example's gradient to `max_grad_norm` and adds Gaussian noise of
standard deviation `noise_multiplier · max_grad_norm` (Opacus' `PrivacyEngine`), on batches drawn
by Poisson sampling at rate `batch_size / len(data)`. The accountant's history (σ, sample rate,
steps) lives in the client's `Context.state`, so the ε a client reports covers every round it
trained in, across rebuilt clients and resumed runs. The client reports that ε (at its δ) as the
fit metrics `RECORD_EPSILON` / `RECORD_DELTA`; the server records the largest of each round.

Opacus and torch are imported only when a client trains, so the server can read the metric names
without either.
"""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError

if TYPE_CHECKING:
    import torch

    from roost.client.recipe import Recipe
    from roost.client.training import TaskModel

# Reserved fit-metric names: a DP-SGD client's ε so far and the δ it holds at.
RECORD_EPSILON = "record_epsilon"
RECORD_DELTA = "record_delta"
# Where a client keeps its accountant in `Context.state`.
STATE_KEY = "dp_sgd_accountant"
ACCOUNTANTS = ("rdp", "prv", "gdp")


@dataclass(frozen=True)
class DPSGD:
    """DP-SGD settings for one client.

    Args:
        noise_multiplier: σ, the noise's standard deviation over `max_grad_norm` (> 0).
        max_grad_norm: the bound every example's gradient is clipped to (> 0).
        delta: the δ the client's ε is reported at (0 < δ < 1; below 1/len(data) is usual).
        accountant: Opacus' accountant: "rdp" (default), "prv" or "gdp".
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"DPSGD.{name} must be a finite number > 0, got {value!r}")
        if not (isinstance(self.delta, int | float) and 0 < self.delta < 1):
            raise ConfigurationError(f"DPSGD.delta must be in (0, 1), got {self.delta!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigurationError(
                f"DPSGD.accountant must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}"
            )


def _opacus() -> Any:
    try:
        import opacus
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "DP-SGD needs Opacus; install it with `pip install 'roost[opacus]'`"
        ) from error
    return opacus


def _torch_optimizer(recipe: Recipe, parameters: Any) -> torch.optim.Optimizer:
    """The `torch.optim` optimizer that `recipe.optimizer` describes."""
    import torch

    from roost.client.recipe import SGD

    spec = recipe.optimizer
    if isinstance(spec, SGD):
        return torch.optim.SGD(
            parameters,
            lr=spec.lr,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
            nesterov=spec.nesterov,
        )
    return torch.optim.Adam(
        parameters, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay
    )


def _os_seeded_generator() -> torch.Generator:
    """A generator seeded from the operating system's CSPRNG, fresh for each fit."""
    import torch

    return torch.Generator().manual_seed(secrets.randbits(63))


def fit_dp_sgd(
    task_model: TaskModel,
    arrays: Parameters,
    x: torch.Tensor,
    y: torch.Tensor,
    config: Config,
    settings: DPSGD,
    state: dict[str, Any],
) -> tuple[Parameters, int, Metrics]:
    """One DP-SGD client's fit as a client returns it: trained arrays, its number of examples,
    and its ε so far at its δ (plus `train_loss` / `train_<metric>` when the task asks)."""
    from roost.client.evaluation import evaluate_model

    task = task_model.task
    trained, epsilon = train_dp_sgd(task_model, arrays, x, y, task.recipe(config), settings, state)
    metrics: Metrics = {}
    if task.fit_metrics:
        loss, named = evaluate_model(task_model, trained, x, y, prefix="train_")
        metrics = {"train_loss": loss, **named}
    metrics[RECORD_EPSILON] = epsilon
    metrics[RECORD_DELTA] = float(settings.delta)
    return task_model.to_arrays(trained, arrays), len(y), metrics


def train_dp_sgd(
    task_model: TaskModel,
    arrays: Parameters,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    settings: DPSGD,
    state: dict[str, Any],
) -> tuple[Any, float]:
    """Train from `arrays` with Opacus' DP-SGD; return ((params, buffers), ε so far).

    The accountant's history is read from and written back to `state[STATE_KEY]`.
    """
    import torch

    opacus = _opacus()
    if recipe.proximal_mu:
        raise ConfigurationError(
            "DP-SGD clips per-example gradients and cannot include FedProx's proximal term; "
            "set proximal_mu to 0 for a DP-SGD client"
        )
    if recipe.steps_per_epoch is not None:
        raise ConfigurationError(
            "DP-SGD samples each batch by Poisson sampling over whole epochs; leave "
            "steps_per_epoch unset for a DP-SGD client"
        )
    module = _module_at(task_model, arrays)
    with warnings.catch_warnings():
        # Opacus' secure mode needs torchcsprng; the generator below is seeded from the OS instead.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = opacus.PrivacyEngine(accountant=settings.accountant)
    engine.accountant.history = [tuple(entry) for entry in state.get(STATE_KEY, [])]
    generator = _os_seeded_generator()
    engine.secure_rng = generator  # Poisson sampling draws from it too
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=min(recipe.batch_size, len(y))
    )
    private, optimizer, private_loader = engine.make_private(
        module=module,
        optimizer=_torch_optimizer(recipe, module.parameters()),
        data_loader=loader,
        noise_multiplier=settings.noise_multiplier,
        max_grad_norm=settings.max_grad_norm,
        poisson_sampling=True,
        noise_generator=generator,
    )
    private.train()
    with warnings.catch_warnings():
        # Opacus warns that a model's input needs no gradient; per-example gradients are
        # computed from the layers' own inputs and outputs all the same.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(recipe.epochs):
            for x_batch, y_batch in private_loader:
                optimizer.zero_grad()
                task_model.example_losses(private(x_batch), y_batch).mean().backward()
                optimizer.step()
    state[STATE_KEY] = [[float(s), float(q), int(n)] for s, q, n in engine.accountant.history]
    epsilon = float(engine.accountant.get_epsilon(delta=settings.delta))
    trained = dict(private._module.named_parameters()), dict(private._module.named_buffers())
    return tuple({n: t.detach().clone() for n, t in part.items()} for part in trained), epsilon


def _module_at(task_model: TaskModel, arrays: Parameters) -> torch.nn.Module:
    """A copy of the task's module holding `arrays` (checked against the model first)."""
    import copy

    import torch

    params, buffers = task_model.from_arrays(arrays)
    module = copy.deepcopy(task_model.model)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(params[name])
        for name, buffer in module.named_buffers():
            if name in buffers:
                buffer.copy_(buffers[name])
    return module
