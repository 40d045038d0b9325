"""`flwr.simulation.run_simulation` and the older `start_simulation`: the whole federation in
this process, via roost."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from roost.client.client import ClientLike, Context
from roost.compat.flwr.client import ClientApp
from roost.compat.flwr.clientapp import StatefulClientFn, node_client
from roost.compat.flwr.server import ServerApp
from roost.compat.flwr.server.strategy import FedAvg
from roost.engines.warm import WarmClients
from roost.errors import ConfigurationError
from roost.server.history import History
from roost.server.loop import ServerConfig
from roost.simulation import run_simulation as roost_run_simulation
from roost.strategy.strategy import Strategy

log = logging.getLogger(__name__)


def run_simulation(
    server_app: ServerApp,
    client_app: ClientApp,
    num_supernodes: int,
    backend_name: str = "ray",
    backend_config: dict[str, Any] | None = None,
    enable_tf_gpu_growth: bool = False,
    verbose_logging: bool = False,
    *,
    seed: int | None = None,
    engine: str | None = None,
    engine_options: dict[str, Any] | None = None,
    warm_clients: bool | WarmClients = False,
) -> History:
    """Simulate `num_supernodes` clients and return the run's History (Flower returns None).

    Clients are built on demand by the `ClientApp`. By default they run on the engine
    `roost.run_simulation` chooses (its first line says which and why): clients that train with
    Keras, torch, TensorFlow or JAX run side by side in worker processes that keep the
    framework imported, as Flower's Ray actors do, when the run is long enough to pay for
    starting them; others run one after another in this process. Workers never re-run your
    script, so this works the same in a script without a main guard and in a notebook.
    `backend_name` and `backend_config` (client resources) are accepted and not used; roost's
    own `engine` ("sequential", "process", "ray", "vectorized") and `engine_options` choose how
    clients run. `seed` makes client sampling reproducible.

    `warm_clients=True` (or `roost.WarmClients(...)` bounds) keeps the client built for each
    partition alive between rounds instead of calling `client_fn` again, which saves rebuilding
    and recompiling models every round. It is off by default because a warm client also keeps
    what your code keeps: a Keras model compiled in `client_fn` carries its optimizer state from
    one round to the next, so results change (see `roost.run_simulation`).
    """
    if not isinstance(server_app, ServerApp) or not isinstance(client_app, ClientApp):
        raise ConfigurationError(
            "run_simulation needs server_app=ServerApp(...) and client_app=ClientApp(...)"
        )
    if backend_config is not None and not isinstance(backend_config, dict):
        raise ConfigurationError(
            f"backend_config must be a dict, got {type(backend_config).__name__}"
        )
    context = Context(partition_id=0, num_partitions=num_supernodes, node_id="server")
    components = server_app.components(context)
    if verbose_logging:
        logging.getLogger("roost").setLevel(logging.DEBUG)
    # With mods, each node's client runs its fit and evaluate through them (clientapp.modded).
    build = partial(node_client, client_app) if client_app.mods else None
    return roost_run_simulation(
        build or StatefulClientFn(client_app.client_fn),
        num_supernodes,
        strategy=components.strategy if components.strategy is not None else FedAvg(),
        config=components.config,
        seed=seed,
        engine=engine,
        engine_options=engine_options,
        warm_clients=warm_clients,
    )


def start_simulation(
    *,
    client_fn: Callable[..., ClientLike],
    num_clients: int | None = None,
    clients_ids: list[str] | None = None,
    client_resources: dict[str, float] | None = None,
    server: Any = None,
    config: ServerConfig | None = None,
    strategy: Strategy | None = None,
    client_manager: Any = None,
    ray_init_args: dict[str, Any] | None = None,
    keep_initialised: bool = False,
    actor_type: Any = None,
    actor_kwargs: dict[str, Any] | None = None,
    actor_scheduling: str | Any = "DEFAULT",
    seed: int | None = None,
    engine: str | None = None,
    engine_options: dict[str, Any] | None = None,
) -> History:
    """Flower's older simulation entry point: `num_clients` clients built by `client_fn`, the
    rounds of `config` under `strategy` (default FedAvg); returns the History, as Flower does.

    `client_fn` may take a `Context` (Flower ≥ 1.8) or the client id as a string, `cid`
    (older tutorials); with `clients_ids`, client i gets `clients_ids[i]` as its `cid`.
    `client_resources`, `ray_init_args`, `keep_initialised` and the `actor_*` options size Ray's
    actors in Flower and are accepted and not used: roost's `engine` ("sequential", "process",
    "ray", "vectorized"; default: `roost.run_simulation`'s choice) and `engine_options` choose
    how clients run. A custom `server` or
    `client_manager` is refused: roost's round loop runs every simulation. `seed` makes client
    sampling reproducible.
    """
    if server is not None or client_manager is not None:
        raise ConfigurationError(
            "start_simulation: roost runs its own round loop, so server= and client_manager= "
            "are not supported; pass strategy= and config= (a roost Strategy can customize "
            "sampling and aggregation)"
        )
    if clients_ids is not None and num_clients is not None and len(clients_ids) != num_clients:
        raise ConfigurationError(
            f"start_simulation: {len(clients_ids)} clients_ids for num_clients={num_clients}; "
            "give one id per client (or leave num_clients out)"
        )
    count = len(clients_ids) if clients_ids is not None else num_clients
    if count is None or count < 1:
        raise ConfigurationError("start_simulation needs num_clients >= 1 (or clients_ids)")
    return roost_run_simulation(
        _context_client_fn(client_fn, clients_ids),
        count,
        strategy=strategy if strategy is not None else FedAvg(),
        config=config if config is not None else ServerConfig(num_rounds=1),
        seed=seed,
        engine=engine,
        engine_options=engine_options,
    )


class _CidClientFn:
    """A `client_fn(cid: str)` of older Flower code, called as roost calls one: with a Context."""

    def __init__(self, client_fn: Callable[[str], ClientLike], ids: list[str] | None) -> None:
        self.client_fn = client_fn
        self.ids = ids

    def __call__(self, context: Context) -> ClientLike:
        index = context.partition_id
        return self.client_fn(self.ids[index] if self.ids is not None else str(index))


def _context_client_fn(
    client_fn: Callable[..., ClientLike], ids: list[str] | None
) -> Callable[[Context], ClientLike]:
    """`client_fn` as roost calls it; one taking `cid` (a str) gets the client's id."""
    if not callable(client_fn):
        raise ConfigurationError(
            f"start_simulation: client_fn must be a function, got {type(client_fn).__name__}"
        )
    try:
        parameters = list(inspect.signature(client_fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: assume the current signature
        return StatefulClientFn(client_fn)
    first = parameters[0] if parameters else None
    if first is not None and (first.name == "cid" or first.annotation in (str, "str")):
        return _CidClientFn(client_fn, ids)
    return StatefulClientFn(client_fn)


__all__ = ["run_simulation", "start_simulation"]
