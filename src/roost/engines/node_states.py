"""Where a simulation engine keeps each node's `Context.state` between the node's instructions.

Every engine that runs a `client_fn` (sequential, process, Ray, cold or warm) keeps its nodes'
states in one `NodeStates`, reachable as `engine.node_states` on any `KeepsNodeStates` engine.
The round loop takes a `snapshot()` after every round for the checkpoint, and `restore(...)`s a
recorded one before the first round of a resumed run, so a stateful client resumes exactly where
it stopped. The vectorized engine trains a `roost.Task`, which has no per-node state: it keeps
none and is no `KeepsNodeStates`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from roost.client.secure_aggregation import STATE_KEY as SECURE_AGGREGATION_KEY
from roost.core.types import ClientId
from roost.transport.base import NodeState

# Entries good for one round only, never checkpointed: a secure-aggregation round's secrets
# (a resumed run starts a new round, with new keys, anyway).
ROUND_SCOPED_KEYS = frozenset({SECURE_AGGREGATION_KEY})


class NodeStates:
    """Every node's `Context.state`, by node id; a node never seen has an empty one. The round
    loop sees it as a `roost.transport.base.NodeStateStore`.

    `for_node` hands out the live dict (a client, warm or cold, changes it in place);
    `snapshot` and `restore` copy, so a recorded state and a running one never share an array.
    """

    def __init__(self) -> None:
        self._states: dict[ClientId, NodeState] = {}

    def for_node(self, client_id: ClientId) -> NodeState:
        """Node `client_id`'s state: the dict itself, created empty on first use."""
        return self._states.setdefault(client_id, {})

    def set(self, client_id: ClientId, state: NodeState) -> None:
        """Node `client_id`'s state is now `state` (as a worker sent it back)."""
        self._states[client_id] = state

    def snapshot(self) -> dict[ClientId, NodeState]:
        """A copy of every non-empty node state, in node order, without round-scoped entries.

        Containers and arrays are copied; anything else is shared (what a checkpoint cannot
        hold is refused when it is saved, with the node and key named).
        """
        taken = {}
        for client_id in sorted(self._states, key=_node_order):
            state = {
                key: _copy(value)
                for key, value in self._states[client_id].items()
                if key not in ROUND_SCOPED_KEYS
            }
            if state:
                taken[client_id] = state
        return taken

    def restore(self, states: Mapping[ClientId, NodeState]) -> None:
        """Make every node's state a copy of its entry in `states` (empty where it has none).

        The dicts already handed out stay the same objects (a warm client holds its node's),
        so call this before a run's first round, while no client runs.
        """
        for client_id, state in self._states.items():
            if client_id not in states:
                state.clear()
        for client_id, state in states.items():
            live = self.for_node(str(client_id))
            live.clear()
            live.update(_copy(state))


class KeepsNodeStates:
    """An engine that keeps its nodes' `Context.state` in `node_states` (see `NodeStates`)."""

    node_states: NodeStates


def recorded_node_states(engine: object, recording: bool) -> NodeStates | None:
    """The node states a run hands the round loop to record with each round: `engine`'s, when
    the run records its rounds (`recording`) and the engine keeps any; else None, since every
    round's snapshot is a copy, worth making only where it is saved."""
    if recording and isinstance(engine, KeepsNodeStates):
        return engine.node_states
    return None


def _copy(value: Any) -> Any:
    # Exact types only: a subclass (a Flower record, a named tuple) is shared as it is, and the
    # checkpoint refuses it rather than bring it back as a plain container.
    kind = type(value)
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    if kind is tuple:
        return tuple(_copy(item) for item in value)
    if kind is np.ndarray:
        return value.copy()
    return value


def _node_order(client_id: ClientId) -> tuple[int, str]:
    """Simulated node ids are partition numbers: order "2" before "10"."""
    return (int(client_id), "") if client_id.isdigit() else (0, client_id)
