"""The run executor: queued runs become `roost server` subprocesses, one per running run.

Each run lives in `DATA/runs/ID/` (`app/` the unpacked bundle, `state/` its checkpoints, `out/`
its artifacts, `tokens` the run tokens of its nodes, `log.txt` the server's output and the
coordinator's notes). A run starts once enough nodes with room for it are online; its server
listens on a port recorded in the store, so a coordinator restarted after a crash starts the
server again on the same port with `--resume` and the nodes' clients reconnect to it by themselves.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.federation.store import FINISHED, Store

log = logging.getLogger(__name__)

ONLINE_S = 10.0
"""A node seen within this many seconds is online."""
RECONNECT_GRACE_S = 35.0
"""After a coordinator starts, how long a run that takes every online node waits for the nodes
an earlier coordinator had seen to poll again (a node's reconnect backoff is at most 30 s)."""
TICK_S = 0.25
ACTIVE = ("starting", "running")
LIVE = ("assigned", "delivered", "started")
"""Statuses of a node's part of a run that hold one of the node's slots."""


@dataclass(frozen=True)
class ServerOptions:
    """How run servers listen: `bind_host` to listen on, `public_host` for nodes to dial,
    `certificates` (CERT, KEY) for TLS and `root_certificate` (PEM text) nodes should trust."""

    bind_host: str = "127.0.0.1"
    public_host: str = "127.0.0.1"
    certificates: tuple[str, str] | None = None
    root_certificate: str | None = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # A run server must not outlive a coordinator killed with SIGKILL: the restarted coordinator
    # starts it again on the same port. PR_SET_PDEATHSIG (1) is Linux's way to ask for that.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port(host: str) -> int:
    """A port the OS has free on `host` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class RunExecutor:
    """Starts, watches, stops and recovers the run servers; one thread does all of it."""

    def __init__(self, store: Store, data_dir: Path, options: ServerOptions) -> None:
        self.store = store
        self.data_dir = data_dir
        self.options = options
        self._servers: dict[int, subprocess.Popen[bytes]] = {}
        self.reported: dict[str, frozenset[str]] = {}
        """The runs each node listed as running at its last poll (the node API records it)."""
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()

    def run_dir(self, run_id: int) -> Path:
        """Where run `run_id` keeps its app, state, outputs and log."""
        return self.data_dir / "runs" / str(run_id)

    def bundle_path(self, sha256: str) -> Path:
        """Where the bundle with this content hash is kept."""
        return self.data_dir / "bundles" / f"{sha256}.tar.gz"

    def note(self, run_id: int, line: str) -> None:
        """Append one coordinator line to the run's log (what `roost log` shows)."""
        path = self.run_dir(run_id) / "log.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as file:
            file.write(f"coordinator: {line}\n")

    # --- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        """Restart the runs a previous coordinator left running, then watch the queue."""
        self._thread = threading.Thread(target=self._loop, name="roost-runs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching; terminate the run servers this coordinator started (their state
        stays, so a coordinator started again resumes them)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for process in self._servers.values():
            _end(process)
        self._servers.clear()

    def _loop(self) -> None:
        # Every subprocess starts from this one long-lived thread: PR_SET_PDEATHSIG fires when
        # the thread that forked the child ends, not the process.
        self._recover()
        while not self._halt.is_set():
            try:
                self.tick()
            except Exception:  # a database hiccup must not end the coordinator's run watching
                log.exception("the run executor's step failed; trying again")
            self._halt.wait(TICK_S)

    def tick(self) -> None:
        """One step: reap finished servers, honour stops, start queued runs that can start."""
        for run_id, process in list(self._servers.items()):
            if process.poll() is not None:
                del self._servers[run_id]
                self._finish(run_id, process.returncode)
            elif (run := self.store.run(run_id)) is None or run["status"] in FINISHED:
                del self._servers[run_id]  # ended by a node's refusal (see `refuse`)
                _end(process)
        for run in self.store.runs(statuses=("queued", *ACTIVE)):
            if run["stop_requested"]:
                self._stop(run)
        for run in self.store.runs(statuses=("queued",)):
            if not self._try_start(run):
                break  # first come, first served: a later run does not overtake a waiting one

    def _recover(self) -> None:
        for run in self.store.runs(statuses=ACTIVE):
            self.note(run["id"], "the coordinator restarted; resuming the run's server")
            self._launch(run, run["port"])

    # --- one run -----------------------------------------------------------------------------

    def _try_start(self, run: dict[str, Any]) -> bool:
        chosen = self._choose_nodes(run["wanted_nodes"])
        if chosen is None:
            return False
        from roost.federation.bundle import unpack_bundle

        run_dir = self.run_dir(run["id"])
        # A coordinator killed half-way through starting this run left a partial start: redo it.
        shutil.rmtree(run_dir / "app", ignore_errors=True)
        self.store.clear_assignments(run["id"])
        try:
            unpack_bundle(self.bundle_path(run["bundle_sha256"]).read_bytes(), run_dir / "app")
        except Exception as error:  # a bundle the coordinator cannot unpack fails its run
            self._end_run(run["id"], "failed", f"cannot unpack the bundle: {error}")
            return True
        lines = [f"{node} {self.store.add_assignment(run['id'], node)}\n" for node in chosen]
        (run_dir / "tokens").write_text("".join(lines), encoding="utf-8")
        (run_dir / "tokens").chmod(0o600)
        port = free_port(self.options.bind_host)
        self.store.update_run(run["id"], status="starting", port=port, started=time.time())
        self.note(run["id"], f"starting on port {port} with nodes {', '.join(chosen)}")
        self._launch({**run, "wanted_nodes": len(chosen)}, port)
        return True

    def _choose_nodes(self, wanted: int | None) -> list[str] | None:
        """The least busy online nodes with room for one more run, `wanted` of them (None:
        every online node); None when there are not enough yet."""
        now = time.time()
        nodes = self.store.nodes()
        # Just after a restart, "every online node" would be only those that have already
        # reconnected: a run given one node of two would wait for a client that never comes.
        if (
            wanted is None
            and now < self._started + RECONNECT_GRACE_S
            and any(n["last_seen"] and n["last_seen"] < self._started for n in nodes)
        ):
            return None
        online = [n for n in nodes if (n["last_seen"] or 0) >= now - ONLINE_S]
        busy: dict[str, int] = {}
        unseen: dict[str, int] = {}
        active = {run["id"] for run in self.store.runs(statuses=ACTIVE)}
        for assignment in self.store.assignments():
            node = assignment["node"]
            if assignment["run"] not in active or assignment["status"] not in LIVE:
                continue
            busy[node] = busy.get(node, 0) + 1
            # A node's capacity counts the runs it listed at its last poll; a run handed to
            # it since takes a slot that capacity does not show yet.
            if str(assignment["run"]) not in self.reported.get(node, ()):
                unseen[node] = unseen.get(node, 0) + 1
        free = [n for n in online if n["capacity"] - unseen.get(n["name"], 0) > 0]
        count = wanted if wanted is not None else len(online)
        if count == 0 or len(free) < count:
            return None
        free.sort(key=lambda n: (busy.get(n["name"], 0), n["name"]))
        return [n["name"] for n in free[:count]]

    def _launch(self, run: dict[str, Any], port: int) -> None:
        from roost.server.state import last_recorded_round

        run_dir = self.run_dir(run["id"])
        bind = self.options.bind_host
        command = [
            sys.executable, "-m", "roost.cli", "server",
            "--app", str(run_dir / "app"),
            "--address", f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}",
            "--state", str(run_dir / "state"),
            "--out", str(run_dir / "out"),
            "--auth-tokens", str(run_dir / "tokens"),
            "--min-clients", str(len(self.store.assignments(run=run["id"]))),
        ]  # fmt: skip
        if last_recorded_round(run_dir / "state") is not None:
            command.append("--resume")
        if self.options.certificates:
            command += ["--certificates", *self.options.certificates]
        for override in json.loads(run["run_config"]):
            command += ["--run-config", override]
        with (run_dir / "log.txt").open("ab") as log_file:
            self._servers[run["id"]] = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def _stop(self, run: dict[str, Any]) -> None:
        process = self._servers.pop(run["id"], None)
        if process is not None:
            _end(process)
        self._end_run(run["id"], "stopped", "stopped on request")

    def _finish(self, run_id: int, returncode: int) -> None:
        run = self.store.run(run_id)
        if run is None or run["status"] in FINISHED:
            return
        if run["stop_requested"]:
            self._end_run(run_id, "stopped", "stopped on request")
        elif returncode == 0:
            self._end_run(run_id, "completed", "")
        else:
            self._end_run(run_id, "failed", _last_error(self.run_dir(run_id) / "log.txt"))

    def _end_run(self, run_id: int, status: str, message: str) -> None:
        run = self.store.run(run_id)
        if run is None or run["status"] in FINISHED:
            return
        message = message or run["message"]
        # The note first: a reader who sees the run finished must find its last line written.
        self.note(run_id, f"run {status}" + (f": {message}" if message else ""))
        self.store.update_run(run_id, status=status, message=message, finished=time.time())
        process = self._servers.pop(run_id, None)
        if process is not None:
            _end(process)

    def refuse(self, run_id: int, node: str, reason: str) -> None:
        """Node `node` refused run `run_id`: the run cannot get its nodes, so it fails, and
        the reason is what its submitter sees. Called from the API's threads: it only writes
        the store; the executor's next step ends the run's server."""
        self._fail_for_node(run_id, f"node {node} refused the run: {reason}")

    def client_failed(self, run_id: int, node: str, reason: str) -> None:
        """Node `node`'s client of run `run_id` failed (its app crashed): the run's server
        would wait for that client forever, so the run fails with the node's reason."""
        self._fail_for_node(run_id, f"node {node}'s client failed: {reason}")

    def _fail_for_node(self, run_id: int, message: str) -> None:
        run = self.store.run(run_id)
        if run is None or run["status"] in FINISHED:
            return
        self.note(run_id, f"run failed: {message}")
        self.store.update_run(run_id, status="failed", message=message, finished=time.time())


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _last_error(log_path: Path) -> str:
    """The run server's last `error` line, else its last line: why a run failed, in one line."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return "the run's server failed"
    lines = [line for line in lines if line and not line.startswith("coordinator:")]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["the run's server failed"])[-1][:300]
