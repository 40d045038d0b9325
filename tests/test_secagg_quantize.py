"""Quantization for secure sums: no wrap-around, unbiased rounding, the documented error bounds."""

from __future__ import annotations

import numpy as np
import pytest

from roost.secagg import QuantizationError, Quantizer, SecAggConfigError, WeightedQuantizer


def _inputs(num_clients: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(num_clients, length))


def test_levels_leave_headroom_so_the_sum_of_all_clients_cannot_wrap() -> None:
    quantizer = Quantizer(clip=1.0, max_clients=7, bits=8)
    assert quantizer.max_level == 255 // 7
    top = sum(quantizer.quantize(np.ones(4)) for _ in range(7))
    assert int(top.max()) == 7 * quantizer.max_level < 2**8
    np.testing.assert_allclose(quantizer.dequantize_mean(top, 7), np.ones(4))
    bottom = sum(quantizer.quantize(-np.ones(4)) for _ in range(7))
    np.testing.assert_allclose(quantizer.dequantize_mean(bottom, 7), -np.ones(4))


def test_a_configuration_that_would_wrap_is_refused() -> None:
    with pytest.raises(SecAggConfigError, match="wrapping around; use more bits"):
        Quantizer(clip=1.0, max_clients=256, bits=8)
    Quantizer(clip=1.0, max_clients=255, bits=8)  # one level per client still fits


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clip": 0.0, "max_clients": 2},
        {"clip": float("inf"), "max_clients": 2},
        {"clip": 1.0, "max_clients": 0},
        {"clip": 1.0, "max_clients": 2, "bits": 65},
        {"clip": 1.0, "max_clients": 2, "bits": 1},
    ],
)
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(SecAggConfigError):
        Quantizer(**kwargs)


def test_dequantized_mean_is_within_the_documented_bounds() -> None:
    num_clients, length = 50, 20_000
    quantizer = Quantizer(clip=1.0, max_clients=num_clients, bits=16)
    values = _inputs(num_clients, length)
    total = sum(quantizer.quantize(row) for row in values)
    error = np.abs(quantizer.dequantize_mean(total, num_clients) - np.clip(values, -1, 1).mean(0))
    assert error.max() > 0  # 16 bits are coarse enough that the check below means something
    assert error.max() < quantizer.mean_error_bound(num_clients)
    hoeffding = quantizer.mean_error_bound(num_clients, failure_probability=1e-9)
    assert hoeffding < quantizer.mean_error_bound(num_clients)
    assert error.max() <= hoeffding
    # The typical error follows the standard deviation bound R / (Q·sqrt(c)).
    assert error.std() <= 1.0 / (quantizer.max_level * np.sqrt(num_clients))


def test_stochastic_rounding_is_unbiased() -> None:
    quantizer = Quantizer(clip=1.0, max_clients=1, bits=4)  # Q = 15: a coarse grid
    value = 0.3  # between grid points 9 and 10 of 0..15
    samples = quantizer.quantize(np.full(200_000, value)).astype(np.float64)
    assert set(np.unique(samples)) == {9.0, 10.0}
    # Rounding to the nearest grid point would give 10 every time (0.4 above); stochastic
    # rounding averages back to the value itself (standard error ~ 0.5/sqrt(200k) levels).
    decoded = samples * quantizer.step - quantizer.clip
    assert abs(decoded.mean() - value) < 5 * 0.5 / np.sqrt(samples.size) * quantizer.step


def test_rounding_randomness_comes_from_the_os_not_numpy(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("numpy.random must not be used for secure aggregation")

    for name in ("default_rng", "random", "rand", "uniform", "random_sample"):
        monkeypatch.setattr(np.random, name, forbidden)
    quantizer = Quantizer(clip=1.0, max_clients=3)
    first, second = (
        quantizer.quantize(np.full(1000, 0.1234)),
        quantizer.quantize(np.full(1000, 0.1234)),
    )
    assert not np.array_equal(first, second)


def test_bad_values_and_sums_are_refused() -> None:
    quantizer = Quantizer(clip=1.0, max_clients=4)
    with pytest.raises(QuantizationError, match="NaN or Inf"):
        quantizer.quantize(np.array([0.0, np.nan]))
    with pytest.raises(QuantizationError, match="int or float"):
        quantizer.quantize(np.array(["a"]))
    total = sum(quantizer.quantize(np.ones(3)) for _ in range(4))
    with pytest.raises(SecAggConfigError, match="num_clients"):
        quantizer.dequantize_sum(total, 5)  # more clients than the levels allow
    with pytest.raises(QuantizationError, match="not made by 3 clients"):
        quantizer.dequantize_sum(total, 3)
    with pytest.raises(QuantizationError, match="uint64"):
        quantizer.dequantize_sum(total.astype(np.int64), 4)


def test_weighted_mean_from_weighted_values_and_weights() -> None:
    num_clients, length = 20, 500
    quantizer = WeightedQuantizer(clip=1.0, max_weight=100.0, max_clients=num_clients)
    values = _inputs(num_clients, length, seed=1)
    weights = np.random.default_rng(2).uniform(1, 100, num_clients)
    encoded = [quantizer.encode(row, float(w)) for row, w in zip(values, weights, strict=True)]
    assert all(vector.shape == (length + 1,) and vector.dtype == np.uint64 for vector in encoded)
    mean, total_weight = quantizer.decode_mean(sum(encoded), num_clients)
    expected = (weights[:, None] * np.clip(values, -1, 1)).sum(0) / weights.sum()
    assert abs(total_weight - weights.sum()) < num_clients * quantizer.weights.step
    assert np.abs(mean - expected).max() < quantizer.mean_error_bound(num_clients, total_weight)
    assert np.abs(mean - expected).max() > 0


def test_weighted_encoding_refuses_weights_out_of_range() -> None:
    quantizer = WeightedQuantizer(clip=1.0, max_weight=10.0, max_clients=3)
    for weight in (-1.0, 11.0, float("nan"), True):
        with pytest.raises(QuantizationError, match="weight must be a number"):
            quantizer.encode(np.zeros(3), weight)
    zero = sum(quantizer.encode(np.ones(3), 0.0) for _ in range(3))
    with pytest.raises(QuantizationError, match="indistinguishable from zero"):
        quantizer.decode_mean(zero, 3)


@pytest.mark.parametrize("bits", [53, 54, 55, 60, 62, 64])
@pytest.mark.parametrize("num_clients", [1, 2, 5, 11])
def test_wide_sums_never_pass_the_top_level_nor_wrap(bits: int, num_clients: int) -> None:
    # Issue 22, hole 6: rounding through float64 put +clip at Q + 1 from 54 bits on, so that
    # with 62 bits and 2 clients the masked sum of +1 and +1 wrapped and decoded as −2.
    quantizer = Quantizer(clip=1.0, max_clients=num_clients, bits=bits)
    assert quantizer.max_level <= 2**53
    assert num_clients * quantizer.max_level < 2**bits
    edges = np.array([1.0, -1.0, 0.999999999, 1e-300, 7.0])
    total = 0
    for _ in range(num_clients):
        levels = quantizer.quantize(edges)
        assert int(levels.max()) <= quantizer.max_level
        total = (total + levels.astype(object)) % 2**bits  # the modular sum under the masks
    decoded = quantizer.dequantize_mean(np.array(list(total), dtype=np.uint64), num_clients)
    np.testing.assert_allclose(decoded, [1.0, -1.0, 0.999999999, 0.0, 1.0], atol=1e-12)


def test_62_bits_and_two_clients_decode_plus_one_plus_one_as_two() -> None:
    quantizer = Quantizer(clip=1.0, max_clients=2, bits=62)
    one = quantizer.quantize(np.array([1.0]))
    total = np.array([(2 * int(one[0])) % 2**62], dtype=np.uint64)
    assert quantizer.dequantize_sum(total, 2)[0] == 2.0
