"""numpy_app: a Flower / NumPy app."""

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from numpy_app.task import initial_weights, load_data, loss

# Create ServerApp
app = ServerApp()


def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Evaluate the global model on held-out data on the server."""
    x, y = load_data(99, 100)
    return MetricRecord({"loss": loss(arrays.to_numpy_ndarrays(), x, y)})


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Main entry point for the ServerApp."""
    num_rounds: int = context.run_config["num-server-rounds"]
    fraction_train: float = context.run_config["fraction-train"]
    lr: float = context.run_config["lr"]

    strategy = FedAvg(fraction_train=fraction_train)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_weights()),
        train_config=ConfigRecord({"lr": lr}),
        num_rounds=num_rounds,
        evaluate_fn=global_evaluate,
    )
    print("final arrays:", [array.shape for array in result.arrays.values()])
