"""DP-FedAvg as a named strategy: `roost.privacy`'s parts wired into one `Strategy`.

`roost.strategy.DPFedAvg` (and ``PRESETS["dpfedavg"]``) is this class. It lives beside the parts it
wires so that the preset table stays small; `dp_fedavg_parts` gives the same parts for a
`Strategy(...)` of your own.
"""

from __future__ import annotations

from typing import Any

from roost.errors import ConfigurationError
from roost.privacy.central import CentralDP, SampledMean
from roost.privacy.sampling import FixedSizeSampler, PoissonSampler
from roost.strategy.strategy import Strategy
from roost.strategy.weighting import uniform_weight

DP_FEDAVG_OPTIONS = (
    "sampling",
    "delta",
    "target_epsilon",
    "accountant",
    "clip_quantile",
    "clip_learning_rate",
    "count_noise_stddev",
    "seed",
)
"""`CentralDP`'s keyword options, which `DPFedAvg` passes on."""


def dp_fedavg_parts(
    noise_multiplier: float | None,
    clip_norm: float | None,
    expected_clients: int | None,
    *,
    num_clients: int | None,
    **options: Any,
) -> dict[str, Any]:
    """The `Strategy` parts of DP-FedAvg: secret sampler, `CentralDP`, unweighted mean.

    Returns `aggregator`, `weight_fn`, `sampler` and `update_transforms` for `Strategy(...)`;
    the arguments are `CentralDP`'s. The sampler is `PoissonSampler(m/N)`, or
    `FixedSizeSampler(m)` for ``sampling="fixed"``, so the accountant analyses what happens.
    """
    required = {
        "noise_multiplier": noise_multiplier,
        "clip_norm": clip_norm,
        "expected_clients": expected_clients,
        "num_clients": num_clients,
    }
    if missing := [name for name, value in required.items() if value is None]:
        raise ConfigurationError(
            f"DP-FedAvg needs {', '.join(missing)}, e.g. DPFedAvg(noise_multiplier=1.0, "
            "clip_norm=0.1, expected_clients=100, num_clients=10_000)"
        )
    if unknown := sorted(set(options) - set(DP_FEDAVG_OPTIONS)):
        raise ConfigurationError(f"DP-FedAvg has no option {', '.join(unknown)}")
    central = CentralDP(**required, **options)
    sampler = (
        FixedSizeSampler(central.expected_clients, seed=central.seed)
        if central.sampling == "fixed"
        else PoissonSampler(central.expected_clients / central.num_clients, seed=central.seed)
    )
    return {
        "aggregator": SampledMean(),
        "weight_fn": uniform_weight,
        "sampler": sampler,
        "update_transforms": [central],
    }


class DPFedAvg(Strategy):
    """DP-FedAvg (McMahan et al., ICLR 2018): secret sampling, clipping, noise, accounting.

    Each round a secret sampler picks the cohort, `CentralDP` clips every update to C, adds
    Gaussian noise of std σ·C to their sum and divides by m, and the accountant records `epsilon`
    (at δ) in `History.measurements`. Any server optimizer may follow (DP-FedAdam:
    ``server_optimizer=ServerAdam(...)``).

    Args:
        noise_multiplier: σ.
        clip_norm: C (the starting bound with `clip_quantile`).
        expected_clients: m, clients per round (expected, with Poisson sampling).
        num_clients: N, all clients (the accountant needs the sampling rate m/N).
        **kwargs: `CentralDP`'s options — `sampling` ("poisson" or "fixed"), `delta` (default
            1/N^1.1), `target_epsilon`, `accountant` ("rdp" or "pld"), `clip_quantile` (adaptive
            clipping, Andrew et al. 2021), `clip_learning_rate`, `count_noise_stddev`, `seed`
            (research only: the run is then NOT private) — and every `Strategy` knob except the
            parts DP-FedAvg sets itself (aggregator, weight_fn, sampler). `update_transforms`
            run before `CentralDP`, which always comes last.
    """

    def __init__(
        self,
        noise_multiplier: float | None = None,
        clip_norm: float | None = None,
        expected_clients: int | None = None,
        *,
        num_clients: int | None = None,
        **kwargs: Any,
    ) -> None:
        options = {name: kwargs.pop(name) for name in DP_FEDAVG_OPTIONS if name in kwargs}
        parts = dp_fedavg_parts(
            noise_multiplier, clip_norm, expected_clients, num_clients=num_clients, **options
        )
        if taken := sorted(set(parts) & set(kwargs) - {"update_transforms"}):
            raise ConfigurationError(
                f"DPFedAvg sets {', '.join(taken)} itself; build a roost.Strategy(...) with "
                "roost.privacy's parts to choose your own"
            )
        self.central_dp: CentralDP = parts["update_transforms"][0]
        # The user's transforms go first: CentralDP must see the updates last and the mean first.
        parts["update_transforms"] = [*kwargs.pop("update_transforms", ()), self.central_dp]
        super().__init__(**kwargs, **parts)
