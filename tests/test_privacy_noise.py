"""SecureRandom: a cryptographic keystream, never numpy.random; seeded runs repeat and warn."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats

from roost.errors import ConfigurationError
from roost.privacy.noise import SecureRandom, derive_key, noise_source

KEY = bytes(range(32))


def test_uniforms_are_the_aes_ctr_keystream_read_as_53_bit_fractions() -> None:
    keystream = Cipher(algorithms.AES(KEY), modes.CTR(bytes(16))).encryptor().update(bytes(64))
    words = np.frombuffer(keystream, dtype="<u8")
    expected = (words >> np.uint64(11)).astype(np.float64) / 2.0**53
    np.testing.assert_array_equal(SecureRandom(KEY).random(8), expected)


def test_two_default_sources_differ_and_numpy_seeding_does_not_reach_them() -> None:
    np.random.seed(0)
    first = SecureRandom().standard_normal(16)
    np.random.seed(0)
    second = SecureRandom().standard_normal(16)
    assert not np.array_equal(first, second)
    assert not np.array_equal(noise_source(None).random(4), noise_source(None).random(4))


def test_the_secure_source_never_calls_numpy_random(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("numpy.random was used")

    for name in ("default_rng", "random", "normal", "standard_normal", "seed", "RandomState"):
        monkeypatch.setattr(np.random, name, forbidden)
    source = SecureRandom()
    assert source.standard_normal(1000).shape == (1000,)
    assert source.bernoulli(0.5, 10).dtype == bool
    assert len(source.sample_without_replacement(10, 3)) == 3


def test_a_seeded_source_repeats_per_context_and_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="roost"):
        first = SecureRandom.from_seed(1234, "central", 3).standard_normal(32)
    assert "NOT private" in caplog.text
    np.testing.assert_array_equal(
        first, SecureRandom.from_seed(1234, "central", 3).standard_normal(32)
    )
    np.testing.assert_array_equal(first, noise_source(1234, "central", 3).standard_normal(32))
    assert not np.array_equal(first, noise_source(1234, "central", 4).standard_normal(32))
    assert not np.array_equal(first, noise_source(1235, "central", 3).standard_normal(32))
    assert derive_key(1, "a", 2) != derive_key(1, "a2")  # contexts are unambiguous


def test_the_key_is_not_kept_where_it_could_be_saved() -> None:
    source = SecureRandom(KEY)
    assert "key hidden" in repr(source)
    assert all(KEY not in repr(value).encode() for value in vars(source).values())


def test_gaussian_samples_are_standard_normal() -> None:
    samples = SecureRandom().standard_normal(200_000)
    # 6 standard errors: a correct sampler fails this about once in a billion runs.
    assert abs(samples.mean()) < 6 / np.sqrt(samples.size)
    assert abs(samples.std() - 1.0) < 6 * np.sqrt(0.5 / samples.size)
    assert stats.kstest(samples, "norm").pvalue > 1e-6
    scaled = SecureRandom().normal(2.5, (300, 300))
    assert scaled.shape == (300, 300)
    assert abs(scaled.std() - 2.5) < 2.5 * 6 * np.sqrt(0.5 / scaled.size)


def test_uniforms_bernoulli_and_subsets() -> None:
    source = SecureRandom()
    uniforms = source.random(100_000)
    assert uniforms.min() >= 0.0 and uniforms.max() < 1.0
    assert stats.kstest(uniforms, "uniform").pvalue > 1e-6
    hits = source.bernoulli(0.2, 100_000).mean()
    assert abs(hits - 0.2) < 6 * np.sqrt(0.2 * 0.8 / 100_000)
    counts = np.zeros(10)
    for _ in range(2000):
        chosen = source.sample_without_replacement(10, 3)
        assert len(set(chosen)) == 3 and list(chosen) == sorted(chosen)
        counts[chosen] += 1
    assert np.all(np.abs(counts / 2000 - 0.3) < 6 * np.sqrt(0.3 * 0.7 / 2000))


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: SecureRandom(b"short"), "32 bytes"),
        (lambda: SecureRandom().normal(-1.0, 3), ">= 0"),
        (lambda: SecureRandom().bernoulli(1.5, 3), "probability"),
        (lambda: SecureRandom().sample_without_replacement(3, 5), "cannot choose 5"),
        (lambda: derive_key("seed"), "must be an int"),
    ],
)
def test_bad_requests_are_clear_errors(call, fragment) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        call()
