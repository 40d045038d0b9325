"""How a task trains, in PyTorch: one functional local step, shared by every engine.

A local step is the gradient of one client's (optionally proximal) mini-batch loss, computed with
`functional_call`, then the optimizer update (SGD with momentum / weight decay / Nesterov, or
Adam, with `torch.optim` semantics), written as a pure function. `train_client` applies it batch
after batch: that loop is the sequential reference, and the `TorchClient` used by the sequential,
process and Ray engines. The vectorized engine `vmap`s the very same loss and update over a whole
cohort at once (`TaskModel.make_cohort_step`).

Both paths draw the batch order from `batch_plan(n, recipe, client_rng(seed, round, client))`, so
it depends on nothing else, and weight each example of a batch by 1/len(batch), so masked (padded)
examples can take weight 0 without changing the arithmetic of the others.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, vmap

from roost.client.recipe import SGD, Adam, LocalOptimizer, Recipe, TaskSpec
from roost.core.config_keys import SERVER_ROUND
from roost.core.types import Config, Parameters
from roost.errors import ConfigurationError

TensorDict = dict[str, torch.Tensor]
OptState = dict[str, Any]


def batch_plan(
    num_examples: int,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    steps_per_epoch: int | None = None,
) -> list:
    """Index arrays of every local step: `epochs` reshuffles, each cut into `batch_size` pieces,
    of which only the first `steps_per_epoch` are kept when it is given."""
    plan = []
    for _ in range(epochs):
        order = rng.permutation(num_examples)
        starts = list(range(0, num_examples, batch_size))[:steps_per_epoch]
        plan.extend(order[start : start + batch_size] for start in starts)
    return plan


def round_of(config: Config) -> int:
    """The round an instruction's config belongs to (0 when the server sends none)."""
    return int(config.get(SERVER_ROUND, 0))


def build_model(task: TaskSpec, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A fresh model from the task's factory, under the task's seed, dtype and device."""
    if isinstance(task.model, torch.nn.Module):
        model = copy.deepcopy(task.model)  # a module instance is the initial model as it is
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(task.seed)
            model = task.model()
    if not isinstance(model, torch.nn.Module):
        raise ConfigurationError(
            f"Task.model must be an nn.Module or return one, got {type(model).__name__}"
        )
    return model.to(device=device, dtype=getattr(torch, task.dtype))


def initial_parameters(task: TaskSpec) -> Parameters:
    """The task's initial model as NumPy arrays, in `state_dict` order."""
    model = TaskModel(task)
    return model.to_arrays(model.initial_state(), None)


class TaskModel:
    """A task's model made functional on one device: parameter names, conversions, the local
    step and per-example scores."""

    def __init__(self, task: TaskSpec, device: torch.device | str = "cpu") -> None:
        self.task = task
        self.device = torch.device(device)
        self.dtype = getattr(torch, task.dtype)
        self.model = build_model(task, self.device)
        parameter_names = {id(p): name for name, p in self.model.named_parameters()}
        # state_dict order is the order of the arrays that cross every boundary.
        self.entries: list[tuple[str, str, bool]] = []  # (state name, canonical name, is_param)
        self._shapes: list[tuple[int, ...]] = []
        for name, value in self.model.state_dict(keep_vars=True).items():
            canonical = parameter_names.get(id(value), name)
            self.entries.append((name, canonical, id(value) in parameter_names))
            self._shapes.append(tuple(value.shape))
        self.parameter_names = list(dict.fromkeys(c for _, c, p in self.entries if p))
        self.buffer_names = [c for _, c, p in self.entries if not p]

    # -- conversions ---------------------------------------------------------------------------

    def initial_state(self) -> tuple[TensorDict, TensorDict]:
        params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        return params, buffers

    def from_arrays(self, arrays: Parameters) -> tuple[TensorDict, TensorDict]:
        """(parameters, buffers) tensors from the arrays of a FitIns / EvaluateIns."""
        if len(arrays) != len(self.entries):
            raise ConfigurationError(
                f"received {len(arrays)} arrays but the task's model has {len(self.entries)} "
                "state_dict entries; the strategy's initial_parameters do not fit this model"
            )
        params: TensorDict = {}
        buffers: TensorDict = {}
        for (name, canonical, is_param), shape, array in zip(
            self.entries, self._shapes, arrays, strict=True
        ):
            if tuple(array.shape) != shape:
                raise ConfigurationError(
                    f"array for {name!r} has shape {tuple(array.shape)}, the task's model has "
                    f"{shape}; the strategy's initial_parameters do not fit this model"
                )
            tensor = torch.as_tensor(np.asarray(array), device=self.device)
            if tensor.is_floating_point():
                tensor = tensor.to(self.dtype)
            target = params if is_param else buffers
            target.setdefault(canonical, tensor.clone())
        return params, buffers

    def to_arrays(
        self, state: tuple[TensorDict, TensorDict], like: Parameters | None
    ) -> Parameters:
        """Arrays in `state_dict` order, in the dtypes of `like` (the arrays received)."""
        params, buffers = state
        arrays = []
        for index, (_, canonical, is_param) in enumerate(self.entries):
            tensor = (params if is_param else buffers)[canonical]
            array = tensor.detach().to("cpu").numpy()
            if like is not None:
                array = array.astype(like[index].dtype, copy=False)
            arrays.append(array)
        return arrays

    def data_tensors(self, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A client's (x, y) on this device; floating inputs in the task's dtype."""
        x_t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, device=self.device)
        y_t = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, device=self.device)
        if x_t.is_floating_point():
            x_t = x_t.to(self.dtype)
        if y_t.is_floating_point():
            y_t = y_t.to(self.dtype)
        if len(x_t) != len(y_t):
            raise ConfigurationError(
                f"a client's data has {len(x_t)} inputs but {len(y_t)} targets; Task.data must "
                "return (x, y) with one target per input"
            )
        return x_t, y_t

    # -- the local step ------------------------------------------------------------------------

    def forward(self, params: TensorDict, buffers: TensorDict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (params, buffers), (x,))

    def example_losses(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = self.task.loss(outputs, y)
        if losses.dim() != 1 or losses.shape[0] != outputs.shape[0]:
            raise ConfigurationError(
                "Task.loss must return one loss per example (shape [batch]), got shape "
                f"{tuple(losses.shape)}; use reduction='none'"
            )
        return losses

    def example_scores(
        self, params: TensorDict, buffers: TensorDict, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """Per example, the loss and then each of the task's metrics: shape [1 + metrics, batch],
        in float64 (what every evaluation sums)."""
        outputs = self.forward(params, buffers, x)
        values = [self.example_losses(outputs, y)]
        values += [fn(outputs, y) for fn in self.task.metrics.values()]
        return torch.stack([value.double() for value in values])

    def init_opt_state(self, params: TensorDict, optimizer: LocalOptimizer) -> OptState:
        """A fresh optimizer state, as a client that builds its optimizer in `fit` has."""
        if isinstance(optimizer, Adam):
            return {
                "step": torch.zeros((), dtype=torch.float64, device=self.device),
                "exp_avg": {n: torch.zeros_like(p) for n, p in params.items()},
                "exp_avg_sq": {n: torch.zeros_like(p) for n, p in params.items()},
            }
        if optimizer.momentum:
            return {"momentum": {n: torch.zeros_like(p) for n, p in params.items()}}
        return {}

    def _batch_loss(self, recipe: Recipe, buffers: TensorDict) -> Callable[..., torch.Tensor]:
        """One client's mini-batch loss: weighted per-example losses, plus the proximal term."""
        mu = recipe.proximal_mu

        def batch_loss(params, x, y, weights, anchor):
            outputs = self.forward(params, buffers, x)
            loss = (self.example_losses(outputs, y) * weights).sum()
            if mu:
                proximal = sum(((params[n] - anchor[n]) ** 2).sum() for n in params)
                loss = loss + 0.5 * mu * proximal
            return loss

        return batch_loss

    def make_step(
        self, recipe: Recipe, buffers: TensorDict
    ) -> Callable[..., tuple[TensorDict, OptState]]:
        """One client's local step, `(params, state, x, y, weights, anchor)` to `(params, state)`.

        `weights` holds each example's share of the batch loss (1/len(batch)); `anchor` is the
        round's global model, used by the proximal term.
        """
        batch_loss = self._batch_loss(recipe, buffers)
        optimizer = recipe.optimizer

        def step(params, state, x, y, weights, anchor):
            leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
            loss = batch_loss(leaves, x, y, weights, anchor)
            grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
            return _apply_optimizer(optimizer, params, grads, state)

        return step

    def make_cohort_step(
        self, recipe: Recipe, buffers: TensorDict
    ) -> Callable[..., tuple[TensorDict, OptState]]:
        """The same step for a cohort whose params and state are stacked along a leading axis.

        `(params, state, x, y, weights, active, anchor) -> (params, state)`, every argument but
        `anchor` (shared) with the cohort axis first. The forward pass of every client runs as one
        `torch.func.vmap`-ed computation; since client c's loss depends on client c's parameters
        only, the gradient of the summed losses holds each client's own gradient. The update is
        `vmap`-ed too. `active[c]` False (client c has no batch left at this step) keeps its
        params and state exactly as they were; `weights` are 0 for padding examples.
        """
        losses = vmap(self._batch_loss(recipe, buffers), in_dims=(0, 0, 0, 0, None))
        optimizer = recipe.optimizer

        def update(params, grads, state, active):
            new_params, new_state = _apply_optimizer(optimizer, params, grads, state)
            keep = _select(active)
            return keep(new_params, params), keep(new_state, state)

        update_all = vmap(lambda p, g, s: _apply_optimizer(optimizer, p, g, s))
        update_some = vmap(update)

        def step(params, state, x, y, weights, active, anchor):
            leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
            total = losses(leaves, x, y, weights, anchor).sum()
            gradients = torch.autograd.grad(total, list(leaves.values()))
            grads = dict(zip(leaves, gradients, strict=True))
            if active is None:
                return update_all(params, grads, state)
            return update_some(params, grads, state, active)

        return step


def _select(active: torch.Tensor) -> Callable:
    def keep(new: Any, old: Any) -> Any:
        if isinstance(new, dict):
            return {key: keep(new[key], old[key]) for key in new}
        return torch.where(active, new, old)

    return keep


def _apply_optimizer(
    optimizer: LocalOptimizer, params: TensorDict, grads: TensorDict, state: OptState
) -> tuple[TensorDict, OptState]:
    """The update of `torch.optim.SGD` / `torch.optim.Adam`, written without in-place ops."""
    if isinstance(optimizer, SGD):
        new_params: TensorDict = {}
        momentum_buffers: TensorDict = {}
        for name, p in params.items():
            g = grads[name]
            if optimizer.weight_decay:
                g = g + optimizer.weight_decay * p
            if optimizer.momentum:
                buf = optimizer.momentum * state["momentum"][name] + g
                momentum_buffers[name] = buf
                g = g + optimizer.momentum * buf if optimizer.nesterov else buf
            new_params[name] = p - optimizer.lr * g
        return new_params, ({"momentum": momentum_buffers} if optimizer.momentum else {})
    beta1, beta2 = optimizer.betas
    step = state["step"] + 1
    if optimizer.eps_before_bias_correction:
        return _keras_adam(optimizer, params, grads, step, state)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = torch.sqrt(1 - beta2**step)
    step_size = optimizer.lr / bias_correction1
    new_params, exp_avgs, exp_avg_sqs = {}, {}, {}
    for name, p in params.items():
        g = grads[name]
        if optimizer.weight_decay:
            g = g + optimizer.weight_decay * p
        exp_avg = torch.lerp(state["exp_avg"][name], g, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][name] * beta2 + (1 - beta2) * g * g
        denominator = torch.sqrt(exp_avg_sq) / bias_correction2_sqrt.to(p.dtype) + optimizer.eps
        new_params[name] = p - step_size.to(p.dtype) * (exp_avg / denominator)
        exp_avgs[name], exp_avg_sqs[name] = exp_avg, exp_avg_sq
    return new_params, {"step": step, "exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs}


def _keras_adam(
    optimizer: Adam, params: TensorDict, grads: TensorDict, step: torch.Tensor, state: OptState
) -> tuple[TensorDict, OptState]:
    """Keras' Adam update, in its own order of operations (in the parameters' dtype)."""
    beta1, beta2 = optimizer.betas
    new_params, exp_avgs, exp_avg_sqs = {}, {}, {}
    for name, p in params.items():
        g = grads[name]
        if optimizer.weight_decay:
            g = g + optimizer.weight_decay * p
        local_step = step.to(p.dtype)
        alpha = optimizer.lr * torch.sqrt(1 - beta2**local_step) / (1 - beta1**local_step)
        m = state["exp_avg"][name]
        v = state["exp_avg_sq"][name]
        m = m + (g - m) * (1 - beta1)
        v = v + (g * g - v) * (1 - beta2)
        new_params[name] = p - (m * alpha) / (torch.sqrt(v) + optimizer.eps)
        exp_avgs[name], exp_avg_sqs[name] = m, v
    return new_params, {"step": step, "exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs}


# -- the per-client reference --------------------------------------------------------------------


def train_client(
    model: TaskModel,
    arrays: Parameters,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    rng: np.random.Generator,
) -> tuple[TensorDict, TensorDict]:
    """Train one client from `arrays` on (x, y) with `recipe`; return (params, buffers).

    This is the sequential reference: every other engine must produce the same model.
    """
    params, buffers = model.from_arrays(arrays)
    anchor = {n: p.clone() for n, p in params.items()} if recipe.proximal_mu else None
    state = model.init_opt_state(params, recipe.optimizer)
    step = model.make_step(recipe, buffers)
    model.model.train()
    for batch in batch_plan(len(y), recipe.epochs, recipe.batch_size, rng, recipe.steps_per_epoch):
        index = torch.as_tensor(batch, device=model.device)
        weights = torch.full(
            (len(batch),), 1.0 / len(batch), dtype=model.dtype, device=model.device
        )
        params, state = step(params, state, x[index], y[index], weights, anchor)
    return params, buffers
