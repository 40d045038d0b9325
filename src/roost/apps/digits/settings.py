"""The demo's sizes, and the check that refuses settings it cannot run.

The demo's knobs are the run's `roost.settings.RunSettings`: clients, rounds,
fractions, epochs, batch size, learning rate and seed (`RunSettings()` gives the defaults
`roost simulate` runs).
"""

from __future__ import annotations

from roost.data.bundled_digits import load_digits_split
from roost.errors import ConfigurationError
from roost.settings import RunSettings

NUM_FEATURES = 64
NUM_CLASSES = 10
VALIDATION_FRACTION = 0.1


def check_settings(settings: RunSettings) -> None:
    """Refuse settings the demo cannot run, before any client is built."""
    train, _ = load_digits_split(seed=settings.seed)
    # Each client keeps 10 % of its share for validation and must still have something to train on.
    most = len(train.y) // 2
    if not 1 <= settings.num_clients <= most:
        raise ConfigurationError(
            f"the digits demo has {len(train.y)} training samples, enough for 1 to {most} "
            f"clients; got {settings.num_clients}: use fewer clients"
        )
