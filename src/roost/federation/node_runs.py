"""One run on a node: check its bundle, unpack it, and run its client app in a subprocess.

Each run gets `runs/RUN_ID/` under the node's working directory: `app/` (the unpacked bundle),
`log.txt` (the client's output) and, where the assignment brings them, `root.pem` (the run
server's CA) and `run_config.toml` (the run's overrides). The client is `roost client --app
runs/RUN_ID/app` in its own process and process group, so an app that raises, leaks or crashes
ends only its own run. It joins the run's server under the node's name with the run's own token,
given in the environment (`ROOST_TOKEN`, out of `ps`'s sight), with the node's partition.

The app finds the node's data paths in its environment: `[data] train = "/srv/train.csv"` in the
node config is `ROOST_DATA_TRAIN=/srv/train.csv`; `ROOST_NODE_NAME` names the node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from roost.federation.bundle import BundleRefusedError, Manifest, unpack_bundle, verify_bundle
from roost.federation.keys import b64decode
from roost.federation.node_config import NodeConfig
from roost.federation.requirements import install_requirements, missing_requirements

__all__ = ["LocalRun", "check_bundle", "data_environment", "run_directory_name", "start_run"]

logger = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
"""How long a stopped run's client may take to exit before it is killed."""


@dataclass
class LocalRun:
    """A run's client process on this node."""

    run: Any
    """The run's id as the coordinator sent it (echoed back in polls and reports)."""
    process: subprocess.Popen[bytes]
    directory: Path
    stopping: bool = field(default=False)

    @property
    def log_path(self) -> Path:
        """The client's output."""
        return self.directory / "log.txt"

    def outcome(self) -> tuple[str, str] | None:
        """None while the client runs; then ("exited" | "failed", a one-line reason)."""
        code = self.process.poll()
        if code is None:
            return None
        if self.stopping:
            return "exited", "stopped by the coordinator"
        if code == 0:
            return "exited", "the run's client finished"
        return "failed", f"the run's client exited with status {code}: {self._last_line()}"

    def _last_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        lines = [line.strip() for line in lines if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        last = (errors or lines or ["no output"])[-1]
        return last[:300]

    def terminate(self) -> None:
        """Ask the client to end (SIGTERM to its process group); `stop` waits for it."""
        self.stopping = True
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """End the client: SIGTERM to its process group, SIGKILL after `grace` seconds."""
        self.stopping = True
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if self.process.poll() is not None:
                return
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def check_bundle(
    config: NodeConfig,
    trusted: Sequence[Ed25519PublicKey],
    assignment: dict[str, Any],
    bundle: bytes,
) -> Manifest:
    """The manifest of an assigned bundle this node may run, or BundleRefusedError saying why:
    another sha256 than assigned, unsigned, untrusted, tampered, corrupt, or requirements missing
    (installed first where the node allows it)."""
    expected = str(assignment.get("bundle_sha256", ""))
    actual = hashlib.sha256(bundle).hexdigest()
    if actual != expected:
        raise BundleRefusedError(
            f"the bundle downloaded has sha256 {actual[:16]}…, not the assigned {expected[:16]}…"
        )
    try:
        signature = b64decode(assignment["signature"]) if assignment.get("signature") else None
    except ValueError:
        raise BundleRefusedError("the assignment's signature is not base64url") from None
    manifest = verify_bundle(
        bundle,
        signature,
        assignment.get("publisher_key") or None,
        trusted,
        allow_unsigned=config.allow_unsigned,
    )
    missing = missing_requirements(manifest.requirements)
    if missing and config.allow_install:
        logger.warning("run %s: installing %s", assignment.get("run"), ", ".join(missing))
        install_requirements(missing)
        missing = missing_requirements(manifest.requirements)
        if missing:
            raise BundleRefusedError(
                f"node {config.name} still lacks {', '.join(missing)} after pip install"
            )
    elif missing:
        raise BundleRefusedError(
            f"node {config.name} lacks requirements {', '.join(missing)}: its operator installs "
            "them (or sets allow_install = true)"
        )
    return manifest


def data_environment(config: NodeConfig) -> dict[str, str]:
    """The node's data paths and name as a run's client sees them (`ROOST_DATA_<NAME>`)."""
    env = {"ROOST_NODE_NAME": config.name}
    for name, path in config.data.items():
        env["ROOST_DATA_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()] = path
    return env


def _toml_value(value: Any) -> str:
    # JSON's strings, numbers and booleans are TOML's too.
    if not isinstance(value, str | int | float | bool):
        raise BundleRefusedError(f"run config value {value!r} is not a TOML scalar")
    return json.dumps(value)


def _client_command(config: NodeConfig, assignment: dict[str, Any], directory: Path) -> list[str]:
    command = [sys.executable, "-m", "roost.cli", "client", "--app", str(directory / "app")]
    command += ["--server", str(assignment["server"]), "--node-id", config.name]
    command += ["--partition-id", str(config.partition_id)]
    command += ["--num-partitions", str(config.num_partitions)]
    command += ["--reconnect-timeout", f"{config.run_reconnect_timeout:g}"]
    if assignment.get("root_certificate"):
        (directory / "root.pem").write_text(str(assignment["root_certificate"]))
        command += ["--root-certificate", str(directory / "root.pem")]
    if config.certificate is not None:
        command += ["--certificate", *map(str, config.certificate)]
    run_config = assignment.get("run_config") or {}
    if run_config:
        lines = [f"{json.dumps(str(key))} = {_toml_value(v)}" for key, v in run_config.items()]
        (directory / "run_config.toml").write_text("\n".join(lines) + "\n")
        command += ["--run-config", str(directory / "run_config.toml")]
    return command


def run_directory_name(run: Any) -> str:
    """The name of a run's directory under `runs/`: its id, which must be a plain name (a
    coordinator's id must never lead the node's files elsewhere)."""
    name = str(run)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise ValueError(f"run id {name[:70]!r} is not a plain name (letters, digits, _ -)")
    return name


def start_run(config: NodeConfig, assignment: dict[str, Any], bundle: bytes) -> LocalRun:
    """Unpack a checked bundle into `runs/RUN_ID/app` (afresh) and start its client."""
    run = assignment["run"]
    directory = config.runs_dir / run_directory_name(run)
    shutil.rmtree(directory / "app", ignore_errors=True)  # a reassigned run starts clean
    directory.mkdir(parents=True, exist_ok=True)
    unpack_bundle(bundle, directory / "app")
    command = _client_command(config, assignment, directory)
    env = {**os.environ, **data_environment(config), "ROOST_TOKEN": str(assignment["token"])}
    with open(directory / "log.txt", "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped whole, apart from the node
        )
    logger.info("run %s: started its client (pid %d) in %s", run, process.pid, directory)
    return LocalRun(run, process, directory)
