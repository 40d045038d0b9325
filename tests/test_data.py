"""Data loaders: CIFAR-10 and MNIST in their published file layouts (made here, small), the download
path against a local HTTP server, the errors when neither works, and the synthetic generators."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from roost.data import (
    DatasetUnavailableError,
    load_cifar10,
    load_mnist,
    make_cifar_like,
    make_classification,
)
from roost.data.mnist import read_idx

PER_BATCH = 4  # images per CIFAR batch file in these tests (the real files have 10,000)


def _cifar_batches(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Six batches of images (n, 32, 32, 3) and labels, as the real data would decode to."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        name: (
            rng.integers(0, 256, size=(PER_BATCH, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, size=PER_BATCH).astype(np.int64),
        )
        for name in names
    }


def _channel_major(images: np.ndarray) -> np.ndarray:
    # The published layout: per image, 1024 red, then 1024 green, then 1024 blue bytes.
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar_binary(root: Path, batches: dict) -> None:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, (images, labels) in batches.items():
        records = np.concatenate([labels[:, None].astype(np.uint8), _channel_major(images)], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())


def write_cifar_python(root: Path, batches: dict) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (images, labels) in batches.items():
        batch = {b"data": _channel_major(images), b"labels": labels.tolist(), b"batch_label": b"x"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def _expected(batches: dict) -> tuple[np.ndarray, ...]:
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return (
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        *batches["test_batch"],
    )


def _check_cifar(loaded, batches: dict) -> None:
    (x_train, y_train), (x_test, y_test) = loaded
    expected = _expected(batches)
    assert x_train.shape == (5 * PER_BATCH, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.dtype == np.int64
    for got, want in zip((x_train, y_train, x_test, y_test), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_cifar10_binary_layout_is_decoded_channels_last(tmp_path: Path) -> None:
    batches = _cifar_batches()
    write_cifar_binary(tmp_path, batches)
    _check_cifar(load_cifar10(tmp_path), batches)


def test_cifar10_python_layout_loads_without_running_code(tmp_path: Path) -> None:
    batches = _cifar_batches(1)
    write_cifar_python(tmp_path, batches)
    _check_cifar(load_cifar10(tmp_path), batches)

    # A pickle that would call a function is refused, not executed.
    evil = tmp_path / "evil"
    write_cifar_python(evil, batches)
    (evil / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": functools.partial(print, "pwned")})
    )
    with pytest.raises(DatasetUnavailableError, match=r"refusing to load functools\.partial"):
        load_cifar10(evil)


def _tarball(batches: dict, workdir: Path) -> bytes:
    write_cifar_binary(workdir, batches)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(workdir / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return buffer.getvalue()


def test_cifar10_tarball_on_disk_is_extracted(tmp_path: Path) -> None:
    batches = _cifar_batches(2)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-binary.tar.gz").write_bytes(_tarball(batches, tmp_path / "w"))
    _check_cifar(load_cifar10(tmp_path / "data"), batches)


@contextlib.contextmanager
def serve(files: dict[str, bytes]) -> Iterator[str]:
    """Serve `files` over HTTP on 127.0.0.1 (a free port); yield the base URL; always stop."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_cifar10_download_fetches_and_extracts_once(tmp_path: Path) -> None:
    batches = _cifar_batches(3)
    archive = _tarball(batches, tmp_path / "w")
    root = tmp_path / "cache"
    with serve({"cifar.tgz": archive}) as base:
        _check_cifar(load_cifar10(root, download=True, url=base + "cifar.tgz"), batches)
    # Second call: the files are on disk now, no server needed.
    _check_cifar(load_cifar10(root), batches)


def test_cifar10_missing_and_offline_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="download=True") as info:
        load_cifar10(tmp_path)
    assert str(tmp_path) in str(info.value)
    with serve({}) as base, pytest.raises(DatasetUnavailableError, match="404"):
        load_cifar10(tmp_path, download=True, url=base + "missing.tgz")
    assert not any(tmp_path.iterdir())  # a failed download leaves no partial file behind


def test_cifar10_damaged_file_is_reported(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path, _cifar_batches())
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetUnavailableError, match="damaged"):
        load_cifar10(tmp_path)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist_files(seed: int = 0) -> tuple[dict[str, bytes], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays = [
        rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 6).astype(np.uint8),
        rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 3).astype(np.uint8),
    ]
    names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    return {f"{n}.gz": gzip.compress(_idx(a)) for n, a in zip(names, arrays, strict=True)}, arrays


def _check_mnist(loaded, arrays: list[np.ndarray]) -> None:
    (x_train, y_train), (x_test, y_test) = loaded
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    for got, want in zip((x_train, y_train, x_test, y_test), arrays, strict=True):
        np.testing.assert_array_equal(got, want)


def test_mnist_idx_files_plain_gz_and_torchvision_layout(tmp_path: Path) -> None:
    files, arrays = _mnist_files()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    _check_mnist(load_mnist(tmp_path), arrays)
    plain = tmp_path / "plain"
    plain.mkdir()
    for name, data in files.items():
        (plain / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    _check_mnist(load_mnist(plain), arrays)
    assert read_idx(plain / "t10k-images-idx3-ubyte").shape == (3, 28, 28)


def test_mnist_keras_npz(tmp_path: Path) -> None:
    _, arrays = _mnist_files(1)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=arrays[0],
        y_train=arrays[1],
        x_test=arrays[2],
        y_test=arrays[3],
    )
    _check_mnist(load_mnist(tmp_path), arrays)


def test_mnist_download_and_errors(tmp_path: Path) -> None:
    files, arrays = _mnist_files(2)
    with serve(files) as base:
        _check_mnist(load_mnist(tmp_path / "cache", download=True, url=base), arrays)
    with pytest.raises(DatasetUnavailableError, match="MNIST is not on disk"):
        load_mnist(tmp_path / "empty")
    truncated = tmp_path / "bad"
    truncated.mkdir()
    for name, data in files.items():
        (truncated / name).write_bytes(data)
    (truncated / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(arrays[1])[:-2]))
    with pytest.raises(DatasetUnavailableError, match="damaged"):
        load_mnist(truncated)


def test_loaders_search_roost_data_when_no_root_is_given(tmp_path: Path, monkeypatch) -> None:
    batches = _cifar_batches(4)
    write_cifar_binary(tmp_path, batches)
    monkeypatch.setenv("ROOST_DATA", str(tmp_path))
    _check_cifar(load_cifar10(), batches)


def test_make_classification_is_seeded_balanced_and_separable() -> None:
    x, y = make_classification(600, num_features=8, num_classes=3, seed=4)
    again, _ = make_classification(600, num_features=8, num_classes=3, seed=4)
    np.testing.assert_array_equal(x, again)
    assert x.shape == (600, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(y), [200, 200, 200])
    # Nearest class mean (computed here) separates the blobs well.
    means = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).mean() > 0.9


def test_make_cifar_like_has_cifar_shapes_and_class_structure() -> None:
    x, y = make_cifar_like(200, seed=0)
    assert x.shape == (200, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    flat = x.reshape(len(x), -1).astype(np.float64)
    means = np.stack([flat[y == c].mean(axis=0) for c in range(10)])
    nearest = np.argmin(((flat[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).mean() > 0.9
    np.testing.assert_array_equal(make_cifar_like(5, seed=1)[0], make_cifar_like(5, seed=1)[0])
