"""Simulated attackers for robustness experiments: wrap any client to behave maliciously.

    from roost.client.attacks import SignFlip, with_attackers

    client_fn = with_attackers(make_client_fn(), SignFlip(scale=10), malicious=[0, 1])
    history = roost.run_simulation(client_fn, num_clients=10, strategy=roost.FedMedian())

Model-poisoning attacks rewrite the update a client sends (its trained parameters minus the global
model it received): `SignFlip`, `Scale`, `GaussianNoise`. Data poisoning changes the client's own
training data before it trains: `LabelFlip`. The wrapped clients still evaluate honestly.

Randomness (the noise of `GaussianNoise`) is seeded by (seed, server round, partition id), with the
round read from the fit config's `SERVER_ROUND` key when the server sends one, so runs repeat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from roost.client.client import ClientFn, ClientLike, Context, client_rng
from roost.core.config_keys import SERVER_ROUND
from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError

__all__ = [
    "Attack",
    "AttackedClientFn",
    "GaussianNoise",
    "LabelFlip",
    "MaliciousClient",
    "DataAttack",
    "ModelAttack",
    "Scale",
    "SignFlip",
    "choose_malicious",
    "with_attackers",
]


class ModelAttack:
    """Rewrites the update a malicious client sends (trained − received parameters)."""

    def poison_update(self, update: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """The poisoned update (a new list; `rng` is the client's stream for this round)."""
        raise NotImplementedError


class DataAttack:
    """Changes a malicious client's own data once, when the client is built."""

    def poison_client(self, client: Any) -> None:
        """Poison `client`'s training data in place."""
        raise NotImplementedError


Attack = ModelAttack | DataAttack
"""An attack; one class may subclass both kinds."""


class SignFlip(ModelAttack):
    """Send −scale × the honest update (scale 1: the plain sign flip)."""

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ConfigurationError(f"SignFlip scale must be > 0, got {scale}")
        self.scale = float(scale)

    def poison_update(self, update: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        return [-self.scale * u for u in update]

    def __repr__(self) -> str:
        return f"SignFlip(scale={self.scale:g})"


class Scale(ModelAttack):
    """Send k × the honest update (boosting, or shrinking with 0 < k < 1)."""

    def __init__(self, factor: float) -> None:
        if not np.isfinite(factor):
            raise ConfigurationError(f"Scale factor must be finite, got {factor}")
        self.factor = float(factor)

    def poison_update(self, update: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        return [self.factor * u for u in update]

    def __repr__(self) -> str:
        return f"Scale(factor={self.factor:g})"


class GaussianNoise(ModelAttack):
    """Add N(0, std²) noise to every coordinate of the honest update."""

    def __init__(self, std: float) -> None:
        if not std >= 0:
            raise ConfigurationError(f"GaussianNoise std must be >= 0, got {std}")
        self.std = float(std)

    def poison_update(self, update: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        return [u + rng.normal(0.0, self.std, size=np.shape(u)) for u in update]

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self.std:g})"


class LabelFlip(DataAttack):
    """Relabel the client's training data before it trains.

    Args:
        num_classes: with no `mapping`, label y becomes num_classes − 1 − y.
        mapping: explicit `{old label: new label}`; labels not in it stay.
        labels: attribute path of the client's training labels: `"train.y"` (the default) for a
            client that keeps `self.train.y`, `"y_train"` for one that keeps `self.y_train`.
            Frozen dataclasses on the path are replaced, not mutated.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        mapping: Mapping[int, int] | None = None,
        labels: str = "train.y",
    ) -> None:
        if mapping is None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ConfigurationError("LabelFlip needs num_classes >= 2 or an explicit mapping")
        self.num_classes = num_classes
        self.mapping = dict(mapping) if mapping is not None else None
        self.labels = labels

    def flip(self, y: np.ndarray) -> np.ndarray:
        """The poisoned copy of the labels `y`."""
        y = np.asarray(y)
        if self.mapping is None:
            return (self.num_classes - 1 - y).astype(y.dtype, copy=False)
        flipped = y.copy()
        for old, new in self.mapping.items():
            flipped[y == old] = new
        return flipped

    def poison_client(self, client: Any) -> None:
        parts = self.labels.split(".")
        try:
            y = client
            for part in parts:
                y = getattr(y, part)
        except AttributeError:
            raise ConfigurationError(
                f"LabelFlip found no training labels at client.{self.labels} on "
                f"{type(client).__name__}; pass labels='<attribute path>' (e.g. 'y_train')"
            ) from None
        _set_path(client, parts, self.flip(y))

    def __repr__(self) -> str:
        what = f"mapping={self.mapping}" if self.mapping else f"num_classes={self.num_classes}"
        return f"LabelFlip({what}, labels={self.labels!r})"


def _set_path(obj: Any, parts: Sequence[str], value: Any) -> Any:
    """Set obj.<parts> = value; return obj, or a replaced copy when obj is a frozen dataclass."""
    if len(parts) > 1:
        child = getattr(obj, parts[0])
        new_child = _set_path(child, parts[1:], value)
        if new_child is child:
            return obj
        value, parts = new_child, parts[:1]
    try:
        setattr(obj, parts[0], value)
        return obj
    except dataclasses.FrozenInstanceError:
        return dataclasses.replace(obj, **{parts[0]: value})


class MaliciousClient:
    """A client that trains like `client`, then applies the attacks to what it sends back."""

    def __init__(
        self, client: ClientLike, attacks: Sequence[Any], partition_id: int, seed: int = 0
    ) -> None:
        self.client = client
        self.attacks = tuple(attacks)
        self.partition_id = partition_id
        self.seed = seed

    def get_parameters(self, config: Config) -> Parameters:
        return self.client.get_parameters(config)

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        trained, num_examples, metrics = self.client.fit(parameters, config)
        model_attacks = [a for a in self.attacks if isinstance(a, ModelAttack)]
        if not model_attacks:
            return trained, num_examples, metrics
        rng = client_rng(self.seed, int(config.get(SERVER_ROUND, 0)), self.partition_id)
        update = [
            np.subtract(t, g, dtype=np.float64) for t, g in zip(trained, parameters, strict=True)
        ]
        for attack in model_attacks:
            update = attack.poison_update(update, rng)
        poisoned = [
            (np.asarray(g, dtype=np.float64) + u).astype(np.asarray(t).dtype, copy=False)
            for g, u, t in zip(parameters, update, trained, strict=True)
        ]
        return poisoned, num_examples, metrics

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        return self.client.evaluate(parameters, config)


class AttackedClientFn:
    """A `client_fn` whose clients in `malicious` run `attacks`; see `with_attackers`.

    A class rather than a closure so that worker-pool engines can pickle it.
    """

    def __init__(
        self,
        client_fn: ClientFn,
        attacks: Any,
        malicious: Iterable[int | str],
        seed: int = 0,
    ) -> None:
        attack_list = list(attacks) if isinstance(attacks, list | tuple) else [attacks]
        for attack in attack_list:
            if not isinstance(attack, ModelAttack | DataAttack):
                raise ConfigurationError(
                    f"{attack!r} is not an attack: subclass roost.client.attacks.ModelAttack "
                    "(poison_update) or DataAttack (poison_client)"
                )
        self.client_fn = client_fn
        self.attacks = tuple(attack_list)
        self.malicious = frozenset(str(m) for m in malicious)
        self.seed = seed

    def is_malicious(self, context: Context) -> bool:
        return str(context.partition_id) in self.malicious or context.node_id in self.malicious

    def __call__(self, context: Context) -> ClientLike:
        client = self.client_fn(context)
        if not self.is_malicious(context):
            return client
        for attack in self.attacks:
            if isinstance(attack, DataAttack):
                attack.poison_client(client)
        return MaliciousClient(client, self.attacks, context.partition_id, self.seed)


def with_attackers(
    client_fn: ClientFn, attacks: Any, malicious: Iterable[int | str], seed: int = 0
) -> AttackedClientFn:
    """Wrap `client_fn` so the clients in `malicious` run `attacks`; the others stay honest.

    Args:
        client_fn: builds an honest client from a `Context`.
        attacks: one attack or a list of them (applied in order).
        malicious: the partition ids (ints) or node ids (strs) of the attackers.
        seed: seeds the attacks' randomness.
    """
    return AttackedClientFn(client_fn, attacks, malicious, seed)


def choose_malicious(num_clients: int, count: int, seed: int = 0) -> list[int]:
    """`count` distinct partition ids out of `num_clients`, drawn with `seed`, sorted."""
    if not 0 <= count <= num_clients:
        raise ConfigurationError(f"cannot choose {count} attackers out of {num_clients} clients")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_clients, size=count, replace=False))
