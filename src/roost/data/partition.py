"""Seeded partitioners: split sample indices across clients.

Every partitioner returns one sorted array of sample indices per client. Together they cover every
sample exactly once, and the same arguments (seed included) always give the same split.

- `iid_partition`: shuffle and cut into near-equal parts.
- `dirichlet_partition`: label skew; each class is spread over clients by proportions drawn from
  Dirichlet(α) (small α: few classes per client; large α: close to IID).
- `pathological_partition`: each client holds exactly `classes_per_partition` classes.
- `shard_partition`: sort by label, cut into shards, hand each client some shards (McMahan et al.).
- `quantity_skew_partition`: client sizes follow a power law; labels stay mixed.

`label_counts` and `format_label_counts` summarise what each client received.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from roost.errors import ConfigurationError

Partition = list[np.ndarray]


def _check_partitions(num_samples: int, num_partitions: int) -> None:
    if not isinstance(num_partitions, int | np.integer) or num_partitions < 1:
        raise ConfigurationError(f"num_partitions must be an int >= 1, got {num_partitions!r}")
    if num_samples < num_partitions:
        raise ConfigurationError(
            f"cannot split {num_samples} samples into {num_partitions} non-empty partitions; "
            "use fewer clients"
        )


def _as_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ConfigurationError(f"labels must be one-dimensional, got shape {array.shape}")
    return array


def _finish(parts: Sequence[Sequence[int] | np.ndarray]) -> Partition:
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def iid_partition(num_samples: int, num_partitions: int, seed: int | None = 0) -> Partition:
    """Shuffle `range(num_samples)` with `seed` and cut it into `num_partitions` near-equal parts.

    Every sample lands in exactly one partition; sizes differ by at most one.
    """
    _check_partitions(num_samples, num_partitions)
    order = np.random.default_rng(seed).permutation(num_samples)
    return _finish(np.array_split(order, num_partitions))


def dirichlet_partition(
    labels: Sequence[int] | np.ndarray,
    num_partitions: int,
    alpha: float,
    *,
    min_size: int = 1,
    seed: int | None = 0,
    max_tries: int = 100,
) -> Partition:
    """Label-skewed split: class c goes to the clients in proportions p_c ~ Dirichlet(α·1).

    The draw is repeated (same seed, next draws) until every client has at least `min_size`
    samples; after `max_tries` draws a `ConfigurationError` says which knob to turn.
    """
    labels = _as_labels(labels)
    _check_partitions(len(labels), num_partitions)
    if not alpha > 0:
        raise ConfigurationError(f"alpha must be > 0, got {alpha}")
    if min_size < 0 or min_size * num_partitions > len(labels):
        raise ConfigurationError(
            f"min_size={min_size} for {num_partitions} partitions needs at least "
            f"{min_size * num_partitions} samples, there are {len(labels)}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    smallest = 0
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for label in classes:
            members = rng.permutation(np.flatnonzero(labels == label))
            proportions = rng.dirichlet(np.full(num_partitions, float(alpha)))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        merged = [np.concatenate(chunks) for chunks in parts]
        smallest = min(len(part) for part in merged)
        if smallest >= min_size:
            return _finish(merged)
    raise ConfigurationError(
        f"no Dirichlet(alpha={alpha}) split in {max_tries} draws gave every one of "
        f"{num_partitions} partitions at least {min_size} samples (smallest: {smallest}); "
        "raise alpha, lower min_size or use fewer partitions"
    )


def pathological_partition(
    labels: Sequence[int] | np.ndarray,
    num_partitions: int,
    classes_per_partition: int,
    *,
    seed: int | None = 0,
) -> Partition:
    """Each client holds exactly `classes_per_partition` distinct classes.

    Classes are dealt round-robin over a seeded shuffle of the classes, so every class has a holder
    when `num_partitions * classes_per_partition >= number of classes`; each class's samples are
    shuffled and divided evenly among the clients that hold it.
    """
    labels = _as_labels(labels)
    _check_partitions(len(labels), num_partitions)
    classes = np.unique(labels)
    k = classes_per_partition
    if not 1 <= k <= len(classes):
        raise ConfigurationError(
            f"classes_per_partition must be in [1, {len(classes)}], got {classes_per_partition}"
        )
    if num_partitions * k < len(classes):
        raise ConfigurationError(
            f"{num_partitions} partitions with {k} classes each cannot hold all {len(classes)} "
            "classes; raise classes_per_partition or num_partitions"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    holders: dict[int, list[int]] = {int(label): [] for label in classes}
    for client in range(num_partitions):
        for slot in range(k):
            holders[int(order[(client * k + slot) % len(classes)])].append(client)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
    for label in classes:
        members = rng.permutation(np.flatnonzero(labels == label))
        owners = holders[int(label)]
        for client, chunk in zip(owners, np.array_split(members, len(owners)), strict=True):
            parts[client].append(chunk)
    merged = [np.concatenate(chunks) for chunks in parts]
    empty = [client for client, part in enumerate(merged) if len(part) == 0]
    if empty:
        raise ConfigurationError(
            f"partitions {empty} received no samples; use fewer partitions or more classes each"
        )
    return _finish(merged)


def shard_partition(
    labels: Sequence[int] | np.ndarray,
    num_partitions: int,
    shards_per_partition: int = 2,
    *,
    seed: int | None = 0,
) -> Partition:
    """McMahan et al. (2017): sort by label, cut into equal shards, give each client some shards.

    With the defaults, each client sees at most a few classes (two shards, often two labels).
    """
    labels = _as_labels(labels)
    _check_partitions(len(labels), num_partitions)
    if shards_per_partition < 1:
        raise ConfigurationError(f"shards_per_partition must be >= 1, got {shards_per_partition}")
    num_shards = num_partitions * shards_per_partition
    if num_shards > len(labels):
        raise ConfigurationError(
            f"{num_shards} shards need at least as many samples, there are {len(labels)}; "
            "lower shards_per_partition or num_partitions"
        )
    rng = np.random.default_rng(seed)
    # Shuffle first so that ties within a label are broken by the seed, then sort stably by label.
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_partitions, shards_per_partition)
    return _finish([np.concatenate([shards[s] for s in row]) for row in dealt])


def quantity_skew_sizes(
    num_samples: int, num_partitions: int, exponent: float = 1.0, min_size: int = 1
) -> np.ndarray:
    """Partition sizes from a power law: the r-th largest gets a share ∝ r^(−exponent).

    Each partition first gets `min_size`; the rest is shared by the power law with largest-remainder
    rounding, so the sizes sum exactly to `num_samples`. `exponent=0` gives equal sizes.
    """
    _check_partitions(num_samples, num_partitions)
    if exponent < 0:
        raise ConfigurationError(f"exponent must be >= 0, got {exponent}")
    if min_size < 0 or min_size * num_partitions > num_samples:
        raise ConfigurationError(
            f"min_size={min_size} for {num_partitions} partitions needs at least "
            f"{min_size * num_partitions} samples, there are {num_samples}"
        )
    weights = np.arange(1, num_partitions + 1, dtype=np.float64) ** -float(exponent)
    rest = num_samples - min_size * num_partitions
    exact = rest * weights / weights.sum()
    sizes = np.floor(exact).astype(np.int64)
    leftover = rest - int(sizes.sum())
    # Largest remainders first; ties go to the larger partition (lower rank).
    order = np.lexsort((np.arange(num_partitions), -(exact - sizes)))
    sizes[order[:leftover]] += 1
    return sizes + min_size


def quantity_skew_partition(
    num_samples: int,
    num_partitions: int,
    *,
    exponent: float = 1.0,
    min_size: int = 1,
    seed: int | None = 0,
) -> Partition:
    """Unequal client sizes from `quantity_skew_sizes`, handed to clients in a seeded random order.

    Samples are shuffled before cutting, so labels stay mixed; only the amounts differ.
    """
    sizes = quantity_skew_sizes(num_samples, num_partitions, exponent, min_size)
    rng = np.random.default_rng(seed)
    sizes = sizes[rng.permutation(num_partitions)]
    order = rng.permutation(num_samples)
    return _finish(np.split(order, np.cumsum(sizes)[:-1]))


def label_counts(
    labels: Sequence[int] | np.ndarray,
    partitions: Sequence[np.ndarray],
    num_classes: int | None = None,
) -> np.ndarray:
    """A (num_partitions, num_classes) int array: how many samples of each class every client has.

    Labels must be integers in `[0, num_classes)`; `num_classes` defaults to `max(labels) + 1`.
    """
    labels = _as_labels(labels)
    if labels.dtype.kind not in "iu":
        raise ConfigurationError(f"labels must be integers, got dtype {labels.dtype}")
    classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    counts = np.zeros((len(partitions), classes), dtype=np.int64)
    for row, part in zip(counts, partitions, strict=True):
        row += np.bincount(labels[np.asarray(part, dtype=np.int64)], minlength=classes)
    return counts


def format_label_counts(
    labels: Sequence[int] | np.ndarray,
    partitions: Sequence[np.ndarray],
    num_classes: int | None = None,
) -> str:
    """`label_counts` as a plain-text table: a row per client, a column per class, and totals."""
    counts = label_counts(labels, partitions, num_classes)
    header = ["client", *(str(c) for c in range(counts.shape[1])), "total"]
    rows = [[str(i), *(str(v) for v in row), str(int(row.sum()))] for i, row in enumerate(counts)]
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    )
