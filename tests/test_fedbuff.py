"""FedBuff / FedAsync on the simulated clock: staleness, event order, determinism, resume, DP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import roost
from roost.apps.digits import make_client_fn
from roost.cli import main
from roost.client.client import Client
from roost.core.simclock import ClientProfile, ClientProfiles
from roost.errors import ConfigurationError
from roost.privacy.central import CentralDP
from roost.privacy.preset import with_central_dp
from roost.strategy import (
    ConstantStaleness,
    HingeStaleness,
    Mean,
    PolynomialStaleness,
    SecureAggregation,
    uniform_weight,
)


def test_staleness_functions() -> None:
    assert [ConstantStaleness()(s) for s in (0, 5)] == [1.0, 1.0]
    assert PolynomialStaleness(0.5)(3) == pytest.approx(0.5)
    assert [HingeStaleness(10, 4)(s) for s in (0, 4, 5, 6)] == pytest.approx([1, 1, 1 / 11, 1 / 21])
    with pytest.raises(ConfigurationError, match="unknown staleness function 'linear'"):
        roost.FedBuff(staleness="linear")
    with pytest.raises(ConfigurationError, match="a must be >= 0"):
        PolynomialStaleness(-1)
    with pytest.raises(ConfigurationError, match="polynomial staleness takes only a; drop stal"):
        roost.FedBuff(staleness_b=3)  # the hinge's cutoff, silently ignored before
    with pytest.raises(ConfigurationError, match="constant staleness takes none"):
        roost.FedBuff(staleness="constant", staleness_a=0.5)


class PlusOne(Client):
    """Returns the model it got plus one, from 10 examples: every update is exactly +1."""

    def get_parameters(self, config):
        return [np.zeros(3)]

    def fit(self, parameters, config):
        return [parameters[0] + 1.0], 10, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


# Clients 0, 1, 2 take 1, 1/2, 1/4 virtual seconds (10 examples; links instant).
SPEEDS = ClientProfiles({str(i): ClientProfile(10.0 * 2**i, 1e15, 0.0) for i in range(3)})


def _plus_one_run(strategy: roost.Strategy, rounds: int, **options: object) -> roost.History:
    return roost.run_simulation(
        lambda context: PlusOne(),
        3,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=0,
        engine="sequential",
        clock=roost.VirtualClock(SPEEDS),
        **options,  # type: ignore[arg-type]
    )


def test_fedasync_applies_each_arrival_in_virtual_time_order_scaled_by_staleness() -> None:
    strategy = roost.FedAsync(
        concurrency=3, staleness="polynomial", initial_parameters=[np.zeros(3)],
        fraction_evaluate=0.0,
    )  # fmt: skip
    history = _plus_one_run(strategy, 6)
    times = [r.virtual_time for r in history.rounds]
    # Client 2 arrives at 1/4 and is sent out again (the only idle one); at 1/2 both client 1
    # and client 2's second task finish: dispatched first, client 1 goes first.
    assert times[:4] == pytest.approx([0.25, 0.5, 0.5, 0.75])
    staleness = [s for _, s in history.measurements["staleness_max"]]
    assert staleness[:3] == [0, 1, 1]
    expected = sum((1 + s) ** -0.5 for s in staleness)
    np.testing.assert_allclose(history.parameters[0], np.full(3, expected))


def test_fedbuff_aggregates_every_b_arrivals_and_is_deterministic() -> None:
    def run() -> roost.History:
        strategy = roost.FedBuff(
            concurrency=3, buffer_size=2, staleness="constant", initial_parameters=[np.zeros(3)],
            fraction_evaluate=0.0,
        )  # fmt: skip
        return _plus_one_run(strategy, 4)

    first, second = run(), run()
    # Two updates of +1, each weighted by its 10 examples: the mean moves the model by 1.
    np.testing.assert_allclose(first.parameters[0], np.full(3, 4.0))
    assert [r.virtual_time for r in first.rounds] == [r.virtual_time for r in second.rounds]
    assert first.measurements == second.measurements


class PlusOwnId(PlusOne):
    """Adds its partition id + 1 to the model: the aggregate tells who contributed."""

    def __init__(self, partition_id: int) -> None:
        self.step = float(partition_id + 1)

    def fit(self, parameters, config):
        return [parameters[0] + self.step], 10, {}


def test_a_fast_client_contributes_once_per_aggregation() -> None:
    """Client 2 (1/4 s) would finish twice before client 0 (1 s): it waits for the next buffer,
    so each aggregation is one update from each of B different clients (central DP's
    sensitivity per release rests on it)."""
    strategy = roost.FedBuff(
        concurrency=3, buffer_size=3, staleness="constant", initial_parameters=[np.zeros(3)],
        fraction_evaluate=0.0,
    )  # fmt: skip
    history = roost.run_simulation(
        lambda context: PlusOwnId(context.partition_id), 3, strategy=strategy,
        config=roost.ServerConfig(num_rounds=1), seed=0, clock=roost.VirtualClock(SPEEDS),
    )  # fmt: skip
    np.testing.assert_allclose(history.parameters[0], np.full(3, (1 + 2 + 3) / 3))
    assert history.rounds[0].virtual_time == pytest.approx(1.0)
    # With a virtual deadline of 0.6 s, client 0 (1 s) is a timeout at 0.6 s, as each task
    # of a deployment is under --round-timeout: the buffer holds clients 2 and 1's updates.
    deadline = roost.VirtualClock(SPEEDS, deadline=0.6)
    history = roost.run_simulation(
        lambda context: PlusOwnId(context.partition_id), 3, strategy=strategy,
        config=roost.ServerConfig(num_rounds=1), seed=0, clock=deadline,
    )  # fmt: skip
    np.testing.assert_allclose(history.parameters[0], np.full(3, (2 + 3) / 2))
    assert history.rounds[0].virtual_time == pytest.approx(0.6)
    assert history.rounds[0].failed_clients == ["0"]
    with pytest.raises(ConfigurationError, match="buffer_size = 4 different clients"):
        _plus_one_run(roost.FedBuff(concurrency=3, buffer_size=4), 1)


def _digits_fedbuff(state: Path, rounds: int, resume: bool = False) -> roost.History:
    strategy = roost.FedBuff(
        concurrency=6,
        buffer_size=3,
        initial_parameters=[np.zeros((64, 10)), np.zeros(10)],
        fraction_evaluate=0.0,
        on_fit_config_fn=lambda r: {"server_round": r, "lr": 0.3},
    )
    return roost.run_simulation(
        make_client_fn(0),
        10,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=1,
        engine="sequential",
        clock=roost.VirtualClock(ClientProfiles.heavy_tailed(10, 0.2, 10.0, seed=1)),
        state_dir=state,
        resume=resume,
    )


def test_a_killed_and_resumed_fedbuff_run_ends_with_the_same_model(tmp_path: Path) -> None:
    whole = _digits_fedbuff(tmp_path / "whole", 6)
    _digits_fedbuff(tmp_path / "cut", 3)  # "killed" after its third aggregation was recorded
    resumed = _digits_fedbuff(tmp_path / "cut", 6, resume=True)
    for a, b in zip(whole.parameters, resumed.parameters, strict=True):
        assert a.tobytes() == b.tobytes()
    assert [r.virtual_time for r in whole.rounds] == [r.virtual_time for r in resumed.rounds]
    assert whole.measurements == resumed.measurements


def test_dp_noise_and_accounting_once_per_aggregation() -> None:
    central = CentralDP(1.0, 0.5, expected_clients=2, num_clients=2, seed=0)
    strategy = roost.FedBuff(
        concurrency=3, buffer_size=2, aggregator=Mean(), weight_fn=uniform_weight,
        update_transforms=[central], initial_parameters=[np.zeros(3)],
    )  # fmt: skip
    history = _plus_one_run(strategy, 3)
    privacy = history.privacy
    assert privacy is not None and privacy.kind == "central"
    assert privacy.epsilon == [(r, pytest.approx(central.epsilon(r))) for r in (1, 2, 3)]
    # Each aggregation's mean is of two updates clipped to 0.5 plus noise: not exactly 0.5 each.
    assert not np.allclose(history.parameters[0], 1.5)
    assert "staleness_max" not in history.measurements  # client statistics, withheld under DP
    assert all(r.withheld for r in history.rounds)


def test_fedbuff_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ConfigurationError, match="buffer_size must be >= 1"):
        roost.FedBuff(buffer_size=0)
    with pytest.raises(ConfigurationError, match="secure aggregation needs a whole cohort"):
        roost.FedBuff(secure_aggregation=SecureAggregation())
    with pytest.raises(ConfigurationError, match="does not compress updates yet"):
        roost.FedBuff(compression="q8")
    with pytest.raises(ConfigurationError, match="server_learning_rate or server_optimizer"):
        roost.FedBuff(server_learning_rate=0.5, server_optimizer=roost.strategy.ServerSGD())
    with pytest.raises(ConfigurationError, match=r"keeps time: simulate it .* or deploy it"):
        roost.run_rounds(
            roost.FedBuff(initial_parameters=[np.zeros(3)]),
            _no_clock(),
            roost.ServerConfig(num_rounds=1),
        )


def _no_clock():
    from roost.engines.sequential import SequentialEngine

    return SequentialEngine(lambda context: PlusOne(), 3)


def test_simulate_fedbuff_on_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            *("simulate", "--quiet", "--no-plot", "--strategy", "fedbuff", "--rounds", "3"),
            *("--concurrency", "6", "--buffer-size", "3", "--staleness", "hinge"),
            *("--client-speeds", "slow:0.1:10", "--out", str(out)),
        ]
    )
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    times = [r["virtual_time"] for r in history["rounds"]]
    assert len(times) == 3 and times == sorted(times) and times[0] > 0
    assert len(history["measurements"]["staleness_max"]) == 3
    rows = (out / "history.csv").read_text().splitlines()
    header = rows[0].split(",")  # the spreadsheet has the versions' staleness too
    column = [row.split(",")[header.index("measured_staleness_max")] for row in rows[2:]]
    assert column == [str(s) for _, s in history["measurements"]["staleness_max"]]
    assert main(["simulate", "--quiet", "--virtual-deadline", "3"]) != 0


def test_central_dp_from_the_command_line_is_refused_for_fedbuff(capsys) -> None:
    with pytest.raises(ConfigurationError, match="give FedBuff a CentralDP transform"):
        with_central_dp(roost.FedBuff(), noise_multiplier=1.0, clip_norm=1.0,
                        expected_clients=5, num_clients=10)  # fmt: skip
    dp = ["--dp", "central", "--noise-multiplier", "1", "--clip-norm", "1"]
    assert main(["simulate", "--quiet", "--strategy", "fedbuff", *dp]) != 0
    assert "--strategy fedbuff is asynchronous" in capsys.readouterr().err


@pytest.mark.slow
def test_fedbuff_gives_the_same_model_on_the_vectorized_engine(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    models = []
    for engine in ("sequential", "vectorized"):
        out = tmp_path / engine
        flags = ["--rounds", "3", "--client-speeds", "lognormal:1", "--engine", engine]
        assert main(["simulate", "--quiet", "--no-plot", "--strategy", "fedbuff", *flags,
                     "--out", str(out)]) == 0  # fmt: skip
        with np.load(out / "model.npz") as model:
            models.append([model[name] for name in sorted(model.files)])
    for a, b in zip(*models, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)
