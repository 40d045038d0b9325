"""A real federation for the end-to-end tests: a `roost coordinator` process, three `roost node`
processes and two people (plus an operator) who use the CLI in this process."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from grpc_support import free_port

from roost.cli import main
from roost.federation.node_runs import run_directory_name

NODES = 3

PACED_CLIENT = '''\
"""The app's client, paced and breakable from the run config (for the federation's tests)."""

import os
import time

from myapp.client_app import AppClient


class PacedClient(AppClient):
    def __init__(self, context):
        super().__init__(context)
        self.delay = float(context.run_config.get("fit-delay", 0.0))
        self.crash = int(context.run_config.get("crash", 0))

    def fit(self, parameters, config):
        if self.crash:
            os._exit(3)  # a crash no `except` catches
        time.sleep(self.delay)  # slows a round down without changing its result
        return super().fit(parameters, config)


def client_fn(context):
    return PacedClient(context)
'''


def roost(*args: str, check: bool = True) -> SimpleNamespace:
    """Run a `roost` command in this process (the people's commands are HTTP clients)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        returncode = main(list(args))
    result = SimpleNamespace(returncode=returncode, stdout=out.getvalue(), stderr=err.getvalue())
    if check:
        assert returncode == 0, result.stdout + result.stderr
    return result


def paced_project(root: Path) -> Path:
    """`roost new myapp` for three nodes, its client wrapped by `PacedClient`."""
    roost("new", str(root / "myapp"), "--framework", "numpy")
    project = root / "myapp"
    (project / "myapp" / "paced.py").write_text(PACED_CLIENT)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    text = text.replace('"myapp.client_app:client_fn"', '"myapp.paced:client_fn"  ')
    text = text.replace("num-clients = 10", "num-clients = 3\nfit-delay = 0.0\ncrash = 0")
    text = text.replace("num-rounds = 5 ", "num-rounds = 2 ")
    pyproject.write_text(text)
    return project


class Federation:
    """The processes of one federation, on one database."""

    def __init__(self, root: Path, db: str | None) -> None:
        self.root, self.data, self.db = root, root / "fed", db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.coordinator: subprocess.Popen | None = None
        self.dashboard = ""
        self.nodes: list[subprocess.Popen] = []
        self.node_dirs: list[Path] = []

    def operator_action(self, *args: str) -> str:
        db = ["--db", self.db] if self.db else []
        return roost("coordinator", "--data", str(self.data), *db, *args).stdout

    def token(self, name: str, *flags: str) -> str:
        return self.operator_action("--add-person", name, *flags).rsplit(": ", 1)[1].strip()

    def start(self) -> None:
        db = ["--db", self.db] if self.db else []
        self.coordinator = subprocess.Popen(
            [sys.executable, "-m", "roost.cli", "coordinator", "--data", str(self.data), *db,
             "--address", f"127.0.0.1:{self.port}", "--dashboard"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        line = self.coordinator.stdout.readline()
        assert "serving on" in line, line + self.coordinator.stdout.read()
        line = self.coordinator.stdout.readline()  # its web dashboard, on a free port
        assert line.startswith("dashboard: http://127.0.0.1:"), line
        self.dashboard = line.split()[1].rstrip("/")

    def kill(self) -> None:
        self.coordinator.send_signal(signal.SIGKILL)
        self.coordinator.wait()

    def add_node(self, index: int, trusted: Path) -> None:
        name, home = f"node{index}", self.root / f"node{index}"
        roost("node", "--init", str(home), "--name", name, "--coordinator", self.url)
        self.operator_action("--add-node", name, str(home / "node.pub"))
        config = home / "node.toml"
        text = config.read_text()
        for key, value in {
            "trusted_publishers": f'["{trusted}"]',
            "partition_id": str(index),
            "num_partitions": str(NODES),
            "max_concurrent_runs": "2",
        }.items():
            text = "\n".join(
                f"{key} = {value}" if line.startswith(f"{key} =") else line
                for line in text.splitlines()
            )
        config.write_text(text.replace("[data]", "poll_interval = 0.2\n\n[data]"))
        log = (home / "node.log").open("wb")
        self.nodes.append(
            subprocess.Popen(
                [sys.executable, "-m", "roost.cli", "node", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        self.node_dirs.append(home)

    def as_person(self, token: str) -> list[str]:
        return ["--coordinator", self.url, "--token", token]

    def submit(self, token: str, *extra: str, sign: Path | None = None) -> str:
        signing = ["--sign-key", str(sign or self.publisher)] if sign != Path() else []
        out = roost(
            "run", str(self.project), *self.as_person(token), "--nodes", str(NODES),
            *signing, *extra,
        ).stdout  # fmt: skip
        return out.split("submitted run ", 1)[1].split()[0]

    def wait_online(self, count: int = NODES, timeout: float = 60) -> list[list[str]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = [
                line.split()
                for line in roost("nodes", *self.as_person(self.op)).stdout.splitlines()[1:]
            ]
            if sum(row[1] == "yes" for row in rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def clients_of(self, run: str) -> list[int]:
        """The pids of the nodes' client processes of `run` (their working directory tells)."""
        directories = {str(home / "runs" / run_directory_name(run)) for home in self.node_dirs}
        pids = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and os.readlink(entry / "cwd") in directories:
                    pids.append(int(entry.name))
        return pids

    def close(self) -> None:
        for process in [*self.nodes, self.coordinator]:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in [*self.nodes, self.coordinator]:
            if process is None:
                continue
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
