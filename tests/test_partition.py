"""Partitioners: each sample exactly once, the same split for the same seed, the promised skew."""

from __future__ import annotations

import numpy as np
import pytest

from roost.data import (
    dirichlet_partition,
    format_label_counts,
    iid_partition,
    label_counts,
    pathological_partition,
    quantity_skew_partition,
    quantity_skew_sizes,
    shard_partition,
)
from roost.errors import ConfigurationError

NUM_CLASSES = 10
# 2,000 labels, 200 of each class, in a shuffled order.
LABELS = np.random.default_rng(123).permutation(np.arange(2000) % NUM_CLASSES)

PARTITIONERS = {
    "iid": lambda seed: iid_partition(len(LABELS), 20, seed),
    "dirichlet": lambda seed: dirichlet_partition(LABELS, 20, 0.3, min_size=10, seed=seed),
    "pathological": lambda seed: pathological_partition(LABELS, 20, 2, seed=seed),
    "shards": lambda seed: shard_partition(LABELS, 20, 2, seed=seed),
    "quantity": lambda seed: quantity_skew_partition(len(LABELS), 20, exponent=1.0, seed=seed),
}


@pytest.mark.parametrize("name", PARTITIONERS)
def test_every_sample_lands_in_exactly_one_partition(name: str) -> None:
    parts = PARTITIONERS[name](0)
    assert len(parts) == 20
    assert all(len(part) > 0 for part in parts)
    assert all(part.dtype == np.int64 and np.all(np.diff(part) > 0) for part in parts)
    everything = np.concatenate(parts)
    assert len(everything) == len(LABELS)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(LABELS)))


@pytest.mark.parametrize("name", PARTITIONERS)
def test_same_seed_same_split_other_seed_other_split(name: str) -> None:
    first, again, other = PARTITIONERS[name](7), PARTITIONERS[name](7), PARTITIONERS[name](8)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def _classes_per_client(parts: list[np.ndarray]) -> np.ndarray:
    return (label_counts(LABELS, parts, NUM_CLASSES) > 0).sum(axis=1)


def test_iid_clients_see_every_class_and_equal_sizes() -> None:
    parts = iid_partition(len(LABELS), 20, 0)
    assert {len(part) for part in parts} == {100}
    assert _classes_per_client(parts).min() >= 8


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    def mean_max_share(alpha: float) -> float:
        counts = label_counts(LABELS, dirichlet_partition(LABELS, 20, alpha, seed=0), NUM_CLASSES)
        return float((counts.max(axis=1) / counts.sum(axis=1)).mean())

    skewed, mild, near_iid = mean_max_share(0.05), mean_max_share(1.0), mean_max_share(1000.0)
    # With alpha -> 0 a client is dominated by one class; with alpha -> inf each class is ~10 %.
    assert skewed > 0.6
    assert skewed > mild > near_iid
    assert near_iid < 0.2


def test_dirichlet_min_size_is_respected_or_explained() -> None:
    parts = dirichlet_partition(LABELS, 20, 0.5, min_size=30, seed=1)
    assert min(len(part) for part in parts) >= 30
    with pytest.raises(ConfigurationError, match="raise alpha"):
        dirichlet_partition(LABELS, 20, 0.01, min_size=95, seed=0, max_tries=3)
    with pytest.raises(ConfigurationError, match="alpha must be > 0"):
        dirichlet_partition(LABELS, 20, 0.0)


def test_pathological_gives_exactly_k_classes_with_even_split() -> None:
    parts = pathological_partition(LABELS, 20, 2, seed=3)
    counts = label_counts(LABELS, parts, NUM_CLASSES)
    assert set(_classes_per_client(parts)) == {2}
    # 20 clients × 2 classes = 40 slots over 10 classes: each class has 4 holders of 50 samples.
    holders = (counts > 0).sum(axis=0)
    np.testing.assert_array_equal(holders, np.full(NUM_CLASSES, 4))
    assert set(counts[counts > 0].tolist()) == {50}
    with pytest.raises(ConfigurationError, match="cannot hold all 10"):
        pathological_partition(LABELS, 4, 2)


def test_shards_follow_mcmahan_sizes_and_few_labels() -> None:
    parts = shard_partition(LABELS, 20, 2, seed=0)
    # 40 shards of 2000/40 = 50 sorted-by-label samples; 50 divides 200 so a shard has one label.
    assert {len(part) for part in parts} == {100}
    assert _classes_per_client(parts).max() <= 2
    for part in parts:
        for label in np.unique(LABELS[part]):
            assert (LABELS[part] == label).sum() % 50 == 0


def test_quantity_skew_sizes_follow_the_power_law() -> None:
    sizes = quantity_skew_sizes(1000, 4, exponent=1.0, min_size=10)
    # 960 shared as 1 : 1/2 : 1/3 : 1/4 (sum 25/12): 460.8, 230.4, 153.6, 115.2 -> rounded to 960.
    exact = 960 * np.array([1, 1 / 2, 1 / 3, 1 / 4]) / (25 / 12)
    assert sizes.sum() == 1000
    assert np.all(np.abs(sizes - 10 - exact) < 1)
    np.testing.assert_array_equal(quantity_skew_sizes(1000, 4, exponent=0.0), [250] * 4)
    parts = quantity_skew_partition(1000, 4, exponent=1.0, min_size=10, seed=5)
    assert sorted(len(part) for part in parts) == sorted(sizes.tolist())


def test_label_counts_and_summary_match_a_plain_count() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 3]), np.array([1, 2, 4, 5])]
    np.testing.assert_array_equal(label_counts(labels, parts), [[1, 0, 1], [0, 2, 2]])
    text = format_label_counts(labels, parts)
    lines = text.splitlines()
    assert lines[0].split() == ["client", "0", "1", "2", "total"]
    assert lines[2].split() == ["1", "0", "2", "2", "4"]


def test_bad_arguments_get_specific_errors() -> None:
    with pytest.raises(ConfigurationError, match="use fewer clients"):
        iid_partition(3, 5)
    with pytest.raises(ConfigurationError, match="shards"):
        shard_partition(LABELS[:10], 5, 3)
    with pytest.raises(ConfigurationError, match="one-dimensional"):
        dirichlet_partition(LABELS.reshape(2, -1), 2, 1.0)
