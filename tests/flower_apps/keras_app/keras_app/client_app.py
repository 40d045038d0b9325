"""keras_app: a Flower / Keras app."""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from keras_app.task import load_data, load_model

# Flower ClientApp
app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the model on local data."""
    model = load_model(msg.content["config"]["lr"])
    model.set_weights(msg.content["arrays"].to_numpy_ndarrays())
    x, y = load_data(context.node_config["partition-id"], context.node_config["num-partitions"])
    history = model.fit(
        x,
        y,
        epochs=context.run_config["local-epochs"],
        batch_size=context.run_config["batch-size"],
        shuffle=False,
        verbose=0,
    )
    metrics = MetricRecord(
        {
            "train_loss": history.history["loss"][-1],
            "train_acc": history.history["accuracy"][-1],
            "num-examples": len(x),
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.get_weights()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the model on local data."""
    model = load_model(0.1)
    model.set_weights(msg.content["arrays"].to_numpy_ndarrays())
    x, y = load_data(context.node_config["partition-id"], context.node_config["num-partitions"])
    loss, accuracy = model.evaluate(x, y, verbose=0)
    metrics = MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(x)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
