"""keras_app: the model and each partition's data."""

import keras
import numpy as np

NUM_FEATURES = 4


def load_model(learning_rate: float) -> keras.Model:
    """A small dense classifier, compiled with SGD."""
    model = keras.Sequential(
        [
            keras.Input(shape=(NUM_FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def load_data(partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """A partition of a synthetic two-class problem."""
    rng = np.random.default_rng([partition_id, num_partitions, 7])
    x = rng.normal(size=(16 + 8 * partition_id, NUM_FEATURES)).astype("float32")
    y = (x[:, 0] - x[:, 3] > 0).astype("int64")
    return x, y
