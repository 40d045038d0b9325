"""The long-lived node: keeps a data owner's machine in a federation, one run after another.

    roost node --init hospital-a --name hospital-a   # a key pair and a config skeleton
    roost node --config hospital-a/node.toml         # serve until SIGTERM

The node signs a challenge to get a session (`roost.federation.node_link`), then polls the
coordinator: it tells it which runs it has and how many more it takes, and hears which runs to
start and which to stop. For each run it checks the bundle (the assigned sha256, a trusted
publisher's signature, requirements present) and runs the run's client app in a subprocess of
its own (`roost.federation.node_runs`); what happens is reported back in one line (refused,
started, failed, exited), and `roost ls` / `roost log` show it to the submitter.

It never gives up on the coordinator: when it cannot reach it, it logs one line per attempt and
tries again after an exponential backoff with jitter, while its runs' clients keep training and
reconnect to their own servers by themselves.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Sequence
from typing import Any

from roost.core.backoff import Backoff
from roost.errors import ConfigurationError, RoostError
from roost.federation.bundle import BundleRefusedError
from roost.federation.keys import fingerprint, load_private_key, load_public_key
from roost.federation.node_config import NodeConfig
from roost.federation.node_link import (
    CoordinatorLink,
    CoordinatorRefusedError,
    CoordinatorUnreachableError,
)
from roost.federation.node_runs import LocalRun, check_bundle, run_directory_name, start_run

__all__ = ["Node"]

logger = logging.getLogger(__name__)


def _ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    if not config.coordinator.startswith("https://"):
        if not config.insecure:  # loopback: allowed, still said
            logger.info("talking to the coordinator over plain HTTP (loopback)")
        else:
            logger.warning("INSECURE: talking to the coordinator over plain HTTP (insecure = true)")
        return None
    cafile = str(config.root_certificate) if config.root_certificate else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(f"cannot load root_certificate {cafile}: {error}") from None


class Node:
    """A node serving its coordinator; `serve(stop)` runs until `stop` is set."""

    def __init__(
        self,
        config: NodeConfig,
        link: CoordinatorLink | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        key = load_private_key(config.private_key)
        self.trusted = [load_public_key(path) for path in config.trusted_publishers]
        if not self.trusted and not config.allow_unsigned:
            logger.warning(
                "node %s trusts no publisher: it will refuse every bundle (list publishers' .pub "
                "files in trusted_publishers)",
                config.name,
            )
        if config.allow_unsigned:
            logger.warning(
                "ALLOW_UNSIGNED IS ON: node %s runs bundles nobody signed; development only",
                config.name,
            )
        self.link = link or CoordinatorLink(
            config.coordinator, config.name, key, _ssl_context(config)
        )
        self.backoff = Backoff(rng=rng)
        self.runs: dict[str, LocalRun] = {}
        self.reports: list[tuple[Any, str, str]] = []
        self.key_fingerprint = fingerprint(key)

    # -- the loop ---------------------------------------------------------------------------

    def serve(self, stop: threading.Event) -> None:
        """Poll the coordinator every `poll_interval` seconds until `stop` is set, reconnecting
        forever; stops every run's client on the way out."""
        logger.info(
            "node %s (key %s) serving coordinator %s, up to %d run(s) at once",
            self.config.name,
            self.key_fingerprint,
            self.config.coordinator,
            self.config.max_concurrent_runs,
        )
        connected = False
        try:
            while not stop.is_set():
                try:
                    self.step()
                except (CoordinatorUnreachableError, CoordinatorRefusedError) as error:
                    connected = False
                    stop.wait(self._retry_delay(error))
                    continue
                if not connected:
                    logger.info(
                        "node %s connected to %s", self.config.name, self.config.coordinator
                    )
                    connected = True
                self.backoff.reset()
                stop.wait(self.config.poll_interval)
        finally:
            self.shutdown()

    def _retry_delay(self, error: RoostError) -> float:
        delay = self.backoff.next_delay()
        if isinstance(error, CoordinatorRefusedError):
            what = f"coordinator {self.config.coordinator} refused node {self.config.name}"
        else:
            what = f"coordinator {self.config.coordinator} unreachable"
        logger.warning(
            "%s (%s); attempt %d, next in %.1f s", what, error, self.backoff.attempts, delay
        )
        return delay

    def step(self) -> None:
        """One round trip: report finished runs, poll, stop and start what the answer says."""
        self._reap()
        self._flush_reports()
        capacity = max(0, self.config.max_concurrent_runs - len(self.runs))
        answer = self.link.poll([run.run for run in self.runs.values()], capacity)
        for run in answer.get("stop") or []:
            self.stop_run(run)
        for assignment in answer.get("assign") or []:
            if isinstance(assignment, dict) and "run" in assignment:
                self.accept(assignment)
        self._flush_reports()

    # -- runs -------------------------------------------------------------------------------

    def accept(self, assignment: dict[str, Any]) -> None:
        """Check and start an assigned run, or refuse it; the outcome is queued as a report."""
        run = assignment["run"]
        if str(run) in self.runs:
            return
        if len(self.runs) >= self.config.max_concurrent_runs:
            limit = self.config.max_concurrent_runs
            self._report(run, "refused", f"node {self.config.name} runs its limit of {limit} now")
            return
        try:
            run_directory_name(run)  # checked before anything is fetched or written
            bundle = self.link.download(str(assignment.get("bundle_url", "")))
            check_bundle(self.config, self.trusted, assignment, bundle)
            local = start_run(self.config, assignment, bundle)
        except BundleRefusedError as error:
            logger.warning("run %s refused: %s", run, error)
            self._report(run, "refused", str(error))
        except (CoordinatorRefusedError, CoordinatorUnreachableError) as error:
            logger.warning("run %s: cannot download its bundle: %s", run, error)
            self._report(run, "failed", f"cannot download the bundle: {error}")
        except (ConfigurationError, OSError, KeyError, TypeError, ValueError) as error:
            logger.warning("run %s failed to start: %s", run, error)
            self._report(run, "failed", f"cannot start the run's client: {error}")
        else:
            self.runs[str(run)] = local
            self._report(run, "started", f"client pid {local.process.pid}")

    def stop_run(self, run: Any) -> None:
        """Stop a run's client, as the coordinator asked."""
        local = self.runs.get(str(run))
        if local is not None:
            logger.info("run %s: stopping its client, as the coordinator asked", run)
            local.stop()
            self._reap()

    def _reap(self) -> None:
        for key, local in list(self.runs.items()):
            outcome = local.outcome()
            if outcome is not None:
                del self.runs[key]
                log = logger.info if outcome[0] == "exited" else logger.warning
                log("run %s %s: %s", local.run, *outcome)
                self._report(local.run, *outcome)

    def _report(self, run: Any, status: str, reason: str) -> None:
        self.reports.append((run, status, " ".join(reason.split())))

    def _flush_reports(self) -> None:
        """Send queued reports in order; one the coordinator cannot take is dropped (logged),
        the rest wait while it is unreachable."""
        while self.reports:
            run, status, reason = self.reports[0]
            try:
                self.link.report(run, status, reason)
            except CoordinatorRefusedError as error:
                logger.warning("report on run %s (%s) not taken: %s", run, status, error)
            self.reports.pop(0)

    def shutdown(self, runs: Sequence[LocalRun] | None = None) -> None:
        """Stop every run's client (or those given) and wait for them."""
        chosen = list(runs if runs is not None else self.runs.values())
        for local in chosen:  # all asked at once, so their grace periods overlap
            local.terminate()
        for local in chosen:
            local.stop()
            logger.info("run %s: client stopped with the node", local.run)
        self.runs.clear()
