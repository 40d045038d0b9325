"""Where the engines that run a `client_fn` build clients and run their instructions, cold or warm.

Cold (the default): `client_fn` builds a fresh client for every instruction, and the client is
dropped afterwards, so only working clients hold memory and nothing but `Context.state` survives
between a node's instructions.

Warm (`warm_clients=True` or `WarmClients(...)`): the client built for a partition is kept and
answers the partition's next instructions too, so `client_fn`'s cost (loading data, building and
compiling a model, a framework tracing its training step) is paid once per partition rather than
once per instruction. Kept clients are bounded by count and by an estimate of the memory they hold;
the least recently used are dropped and rebuilt when needed again. A client whose instruction
failed is dropped too, since its state is unknown.

The risk, and why warm is not the default: a warm client also keeps whatever the user's code
keeps between calls. A Keras model compiled in `client_fn`, for instance, keeps its optimizer's
moments and step count from one `fit` to the next, so a warm run of such code trains differently
from a cold run. A client that sets all its state from the instruction (the parameters and config
it is sent) gives identical results warm and cold.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from roost.client.client import ClientLike, Context
from roost.client.protocols import execute
from roost.core.types import (
    ClientId,
    EvaluateIns,
    Failure,
    FitIns,
    Instruction,
    PhaseIns,
    Result,
)
from roost.engines.federation import Federation
from roost.engines.node_states import NodeState
from roost.errors import ConfigurationError

log = logging.getLogger(__name__)

# Without an explicit max_bytes, warm clients may hold this share of the machine's RAM.
DEFAULT_MEMORY_SHARE = 0.25
# How deep `estimate_bytes` follows attributes and containers from the client object.
_ESTIMATE_DEPTH = 8


@dataclass(frozen=True)
class WarmClients:
    """Keep the clients `client_fn` builds alive between their instructions.

    A warm client keeps what the user's code keeps (e.g. a compiled Keras model's optimizer
    state between rounds), which changes the results of code that relies on being rebuilt; a
    client that takes all its state from the instruction gives the same results warm or cold.

    Args:
        max_clients: keep at most this many clients (None: no limit by count).
        max_bytes: keep clients whose estimated memory (the arrays and tensors they reach: data,
            model weights, optimizer slots) adds up to at most this many bytes; None allows a
            quarter of the machine's RAM. The least recently used clients are dropped first.

    The process and Ray engines split both bounds evenly among their workers.
    """

    max_clients: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.max_clients is not None and self.max_clients < 1:
            raise ConfigurationError(
                f"WarmClients max_clients must be >= 1 or None, got {self.max_clients}"
            )
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ConfigurationError(
                f"WarmClients max_bytes must be >= 1 or None, got {self.max_bytes}"
            )

    def byte_budget(self) -> int:
        """`max_bytes`, or the default share of this machine's RAM."""
        if self.max_bytes is not None:
            return self.max_bytes
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            total = 8 * 2**30
        return int(total * DEFAULT_MEMORY_SHARE)

    def share(self, parts: int) -> WarmClients:
        """The bounds of one of `parts` workers that split these bounds evenly."""
        if parts <= 1:
            return self
        count = None if self.max_clients is None else max(1, math.ceil(self.max_clients / parts))
        return replace(self, max_clients=count, max_bytes=max(1, self.byte_budget() // parts))


def warm_setting(value: bool | WarmClients | None) -> WarmClients | None:
    """The engines' `warm_clients` option as a `WarmClients`, or None for cold clients."""
    if value is None or value is False:
        return None
    if value is True:
        return WarmClients()
    if isinstance(value, WarmClients):
        return value
    raise ConfigurationError(
        "warm_clients must be True, False or roost.WarmClients(max_clients=..., max_bytes=...), "
        f"got {value!r}"
    )


def estimate_bytes(obj: object) -> int:
    """The bytes of the arrays and tensors `obj` reaches through its attributes and containers.

    An estimate for the warm-client budget: NumPy arrays, torch tensors and framework variables
    (anything with `nbytes`, or a `shape` and `dtype`) are counted once each; Python objects'
    own overhead, and framework caches that hold no arrays, are not.
    """
    seen: set[int] = set()
    total = 0
    frontier: list[object] = [obj]
    for _ in range(_ESTIMATE_DEPTH):
        children: list[object] = []
        for value in frontier:
            if id(value) in seen or isinstance(value, type | int | float | bool | None):
                continue
            seen.add(id(value))
            size = _array_bytes(value)
            if size is not None:
                total += size
            else:
                children.extend(_members(value))
        frontier = children
    return total


def _array_bytes(value: object) -> int | None:
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None or callable(shape):
        return None
    try:
        itemsize = getattr(dtype, "itemsize", None) or getattr(dtype, "size", None) or 4
        return math.prod(int(dim) for dim in shape) * int(itemsize)
    except (TypeError, ValueError):  # unknown dimensions: not an array we can measure
        return None


def _members(value: object) -> Iterable[object]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    attributes = getattr(value, "__dict__", None)
    return list(attributes.values()) if isinstance(attributes, dict) else []


@dataclass
class _Warm:
    """A kept client, the context it was built with, and its bookkeeping."""

    client: ClientLike
    context: Context
    next_ticket: int | None
    nbytes: int = 0


class ClientHost:
    """Builds the clients of one engine (or one pool worker) and runs their instructions.

    Cold, every instruction gets a client freshly built by `client_fn`. Warm, the client is kept
    (see `WarmClients`) and reused while it is current: a `ticket` (the number of instructions
    sent to the node before this one, counted by the pool) that does not follow the kept client's
    last one means another worker answered the node in between, so the kept client is stale and
    is rebuilt. Thread-safe: the sequential engine's timed clients run in helper threads.
    """

    def __init__(self, federation: Federation, warm: WarmClients | None = None) -> None:
        self.federation = federation
        self.warm = warm
        self._budget = warm.byte_budget() if warm is not None else 0
        self._kept: OrderedDict[ClientId, _Warm] = OrderedDict()  # least recently used first
        self._abandoned: dict[ClientId, int] = {}
        self._lock = threading.Lock()
        self._warned_size = False

    @property
    def kept(self) -> list[ClientId]:
        """The ids of the clients kept warm, least recently used first."""
        with self._lock:
            return list(self._kept)

    def run(
        self,
        client_id: ClientId,
        instruction: Instruction,
        state: NodeState,
        ticket: int | None = None,
    ) -> tuple[Result | Failure, NodeState]:
        """Run one instruction on node `client_id` whose `Context.state` is `state`; return the
        outcome (exceptions become failures) and the node's state afterwards.

        The client gets private copies of the arrays, so in-place updates cannot reach the
        global model.
        """
        kept, epoch = self._checkout(client_id, ticket)
        if kept is None:
            run_config = self.federation.run_config
            context = Context.for_partition(
                int(client_id), self.federation.num_clients, run_config=run_config, state=state
            )
        else:
            context = kept.context
            if context.state is not state:  # keep the dict a client may hold on to
                context.state.clear()
                context.state.update(state)
        # A client's bug must not stop the federation: it is this client's failure, with its
        # traceback, and one raised while building the client names client_fn.
        try:
            client = self.federation.client_fn(context) if kept is None else kept.client
        except Exception as error:
            return Failure.from_exception(client_id, error, in_client_fn=True), context.state
        try:
            result = execute(client, _with_copied_arrays(instruction), context)
        except Exception as error:
            return Failure.from_exception(client_id, error), context.state
        if self.warm is not None:
            following = None if ticket is None else ticket + 1
            self._checkin(client_id, _Warm(client, context, following), epoch)
        return result, context.state

    def abandon(self, client_id: ClientId) -> None:
        """Forget node `client_id`'s client, and do not keep the one running now (its
        instruction timed out: it may still be changing it)."""
        with self._lock:
            self._kept.pop(client_id, None)
            self._abandoned[client_id] = self._abandoned.get(client_id, 0) + 1

    def clear(self) -> None:
        """Drop every kept client."""
        with self._lock:
            self._kept.clear()

    def _checkout(self, client_id: ClientId, ticket: int | None) -> tuple[_Warm | None, int]:
        with self._lock:
            epoch = self._abandoned.get(client_id, 0)
            kept = self._kept.pop(client_id, None)  # in use: no one else may take it meanwhile
        if kept is not None and ticket is not None and kept.next_ticket != ticket:
            kept = None  # another worker answered this node since: this client is stale
        return kept, epoch

    def _checkin(self, client_id: ClientId, kept: _Warm, epoch: int) -> None:
        kept.nbytes = estimate_bytes(kept.client)
        assert self.warm is not None
        limit = self.warm.max_clients
        with self._lock:
            if self._abandoned.get(client_id, 0) != epoch:
                return  # abandoned while it ran
            self._kept[client_id] = kept
            used = sum(entry.nbytes for entry in self._kept.values())
            while self._kept and (
                used > self._budget or (limit is not None and len(self._kept) > limit)
            ):
                _, dropped = self._kept.popitem(last=False)
                used -= dropped.nbytes
        if kept.nbytes > self._budget and not self._warned_size:
            self._warned_size = True
            log.warning(
                "a client holds about %.0f MiB, more than the warm-client budget of %.0f MiB, so "
                "it is rebuilt for every instruction; raise WarmClients(max_bytes=...)",
                kept.nbytes / 2**20,
                self._budget / 2**20,
            )


def _with_copied_arrays(instruction: Instruction) -> Instruction:
    if isinstance(instruction, FitIns | EvaluateIns | PhaseIns):
        return replace(instruction, parameters=[array.copy() for array in instruction.parameters])
    return instruction
