"""Data made by code: a classification problem of any size, and a CIFAR-10-shaped stand-in.

Both are seeded, need no download and no ML framework, and are learnable: each class has its own
centre (or prototype image) and samples scatter around it.
"""

from __future__ import annotations

import numpy as np

from roost.errors import ConfigurationError


def make_classification(
    num_samples: int,
    num_features: int = 20,
    num_classes: int = 2,
    *,
    class_sep: float = 2.0,
    noise: float = 1.0,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: `x` float32 (num_samples, num_features) and balanced `y` int64 labels.

    Class centres are drawn from N(0, class_sep²) per feature; each sample adds N(0, noise²).
    Larger `class_sep / noise` makes the problem easier.
    """
    if num_samples < 1 or num_features < 1 or num_classes < 2:
        raise ConfigurationError(
            "make_classification needs num_samples >= 1, num_features >= 1 and num_classes >= 2; "
            f"got {num_samples}, {num_features}, {num_classes}"
        )
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, class_sep, size=(num_classes, num_features))
    y = rng.permutation(np.arange(num_samples) % num_classes).astype(np.int64)
    x = centres[y] + rng.normal(0.0, noise, size=(num_samples, num_features))
    return x.astype(np.float32), y


def make_cifar_like(
    num_samples: int, *, num_classes: int = 10, noise: float = 40.0, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images shaped like CIFAR-10: `x` uint8 (n, 32, 32, 3), `y` int64 in [0, num_classes).

    Each class has a smooth random prototype (a 4×4×3 pattern scaled up to 32×32); a sample is its
    class prototype plus pixel noise with standard deviation `noise`, clipped to 0–255. It stands
    in for CIFAR-10 when the real files are not on disk; it is far easier than the real thing.
    """
    if num_samples < 1 or num_classes < 2:
        raise ConfigurationError(
            f"make_cifar_like needs num_samples >= 1 and num_classes >= 2; got {num_samples}, "
            f"{num_classes}"
        )
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40.0, 215.0, size=(num_classes, 4, 4, 3))
    prototypes = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    y = rng.permutation(np.arange(num_samples) % num_classes).astype(np.int64)
    x = prototypes[y] + rng.normal(0.0, noise, size=(num_samples, 32, 32, 3))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), y
