"""numpy_app: a Flower / NumPy app."""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from numpy_app.task import load_data, loss
from numpy_app.task import train as train_fn

# Flower ClientApp
app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the model on local data."""
    weights = msg.content["arrays"].to_numpy_ndarrays()
    x, y = load_data(context.node_config["partition-id"], context.node_config["num-partitions"])
    new_weights = train_fn(
        weights, x, y, msg.content["config"]["lr"], context.run_config["local-epochs"]
    )
    # Count the rounds this node trained in, in the node's own state.
    counter = context.state.get("trained", MetricRecord({"rounds": 0}))
    counter["rounds"] = counter["rounds"] + 1
    context.state["trained"] = counter
    metrics = MetricRecord(
        {"train_loss": loss(new_weights, x, y), "num-examples": len(y), "rounds": counter["rounds"]}
    )
    content = RecordDict({"arrays": ArrayRecord(new_weights), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the model on local data."""
    weights = msg.content["arrays"].to_numpy_ndarrays()
    x, y = load_data(context.node_config["partition-id"], context.node_config["num-partitions"])
    metrics = MetricRecord({"eval_loss": loss(weights, x, y), "num-examples": len(y)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
