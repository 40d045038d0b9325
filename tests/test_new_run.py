"""`roost new` writes a project that runs at once; `roost run` simulates it (or a Flower one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from roost.cli import main
from roost.cli.new import create_project

ROOT = Path(__file__).resolve().parents[1]
FLOWER_NUMPY_APP = ROOT / "tests" / "flower_apps" / "numpy_app"


def roost(*args: str) -> int:
    return main([str(a) for a in args])


def environment(**extra: str) -> dict[str, str]:
    paths = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "KERAS_BACKEND": "torch", **extra}


def one_error_line(capsys, *args) -> str:
    assert roost(*args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("roost: error: ") and "\n" not in error
    return error


def test_new_numpy_project_runs_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert roost("new", "myapp", "--framework", "numpy") == 0
    files = sorted(str(p.relative_to(tmp_path / "myapp")) for p in (tmp_path / "myapp").rglob("*"))
    assert files == [
        "README.md",
        "myapp",
        "myapp/__init__.py",
        "myapp/client_app.py",
        "myapp/data.py",
        "myapp/server_app.py",
        "myapp/task.py",
        "pyproject.toml",
        "tests",
        "tests/test_app.py",
    ]
    assert roost("run", "myapp", "--run-config", "num-rounds=3", "--out", "out", "--quiet") == 0
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    accuracy = [value for _, value in history["metrics_distributed"]["accuracy"]]
    assert len(accuracy) == 3 and accuracy[-1] > 0.7
    assert (tmp_path / "out" / "model.npz").is_file()
    first_line = "myapp: 3 rounds, 10 clients; engine: sequential (the run config's engine)"
    assert first_line in capsys.readouterr().out


PROBE_PROJECT = {
    "pyproject.toml": """
        [project]
        name = "probe"
        [tool.roost.components]
        client = "probe_app:client_fn"
        strategy = "probe_app:make_strategy"
        [tool.roost.config]
        num-rounds = 1
        num-clients = 2
        learning-rate = 0.5
        label = "file"
    """,
    "probe_app.py": """
        import os

        import numpy as np
        import roost
        from roost.metrics import weighted_average

        class Probe(roost.Client):
            def __init__(self, context):
                self.config = context.run_config
            def get_parameters(self, config):
                return [np.zeros(2)]
            def fit(self, parameters, config):
                metrics = {
                    "lr": self.config["learning-rate"],
                    "clients": self.config["num-clients"],
                    "is_cli_label": float(self.config["label"] == "cli"),
                    "passive": float(os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"),
                }
                return parameters, 1, metrics
            def evaluate(self, parameters, config):
                return 0.0, 1, {}

        def client_fn(context):
            return Probe(context)

        def make_strategy(run_config):
            return roost.FedAvg(min_fit_clients=1, fit_metrics_aggregation_fn=weighted_average)
    """,
}


def write_files(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_run_config_reaches_the_clients_and_flags_win(tmp_path, capsys):
    project = write_files(tmp_path / "probe", PROBE_PROJECT)
    args = ["run", project, "--run-config", "learning-rate=0.25", "label=cli", "--clients", "3"]
    assert roost(*args, "--no-plot", "--out", tmp_path / "out", "--quiet") == 0
    fit = json.loads((tmp_path / "out" / "history.json").read_text())["metrics_distributed_fit"]
    assert fit["lr"] == [[1, 0.25]]
    assert fit["clients"] == [[1, 3.0]]
    assert fit["is_cli_label"] == [[1, 1.0]]
    assert "3/0" in capsys.readouterr().out  # three clients trained


def test_run_names_its_engine_and_why_and_tracks_like_simulate(tmp_path, capsys):
    project = write_files(tmp_path / "probe", PROBE_PROJECT)  # its run config names no engine
    board = tmp_path / "board"
    assert roost("run", project, "--tensorboard", board, "--client-metrics") == 0
    out = capsys.readouterr().out
    assert "probe: 1 rounds, 2 clients; engine: sequential (the default: " in out
    assert list(board.glob("events.out.tfevents.*")), "--tensorboard wrote no event file"
    assert roost("run", project, "--engine", "process", "--quiet") == 0
    assert "engine: process (--engine)" in capsys.readouterr().out


def test_run_makes_idle_threads_sleep_unless_the_user_chose(tmp_path, capsys, monkeypatch):
    project = write_files(tmp_path / "probe", PROBE_PROJECT)
    for policy, out, line in [
        (None, "a", "; OMP_WAIT_POLICY=PASSIVE, roost's default (set it yourself to choose)"),
        ("ACTIVE", "b", "; OMP_WAIT_POLICY=ACTIVE, yours"),
    ]:
        if policy is None:
            monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", policy)
        assert roost("run", project, "--no-plot", "--out", tmp_path / out, "--quiet") == 0
        assert line in capsys.readouterr().out.splitlines()[0]
        history = json.loads((tmp_path / out / "history.json").read_text())
        # the project's clients (imported after the command set it) see the engine line's value
        passive = history["metrics_distributed_fit"]["passive"]
        assert passive == [[1, 1.0 if policy is None else 0.0]]


def test_project_mistakes_get_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    project = write_files(tmp_path / "probe", PROBE_PROJECT)
    assert "not in [tool.roost.config]" in one_error_line(
        capsys, "run", project, "--run-config", "leraning-rate=1"
    )
    assert "num-rounds = 0" in one_error_line(
        capsys, "run", project, "--run-config", "num-rounds=0"
    )
    assert "--resume needs --state" in one_error_line(capsys, "run", project, "--resume")
    assert "has no pyproject.toml" in one_error_line(capsys, "run", tmp_path)
    write_files(tmp_path / "other", {"pyproject.toml": "[project]\nname = 'x'\n"})
    assert "roost new NAME" in one_error_line(capsys, "run", tmp_path / "other")
    assert "roost run" in one_error_line(capsys, "simulate", "--app", project)
    assert "KEY=VALUE" in one_error_line(capsys, "run", project, "--run-config", "rounds")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("1app", "start with a letter"), ("numpy", "would hide"), ("os", "would hide")],
)
def test_new_refuses_names_that_cannot_be_a_package(tmp_path, monkeypatch, capsys, name, fragment):
    monkeypatch.chdir(tmp_path)
    assert fragment in one_error_line(capsys, "new", name)


def test_new_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert "already exists" in one_error_line(capsys, "new", "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def model_bytes(out: Path) -> list[bytes]:
    with np.load(out / "model.npz", allow_pickle=False) as archive:
        return [archive[name].tobytes() for name in sorted(archive.files)]


def test_run_resumes_from_its_state_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    create_project(tmp_path / "resumable", "numpy")

    def run(*args: str) -> int:
        return roost("run", "resumable", "--run-config", "num-clients=4", *args, "--quiet")

    assert run("num-rounds=4", "--no-plot", "--out", "whole") == 0
    assert run("num-rounds=2", "--state", "state") == 0
    assert run("num-rounds=4", "--state", "state", "--resume", "--no-plot", "--out", "resumed") == 0
    assert model_bytes(tmp_path / "resumed") == model_bytes(tmp_path / "whole")
    capsys.readouterr()
    resume = ("run", "resumable", "--state", "state", "--resume", "--run-config", "num-clients=4")
    line = one_error_line(capsys, *resume, "num-rounds=3")
    assert "records 4 completed rounds, more than the 3 asked for" in line
    line = one_error_line(capsys, *resume, "num-rounds=6", "strategy=fedadam")
    assert 'run-config strategy was "fedavg", now "fedadam"' in line
    assert "already records a run" in one_error_line(capsys, "run", "resumable", "--state", "state")


def test_simulate_resumes_the_demo(tmp_path, capsys):
    def simulate(*args: str) -> int:
        common = ["--clients", "4", "--engine", "sequential", "--quiet"]
        return roost("simulate", *common, *args)

    assert simulate("--rounds", "3", "--no-plot", "--out", tmp_path / "whole") == 0
    assert simulate("--rounds", "1", "--state", tmp_path / "state") == 0
    assert (
        simulate(
            "--rounds",
            "3",
            "--state",
            tmp_path / "state",
            "--resume",
            "--no-plot",
            "--out",
            tmp_path / "resumed",
        )
        == 0
    )
    assert model_bytes(tmp_path / "resumed") == model_bytes(tmp_path / "whole")
    line = one_error_line(
        capsys,
        "simulate",
        "--state",
        tmp_path / "state",
        "--resume",
        "--strategy",
        "fedadam",
        "--rounds",
        "4",
    )
    assert '--strategy was "fedavg", now "fedadam"' in line


def test_run_detects_a_flower_project(tmp_path, capsys):
    args = ["run", FLOWER_NUMPY_APP, "--clients", "2", "--run-config", "num-server-rounds=1"]
    assert roost(*args, "--no-plot", "--out", tmp_path, "--quiet") == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["rounds"]) == 1
    assert "not in [tool.flwr.app.config]" in one_error_line(
        capsys, "run", FLOWER_NUMPY_APP, "--run-config", "nope=1"
    )


def run_project_test(project: Path) -> None:
    """The project's own test, as its user would run it (before installing it)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_new_projects_own_test_passes(tmp_path):
    run_project_test(create_project(tmp_path / "tested", "numpy"))


def test_pip_install_editable_works(tmp_path):
    project = create_project(tmp_path / "installable", "numpy")
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps"]
    result = subprocess.run(
        [*install, "--no-index", "--target", str(target), "-e", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "No module named setuptools" in result.stderr:
        pytest.skip("the build backend (setuptools) is not installed, and pip may not fetch it")
    assert result.returncode == 0, result.stderr
    probe = "import site, sys; site.addsitedir(sys.argv[1]); import installable.client_app as m; "
    probe += "print(m.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        cwd=tmp_path,  # not the project: the import must come from the installed finder
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(project)


@pytest.mark.slow
def test_the_same_project_deploys_with_server_and_clients(tmp_path):
    from grpc_support import free_port, processes, wait_listening

    project = create_project(tmp_path / "deployed", "numpy")
    address = f"127.0.0.1:{free_port()}"
    rounds = ["--run-config", "num-rounds=2"]
    assert (
        roost(
            "run",
            project,
            *rounds,
            "num-clients=2",
            "--quiet",
            "--no-plot",
            "--out",
            tmp_path / "sim",
        )
        == 0
    )
    paths = os.pathsep.join([str(ROOT / "tests"), environment()["PYTHONPATH"]])
    with processes(tmp_path, env={"PYTHONPATH": paths}) as group:
        server = group.start(
            "server",
            "server",
            "--app",
            str(project),
            "--address",
            address,
            *rounds,
            "--no-plot",
            "--out",
            "net",
        )
        wait_listening(address)
        nodes = [
            group.start(
                f"client{i}",
                "client",
                "--app",
                str(project),
                "--server",
                address,
                "--partition-id",
                str(i),
                "--num-partitions",
                "2",
            )
            for i in range(2)
        ]
        assert group.wait(server, 300) == 0, group.log(server)
        for node in nodes:
            assert group.wait(node, 60) == 0, group.log(node)
        shown = group.log(server)
        assert "round 2/2" in shown and "/5" not in shown, shown  # the project's rounds
    with (
        np.load(tmp_path / "net" / "model.npz") as net,
        np.load(tmp_path / "sim" / "model.npz") as sim,
    ):
        for name in sim.files:
            np.testing.assert_allclose(net[name], sim[name], rtol=1e-12, atol=1e-12)


def test_server_shows_and_runs_the_projects_rounds(tmp_path, monkeypatch):
    """`roost server --app DIR`: progress counts the run config's rounds, not --rounds' default."""
    from roost import deploy
    from roost.cli.progress import ProgressTracker
    from roost.server.history import History

    seen = {}

    def serve(**kwargs):
        seen["rounds"] = kwargs["config"].num_rounds
        shown = [t for t in kwargs["trackers"] if isinstance(t, ProgressTracker)]
        seen["shown"] = shown[0].num_rounds
        return History()

    monkeypatch.setattr(deploy, "start_server", serve)
    project = create_project(tmp_path / "served", "numpy")
    args = ["server", "--app", project, "--address", "127.0.0.1:1", "--run-config", "num-rounds=3"]
    assert roost(*args) == 0
    assert seen == {"rounds": 3, "shown": 3}
    assert roost(*args, "--rounds", "5") == 2  # the project's run config sets the rounds


def test_run_takes_dp_and_secagg_like_simulate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert roost("new", "privapp", "--framework", "numpy") == 0
    code = roost(
        "run", "privapp", "--run-config", "num-rounds=2", "--out", "out", "--quiet",
        "--dp", "central", "--noise-multiplier", "0.8", "--clip-norm", "1",
        "--sampling", "fixed", "--secagg",
    )  # fmt: skip
    assert code == 0
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    # Central DP withholds each round's counts (they would reveal who took part).
    assert history["rounds"] == [{"server_round": r, "withheld": True} for r in (1, 2)]
    epsilons = [value for _, value in history["privacy"]["epsilon"]]
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1]
    # Accounted for the project's 10 clients, the population the sampler draws from.
    assert "of 10 clients a round" in capsys.readouterr().out
    flower = one_error_line(capsys, "run", str(ROOT / "tests/flower_apps/numpy_app"), "--secagg")
    assert "a Flower project builds its own strategy" in flower


def test_run_compresses_a_projects_updates_like_simulate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert roost("new", "smallapp", "--framework", "numpy") == 0
    capsys.readouterr()
    code = roost(
        "run", "smallapp", "--run-config", "num-rounds=2", "--out", "out", "--quiet",
        "--compress", "q8", "--state", "state",
    )  # fmt: skip
    assert code == 0
    assert "compression: q8" in capsys.readouterr().out
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [r for r, _ in history["measurements"]["bytes_up"]] == [1, 2]
    flower = one_error_line(
        capsys, "run", str(ROOT / "tests/flower_apps/numpy_app"), "--compress", "q8"
    )
    assert "--compress apply to roost projects" in flower
