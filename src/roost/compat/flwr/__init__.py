"""Flower's names on top of roost, for classic `NumPyClient` projects and Message-API apps.

Message-API apps (`flwr.app`, `flwr.clientapp`, `flwr.serverapp`, `flwr.serverapp.strategy`) run
with their files unchanged: `roost.compat.flwr.project.run_project(DIR)` (`roost run DIR`) reads
the project's `pyproject.toml` and imports the apps with `import flwr…` resolving to this package
(`roost.compat.flwr.alias`). Classic code changes `import flwr as fl` to
`import roost.compat.flwr as fl`:

    import roost.compat.flwr as fl
    from roost.compat.flwr.client import ClientApp, NumPyClient
    from roost.compat.flwr.common import Context, Metrics
    from roost.compat.flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from roost.compat.flwr.server.strategy import FedAvg
    from roost.compat.flwr.simulation import run_simulation

Everything here is a thin veneer over roost: a `NumPyClient` is a roost client, strategies are
roost's presets driven by roost's round loop, a `Grid` is an adapter over roost's transports,
`run_simulation` is `roost.run_simulation`, `start_server` / `start_client` are roost's gRPC
deployment. The guide docs/how-to/flower.md lists what is covered and what differs.
"""

from roost.compat.flwr import app, client, clientapp, common, server, serverapp, simulation

__all__ = ["app", "client", "clientapp", "common", "server", "serverapp", "simulation"]
