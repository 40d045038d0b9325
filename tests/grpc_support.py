"""Helpers for the gRPC tests: a light app, test certificates, processes, a raw test client, and
a server with clients in this process."""

from __future__ import annotations

import collections
import datetime
import ipaddress
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np

import roost
from roost.core.types import FitIns
from roost.transport.grpc import frames, wire
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.client import GrpcClient
from roost.transport.grpc.options import ClientOptions, ServerOptions
from roost.transport.grpc.security import token_metadata
from roost.transport.grpc.server import GrpcServerTransport

TESTS_DIR = Path(__file__).resolve().parent
NUM_FEATURES = 5

# -- a light app: linear least squares on generated data (no scikit-learn import, fast start) ----


def partition_data(partition_id: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, partition_id])
    x = rng.normal(size=(40 + 10 * partition_id, NUM_FEATURES))
    true_w = np.arange(1.0, NUM_FEATURES + 1)
    return x, x @ true_w + 0.1 * rng.normal(size=len(x))


def local_sgd(
    weights: np.ndarray, x: np.ndarray, y: np.ndarray, server_round: int, partition_id: int
) -> np.ndarray:
    """Deterministic given (round, partition): the property that makes resumed runs reproducible."""
    rng = np.random.default_rng([server_round, partition_id])
    w = weights.copy()
    for index in rng.permutation(len(y)):
        w -= 0.01 * (x[index] @ w - y[index]) * x[index]
    return w


class LinearClient(roost.Client):
    """Least squares by SGD. `ROOST_TEST_FIT_SLEEP` slows fit; `ROOST_TEST_MARKERS` records fits."""

    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id
        self.x, self.y = partition_data(partition_id)

    def get_parameters(self, config):
        return [np.zeros(NUM_FEATURES)]

    def fit(self, parameters, config):
        server_round = int(config.get("server_round", 0))
        markers = os.environ.get("ROOST_TEST_MARKERS")
        if markers:
            Path(markers, f"fit-{self.partition_id}-{server_round}").touch()
        time.sleep(float(os.environ.get("ROOST_TEST_FIT_SLEEP", "0")))
        w = local_sgd(parameters[0], self.x, self.y, server_round, self.partition_id)
        return [w], len(self.y), {"partition": self.partition_id}

    def evaluate(self, parameters, config):
        loss = float(np.mean((self.x @ parameters[0] - self.y) ** 2))
        return loss, len(self.y), {"mse": loss}


def client_fn(context: roost.Context) -> LinearClient:
    return LinearClient(context.partition_id)


def make_strategy(min_clients: int = 2) -> roost.FedAvg:
    return roost.FedAvg(
        min_fit_clients=min_clients,
        min_evaluate_clients=min_clients,
        min_available_clients=min_clients,
        initial_parameters=[np.zeros(NUM_FEATURES)],
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
    )


app = roost.App(client_fn=client_fn, strategy=make_strategy)


def simulate(num_rounds: int, num_clients: int = 2, seed: int = 0) -> roost.History:
    """The same app, in-process: the reference every deployed run must reproduce."""
    return roost.run_simulation(
        client_fn,
        num_clients,
        strategy=make_strategy(num_clients),
        config=roost.ServerConfig(num_rounds=num_rounds),
        seed=seed,
    )


# -- ports, processes ---------------------------------------------------------------------------


def free_port() -> int:
    """A port free on 127.0.0.1 now, drawn at random from a range the OS does not hand out on
    its own: parallel test workers asking the OS for port 0 tend to get the same ones, and a
    server starting a moment later could then find its port taken by another worker's."""
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(20_000, 30_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found in 20000-29999")


class Processes:
    """Start `roost` commands as real processes; `stop_all` kills whatever is still running."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        paths = [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
        self.env.pop("ROOST_TOKEN", None)
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "roost.cli", *args],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, "COLUMNS": "200", **(env or {})},
        )
        process.log_file = log  # type: ignore[attr-defined]
        process.log_path = self.workdir / f"{name}.log"  # type: ignore[attr-defined]
        self.running.append(process)
        return process

    def wait(self, process: subprocess.Popen, timeout: float = 60) -> int:
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process did not finish:\n{self.log(process)}") from None

    @staticmethod
    def log(process: subprocess.Popen) -> str:
        process.log_file.flush()
        return Path(process.log_path).read_text(errors="replace")

    def kill(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop_all(self) -> None:
        for process in self.running:
            self.kill(process)
            process.log_file.close()


@contextmanager
def processes(workdir: Path, env: dict[str, str] | None = None):
    group = Processes(workdir, env)
    try:
        yield group
    finally:
        group.stop_all()


def wait_for(predicate, timeout: float = 30, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_listening(address: str, timeout: float = 90) -> None:
    """Block until something accepts TCP connections on `address` (a server still starting up
    on a loaded machine must not make clients give up and fail a test for the wrong reason)."""
    host, port = address.rsplit(":", 1)

    def accepts() -> bool:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            return False

    wait_for(accepts, timeout, interval=0.1, what=f"a server listening on {address}")


# -- test certificates ---------------------------------------------------------------------------


def make_certificates(directory: Path, common_name: str = "roost test CA") -> dict[str, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 / localhost, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, public_key, signing_key, *, ca: bool, names=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(names)), critical=False
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(common_name, common_name, ca_key.public_key(), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = certificate(
        "localhost",
        common_name,
        server_key.public_key(),
        ca_key,
        ca=False,
        names=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key")}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["ca-key"].write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["server"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths["server-key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def make_client_certificate(ca: dict[str, Path], node_id: str) -> tuple[Path, Path]:
    """A client certificate for `node_id` (its common name) signed by `ca` (`make_certificates`),
    as `(certificate, key)` PEM files next to the CA's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate(ca["ca"].read_bytes())
    ca_key = serialization.load_pem_private_key(ca["ca-key"].read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = ca["ca"].parent / f"client-{node_id}.pem"
    key_path = ca["ca"].parent / f"client-{node_id}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# -- a raw client that can send anything ---------------------------------------------------------


class RawClient:
    """Speaks the wire protocol frame by frame, so tests can send what no honest client would."""

    def __init__(
        self,
        address: str,
        node_id: str | None = "raw",
        token: str | None = None,
        hello: bool = True,
    ) -> None:
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ],
        )
        self._outbox: queue.Queue = queue.Queue()
        self.frames: queue.Queue = queue.Queue()
        # Frames read while waiting for an upload grant, for `next` to return first.
        self._held: collections.deque = collections.deque()
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self.call = self.channel.stream_stream(wire.JOIN_METHOD)(
            iter(self._outbox.get, None), metadata=token_metadata(token) if token else ()
        )
        threading.Thread(target=self._read, daemon=True).start()
        if hello:
            self.send(
                frames.frame_bytes(
                    hello=pb.Greeting(protocol_version=wire.PROTOCOL_VERSION, node_id=node_id)
                )
            )
            assert self.next("welcome").welcome.node_id == node_id

    def _read(self) -> None:
        try:
            for raw in self.call:
                self.frames.put(frames.parse_frame(raw))
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.ended.set()
            self.frames.put(None)

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            self._outbox.put(frame)

    def next(self, body: str, timeout: float = 10) -> pb.Frame:
        """The next frame, which must be of kind `body`."""
        frame = self._held.popleft() if self._held else self.frames.get(timeout=timeout)
        assert frame is not None, f"stream ended ({self.error}) while waiting for {body}"
        assert frame.WhichOneof("body") == body, f"expected {body}, got {frame}"
        return frame

    def instruction(self, timeout: float = 10) -> tuple[pb.Header, list[np.ndarray]]:
        header = self.next("instruction", timeout).instruction
        assembly = wire.Assembly(header, wire.check_specs(header.arrays, 1 << 30))
        while not assembly.complete:
            assembly.add(self.next("chunk", timeout).chunk.data)
        return header, assembly.arrays()

    def send_result(
        self, message_id: int, arrays, num_examples: int = 10, kind: int = pb.FIT, metrics=None
    ) -> None:
        """Send a result as an honest client does: its chunks only once the upload is granted."""
        result = roost.FitRes(list(arrays), num_examples, metrics or {})
        encoded = wire.encode_result(result, 1 << 16)
        encoded.header.kind = kind
        self.send(wire.header_frame(encoded.header, "result", message_id))
        if encoded.header.num_chunks and self.await_grant(message_id):
            self.send(*encoded.chunks)

    def await_grant(self, message_id: int, timeout: float = 10) -> bool:
        """Wait for the server's answer to the header of result `message_id`: True for a grant;
        False for a rejection, which `next` then returns (other frames read meanwhile too)."""
        read: list[pb.Frame] = []
        try:
            while True:
                frame = self.frames.get(timeout=timeout)
                assert frame is not None, f"stream ended ({self.error}) waiting for a grant"
                body = frame.WhichOneof("body")
                if body == "grant" and frame.grant.message_id == message_id:
                    return True
                read.append(frame)
                if body == "rejection" and frame.rejection.message_id == message_id:
                    return False
        finally:
            self._held.extend(read)

    def wait_closed(self, timeout: float = 10) -> grpc.RpcError | None:
        assert self.ended.wait(timeout), "the server did not close the stream"
        return self.error

    def close(self) -> None:
        self._outbox.put(None)
        self.call.cancel()
        self.channel.close()


def declare(
    raw: RawClient,
    message_id: int,
    specs,
    num_chunks: int,
    kind: int = pb.FIT,
    *,
    granted: bool = False,
) -> None:
    """Send only the header of a result: `num_chunks` chunks are then expected. With `granted`,
    wait until the server has granted its upload."""
    header = pb.Header(message_id=message_id, kind=kind, arrays=specs, num_chunks=num_chunks)
    raw.send(frames.frame_bytes(result=header))
    if granted:
        assert raw.await_grant(message_id), "the upload was rejected, not granted"


# -- a server and clients in this process ------------------------------------------------------


@contextmanager
def serving(**options):
    transport = GrpcServerTransport("127.0.0.1:0", ServerOptions(**options))
    try:
        yield transport
    finally:
        transport.close(grace=1.0)


@contextmanager
def clients(address: str, make_clients: dict, **options):
    """gRPC clients in threads, keyed by node id; each is stopped and joined at the end."""
    grpc_clients, threads, errors = [], [], []
    for node_id, make_client in make_clients.items():
        grpc_client = GrpcClient(
            address, make_client, node_id, ClientOptions(reconnect_timeout=10, **options)
        )

        def serve(grpc_client=grpc_client):
            try:
                grpc_client.run()
            except Exception as error:  # surfaced to the test below
                errors.append(error)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        grpc_clients.append(grpc_client)
        threads.append(thread)
    try:
        yield errors
    finally:
        for grpc_client in grpc_clients:
            grpc_client.stop()
        for thread in threads:
            thread.join(10)


def start_round(pool, transport, cohort, timeout=10.0) -> Future:
    return pool.submit(lambda: list(transport.run(cohort, timeout)))


def fit_ins(value: float = 0.0, server_round: int = 1) -> FitIns:
    return FitIns([np.full(NUM_FEATURES, value)], {"server_round": server_round})


def honest_update(partition_id: int, ins: FitIns) -> np.ndarray:
    client = LinearClient(partition_id)
    return client.fit([a.copy() for a in ins.parameters], ins.config)[0][0]


def run_deployed(
    strategy,
    clients: dict,
    num_rounds: int,
    timeout: float = 120,
    *,
    start_server=roost.start_server,
    start_client=roost.start_client,
    **server_options,
):
    """Serve `num_rounds` with `start_server` (and `server_options`) and connect `clients` with
    `start_client`, all in threads on a free loopback port; return the server's History.

    `clients` maps a node id to its client, or to the other keyword arguments of its
    `start_client` (`{"client_fn": ..., "partition_id": 0}`). The start functions may be the
    Flower layer's (`roost.compat.flwr`)."""
    address = f"127.0.0.1:{free_port()}"
    box: dict = {}

    def serve() -> None:
        box["history"] = start_server(
            server_address=address,
            config=roost.ServerConfig(num_rounds=num_rounds, round_timeout=60),
            strategy=strategy,
            seed=0,
            client_wait_timeout=60,
            **server_options,
        )

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    threads = [
        threading.Thread(
            target=start_client,
            kwargs={
                "server_address": address,
                **(client if isinstance(client, dict) else {"client": client}),
                "node_id": node_id,
                "reconnect_timeout": 60,
            },
            daemon=True,
        )
        for node_id, client in clients.items()
    ]
    for thread in threads:
        thread.start()
    server.join(timeout)
    for thread in threads:
        thread.join(30)
    assert not server.is_alive(), f"the server did not finish its {num_rounds} rounds"
    return box["history"]


def start_client_process(
    run: Processes,
    name: str,
    address: str,
    partition: tuple[int, int],
    *options: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start `roost client` (logging to `name`.log) for `partition` = (id, count)."""
    partition_id, count = partition
    where = ["--server", address, "--partition-id", str(partition_id)]
    return run.start(name, "client", *where, "--num-partitions", str(count), *options, env=env)


def start_clients(run: Processes, address: str, count: int, *options: str) -> list:
    """Start `count` `roost client` processes for partitions 0..count-1 of `count`."""
    return [
        start_client_process(run, f"client{p}", address, (p, count), *options) for p in range(count)
    ]


def start_demo_server(run: Processes, address: str, min_clients: int, *options: str):
    """`roost server` (the bundled demo) waiting for `min_clients`, writing out/ (no chart)."""
    where = ["--address", address, "--min-clients", str(min_clients)]
    return run.start("server", "server", *where, "--no-plot", "--out", "out", *options)


def wait_all(run: Processes, server: subprocess.Popen, clients: list) -> None:
    """Wait for the server, then its clients, to exit with 0 (else fail with the log)."""
    assert run.wait(server, 120) == 0, run.log(server)
    for client in clients:
        assert run.wait(client, 30) == 0, run.log(client)
