"""Differential privacy on the command line: `--dp central|local`, its options, its outputs and
`roost privacy`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import dp_accounting
import pytest

from roost.apps.digits import app as digits_app
from roost.cli import build_parser, main
from roost.cli.dp_options import client_privacy
from roost.cli.settings import settings_from_args
from roost.privacy import (
    DPFedAvg,
    FixedSizeSampler,
    LocalDPAccountant,
    LocalDPClientFn,
    PoissonSampler,
    default_delta,
    epsilon,
    local_epsilon,
)
from roost.strategy import ClipL2, FedAvg, ServerAdam, ServerSGD
from roost.strategy.transforms import AdaptiveClipL2

CENTRAL = ["--dp", "central", "--noise-multiplier", "1.0", "--clip-norm", "1.0"]
LOCAL = ["--dp", "local", "--noise-multiplier", "2.0", "--clip-norm", "1.0"]


def simulation(*flags: str):
    args = build_parser().parse_args(["simulate", "--clients", "10", *flags])
    return digits_app.simulation(settings_from_args(args, num_clients=args.clients))


def server_strategy(*flags: str):
    args = build_parser().parse_args(["server", "--min-clients", "10", *flags])
    return digits_app.server_strategy(settings_from_args(args, num_clients=10))


def run(tmp_path: Path, capsys, *flags: str) -> tuple[dict, str]:
    out = tmp_path / "run"
    assert (
        main(["simulate", "--quiet", "--clients", "10", "--no-plot", "--out", str(out), *flags])
        == 0
    )
    return json.loads((out / "history.json").read_text()), capsys.readouterr().out


# -- central DP --------------------------------------------------------------------------------


def test_central_dp_composes_with_a_mean_strategy_keeping_its_server_optimizer() -> None:
    strategy = simulation("--strategy", "fedadam", "--server-lr", "0.05", *CENTRAL).strategy
    assert isinstance(strategy, DPFedAvg)
    assert isinstance(strategy.server_optimizer, ServerAdam)
    assert strategy.server_optimizer.learning_rate == 0.05
    assert strategy.fit_config_defaults == {"lr": 0.5}  # FedAdam's eta_l is the demo's --lr
    # CentralDP last, and no plain clipping
    assert strategy.update_transforms.transforms == (strategy.central_dp,)
    assert isinstance(strategy.sampler, PoissonSampler) and strategy.sampler.q == 1.0
    central = strategy.central_dp
    assert (central.noise_multiplier, central.clip_norm) == (1.0, 1.0)
    assert (central.expected_clients, central.num_clients) == (10, 10)
    assert central.delta == default_delta(10)
    assert strategy.evaluate_fn is not None  # the demo's knobs are kept

    prox = simulation("--strategy", "fedprox", "--proximal-mu", "0.3", *CENTRAL).strategy
    assert prox.fit_config_defaults["proximal_mu"] == 0.3


def test_central_dp_sampling_fraction_delta_and_adaptive_clipping() -> None:
    poisson = simulation(*CENTRAL, "--fraction-fit", "0.3", "--delta", "1e-4").strategy
    assert poisson.sampler.q == pytest.approx(0.3)
    assert poisson.central_dp.delta == 1e-4
    fixed = simulation(*CENTRAL, "--fraction-fit", "0.5", "--sampling", "fixed").strategy
    assert isinstance(fixed.sampler, FixedSizeSampler) and fixed.sampler.cohort_size == 5
    assert fixed.central_dp.accounting_args["sampling"] == "fixed"
    adaptive = simulation(*CENTRAL, "--clip-quantile", "0.5").strategy
    assert adaptive.central_dp.clip_quantile == 0.5
    budget = simulation(*CENTRAL, "--target-epsilon", "4").strategy
    assert budget.central_dp.target_epsilon == 4.0


def test_dpfedavg_is_fedavg_under_central_dp() -> None:
    strategy = simulation("--strategy", "dpfedavg", "--noise-multiplier", "1", "--clip-norm", "1")
    assert isinstance(strategy.strategy, DPFedAvg)
    assert isinstance(strategy.strategy.server_optimizer, ServerSGD)


def test_without_dp_clip_norm_keeps_its_plain_meaning() -> None:
    plain = simulation("--clip-norm", "0.5").strategy
    assert isinstance(plain, FedAvg) and not isinstance(plain, DPFedAvg)
    assert plain.update_transforms.transforms == (ClipL2(0.5),)
    adaptive = simulation("--clip-norm", "0.5", "--clip-quantile", "0.5").strategy
    assert isinstance(adaptive.update_transforms.transforms[0], AdaptiveClipL2)


def test_a_central_dp_run_reports_epsilon_in_every_output(tmp_path: Path, capsys) -> None:
    history, out = run(tmp_path, capsys, "--rounds", "2", "--fraction-fit", "0.5", *CENTRAL)
    delta = default_delta(10)
    assert delta == 1e-5
    assert "δ = 1e-05 (min(1e-5, 1/N²) for N = 10, the default" in out
    expected = [epsilon(1.0, r, delta, q=0.5) for r in (1, 2)]
    privacy = history["privacy"]
    assert privacy["kind"] == "central" and privacy["delta"] == pytest.approx(delta)
    assert [r for r, _ in privacy["epsilon"]] == [1, 2]
    assert [e for _, e in privacy["epsilon"]] == pytest.approx(expected, rel=1e-9)
    assert "ε at δ = 1e-05" in out and f"{expected[1]:.4f}" in out  # the summary table
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [float(row["epsilon"]) for row in rows if row["epsilon"]] == pytest.approx(expected)
    assert float(rows[-1]["delta"]) == pytest.approx(delta)


def test_a_run_without_dp_writes_no_privacy_at_all(tmp_path: Path, capsys) -> None:
    history, out = run(tmp_path, capsys, "--rounds", "1", "--clip-norm", "1")
    assert "privacy" not in history
    assert "delta" not in history.get("measurements", {})
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0]
    assert "epsilon" not in header and "ε" not in out


def test_target_epsilon_stops_the_run_with_one_line_and_outputs(tmp_path: Path, capsys) -> None:
    delta = 1e-3
    spent = [epsilon(1.0, r, delta, q=0.5) for r in (1, 2, 3)]
    target = (spent[1] + spent[2]) / 2  # two rounds fit, the third would not
    flags = ["--rounds", "5", "--fraction-fit", "0.5", "--delta", "1e-3"]
    history, out = run(tmp_path, capsys, *flags, *CENTRAL, "--target-epsilon", f"{target}")
    assert len(history["rounds"]) == 2
    assert "privacy budget reached: stopped after round 2 of 5" in out
    assert (tmp_path / "run" / "model.npz").exists()


def test_central_dp_over_the_server_command_too() -> None:
    strategy = server_strategy("--strategy", "fedavgm", "--server-momentum", "0.5", *CENTRAL)
    assert isinstance(strategy, DPFedAvg) and strategy.server_optimizer.momentum == 0.5
    assert strategy.central_dp.num_clients == 10


# -- local DP ----------------------------------------------------------------------------------


def test_local_dp_wraps_the_clients_and_runs_sequentially() -> None:
    run_plan = simulation(
        "--strategy", "krum", "--num-malicious", "1", "--engine", "vectorized", *LOCAL
    )
    assert isinstance(run_plan.client_fn, LocalDPClientFn)
    assert (run_plan.client_fn.clip_norm, run_plan.client_fn.noise_multiplier) == (1.0, 2.0)
    assert run_plan.engine == "sequential" and "local DP" in run_plan.notice
    accountant = run_plan.strategy.update_transforms.transforms[-1]
    assert accountant == LocalDPAccountant(2.0, delta=default_delta(10))
    # Its clients send no evaluation results (they are not protected), so none are asked for.
    assert run_plan.strategy.fraction_evaluate == 0.0


def test_a_local_dp_run_reports_each_clients_epsilon(tmp_path: Path, capsys) -> None:
    history, out = run(tmp_path, capsys, "--rounds", "2", *LOCAL, "--delta", "1e-5")
    privacy = history["privacy"]
    assert privacy["kind"] == "local" and privacy["delta"] == 1e-5
    expected = [local_epsilon(2.0, 1e-5, rounds=r) for r in (1, 2)]
    assert [e for _, e in privacy["epsilon"]] == pytest.approx(expected, rel=1e-3)
    assert "ε per" in out and "local DP: every client clips" in out


def test_local_dp_on_the_server_records_each_clients_epsilon() -> None:
    strategy = server_strategy("--strategy", "fedmedian", *LOCAL)
    assert isinstance(strategy.update_transforms.transforms[-1], LocalDPAccountant)


def test_roost_client_protects_itself_with_local_dp(capsys) -> None:
    parser = build_parser()
    base = ["client", "--partition-id", "0", "--num-partitions", "10"]
    args = parser.parse_args([*base, *LOCAL])
    wrapped = client_privacy(args, digits_app.make_client_fn(0), 10)
    assert isinstance(wrapped, LocalDPClientFn) and wrapped.noise_multiplier == 2.0
    spent = local_epsilon(2.0, default_delta(10))
    assert f"costs ε = {spent:.4g}" in capsys.readouterr().out
    # Issue 22, hole 3: with 2 partitions 1/N^1.1 made this "ε = 1.24 at δ = 0.47".
    two = parser.parse_args(["client", "--partition-id", "0", "--num-partitions", "2", *LOCAL])
    client_privacy(two, digits_app.make_client_fn(0), 2)
    spent = local_epsilon(2.0, 1e-5)
    assert f"ε = {spent:.4g} at δ = 1e-05 (min(1e-5, 1/N²) for N = 2)" in capsys.readouterr().out
    plain = parser.parse_args(base)
    assert client_privacy(plain, digits_app.make_client_fn(0), 10) is not None
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--dp", "central"])  # a client can only protect itself
    for flags, message in (
        (["--noise-multiplier", "1"], "need --dp local"),
        (["--dp", "local", "--clip-norm", "1"], "--dp local needs --noise-multiplier"),
    ):
        with pytest.raises(Exception, match=message):
            client_privacy(parser.parse_args([*base, *flags]), digits_app.make_client_fn(0), 10)


# -- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--noise-multiplier", "1"], "--noise-multiplier needs --dp central or --dp local"),
        (["--target-epsilon", "1"], "--target-epsilon needs --dp"),
        (["--sampling", "fixed"], "--sampling needs --dp"),
        (["--dp", "central", "--clip-norm", "1"], "--dp central needs --noise-multiplier"),
        (["--dp", "local", "--noise-multiplier", "1"], "--dp local needs --noise-multiplier and"),
        ([*LOCAL, "--clip-quantile", "0.5"], "--clip-quantile is for --dp central"),
        ([*LOCAL, "--sampling", "poisson"], "--sampling is for --dp central"),
        (["--strategy", "dpfedavg", *LOCAL], "--strategy dpfedavg is central DP"),
        (["--strategy", "fedmedian", *CENTRAL], "--strategy fedmedian aggregates otherwise"),
        (
            ["--strategy", "krum", "--clients", "10", *CENTRAL],
            "choose one of dpfedavg, fedadagrad, fedadam, fedavg, fedavgm, fedprox, fedsgd",
        ),
        (
            ["--strategy", "fedweightedavg", "--weight-metric", "train_accuracy", *CENTRAL],
            "central DP weighs every client equally",
        ),
        ([*CENTRAL, "--delta", "0.2"], "delta 0.2 is not below 1/N = 0.2 for N = 5 clients"),
        ([*LOCAL, "--delta", "0.5"], "use a δ well below 1/N, e.g. the default min(1e-5, 1/N²)"),
        ([*CENTRAL, "--sampling", "fixed", "--clients", "3", "--fraction-fit", "1"], None),
    ],
)
def test_bad_combinations_are_refused_in_one_line(capsys, flags, message) -> None:
    code = main(["simulate", "--quiet", "--clients", "5", "--rounds", "1", *flags])
    err = capsys.readouterr().err
    if message is None:  # the control: a valid combination runs
        assert code == 0, err
        return
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_a_delta_outside_zero_one_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", *CENTRAL, "--delta", "2"])
    assert "must be in (0, 1)" in capsys.readouterr().err


def test_dp_flags_with_your_app_are_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "dp_cli_app.py").write_text(
        "import roost\napp = roost.App(client_fn=lambda c: None, strategy=roost.FedAvg())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["simulate", "--quiet", "--app", "dp_cli_app:app", *LOCAL]) == 2
    assert "roost.privacy.with_central_dp or LocalDPClientFn" in capsys.readouterr().err


# -- roost privacy -----------------------------------------------------------------------------


def test_roost_privacy_epsilon_matches_dp_accounting(capsys) -> None:
    flags = ["--noise-multiplier", "1.1", "--rounds", "50", "--q", "0.2", "--delta", "1e-5"]
    assert main(["privacy", "epsilon", *flags]) == 0
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(1.1))
    direct = accountant.compose(dp_accounting.SelfComposedDpEvent(event, 50)).get_epsilon(1e-5)
    assert f"ε            {direct:.4g} (RDP accountant" in capsys.readouterr().out


def test_roost_privacy_noise_reaches_the_target_by_dp_accounting(capsys) -> None:
    flags = ["--target-epsilon", "3", "--rounds", "30", "--cohort", "20", "--population", "100"]
    assert main(["privacy", "noise", *flags]) == 0
    out = capsys.readouterr().out
    sigma = float(out.split("noise σ      ")[1].split()[0])
    delta = 1e-5  # min(1e-5, 1/N²) for N = 100
    assert "δ            1e-05 (min(1e-5, 1/N²))" in out

    def direct(noise: float) -> float:
        event = dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(noise))
        composed = dp_accounting.SelfComposedDpEvent(event, 30)
        return dp_accounting.rdp.RdpAccountant().compose(composed).get_epsilon(delta)

    assert direct(sigma * 1.001) <= 3.0 < direct(sigma * 0.98)  # σ is (to 4 digits) the least


def test_roost_privacy_refuses_an_incomplete_question(capsys) -> None:
    assert main(["privacy", "noise", "--target-epsilon", "3", "--rounds", "30"]) == 2
    assert "needs q" in capsys.readouterr().err


# -- History.privacy -----------------------------------------------------------------------------


def test_history_privacy_is_read_from_the_measurements_and_round_trips() -> None:
    from roost.server.history import History

    history = History()
    assert history.privacy is None
    history.add_measurements(1, {"clip_norm": 1.0, "local_epsilon": 4.0, "delta": 1e-5})
    assert history.privacy.kind == "local"
    history.add_measurements(2, {"epsilon": 0.5, "delta": 1e-5})
    privacy = history.privacy
    assert (privacy.kind, privacy.delta, privacy.epsilon) == ("central", 1e-5, [(2, 0.5)])
    data = json.loads(history.to_json())
    assert data["privacy"] == {"kind": "central", "delta": 1e-5, "epsilon": [[2, 0.5]]}
    assert History.from_json(history.to_json()).privacy == privacy
