"""Flower's central-DP wrappers (fixed clipping on the server or the nodes), fixedclipping_mod."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_flower_strategies import SIZES, make_client_app, run_main, start_with

import roost
from roost.compat.flwr import alias
from roost.compat.flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from roost.compat.flwr.clientapp import ClientApp
from roost.compat.flwr.clientapp.mod import fixedclipping_mod
from roost.compat.flwr.message import ErrorCode, MessageType
from roost.compat.flwr.serverapp import Grid
from roost.compat.flwr.serverapp import strategy as flwr_strategy
from roost.errors import ConfigurationError

# make_client_app's node p adds p + 1 to all 4 entries (w: 3, b: 1): an update of norm 2(p + 1).
# Clipped to C = 3, nodes 1 and 2 send 1.5 per entry; weighted by examples (10, 20, 30):
CLIPPED_MEAN = (SIZES[0] * 1.0 + SIZES[1] * 1.5 + SIZES[2] * 1.5) / sum(SIZES[:3])


def _wrapped(wrapper: type, noise_multiplier: float = 0.0, **fedavg):
    inner = flwr_strategy.FedAvg(min_available_nodes=3, min_train_nodes=3, **fedavg)
    return wrapper(inner, noise_multiplier, 3.0, 3)


def test_server_side_clipping_clips_each_update_before_the_weighted_mean(caplog) -> None:
    results: list = []
    strategy = _wrapped(flwr_strategy.DifferentialPrivacyServerSideFixedClipping)
    with caplog.at_level(logging.WARNING, logger="roost"):
        run_main(start_with(strategy, results), make_client_app())
    np.testing.assert_allclose(results[0].arrays["w"].numpy(), np.full(3, CLIPPED_MEAN))
    np.testing.assert_allclose(results[0].arrays["b"].numpy(), [CLIPPED_MEAN])
    assert "no privacy" in caplog.text  # σ = 0 says so


def test_client_side_clipping_sends_the_norm_and_the_mod_clips_on_the_node() -> None:
    results: list = []
    configs: list[dict] = []
    client_app = make_client_app(configs)
    client_app.mods = [fixedclipping_mod]
    strategy = _wrapped(flwr_strategy.DifferentialPrivacyClientSideFixedClipping)

    def main(grid: Grid, context: Context) -> None:
        # The mod, like Flower's, needs the reply's array names to be those sent: the nodes
        # here reply with ArrayRecord(list), so the server sends one too.
        arrays = ArrayRecord([np.zeros(3), np.zeros(1)])
        results.append(strategy.start(grid=grid, initial_arrays=arrays, num_rounds=1))

    run_main(main, client_app)
    assert [config["clipping_norm"] for config in configs] == [3.0] * 3
    np.testing.assert_allclose(results[0].arrays["0"].numpy(), np.full(3, CLIPPED_MEAN))


def test_the_noise_on_the_aggregate_has_std_sigma_c_over_m_and_is_not_the_run_seed() -> None:
    """σ = 2, C = 3, m = 3: noise of std 2 on every entry of the aggregated update."""
    finals = []
    for _ in range(2):  # the same run seed twice: the noise comes from the OS, not the seed
        results: list = []
        strategy = _wrapped(flwr_strategy.DifferentialPrivacyServerSideFixedClipping, 2.0)

        def main(grid: Grid, context: Context, strategy=strategy, results=results) -> None:
            arrays = ArrayRecord({"w": np.zeros(20_000, np.float32), "b": np.zeros(1)})
            results.append(strategy.start(grid=grid, initial_arrays=arrays, num_rounds=1))

        run_main(main, make_client_app())
        finals.append(results[0].arrays["w"].numpy())
    for final in finals:
        # Each update (p + 1 on 20,001 entries) is clipped to norm 3: entries of 3/√20001.
        noise = final.astype(np.float64) - 3.0 / np.sqrt(20_001)
        assert final.dtype == np.float32
        assert abs(noise.std() / 2.0 - 1.0) < 0.03  # about 6 standard errors
        assert abs(noise.mean()) < 0.06
    assert not np.allclose(finals[0], finals[1])


def test_fixedclipping_mod_clips_the_reply_and_refuses_a_message_without_the_norm() -> None:
    sent = ArrayRecord({"w": np.ones(4, np.float32)})

    def trains_far(msg: Message, context: Context) -> Message:
        arrays = {"w": msg.content["arrays"]["w"].numpy() + 10.0}
        return Message(RecordDict({"arrays": ArrayRecord(arrays)}), reply_to=msg)

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    content = RecordDict({"arrays": sent, "config": ConfigRecord({"clipping_norm": 2.0})})
    reply = fixedclipping_mod(Message(content, 1, MessageType.TRAIN), context, trains_far)
    # The update (10 on 4 entries, norm 20) is scaled to norm 2: 1 per entry, added back.
    np.testing.assert_allclose(reply.content["arrays"]["w"].numpy(), np.full(4, 2.0))
    assert list(reply.content["arrays"]) == ["w"]

    missing = RecordDict({"arrays": sent, "config": ConfigRecord({"lr": 0.1})})
    refused = fixedclipping_mod(Message(missing, 1, MessageType.TRAIN), context, trains_far)
    assert refused.has_error() and refused.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "DifferentialPrivacyClientSideFixedClipping" in refused.error.reason
    for bad_norm in (-1.0, float("inf"), "2"):
        config = ConfigRecord({"clipping_norm": bad_norm})
        bad = fixedclipping_mod(
            Message(RecordDict({"arrays": sent, "config": config}), 1, MessageType.TRAIN),
            context,
            trains_far,
        )
        assert bad.has_error() and "finite number > 0" in bad.error.reason
    renamed = lambda msg, context: Message(  # noqa: E731
        RecordDict({"arrays": ArrayRecord([np.ones(4)])}), reply_to=msg
    )
    mismatch = fixedclipping_mod(Message(content, 1, MessageType.TRAIN), context, renamed)
    assert mismatch.has_error() and "same names" in mismatch.error.reason
    # Other message types pass through untouched.
    evaluated = fixedclipping_mod(Message(missing, 1, MessageType.EVALUATE), context, trains_far)
    np.testing.assert_allclose(evaluated.content["arrays"]["w"].numpy(), np.full(4, 11.0))


class _Own(flwr_strategy.Strategy):
    """A strategy written from scratch: the wrappers take named strategies only."""

    def configure_train(self, server_round, arrays, config, grid):
        return []

    def aggregate_train(self, server_round, replies):
        return None, None

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []

    def aggregate_evaluate(self, server_round, replies):
        return None

    def summary(self) -> None:
        pass


def test_the_wrappers_check_their_arguments_and_what_they_wrap() -> None:
    wrapper = flwr_strategy.DifferentialPrivacyServerSideFixedClipping
    inner = flwr_strategy.FedAvg()
    for bad in (
        {"noise_multiplier": -1.0},
        {"noise_multiplier": float("nan")},
        {"clipping_norm": 0.0},
        {"clipping_norm": float("inf")},
        {"num_sampled_clients": 0},
        {"num_sampled_clients": 2.5},
    ):
        arguments = {"noise_multiplier": 1.0, "clipping_norm": 1.0, "num_sampled_clients": 2}
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            wrapper(inner, **{**arguments, **bad})
    with pytest.raises(ConfigurationError, match="named strategies"):
        wrapper(_Own(), 1.0, 1.0, 2)
    assert "server-side clipping" in repr(wrapper(inner, 1.0, 1.0, 2))


def test_a_flower_app_imports_the_wrappers_and_the_mod_by_their_flower_names() -> None:
    with alias.flower_alias():
        from flwr.clientapp.mod import LocalDpMod
        from flwr.clientapp.mod import fixedclipping_mod as flower_mod
        from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

        assert flower_mod is fixedclipping_mod
        assert LocalDpMod.__module__ == "roost.compat.flwr.clientapp.mod"
        assert DifferentialPrivacyClientSideFixedClipping.__module__.startswith("roost.")
        assert isinstance(ClientApp(mods=[flower_mod]), ClientApp)


class _AddsItsNumber(roost.Client):
    """The older client form: client p adds p + 1 to every entry, with SIZES[p] examples."""

    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id

    def fit(self, parameters, config):
        return [p + self.partition_id + 1 for p in parameters], SIZES[self.partition_id], {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def test_the_older_strategy_api_wrapper_rebuilds_the_strategy_with_clipping_and_noise() -> None:
    from roost.compat.flwr.server import strategy as older

    inner = older.FedAvg(
        initial_parameters=[np.zeros(3), np.zeros(1)],
        min_fit_clients=3,
        min_available_clients=3,
        fraction_evaluate=0.0,
    )
    wrapped = older.DifferentialPrivacyServerSideFixedClipping(inner, 0.0, 3.0, 3)
    assert type(wrapped) is older.FedAvg and wrapped.fraction_evaluate == 0.0
    assert inner.update_transforms.transforms == ()  # the user's strategy is left as it was
    history = roost.run_simulation(
        lambda context: _AddsItsNumber(context.partition_id),
        3,
        strategy=wrapped,
        config=roost.ServerConfig(num_rounds=1),
        seed=0,
    )
    np.testing.assert_allclose(history.parameters[0], np.full(3, CLIPPED_MEAN))
    with pytest.raises(ConfigurationError, match="named strategies"):
        older.DifferentialPrivacyServerSideFixedClipping(roost.FedAvg(), 1.0, 1.0, 3)
    with pytest.raises(ConfigurationError, match="clipping_norm"):
        older.DifferentialPrivacyServerSideFixedClipping(inner, 1.0, -1.0, 3)


class _RecordsItsConfig(_AddsItsNumber):
    def __init__(self, partition_id: int, configs: list) -> None:
        super().__init__(partition_id)
        self.configs = configs

    def fit(self, parameters, config):
        self.configs.append(dict(config))
        return super().fit(parameters, config)


def test_the_older_client_side_wrapper_sends_c_clips_and_adds_noise_of_std_sigma_c_over_m():
    """σ = 2, C = 3, m = 3 through roost's round loop: configs carry C, updates arrive clipped
    (the server clips too: these clients run no mod) and the aggregate has noise of std 2."""
    from roost.compat.flwr.server import strategy as older

    inner = older.FedAvg(
        initial_parameters=[np.zeros(20_000, np.float32), np.zeros(1)],
        min_fit_clients=3,
        min_available_clients=3,
        fraction_evaluate=0.0,
        on_fit_config_fn=lambda server_round: {"lr": 0.1},
    )
    wrapped = older.DifferentialPrivacyClientSideFixedClipping(
        inner, noise_multiplier=2.0, clipping_norm=3.0, num_sampled_clients=3
    )
    assert type(wrapped) is older.FedAvg and inner.fit_config_defaults == {}
    configs: list = []
    history = roost.run_simulation(
        lambda context: _RecordsItsConfig(context.partition_id, configs),
        3,
        strategy=wrapped,
        config=roost.ServerConfig(num_rounds=1),
        seed=0,
    )
    assert sorted(configs, key=str) == [{"clipping_norm": 3.0, "lr": 0.1}] * 3
    # Each update (p + 1 on 20,001 entries) is clipped to norm 3: entries of 3/√20001.
    noise = history.parameters[0].astype(np.float64) - 3.0 / np.sqrt(20_001)
    assert abs(noise.std() / 2.0 - 1.0) < 0.03  # about 6 standard errors
    assert abs(noise.mean()) < 0.06
    with pytest.raises(ConfigurationError, match="ClientSideFixedClipping wraps one of"):
        older.DifferentialPrivacyClientSideFixedClipping(roost.FedAvg(), 1.0, 1.0, 3)
    with pytest.raises(ConfigurationError, match="num_sampled_clients"):
        older.DifferentialPrivacyClientSideFixedClipping(inner, 1.0, 1.0, 0)


_DP_SERVER = """
    import numpy as np
    from flwr.app import ArrayRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg

    app = ServerApp()

    @app.main()
    def main(grid, context):
        strategy = DifferentialPrivacyClientSideFixedClipping(
            FedAvg(), noise_multiplier=0.0, clipping_norm=0.5, num_sampled_clients=2
        )
        strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(4)]), num_rounds=2)
"""

_DP_CLIENT = """
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import fixedclipping_mod

    app = ClientApp(mods=[fixedclipping_mod])

    @app.train()
    def train(msg, context):
        step = 10.0 * (context.node_config["partition-id"] + 1)
        arrays = [a + step for a in msg.content["arrays"].to_numpy_ndarrays()]
        content = RecordDict(
            {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 5})}
        )
        return Message(content, reply_to=msg)
"""


def test_a_flower_project_with_client_side_dp_runs_unchanged(tmp_path) -> None:
    """Files as Flower's DP guide writes them: each round moves the model by at most C."""
    from test_flower_apps import _write_project

    from roost.compat.flwr.project import run_project

    project = _write_project(tmp_path / "dp", _DP_SERVER, _DP_CLIENT)
    history = run_project(project, num_nodes=2, seed=0)
    assert [r.fit_results for r in history.rounds] == [2, 2]
    # Updates of 10 and 20 on 4 entries, clipped on the nodes to norm 0.5: 0.25 per entry.
    np.testing.assert_allclose(history.parameters[0], np.full(4, 0.5))


def test_local_dp_mod_clips_then_adds_noise_of_the_gaussian_calibration(caplog) -> None:
    from roost.compat.flwr.clientapp.mod import LocalDpMod

    with caplog.at_level(logging.WARNING, logger="roost"):
        mod = LocalDpMod(clipping_norm=1.0, sensitivity=2.0, epsilon=0.5, delta=1e-5)
    assert caplog.text == ""  # ε < 1 and sensitivity 2C: the calibration holds
    expected_std = 2.0 * np.sqrt(2 * np.log(1.25 / 1e-5)) / 0.5
    assert mod.noise_stddev == pytest.approx(expected_std)
    sent = ArrayRecord({"w": np.zeros(40_000, np.float32), "steps": np.zeros(2, np.int64)})

    def trains(msg: Message, context: Context) -> Message:
        received = msg.content["arrays"]
        arrays = {"w": received["w"].numpy() + 1.0, "steps": received["steps"].numpy() + 3}
        return Message(RecordDict({"arrays": ArrayRecord(arrays)}), reply_to=msg)

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    message = Message(RecordDict({"arrays": sent}), 1, MessageType.TRAIN)
    replies = [mod(message, context, trains).content["arrays"] for _ in range(2)]
    for reply in replies:
        w = reply["w"].numpy()
        assert w.dtype == np.float32
        # The update (1 on 40,000 floats, 3 on 2 ints) is clipped to norm 1: w moves by ~1/200.
        assert abs(w.std() / expected_std - 1.0) < 0.02  # about 6 standard errors
        assert abs(w.mean()) < 6 * expected_std / np.sqrt(w.size)  # 6 standard errors
        np.testing.assert_array_equal(reply["steps"].numpy(), [0, 0])  # ints: clipped, no noise
    assert not np.array_equal(replies[0]["w"].numpy(), replies[1]["w"].numpy())  # fresh noise
    for bad in ({"epsilon": 0.0}, {"delta": 1.0}, {"clipping_norm": -1.0}, {"sensitivity": -1}):
        arguments = {"clipping_norm": 1.0, "sensitivity": 2.0, "epsilon": 0.5, "delta": 1e-5}
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            LocalDpMod(**{**arguments, **bad})
    with caplog.at_level(logging.WARNING, logger="roost"):
        LocalDpMod(clipping_norm=1.0, sensitivity=1.0, epsilon=2.0, delta=1e-5)
    assert "not (ε, δ)-DP as stated" in caplog.text
