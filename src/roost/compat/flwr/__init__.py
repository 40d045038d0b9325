"""Flower's names on top of roost: change `import flwr as fl` to `import roost.compat.flwr as fl`.

    import roost.compat.flwr as fl
    from roost.compat.flwr.client import ClientApp, NumPyClient
    from roost.compat.flwr.common import Context, Metrics
    from roost.compat.flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from roost.compat.flwr.server.strategy import FedAvg
    from roost.compat.flwr.simulation import run_simulation

Everything here is a thin veneer: a `NumPyClient` is a roost client, a strategy is a roost
strategy, `run_simulation` is `roost.run_simulation`, `start_server` / `start_client` are roost's
gRPC deployment. Only the surface a `NumPyClient`-based project uses is covered; the README section
"Coming from Flower" lists what differs.
"""

from roost.compat.flwr import client, common, server, simulation

__all__ = ["client", "common", "server", "simulation"]
