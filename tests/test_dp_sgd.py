"""Record-level DP-SGD: PyTorch clients train through Opacus, report their ε, history keeps it."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import roost
from roost.cli.report import history_table
from roost.client.client import Client
from roost.client.dp_sgd import DPSGD, RECORD_DELTA, RECORD_EPSILON, STATE_KEY
from roost.core.config_keys import SERVER_ROUND
from roost.data.bundled_digits import load_digits_split
from roost.data.partition import iid_partition
from roost.errors import ConfigurationError
from roost.server.history import History, RoundRecord
from roost.server.loop import ServerConfig
from roost.simulation import run_simulation

torch = pytest.importorskip("torch")
accountants = pytest.importorskip("opacus.accountants")
from torch import nn  # noqa: E402

from roost.client.torch import TorchClient  # noqa: E402
from roost.tasks import SGD  # noqa: E402

SIGMA, CLIP, DELTA, BATCH = 1.1, 1.0, 1e-5, 32


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def digits_client(context: roost.Context) -> TorchClient:
    """A `roost new --framework pytorch` style client: an MLP on its share of the digits."""
    train, _ = load_digits_split(seed=0)
    part = iid_partition(len(train.y), context.num_partitions, seed=0)[context.partition_id]
    return TorchClient(
        net,
        (train.x[part].astype(np.float32), train.y[part]),
        optimizer=SGD(lr=0.2),
        batch_size=BATCH,
        partition_id=context.partition_id,
        dp_sgd=DPSGD(noise_multiplier=SIGMA, max_grad_norm=CLIP, delta=DELTA),
        state=context.state,
    )


def test_reported_epsilon_is_opacus_rdp_accountant_over_every_round_trained() -> None:
    context = roost.Context.for_partition(0, 4)
    parameters = digits_client(context).get_parameters({})
    reported = []
    for server_round in (1, 2):
        # A fresh client object each round (a cold client): the accountant lives in the context.
        parameters, num_examples, metrics = digits_client(context).fit(
            parameters, {SERVER_ROUND: server_round}
        )
        reported.append(metrics[RECORD_EPSILON])
        assert metrics[RECORD_DELTA] == DELTA
    # Opacus' Poisson sampling: rate 1 / (batches per epoch); one step per batch, one epoch.
    expected = [rdp_epsilon(num_examples, rounds) for rounds in (1, 2)]
    assert reported == pytest.approx(expected, rel=1e-12)
    steps = math.ceil(num_examples / BATCH)
    assert reported[1] > reported[0] > 0
    assert context.state[STATE_KEY] == [[SIGMA, 1 / steps, 2 * steps]]
    assert all(np.isfinite(a).all() for a in parameters)


class Stop(Exception):
    pass


def stop_after_round_1(state: roost.ServerState) -> None:
    if state.server_round == 1:
        raise Stop


def rdp_epsilon(num_examples: int, rounds: int) -> float:
    """Opacus' RDP accountant after `rounds` one-epoch rounds on `num_examples` examples."""
    steps = math.ceil(num_examples / BATCH)
    accountant = accountants.RDPAccountant()
    accountant.history = [(SIGMA, 1 / steps, steps * rounds)]
    return accountant.get_epsilon(delta=DELTA)


def test_two_dp_sgd_clients_two_rounds_resumed_show_record_epsilon_growing(tmp_path) -> None:
    def run(**options) -> History:
        return run_simulation(
            digits_client,
            2,
            config=ServerConfig(num_rounds=2),
            seed=0,
            engine="sequential",
            state_dir=tmp_path / "state",
            **options,
        )

    with pytest.raises(Stop):
        run(on_round_end=stop_after_round_1)
    # The resumed round 2 continues each client's accountant from the recorded node state.
    history = run(resume=True, out_dir=tmp_path / "out")
    record = history.record_privacy
    assert record is not None and record.kind == "record" and record.delta == DELTA
    (r1, eps1), (r2, eps2) = record.epsilon
    assert (r1, r2) == (1, 2) and 0 < eps1 < eps2
    train, _ = load_digits_split(seed=0)
    sizes = [len(part) for part in iid_partition(len(train.y), 2, seed=0)]
    assert eps2 == pytest.approx(max(rdp_epsilon(n, 2) for n in sizes), rel=1e-12)
    assert history.privacy is None  # no client-level DP in this run
    saved = History.from_json((tmp_path / "out" / "history.json").read_text())
    assert saved.record_privacy == record
    columns = {c.header: c._cells for c in history_table(history).columns}
    assert columns["record ε"] == [f"{eps1:.4f}", f"{eps2:.4f}"]


class Reporting(Client):
    """A client that reports a given record-level ε, to check what the server keeps."""

    def __init__(self, epsilon: object, delta: object = DELTA) -> None:
        self.epsilon, self.delta, self.fits = epsilon, delta, 0

    def get_parameters(self, config):
        return [np.zeros(2, dtype=np.float32)]

    def fit(self, parameters, config):
        self.fits += 1  # its ε grows with every round it trains in
        epsilon = self.epsilon * self.fits if isinstance(self.epsilon, float) else self.epsilon
        return parameters, 1, {RECORD_EPSILON: epsilon, RECORD_DELTA: self.delta}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


@pytest.mark.parametrize(
    ("third", "expected"),
    [
        (Reporting(0.5, 1e-6), [(1, 2.0), (2, 4.0)]),  # max over the round's clients
        (Reporting("a lot"), [(1, 2.0), (2, 4.0)]),  # not a number: left out
        (Reporting(float("nan")), [(1, 2.0), (2, 4.0)]),  # not finite: left out
        (Reporting(9.0, 2.0), [(1, 2.0), (2, 4.0)]),  # δ ≥ 1 is no guarantee: left out
    ],
)
def test_the_server_records_the_largest_valid_epsilon_of_each_round(third, expected) -> None:
    clients = [Reporting(1.0), Reporting(2.0, 1e-5), third]
    history = run_simulation(
        lambda context: clients[context.partition_id], 3, config=ServerConfig(num_rounds=2), seed=0
    )
    assert history.record_privacy.epsilon == expected
    assert history.record_privacy.delta == 1e-5
    assert History.from_json(history.to_json()).record_privacy == history.record_privacy


class PlainClient(Client):
    def get_parameters(self, config):
        return [np.zeros(2, dtype=np.float32)]

    def fit(self, parameters, config):
        return parameters, 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def test_a_run_without_dp_sgd_writes_no_record_privacy() -> None:
    history = run_simulation(lambda context: PlainClient(), 2, seed=0)
    assert history.record_privacy is None
    assert "record" not in history.to_json()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier must be a finite number > 0"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm must be a finite number > 0"),
        ({"delta": 1.0}, "delta must be in (0, 1)"),
        ({"accountant": "moments"}, "accountant must be one of rdp, prv, gdp"),
    ],
)
def test_bad_dp_sgd_settings_are_one_clear_line(settings, message) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        DPSGD(**{"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5, **settings})


def test_dp_sgd_refuses_fedprox_and_a_plain_dp_sgd_value() -> None:
    data = (np.zeros((4, 64), dtype=np.float32), np.zeros(4, dtype=np.int64))
    settings = DPSGD(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    client = TorchClient(net, data, proximal_mu=0.1, dp_sgd=settings)
    with pytest.raises(ConfigurationError, match="proximal_mu to 0"):
        client.fit(client.get_parameters({}), {})
    with pytest.raises(ConfigurationError, match="dp_sgd must be a DPSGD"):
        TorchClient(net, data, dp_sgd={"noise_multiplier": 1.0})


def test_the_summary_table_shows_record_epsilon_beside_client_level_epsilon() -> None:
    history = History(
        losses_centralized=[(0, 2.3), (1, 2.0)],
        measurements={"local_epsilon": [(1, 3.0)], "delta": [(1, 1e-4)]},
        rounds=[RoundRecord(1, fit_results=2, record_epsilon=0.75, record_delta=1e-5)],
    )
    table = history_table(history)
    assert "ε at δ = 0.0001; record ε at δ = 1e-05" in str(table.title)
    columns = {c.header: c._cells for c in table.columns}
    assert columns["ε per client"] == ["-", "3.0000"]
    assert columns["record ε"] == ["-", "0.7500"]  # round 0 (the initial model) spent nothing
