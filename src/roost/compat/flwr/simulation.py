"""`flwr.simulation.run_simulation`: the whole federation in this process, via roost."""

from __future__ import annotations

import logging
from typing import Any

from roost.client.client import Context
from roost.compat.flwr.client import ClientApp
from roost.compat.flwr.server import ServerApp
from roost.compat.flwr.server.strategy import FedAvg
from roost.engines.warm import WarmClients
from roost.errors import ConfigurationError
from roost.server.history import History
from roost.simulation import run_simulation as roost_run_simulation

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
    engine: str = "sequential",
    engine_options: dict[str, Any] | None = None,
    warm_clients: bool | WarmClients = False,
) -> History:
    """Simulate `num_supernodes` clients and return the run's History (Flower returns None).

    By default clients run one after another in this process, built on demand by the
    `ClientApp`, so it works the same in a script and in a notebook. `backend_name` and
    `backend_config` (client resources) are accepted and not used; roost's own `engine`
    ("sequential", "process", "ray", "vectorized") and `engine_options` choose how clients run
    (see `roost.run_simulation`). `seed` makes client sampling reproducible.

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
    return roost_run_simulation(
        client_app.client_fn,
        num_supernodes,
        strategy=components.strategy if components.strategy is not None else FedAvg(),
        config=components.config,
        seed=seed,
        engine=engine,
        engine_options=engine_options,
        warm_clients=warm_clients,
    )


__all__ = ["run_simulation"]
