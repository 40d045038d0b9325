"""The coordinator: a long-lived process that keeps a federation's nodes and runs.

    coordinator = Coordinator(CoordinatorConfig(data_dir="fed", address="127.0.0.1:9091"))
    coordinator.start()  # restarts the runs a killed coordinator left, then serves the API
    ...
    coordinator.close()

It keeps its state in a database (`CoordinatorConfig.db`, default `sqlite:///DATA/coordinator.db`),
serves people and nodes on one HTTP API (TLS with `certificates`), and runs each run as a
`roost server` subprocess (`roost.federation.runs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from roost.errors import ConfigurationError
from roost.federation.api import ApiServer, Router
from roost.federation.node_api import NodeApi
from roost.federation.people_api import PeopleApi
from roost.federation.runs import RunExecutor, ServerOptions
from roost.federation.store import Store

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class CoordinatorConfig:
    """Where the coordinator keeps its state and how it listens.

    Attributes:
        data_dir: bundles, run directories and (by default) the SQLite database.
        address: host:port of the API (port 0: any free port).
        db: a SQLAlchemy URL; None is `sqlite:///DATA_DIR/coordinator.db`.
        public_host: the host nodes dial for run servers (default: the API's host).
        certificates: (CERT, KEY) PEM files: TLS for the API and for every run server.
        root_certificate: the PEM file nodes should trust (default: CERT itself, self-signed).
        insecure: allow plain HTTP off the loopback interface (tests and trusted networks).
    """

    data_dir: str | Path
    address: str = "127.0.0.1:9091"
    db: str | None = None
    public_host: str | None = None
    certificates: tuple[str, str] | None = None
    root_certificate: str | None = None
    insecure: bool = False

    @property
    def host_port(self) -> tuple[str, int]:
        """The API's host and port."""
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)

    def database_url(self) -> str:
        """The SQLAlchemy URL of the state database."""
        return self.db or f"sqlite:///{Path(self.data_dir).resolve() / 'coordinator.db'}"


class Coordinator:
    """The federation's coordinator: store, run executor and API together."""

    def __init__(self, config: CoordinatorConfig) -> None:
        host, port = config.host_port
        if config.certificates is None and host not in LOOPBACK and not config.insecure:
            raise ConfigurationError(
                f"the control API on {host} would send tokens in clear text: pass "
                "--certificates CERT KEY, listen on 127.0.0.1, or pass --insecure"
            )
        self.config = config
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(config.database_url())
        root = config.root_certificate or (config.certificates[0] if config.certificates else None)
        root_pem = Path(root).read_text() if root else None
        self.executor = RunExecutor(
            self.store,
            data_dir,
            ServerOptions(
                bind_host=host,
                public_host=config.public_host or host,
                certificates=config.certificates,
                root_certificate=root_pem,
            ),
        )
        router = Router()
        PeopleApi(self.store, self.executor).routes(router)
        NodeApi(self.store, self.executor, root_pem).routes(router)
        self.api = ApiServer(router, host, port, config.certificates)
        if config.certificates is None and host not in LOOPBACK:
            log.warning(
                "the control API serves plain HTTP on %s (--insecure): tokens and "
                "bundles travel in clear text",
                host,
            )

    @property
    def url(self) -> str:
        """The API's base URL."""
        host = self.config.host_port[0]
        scheme = "https" if self.config.certificates else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.api.port}"

    def start(self) -> None:
        """Resume the runs left running, then serve."""
        self.executor.start()
        self.api.start()

    def close(self) -> None:
        """Stop serving and end the run servers (their state stays for a later start)."""
        self.api.close()
        self.executor.close()
        self.store.close()
