"""A deployed run whose `--out` cannot be written (a full disk) keeps its result: the files go
to a fallback directory that is named, and only then are the clients sent home."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from grpc_support import LinearClient, free_port, make_strategy, simulate

import roost
import roost.deploy
import roost.outputs
from roost.core.files import load_parameters
from roost.errors import RoostError, ServerUnreachableError
from roost.transport.grpc.client import _Stream
from roost.transport.grpc.server import GrpcServerTransport

NUM_ROUNDS = 2


def disk_full(events: list, refused: Callable[[Path], bool]):
    """A `save_run` that fails as a full disk does for the directories `refused` names."""
    real = roost.outputs.save_run

    def save_run(out_dir, history, *, plot=True):
        if refused(Path(out_dir)):
            events.append(("full", Path(out_dir)))
            raise OSError(errno.ENOSPC, "No space left on device")
        events.append(("saved", Path(out_dir)))
        return real(out_dir, history, plot=plot)

    return save_run


def deploy(monkeypatch, events: list, out: Path) -> tuple[object, list[object]]:
    """Serve NUM_ROUNDS to two clients in threads, recording when the server closes and when
    each client hears that the run is over; return the server's outcome and the clients'."""
    close, run_end = GrpcServerTransport.close, _Stream._on_run_end

    def recorded_close(self, *args, run_over=True, **kwargs):
        events.append(("close", run_over))
        return close(self, *args, run_over=run_over, **kwargs)

    def recorded_run_end(self, frame):
        events.append(("run over", "client"))
        return run_end(self, frame)

    monkeypatch.setattr(GrpcServerTransport, "close", recorded_close)
    monkeypatch.setattr(_Stream, "_on_run_end", recorded_run_end)
    address = f"127.0.0.1:{free_port()}"
    outcomes: dict[str, object] = {}

    def outcome(name, function, **kwargs) -> threading.Thread:
        def run() -> None:
            try:
                outcomes[name] = function(**kwargs)
            except RoostError as error:
                outcomes[name] = error

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    server = outcome(
        "server",
        roost.start_server,
        server_address=address,
        config=roost.ServerConfig(num_rounds=NUM_ROUNDS, round_timeout=60),
        strategy=make_strategy(2),
        seed=0,
        client_wait_timeout=60,
        out_dir=out,
    )
    clients = [
        outcome(
            str(i),
            roost.start_client,
            server_address=address,
            client=LinearClient(i),
            node_id=str(i),
            reconnect_timeout=1.0,
        )
        for i in range(2)
    ]
    for thread in [server, *clients]:
        thread.join(90)
        assert not thread.is_alive()
    return outcomes["server"], [outcomes["0"], outcomes["1"]]


def test_a_full_out_dir_leaves_the_model_in_a_named_fallback_before_clients_go_home(
    tmp_path, monkeypatch
):
    events: list = []
    out, spare = tmp_path / "out", tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(roost.outputs, "save_run", disk_full(events, lambda path: path == out))
    monkeypatch.setattr(roost.outputs, "fallback_parents", lambda: [spare])
    server, clients = deploy(monkeypatch, events, out)

    assert isinstance(server, RoostError), server
    [fallback] = spare.iterdir()
    message = str(server)
    assert f"could not be written to {out} (No space left on device)" in message
    assert f"they are in {fallback} instead" in message
    # The full disk first, then the fallback, and only then the clients hear the run is over.
    assert events == [
        ("full", out),
        ("saved", fallback),
        ("close", True),
        ("run over", "client"),
        ("run over", "client"),
    ]
    assert clients == [None, None]
    [model] = load_parameters(fallback / "model.npz")
    np.testing.assert_allclose(model, simulate(NUM_ROUNDS).parameters[0], rtol=0, atol=1e-9)
    assert (fallback / "history.json").exists() and not (out / "model.npz").exists()


def test_a_result_no_directory_takes_sends_no_client_home(tmp_path, monkeypatch):
    events: list = []
    out, spare = tmp_path / "out", tmp_path / "spare"
    spare.mkdir()
    refused = disk_full(events, lambda path: path == out or path.parent == spare)
    monkeypatch.setattr(roost.outputs, "save_run", refused)
    monkeypatch.setattr(roost.outputs, "fallback_parents", lambda: [spare, spare])
    server, clients = deploy(monkeypatch, events, out)

    assert isinstance(server, RoostError), server
    assert "nor to a temporary, working or home directory; free disk space" in str(server)
    assert [event[0] for event in events] == ["full", "full", "full", "close"]
    assert events[-1] == ("close", False)
    # Told the server stopped, not that the run is over: they looked for it until they gave up.
    assert all(isinstance(client, ServerUnreachableError) for client in clients), clients
    assert list(spare.iterdir()) == []  # no half-written fallback left behind


def test_outputs_written_where_asked_send_the_clients_home_after(tmp_path, monkeypatch):
    events: list = []
    out = tmp_path / "out"
    monkeypatch.setattr(roost.outputs, "save_run", disk_full(events, lambda path: False))
    server, clients = deploy(monkeypatch, events, out)

    assert isinstance(server, roost.History), server
    assert events[:2] == [("saved", out), ("close", True)]
    assert clients == [None, None]
    np.testing.assert_array_equal(load_parameters(out / "model.npz")[0], server.parameters[0])


def test_a_flower_projects_full_out_dir_leaves_its_model_in_a_named_fallback(
    monkeypatch, tmp_path: Path
) -> None:
    """A Flower project (served or simulated: one path) keeps its result as a roost app does."""
    from roost.compat.flwr.project import run_project, seed_global_generators

    events: list = []
    monkeypatch.setattr(roost.outputs, "save_run", disk_full(events, lambda d: d == tmp_path))
    monkeypatch.setattr(roost.outputs, "fallback_parents", lambda: [tmp_path / "elsewhere"])
    (tmp_path / "elsewhere").mkdir()
    app = Path(__file__).parent / "flower_apps" / "numpy_app"
    seed_global_generators(0)
    try:
        run_project(app, num_nodes=2, seed=0, out_dir=tmp_path)
    except RoostError as error:
        message = str(error)
    else:
        raise AssertionError("a run whose outputs were not written where asked must say so")
    (kept,) = (tmp_path / "elsewhere").glob("roost-run-*")
    assert str(kept) in message
    assert load_parameters(kept / "model.npz")[0].shape == (4,)
