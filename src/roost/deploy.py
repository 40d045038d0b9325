"""Deployment: a real server and real clients on other machines, talking gRPC.

    # on the server
    history = roost.start_server(
        server_address="0.0.0.0:8080", config=roost.ServerConfig(num_rounds=3), strategy=strategy
    )

    # on each client
    roost.start_client(server_address="server.example:8080", client=MyClient())

The server runs the same round loop as `roost.run_simulation`; only the transport differs.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from roost.client.client import ClientFn, ClientLike, Context
from roost.core.types import Config
from roost.errors import ConfigurationError, RoostError
from roost.log import ensure_logging
from roost.outputs import keep_outputs
from roost.server.history import History
from roost.server.loop import RoundCallback, ServerConfig, ServerState, run_rounds
from roost.server.state import open_state, recording
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import Strategy
from roost.tracking.base import Tracker, TrackRounds
from roost.transport.grpc.client import GrpcClient
from roost.transport.grpc.options import ClientOptions, ServerOptions
from roost.transport.grpc.security import PemSource
from roost.transport.grpc.server import GrpcServerTransport
from roost.transport.grpc.wire import DEFAULT_MAX_MESSAGE_BYTES

log = logging.getLogger("roost")

__all__ = ["start_client", "start_server"]


def start_server(
    *,
    server_address: str = "0.0.0.0:8080",
    config: ServerConfig | None = None,
    strategy: Strategy | None = None,
    seed: int | None = None,
    certificates: Sequence[PemSource] | None = None,
    client_ca: PemSource | None = None,
    auth_tokens: Mapping[str, str] | str | Path | None = None,
    state_dir: str | Path | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    plot: bool = True,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_concurrent_uploads: int = 8,
    upload_idle_timeout: float | None = 60.0,
    client_wait_timeout: float | None = None,
    on_round_end: RoundCallback | None = None,
    trackers: Sequence[Tracker] = (),
    client_metrics: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> History:
    """Serve a federated run over gRPC until `config.num_rounds` rounds are done; return its
    History, whose `parameters` are the final global model.

    Args:
        server_address: `host:port` to listen on (`0.0.0.0:8080` listens on every interface).
        config: number of rounds and the per-client `round_timeout` (default: 1 round, no limit).
        strategy: defaults to `FedAvg()`; every round waits for its `min_available_clients`.
        seed: seeds client sampling; with `state_dir`, a resumed run samples as the original would.
        certificates: `(certificate_chain, private_key)` or `(ca_certificate, chain, key)`, as
            PEM bytes or paths; serves TLS. Clients then need the CA as `root_certificates`.
        client_ca: CA certificate (PEM bytes or path): only clients with a certificate it signed
            may connect, as the node its common name names (mutual TLS; needs `certificates`).
        auth_tokens: `{node_id: token}` or a file of `node-id token` lines; only clients with one of
            these tokens may join, each under its token's node id.
        state_dir: record every completed round there (SQLite + model files) to survive restarts.
        resume: continue the run recorded in `state_dir` after its last completed round.
        out_dir / plot: write the run's files there at the end (`plot=False`: no `plot.png`).
        max_message_bytes: largest result accepted from a client, with its arrays (default 1 GiB).
        max_concurrent_uploads: upload slots: results received at once, which bounds the memory
            of received models to about this + 1 models (default 8).
        upload_idle_timeout: seconds an upload may go without data before it is that client's
            failure (default 60; None: never).
        client_wait_timeout: seconds to wait for enough clients before giving up (default: forever).
        on_round_end: also called with the `ServerState` after every round.
        trackers: get every round's values (`roost.tracking`); closed when the run ends.
        client_metrics: also hand trackers each client's own fit and evaluate metrics.
        settings: what the result depends on (JSON by name): recorded, and kept on resume.
    """
    ensure_logging()
    options = ServerOptions(
        certificates=certificates,
        client_ca=client_ca,
        auth_tokens=auth_tokens,
        max_message_bytes=max_message_bytes,
        max_concurrent_uploads=max_concurrent_uploads,
        upload_idle_timeout=upload_idle_timeout,
        client_wait_timeout=client_wait_timeout,
    )
    store, resume_from = open_state(state_dir, resume, out_dir, settings)
    transport = GrpcServerTransport(server_address, options)
    config = config if config is not None else ServerConfig(num_rounds=1)
    then = recording(store, on_round_end)
    track = TrackRounds(
        trackers, num_rounds=config.num_rounds, client_metrics=client_metrics, then=then
    )
    keep = partial(keep_outputs, out_dir, plot)
    return _serve_rounds(strategy, transport, config, track, seed, resume_from, keep)


def _serve_rounds(
    strategy: Strategy | None,
    transport: GrpcServerTransport,
    config: ServerConfig,
    track: TrackRounds,
    seed: int | None,
    resume_from: ServerState | None,
    keep: Callable[[History], RoostError | None],
) -> History:
    """Run the rounds of `strategy` (default `FedAvg()`) over `transport`, every round's values
    handed to `track`; `keep` the result; then close the transport, telling clients whether the
    run is over, and the trackers. An error `keep` returns is raised once the clients are gone."""
    finished = False
    strategy = strategy if strategy is not None else FedAvg()
    try:
        track.check(strategy.withholds_client_statistics)
        history = run_rounds(
            strategy,
            track.observe(transport),
            config,
            seed=seed,
            resume_from=resume_from,
            on_round_end=track,
            real_time=True,  # FedBuff keeps its clients busy across rounds
        )
        # Written before the clients are sent home: a result kept nowhere ends no run.
        trouble = keep(history)
        finished = True
    finally:
        # Only a finished run sends clients home; after a failure they keep reconnecting, so
        # that a server restarted with resume finds them again.
        try:
            transport.close(run_over=finished)
        finally:
            track.close()
    if trouble is not None:
        raise trouble
    return history


def start_client(
    *,
    server_address: str,
    client: ClientLike | None = None,
    client_fn: ClientFn | None = None,
    partition_id: int | None = None,
    num_partitions: int | None = None,
    node_id: str | None = None,
    run_config: Config | None = None,
    root_certificates: PemSource | None = None,
    certificate: tuple[PemSource, PemSource] | None = None,
    token: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    reconnect_timeout: float | None = 600.0,
) -> None:
    """Connect to a roost server and serve its instructions until it ends the run.

    Give either `client` (an object with `get_parameters` / `fit` / `evaluate`) or `client_fn`
    (called once with a `Context` built from `partition_id`, `num_partitions` and `run_config`).
    When the connection is lost (for example because the server restarts, or failed and is
    resumed) the client reconnects with exponential backoff; it returns only when the server says
    the run is over.

    Args:
        server_address: `host:port` of the server.
        node_id: the name this client joins under; defaults to the partition id, or a random name.
            With token authentication it must be the node id the token was issued for.
        root_certificates: PEM bytes or path of the CA certificate that signed the server's
            certificate; enables TLS.
        certificate: `(certificate_chain, private_key)` of this client, for servers that
            require client certificates (mutual TLS); its common name must be the node id.
        token: this node's token, when the server authenticates clients.
        max_message_bytes: largest instruction accepted, counting its arrays (default 1 GiB).
        reconnect_timeout: give up after this many seconds without a connection (None: never).

    Raises:
        ClientRefusedError: the server refused this client (credentials, node id, version).
        TlsMismatchError: TLS on one end only, or a certificate the other end does not trust;
            raised at the first failed connection, since retrying cannot fix it.
        ServerUnreachableError: no connection for `reconnect_timeout` seconds.
    """
    ensure_logging()
    if (client is None) == (client_fn is None):
        raise ConfigurationError("pass exactly one of client= or client_fn=")
    if node_id is None:
        node_id = str(partition_id) if partition_id is not None else f"node-{secrets.token_hex(4)}"
    # One context for the life of this process: its `state` persists across instructions.
    context = Context.for_partition(
        partition_id if partition_id is not None else 0,
        num_partitions if num_partitions is not None else 1,
        run_config=run_config,
        node_id=node_id,
    )

    def make_client() -> ClientLike:
        return client if client is not None else client_fn(context)

    options = ClientOptions(
        root_certificates=root_certificates,
        certificate=certificate,
        token=token,
        max_message_bytes=max_message_bytes,
        reconnect_timeout=reconnect_timeout,
    )
    GrpcClient(server_address, make_client, node_id, options, context=context).run()
