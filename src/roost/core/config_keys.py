"""The config keys the server sends to clients, named once.

Strategies, the bundled demo, the framework adapters and the simulated attacks all read and write
round configs through these names, so a key cannot be spelled two ways.
"""

from __future__ import annotations

SERVER_ROUND = "server_round"
"""The round a fit or evaluate instruction belongs to (int, from 1)."""

LOCAL_EPOCHS = "local_epochs"
"""Local epochs for this round (int); Keras clients also accept `EPOCHS`."""

EPOCHS = "epochs"
"""Keras' own name for `LOCAL_EPOCHS`."""

BATCH_SIZE = "batch_size"
"""Local mini-batch size for this round (int)."""

STEPS_PER_EPOCH = "steps_per_epoch"
"""Keras clients: mini-batches per local epoch (int)."""

LEARNING_RATE = "lr"
"""The clients' local learning rate for this round (float)."""

PROXIMAL_MU = "proximal_mu"
"""FedProx's μ: clients add (μ/2)·‖w − w_global‖² to their local loss (float)."""

RETURN_GRADIENTS = "return_gradients"
"""FedSGD: answer `fit` with the gradient at the received model instead of trained parameters."""
