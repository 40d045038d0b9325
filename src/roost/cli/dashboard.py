"""`--dashboard [HOST:PORT]`: a run's (or a federation's) live web dashboard.

The dashboard's packages are optional (`roost[dashboard]`): `roost.dashboard` is imported only
when the option is given, and its absence is a one-line error naming the extra.

When a run ends the page shows it finished (or failed, and why) and the command exits as it
would without a dashboard, so scripts and CI never hang on it; `--keep-serving` keeps the page
up until Ctrl-C, to look at the finished run.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

from roost.errors import ConfigurationError
from roost.tracking.base import Tracker
from roost.tracking.failures import FailureDigest, FailureGroup

LOCAL = "127.0.0.1:0"
NOT_SHOWN = frozenset(
    {"mlflow", "auth_tokens", "certificates", "client_ca", "dashboard", "keep_serving"}
)
"""Options the run page's config leaves out: where the run reports and listens, which may carry
credentials (an MLflow URI with a password), not what it computes."""


def add_dashboard_option(parser: argparse.ArgumentParser, *, keep_serving: bool = True) -> None:
    """`--dashboard [HOST:PORT]` (and, for a run, `--keep-serving`)."""
    parser.add_argument(
        "--dashboard",
        metavar="HOST:PORT",
        nargs="?",
        const=LOCAL,
        default=None,
        help="serve a live web dashboard (default 127.0.0.1 on a free port; the URL is printed; "
        "a host other than 127.0.0.1 needs the token in that URL); needs roost[dashboard]",
    )
    if keep_serving:
        parser.add_argument(
            "--keep-serving",
            action="store_true",
            help="with --dashboard: keep serving it after the run ends, until Ctrl-C",
        )


def start_server(
    source: Any,
    address: str,
    print_line: Callable[[str], None],
    certificates: tuple[str, str] | None = None,
    path: str = "/",
) -> Any:
    """Serve `source` on `address`, print the URL of `path`; returns the `DashboardServer`."""
    from roost.dashboard.server import DashboardServer

    server = DashboardServer(source, address, certificates).start()
    print_line(f"dashboard: {server.page_url(path)}")
    if server.exposed:
        print_line(
            "dashboard: warning: plain HTTP off 127.0.0.1: its token travels in clear text "
            "(roost server and roost coordinator serve it over TLS with --certificates; or keep "
            "it on 127.0.0.1 and reach it through an SSH tunnel)"
        )
    return server


def coordinator_dashboard(
    args: argparse.Namespace, store: Any, certificates: tuple[str, str] | None
) -> Any:
    """`roost coordinator --dashboard`: the federation's pages, served beside its API (None
    without the option)."""
    if args.dashboard is None:
        return None
    from roost.dashboard import require

    require()
    from roost.dashboard.federation_source import FederationSource

    source = FederationSource(store, args.data)
    return start_server(source, args.dashboard, lambda line: print(line, flush=True), certificates)


def released(digest: FailureDigest) -> list[FailureGroup]:
    """The failures a run logged for release (at WARNING or above): under central DP they are
    logged at DEBUG only, and a page must not show them even when DEBUG logs are on."""
    return [group for group in list(digest.groups.values()) if group.level >= logging.WARNING]


def check_dashboard_options(args: argparse.Namespace) -> None:
    """Refuse `--keep-serving` without `--dashboard` (it would be silently ignored)."""
    if getattr(args, "keep_serving", False) and getattr(args, "dashboard", None) is None:
        raise ConfigurationError("--keep-serving keeps a dashboard up: add --dashboard")


class RunDashboard:
    """The dashboard of one run of this process: a model fed by `tracker`, served live."""

    def __init__(
        self,
        args: argparse.Namespace,
        num_rounds: int | None,
        params: Mapping[str, Any] | None,
        digest: FailureDigest,
    ) -> None:
        from roost.dashboard import require

        require()
        from roost.dashboard.model import DashboardTracker, RunModel
        from roost.dashboard.sources import LiveSource

        command = getattr(args, "command", None) or "run"
        self.address: str = args.dashboard
        self.keep_serving: bool = getattr(args, "keep_serving", False)
        self.model = RunModel(
            "run",
            f"roost {command}",
            num_rounds,
            {k: v for k, v in (params or {}).items() if k not in NOT_SHOWN},
            failures=lambda: released(digest),
        )
        self.tracker: Tracker = DashboardTracker(self.model)
        self.source = LiveSource(self.model)
        certificates = getattr(args, "certificates", None)
        self.certificates = tuple(certificates) if certificates else None
        self.server: Any = None

    def start(self, print_line: Callable[[str], None]) -> None:
        """Serve the run page and print its URL."""
        self.server = start_server(
            self.source, self.address, print_line, self.certificates, f"/runs/{self.model.run_id}"
        )

    def finish(self, error: BaseException | None, note: str = "") -> None:
        """The run ended: say so on the page (with `note`, why it ended early); stop serving
        unless asked to keep serving (a failed run stops at once, so its error is not held
        up)."""
        if error is None:
            self.model.finish("finished", note)
        elif isinstance(error, KeyboardInterrupt):
            self.model.finish("stopped", "interrupted (Ctrl-C)")
        else:
            self.model.finish("failed", str(error) or type(error).__name__)
        if error is not None or not self.keep_serving:
            self.stop()

    def wait(self, print_line: Callable[[str], None]) -> None:
        """With `--keep-serving`: serve until Ctrl-C (or SIGTERM), then stop."""
        if self.server is None or not self.keep_serving:
            return
        page = self.server.page_url(f"/runs/{self.model.run_id}")
        print_line(f"dashboard: still serving {page} (Ctrl-C to stop)")
        stopped = threading.Event()
        previous = {
            signum: signal.signal(signum, lambda *_: stopped.set())
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            stopped.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.stop()

    def stop(self) -> None:
        """Stop serving (open pages keep their last state)."""
        if self.server is not None:
            self.server.stop()
            self.server = None
