"""roost.core.files: atomic writes and .npz parameter files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from roost.core.files import atomic_output, atomic_write_bytes, load_parameters, save_parameters


def test_atomic_write_replaces_the_file_with_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "out.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert os.listdir(target.parent) == ["out.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_output(target) as file:
        file.write(b"half of the ne")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_parameters_round_trip_in_order_with_their_dtypes(tmp_path: Path) -> None:
    parameters = [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2], np.int64)]
    parameters += [np.zeros(()) for _ in range(11)]  # arr_10 must come after arr_9, not arr_1
    parameters[-1] = np.array(7.5)
    save_parameters(tmp_path / "model.npz", parameters)
    loaded = load_parameters(tmp_path / "model.npz")
    assert len(loaded) == len(parameters)
    for got, expected in zip(loaded, parameters, strict=True):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
