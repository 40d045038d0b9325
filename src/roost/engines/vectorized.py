"""The vectorized engine: a task's whole cohort trained as one batched computation.

The cohort's models are stacked along a new leading axis and every local step runs all of them at
once: `torch.func.vmap` over the task's one-client loss (`functional_call`) and optimizer update
(`TaskModel.make_cohort_step`), each client taking its own next mini-batch. A client whose data runs
out earlier (fewer examples, so fewer steps) is masked: its model and optimizer state stay exactly
as they were, so every client ends where it would have ended alone. Padding examples weigh 0.

Cohorts that do not fit the memory budget are split into chunks, trained one after another, and
their results stream to the aggregator chunk by chunk. On a CUDA device (when asked and available)
the whole computation stays on the GPU.

On the CPU, models with convolutions train one client at a time (over the cached data, with the
same step): CPU kernels run the grouped convolutions of batched clients slower than the clients'
own convolutions one after another. Pass `chunk_size` to batch them anyway.

Not supported (use another engine): models whose training changes buffers (BatchNorm running
statistics) or draws random numbers (Dropout), since clients must not share them; and a per-client
`round_timeout` (clients of one batched computation finish together, so it is not applied).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from roost.client.client import client_rng
from roost.client.evaluation import evaluate_clients, evaluate_stacked, fit_client
from roost.client.recipe import Recipe
from roost.client.training import TaskModel, TensorDict, batch_plan, round_of
from roost.core import types
from roost.core.types import ClientId, Config, Failure, Instruction, Metrics, Outcome
from roost.engines.sequential import check_num_clients, simulation_clients
from roost.errors import ConfigurationError, other_engines
from roost.tasks.task import Task

log = logging.getLogger(__name__)

# Default memory budget: this share of the machine's RAM (CPU) or of the free GPU memory (CUDA).
CPU_MEMORY_SHARE = 0.25
GPU_MEMORY_SHARE = 0.5


def resolve_device(device: str | torch.device) -> torch.device:
    """`"cpu"`, `"cuda[:N]"` (falls back to the CPU with a warning when CUDA is unavailable), or
    `"auto"` (CUDA when available)."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        log.warning("CUDA was asked for but is not available; the vectorized engine uses the CPU")
        return torch.device("cpu")
    return resolved


def check_vectorizable(model: torch.nn.Module) -> None:
    """Raise `ConfigurationError` for models the vectorized engine cannot train exactly."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (
            module.track_running_stats
        ):
            raise ConfigurationError(
                f"the vectorized engine cannot train {name or 'the model'} "
                f"({type(module).__name__}): its running statistics are buffers that training "
                "changes per client. Use GroupNorm/LayerNorm, track_running_stats=False, or "
                f"{other_engines('sequential', 'process', 'ray')}"
            )
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            raise ConfigurationError(
                f"the vectorized engine cannot train {name or 'the model'} "
                f"({type(module).__name__}): it draws random numbers, which batched clients "
                f"would share. Use {other_engines('sequential', 'process', 'ray')} for this model"
            )


@dataclass
class _Member:
    client_id: ClientId
    partition_id: int
    instruction: Instruction


class VectorizedEngine:
    """Run a `Task`'s cohort as one batched computation per chunk of clients.

    Any number of exchanges (`run` calls) may share a round; each groups its own instructions.

    Args:
        task: the task every client trains.
        num_clients: how many clients (partitions) exist.
        run_config: accepted like every engine's, and unused: a task's clients do not read it.
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        chunk_size: clients per batched computation; None derives it from `memory_budget`.
        memory_budget: bytes one chunk may use; None uses a quarter of RAM on the CPU and half
            of the free memory on a GPU.
        cache_data: keep each client's data on the device after first use (faster later rounds).
    """

    def __init__(
        self,
        task: Task,
        num_clients: int,
        run_config: Config | None = None,
        *,
        device: str | torch.device = "cpu",
        chunk_size: int | None = None,
        memory_budget: int | None = None,
        cache_data: bool = True,
    ) -> None:
        if not isinstance(task, Task):
            raise ConfigurationError(
                "the vectorized engine trains a roost Task (model + loss + optimizer recipe + "
                f"data), got {type(task).__name__}; pass a Task, or use "
                f"{other_engines('sequential', 'process', 'ray')} for an arbitrary client_fn"
            )
        check_num_clients(num_clients)
        if chunk_size is not None and chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.task = task
        self.num_clients = num_clients
        self.device = resolve_device(device)
        self.task_model = TaskModel(task, self.device)
        check_vectorizable(self.task_model.model)
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget or self._default_budget()
        self.cache_data = cache_data
        self._train: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._eval: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._warned_timeout = False
        # Bytes of one batch's activations, by batch shape and dtype: measured with a forward
        # pass once, not every round.
        self._activations: dict[tuple, int] = {}

    # -- Transport -----------------------------------------------------------------------------

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        """Every simulated client is always available."""
        return simulation_clients(self.num_clients, count)

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        """Group the cohort (fits by model and recipe, evaluations by model), run each group as
        one batched computation, and yield its clients' outcomes as each group finishes."""
        if timeout is not None and not self._warned_timeout:
            log.info("the vectorized engine trains clients together; round_timeout is not applied")
            self._warned_timeout = True
        fit_groups: dict[tuple, list[_Member]] = {}
        evaluate_groups: dict[int, list[_Member]] = {}
        for client_id, instruction in cohort:
            member = _Member(client_id, int(client_id), instruction)
            try:
                if isinstance(instruction, types.FitIns):
                    recipe = self.task.recipe(instruction.config)
                    key = (id(instruction.parameters), recipe.key())
                    fit_groups.setdefault(key, []).append(member)
                elif isinstance(instruction, types.EvaluateIns):
                    evaluate_groups.setdefault(id(instruction.parameters), []).append(member)
                elif isinstance(instruction, types.GetParametersIns):
                    initial = self.task_model.to_arrays(self.task_model.initial_state(), None)
                    yield client_id, types.GetParametersRes(initial)
                elif isinstance(instruction, types.PhaseIns):
                    reason = (
                        f"the vectorized engine trains clients together and runs no client-side "
                        f"protocol ({instruction.protocol}); use "
                        f"{other_engines('sequential', 'process')}"
                    )
                    yield client_id, Failure(client_id, reason)
                else:
                    reason = f"unknown instruction {type(instruction).__name__}"
                    yield client_id, Failure(client_id, reason)
            except Exception as error:  # a bad config fails this client, not the run
                yield client_id, Failure(client_id, f"{type(error).__name__}: {error}")
        for members in fit_groups.values():
            recipe = self.task.recipe(members[0].instruction.config)
            yield from self._guarded(members, lambda m, r=recipe: self._fit_group(m, r))
        for members in evaluate_groups.values():
            yield from self._guarded(members, self._evaluate_group)

    def close(self) -> None:
        """Drop the cached client data."""
        self._train.clear()
        self._eval.clear()

    # -- helpers -------------------------------------------------------------------------------

    def _guarded(self, members: list[_Member], work) -> Iterator[Outcome]:
        """Run one group; if the batched computation fails, every unfinished member fails."""
        done: set[ClientId] = set()
        try:
            for client_id, result in work(members):
                done.add(client_id)
                yield client_id, result
        except Exception as error:
            log.debug("vectorized computation failed", exc_info=True)
            reason = (
                f"the vectorized engine failed on this cohort ({type(error).__name__}: {error}); "
                "if the task cannot be batched, use "
                f"{other_engines('sequential', 'process', 'ray')}"
            )
            for member in members:
                if member.client_id not in done:
                    yield member.client_id, Failure(member.client_id, reason)

    def _data(self, partition_id: int, evaluation: bool) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self._eval if evaluation else self._train
        cached = cache.get(partition_id)
        if cached is not None:
            return cached
        source = self.task.eval_data if evaluation and self.task.eval_data else self.task.data
        if evaluation and self.task.eval_data is None:
            tensors = self._data(partition_id, evaluation=False)
        else:
            tensors = self.task_model.data_tensors(*source(partition_id, self.num_clients))
        if self.cache_data:
            cache[partition_id] = tensors
        return tensors

    def _default_budget(self) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * GPU_MEMORY_SHARE)
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            total = 8 * 2**30
        return int(total * CPU_MEMORY_SHARE)

    def _chunk_clients(self, recipe: Recipe, example: torch.Tensor, max_examples: int) -> int:
        """Clients per chunk: the explicit `chunk_size`, or as many as fit the memory budget.

        On the CPU, a model with convolutions trains one client at a time: batched across
        clients, a convolution becomes a grouped convolution, which CPU kernels run slower than
        the clients' convolutions one after another (measured in benchmarks/engines.py).
        """
        if self.chunk_size is not None:
            return self.chunk_size
        if self.device.type == "cpu" and any(
            isinstance(m, torch.nn.modules.conv._ConvNd) for m in self.task_model.model.modules()
        ):
            return 1
        element = torch.finfo(self.task_model.dtype).bits // 8
        numel = sum(p.numel() for p in self.task_model.model.parameters())
        # params, new params, gradients, the proximal anchor share, optimizer slots (≤ 2)
        per_client = numel * element * 6
        batch = example[: recipe.batch_size]
        key = (tuple(batch.shape), batch.dtype)
        if key not in self._activations:
            self._activations[key] = _activation_bytes(self.task_model, batch)
        per_client += self._activations[key] * 3
        per_client += max_examples * example[:1].numel() * example.element_size()
        return max(1, int(self.memory_budget // max(per_client, 1)))

    def _fit_group(self, members: list[_Member], recipe: Recipe) -> Iterator[Outcome]:
        model = self.task_model
        arrays = members[0].instruction.parameters
        params, buffers = model.from_arrays(arrays)
        anchor = params if recipe.proximal_mu else None
        step = model.make_cohort_step(recipe, buffers)
        first_x = self._data(members[0].partition_id, False)[0]
        chunk = self._chunk_clients(recipe, first_x, max(len(first_x), 1))
        if chunk == 1:  # nothing to batch: the per-client step, without vmap's overhead
            yield from self._fit_one_by_one(members)
            return
        model.model.train()
        for start in range(0, len(members), chunk):
            part = members[start : start + chunk]
            xs, ys = zip(*(self._data(m.partition_id, False) for m in part), strict=True)
            plans = [
                batch_plan(
                    len(y),
                    recipe.epochs,
                    recipe.batch_size,
                    client_rng(self.task.seed, round_of(m.instruction.config), m.partition_id),
                    recipe.steps_per_epoch,
                )
                for m, y in zip(part, ys, strict=True)
            ]
            index, weights, active = self._schedule(plans, recipe.batch_size)
            batches = _batch_source(xs, ys, index)
            count = len(part)
            stacked = {n: p.unsqueeze(0).expand(count, *p.shape).clone() for n, p in params.items()}
            state = _stack_state(model.init_opt_state(params, recipe.optimizer), count)
            for s in range(index.shape[1]):
                xb, yb = batches(s)
                # Steps where every client has a batch skip the masking (it costs a model copy).
                mask = None if bool(active[:, s].all()) else active[:, s]
                stacked, state = step(stacked, state, xb, yb, weights[:, s], mask, anchor)
            metrics = self._fit_metrics(stacked, buffers, xs, ys)
            for position, member in enumerate(part):
                client_params = {n: value[position] for n, value in stacked.items()}
                trained = model.to_arrays((client_params, buffers), arrays)
                yield member.client_id, types.FitRes(trained, len(ys[position]), metrics[position])

    def _fit_one_by_one(self, members: list[_Member]) -> Iterator[Outcome]:
        """The sequential engine's fit, over this engine's cached data."""
        for member in members:
            x, y = self._data(member.partition_id, False)
            parameters, config = member.instruction.parameters, member.instruction.config
            trained, count, metrics = fit_client(
                self.task_model, parameters, x, y, config, member.partition_id
            )
            yield member.client_id, types.FitRes(trained, count, metrics)

    def _schedule(
        self, plans: list[list[np.ndarray]], batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per client and step: example indices, loss weights (0 for padding), and activity."""
        steps = max((len(plan) for plan in plans), default=0)
        index = np.zeros((len(plans), steps, batch_size), dtype=np.int64)
        weights = np.zeros((len(plans), steps, batch_size))
        active = np.zeros((len(plans), steps), dtype=bool)
        for c, plan in enumerate(plans):
            for s, batch in enumerate(plan):
                index[c, s, : len(batch)] = batch
                weights[c, s, : len(batch)] = 1.0 / len(batch)
                active[c, s] = True
        device, dtype = self.device, self.task_model.dtype
        return (
            torch.as_tensor(index, device=device),
            torch.as_tensor(weights, dtype=dtype, device=device),
            torch.as_tensor(active, device=device),
        )

    def _fit_metrics(
        self,
        stacked: TensorDict,
        buffers: TensorDict,
        xs: Sequence[torch.Tensor],
        ys: Sequence[torch.Tensor],
    ) -> list[Metrics]:
        """`train_loss` / `train_<metric>` of each client's new model (when the task asks)."""
        if not self.task.fit_metrics:
            return [{} for _ in ys]
        x_stack, y_stack = _pad_stack(xs), _pad_stack(ys)
        scores = evaluate_stacked(
            self.task_model, stacked, buffers, x_stack, y_stack, [len(y) for y in ys], "train_"
        )
        return [{"train_loss": loss, **named} for loss, named in scores]

    def _evaluate_group(self, members: list[_Member]) -> Iterator[Outcome]:
        """All members evaluate the same model: one pass over their examples, concatenated."""
        state = self.task_model.from_arrays(members[0].instruction.parameters)
        data = [self._data(m.partition_id, True) for m in members]
        scores = evaluate_clients(self.task_model, state, data)
        for member, (_, y), (loss, metrics) in zip(members, data, scores, strict=True):
            yield member.client_id, types.EvaluateRes(loss, len(y), metrics)


def _batch_source(
    xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], index: torch.Tensor
) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """`step -> (x, y)`: every client's batch of that step, stacked.

    Either every client's data is zero-padded to the longest and stacked once, or, when the plan
    uses fewer examples than that (few steps per epoch), only the examples it uses are gathered,
    in plan order; whichever is smaller.
    """
    count, steps, size = index.shape
    if steps * size >= max(len(y) for y in ys):
        x_stack, y_stack = _pad_stack(xs), _pad_stack(ys)
        rows = torch.arange(count, device=index.device).unsqueeze(1)
        return lambda s: (x_stack[rows, index[:, s]], y_stack[rows, index[:, s]])
    flat = index.reshape(count, steps * size)
    x_used = torch.stack([_gather(x, order) for x, order in zip(xs, flat, strict=True)])
    y_used = torch.stack([_gather(y, order) for y, order in zip(ys, flat, strict=True)])
    return lambda s: (x_used[:, s * size : (s + 1) * size], y_used[:, s * size : (s + 1) * size])


def _gather(tensor: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """`tensor[order]`; zeros for a client without examples (its steps are all masked)."""
    if len(tensor):
        return tensor[order]
    return tensor.new_zeros((len(order), *tensor.shape[1:]))


def _pad_stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-client tensors of unequal length into (clients, max_length, ...), zero-padded."""
    width = max(1, max(len(t) for t in tensors))
    first = tensors[0]
    shape = (len(tensors), width, *first.shape[1:])
    out = torch.zeros(shape, dtype=first.dtype, device=first.device)
    for position, tensor in enumerate(tensors):
        out[position, : len(tensor)] = tensor
    return out


def _stack_state(state, count: int):
    if isinstance(state, dict):
        return {key: _stack_state(value, count) for key, value in state.items()}
    return state.unsqueeze(0).expand(count, *state.shape).clone()


def _activation_bytes(model: TaskModel, example: torch.Tensor) -> int:
    """Bytes of every module output for one batch: a rough measure of what backward keeps."""
    total = 0

    def record(module, inputs, output):
        nonlocal total
        if torch.is_tensor(output):
            total += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(record) for m in model.model.modules()]
    try:
        with torch.no_grad():
            model.model(example)
    except Exception:  # an estimate only; fall back to the input's size
        total = example.numel() * example.element_size() * 8
    finally:
        for hook in hooks:
            hook.remove()
    return total
