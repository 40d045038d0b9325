"""Serving the dashboard: uvicorn in a thread of this process, on 127.0.0.1 by default.

server = DashboardServer(source, "127.0.0.1:0").start()
print(server.url)      # with a token in it when the host is not the loopback interface
...
server.stop()          # open pages get an `end` event and keep their last state
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from typing import Any

from roost.errors import ConfigurationError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::")
DEFAULT_ADDRESS = "127.0.0.1:0"
"""Port 0: any free port (the URL is printed), so two runs with dashboards never collide."""


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[::1]:PORT`, or `:PORT` for 127.0.0.1) as (host, port); a clear error
    otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigurationError(
            f"--dashboard {address!r}: give HOST:PORT, e.g. 127.0.0.1:8050 (port 0: any free port)"
        )
    return host, int(port)


class DashboardServer:
    """The dashboard app served by uvicorn on a thread of its own.

    Args:
        source: what the pages show (`roost.dashboard.sources.Source`).
        address: `HOST:PORT`; a host other than the loopback interface gets a token, made from
            the OS's CSPRNG, which every request must carry (it is part of `url`).
        certificates: (CERT, KEY) PEM files to serve HTTPS with (the coordinator's and
            `roost server`'s `--certificates`); None: plain HTTP.
    """

    def __init__(
        self,
        source: Any,
        address: str = DEFAULT_ADDRESS,
        certificates: tuple[str, str] | None = None,
    ) -> None:
        from roost.dashboard.app import dashboard_app

        self.host, self.port = parse_address(address)
        self.certificates = certificates
        self.token = None if self.host in LOOPBACK else secrets.token_urlsafe(24)
        # Without a token, only the loopback names (see `dashboard_app`: DNS rebinding).
        hosts = ["127.0.0.1", "localhost", "::1", "[::1]"] if self.token is None else None
        self.app = dashboard_app(source, self.token, hosts)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def exposed(self) -> bool:
        """Whether its token travels in clear text: plain HTTP off the loopback interface."""
        return self.token is not None and self.certificates is None

    @property
    def url(self) -> str:
        """The dashboard's address, with `?token=...` when it needs one. Listening on every
        interface (0.0.0.0, ::), it names this machine: a browser elsewhere cannot open 0.0.0.0."""
        host = socket.gethostname() if self.host in WILDCARD else self.host
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.certificates else "http"
        return f"{scheme}://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def page_url(self, path: str) -> str:
        """The URL of a page (`/runs/run`), with the token when one is needed."""
        base = self.url.split("?")[0].rstrip("/")
        return base + path + (f"?token={self.token}" if self.token else "")

    def start(self, timeout: float = 10.0) -> DashboardServer:
        """Start serving; returns once the socket listens (its port known)."""
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as error:
            sock.close()
            raise ConfigurationError(
                f"the dashboard cannot listen on {self.host}:{self.port} ({error.strerror}); "
                "pick another port with --dashboard HOST:PORT (port 0: any free port)"
            ) from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,  # leave the program's logging (and its streams) as they are
            lifespan="off",
            timeout_graceful_shutdown=2,
            access_log=False,
            ssl_certfile=self.certificates[0] if self.certificates else None,
            ssl_keyfile=self.certificates[1] if self.certificates else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="roost-dashboard",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(f"the dashboard did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Send open pages their last update and `end`, then stop serving."""
        if self._server is None:
            return
        state = self.app.state.dashboard
        state.stopping.set()
        deadline = time.monotonic() + timeout
        while state.streams and time.monotonic() < deadline:  # let each stream say goodbye
            time.sleep(0.02)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=max(deadline - time.monotonic(), 1.0))
        self._server = None

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
