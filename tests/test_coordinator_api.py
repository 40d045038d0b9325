"""The coordinator's API in one process: node sign-in, people's runs and who may see them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from coordinator_support import ProtocolNode, post, tiny_project
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roost.cli import main
from roost.federation import people_api
from roost.federation.bundle import make_bundle, sign_bundle
from roost.federation.control import ControlClient, ControlError
from roost.federation.coordinator import Coordinator, CoordinatorConfig
from roost.federation.keys import public_key_line


@pytest.fixture
def coordinator(tmp_path):
    coordinator = Coordinator(CoordinatorConfig(data_dir=tmp_path / "fed", address="127.0.0.1:0"))
    coordinator.start()
    try:
        yield coordinator
    finally:
        coordinator.close()


def test_coordinator_lets_a_node_in_with_its_registered_key_only(coordinator):
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    coordinator.store.register_node("n0", public_key_line(key))
    node = ProtocolNode(coordinator.url, "n0", key)
    node.log_in()
    assert node.poll() == {"assign": [], "stop": []}
    assert coordinator.store.node("n0")["last_seen"] is not None

    impostor = ProtocolNode(coordinator.url, "n0", other)
    with pytest.raises(AssertionError, match="wrong key"):
        impostor.log_in()
    with pytest.raises(AssertionError, match="not registered"):
        ProtocolNode(coordinator.url, "n9", key).log_in()
    status, answer = post(f"{coordinator.url}/v1/nodes/poll", {"running": []}, "Node forged")
    assert status == 401 and "sign a new challenge" in answer["error"]


def test_coordinator_challenge_cannot_be_replayed(coordinator):
    key = Ed25519PrivateKey.generate()
    coordinator.store.register_node("n0", public_key_line(key))
    node = ProtocolNode(coordinator.url, "n0", key)
    _, answer = post(f"{coordinator.url}/v1/nodes/challenge", {"node": "n0"})
    from roost.federation.keys import b64decode, b64encode

    challenge = b64decode(answer["challenge"])
    body = {
        "node": "n0",
        "challenge": b64encode(challenge),
        "signature": b64encode(key.sign(challenge)),
    }
    assert post(f"{node.url}/v1/nodes/session", body)[0] == 200
    status, answer = post(f"{node.url}/v1/nodes/session", body)
    assert status == 401 and "challenge" in answer["error"]


def test_coordinator_people_see_and_stop_only_their_own_runs(coordinator, tmp_path):
    store = coordinator.store
    ada = ControlClient(coordinator.url, store.add_person("ada"))
    bob = ControlClient(coordinator.url, store.add_person("bob"))
    root = ControlClient(coordinator.url, store.add_person("root", operator=True))
    bundle = make_bundle(tiny_project(tmp_path / "tiny"))
    run = ada.submit(bundle, None, None, federation="f", nodes=5)  # 5 nodes: it stays queued
    assert [r["run"] for r in ada.runs()] == [run] and ada.runs()[0]["status"] == "queued"
    assert bob.runs() == []
    for action in (bob.stop, bob.run, bob.artifacts):
        with pytest.raises(ControlError, match=f"no run {run} of yours"):
            action(run)
    with pytest.raises(ControlError, match="no run 999 of yours"):
        ada.run(999)
    assert [r["owner"] for r in root.runs()] == ["ada"]
    assert root.stop(run)["status"] == "stopping"
    written: list[str] = []  # the line may arrive in an earlier poll than the final status
    answer = ada.follow_log(run, written.append, follow=True, interval=0.05)
    assert answer["status"] == "stopped" and "stopped on request" in "".join(written)
    with pytest.raises(ControlError, match="unknown token"):
        ControlClient(coordinator.url, "forged").runs()


def test_coordinator_refuses_bad_bundles_in_one_line_and_queues_nothing(
    coordinator, tmp_path, monkeypatch
):
    ada = ControlClient(coordinator.url, coordinator.store.add_person("ada"))
    bundle = make_bundle(tiny_project(tmp_path / "tiny"))
    with pytest.raises(ControlError, match="bundle refused: bundle is not a readable tar"):
        ada.submit(b"not a bundle", None, None, federation="f")
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with pytest.raises(ControlError, match="signature does not match"):
        ada.submit(bundle, sign_bundle(bundle, other), public_key_line(key), federation="f")
    monkeypatch.setattr(people_api, "MAX_BUNDLE_BYTES", len(bundle) - 1)
    with pytest.raises(ControlError, match="over the 0 MiB cap"):
        ada.submit(bundle, None, None, federation="f")
    assert ada.runs() == []


def test_coordinator_cli_says_in_one_line_when_the_coordinator_is_down(capsys, coordinator):
    url = coordinator.url
    coordinator.close()
    assert main(["ls", "--coordinator", url, "--token", "t"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is down or unreachable" in error
    coordinator.start = coordinator.close = lambda: None  # closed already


def test_federation_is_found_in_the_project_or_the_user_config(tmp_path, monkeypatch):
    from roost.cli.federations import federation_from_args
    from roost.errors import ConfigurationError

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("ROOST_COORDINATOR_TOKEN", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[tool.flwr.federations.lab]\naddress = "lab:9093"\nroot-certificates = "ca.pem"\n'
        'token = "t1"\n'
    )
    user = tmp_path / "config" / "roost" / "federations.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[federations.dev]\naddress = "127.0.0.1:9091"\ninsecure = true\n')

    def args(name, token=None):
        import argparse

        return argparse.Namespace(federation=name, coordinator=None, token=token)

    lab = federation_from_args(args("lab"), project)
    assert (lab.url, lab.token, lab.root_certificate) == (
        "https://lab:9093",
        "t1",
        str(project / "ca.pem"),
    )
    dev = federation_from_args(args("dev", token="t2"), project)
    assert (dev.url, dev.token) == ("http://127.0.0.1:9091", "t2")
    with pytest.raises(ConfigurationError, match="no token for http://127"):
        federation_from_args(args("dev"), project)
    with pytest.raises(ConfigurationError, match="no federation 'prod'"):
        federation_from_args(args("prod"), project)


def test_coordinator_operator_commands_add_people_and_nodes_or_say_why_not(tmp_path, capsys):
    from roost.federation.keys import generate_key_pair
    from roost.federation.store import Store

    data = str(tmp_path / "fed")
    generate_key_pair(tmp_path / "n0.pem")
    assert main(["coordinator", "--data", data, "--add-node", "n0", str(tmp_path / "n0.pub")]) == 0
    assert main(["coordinator", "--data", data, "--add-person", "ada", "--operator"]) == 0
    token = capsys.readouterr().out.strip().rsplit(": ", 1)[1]
    (tmp_path / "bad.pub").write_text("not a key")
    assert main(["coordinator", "--data", data, "--add-node", "n1", str(tmp_path / "bad.pub")]) == 2
    assert "is not a PEM public key" in capsys.readouterr().err
    store = Store.open(f"sqlite:///{tmp_path / 'fed' / 'coordinator.db'}")
    try:
        assert store.person(token)["operator"] and [n["name"] for n in store.nodes()] == ["n0"]
    finally:
        store.close()


def test_coordinator_wants_tls_off_the_loopback_interface(tmp_path):
    from roost.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--certificates CERT KEY"):
        Coordinator(CoordinatorConfig(data_dir=tmp_path, address="0.0.0.0:0"))


def test_coordinator_api_speaks_tls_with_its_certificates(tmp_path):
    from grpc_support import make_certificates

    files = make_certificates(tmp_path)
    coordinator = Coordinator(
        CoordinatorConfig(
            data_dir=tmp_path / "fed",
            address="127.0.0.1:0",
            certificates=(str(files["server"]), str(files["server-key"])),
            root_certificate=str(files["ca"]),
        )
    )
    coordinator.start()
    try:
        assert coordinator.url.startswith("https://")
        token = coordinator.store.add_person("ada")
        assert ControlClient(coordinator.url, token, str(files["ca"])).runs() == []
        with pytest.raises(ControlError, match="CERTIFICATE_VERIFY_FAILED"):
            ControlClient(coordinator.url, token).runs()  # a CA it does not trust
    finally:
        coordinator.close()


def test_coordinator_run_submit_refuses_simulation_only_options(tmp_path, capsys):
    project = tiny_project(tmp_path / "tiny")
    submit = ["run", str(project), "--coordinator", "http://127.0.0.1:9", "--token", "t"]
    assert main([*submit, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "--out is for a simulation on this machine" in error and "roost pull" in error
    assert main([*submit, "--dashboard"]) == 2
    assert "roost coordinator --dashboard" in capsys.readouterr().err


def test_coordinator_hands_nodes_the_run_config_as_a_table():
    from roost.federation.node_api import run_config_table

    table = run_config_table(["num-rounds=3", "name='cnn'", "lr=0.5", "flag=true", "raw=a b"])
    assert table == {"num-rounds": 3, "name": "cnn", "lr": 0.5, "flag": True, "raw": "a b"}


def test_coordinator_counts_a_run_handed_to_a_node_against_its_capacity(coordinator, tmp_path):
    # A node with one slot polls, is handed run 1, and before its next poll (which would report
    # capacity 0) run 2 arrives: run 2 waits instead of going to a node that has no room.
    key = Ed25519PrivateKey.generate()
    coordinator.store.register_node("n0", public_key_line(key))
    node = ProtocolNode(coordinator.url, "n0", key)
    node.log_in()
    node.poll(capacity=1)
    executor = coordinator.executor
    assert executor._choose_nodes(None) == ["n0"]
    run = coordinator.store.add_run(
        owner="ada", federation="f", project="p", bundle_sha256="0" * 64, signature=None,
        publisher_key=None, run_config=[], wanted_nodes=1,
    )  # fmt: skip
    coordinator.store.update_run(run, status="running")
    coordinator.store.add_assignment(run, "n0")
    assert executor._choose_nodes(None) is None
    assert [a["run"] for a in node.poll(capacity=1)["assign"]] == [run]  # delivered, not started
    assert executor._choose_nodes(None) is None
    node.poll([str(run)], capacity=0)
    assert executor._choose_nodes(None) is None
    node.poll([str(run)], capacity=1)  # a node with two slots, one of them taken by the run
    assert executor._choose_nodes(None) == ["n0"]


def test_a_restarted_coordinator_waits_for_known_nodes_before_taking_every_online_node(
    coordinator,
):
    # Two nodes were seen by an earlier coordinator. Just after a restart only n0 has polled
    # again: a run that takes every online node must not start with n0 alone (its server would
    # wait for a second client forever); it starts once n1 is back, or after the grace period.
    from roost.federation.runs import RECONNECT_GRACE_S, RunExecutor

    keys = {name: Ed25519PrivateKey.generate() for name in ("n0", "n1")}
    nodes = {}
    for name, key in keys.items():
        coordinator.store.register_node(name, public_key_line(key))
        nodes[name] = ProtocolNode(coordinator.url, name, key)
        nodes[name].log_in()
        nodes[name].poll(capacity=1)
    restarted = RunExecutor(
        coordinator.store, coordinator.executor.data_dir, coordinator.executor.options
    )
    nodes["n0"].poll(capacity=1)
    assert restarted._choose_nodes(None) is None
    assert restarted._choose_nodes(1) == ["n0"]  # a run that asked for one node need not wait
    nodes["n1"].poll(capacity=1)
    coordinator.store.register_node("n2", public_key_line(Ed25519PrivateKey.generate()))
    assert restarted._choose_nodes(None) == ["n0", "n1"]  # n2 was never seen: not waited for
    later = RunExecutor(
        coordinator.store, coordinator.executor.data_dir, coordinator.executor.options
    )
    assert later._choose_nodes(None) is None  # neither has polled this coordinator yet
    later._started -= RECONNECT_GRACE_S
    assert later._choose_nodes(None) == ["n0", "n1"]  # the grace is over: whoever is online


def test_coordinator_redoes_a_start_that_a_crash_cut_short(coordinator, tmp_path):
    # Killed after unpacking the app and handing out tokens but before recording the start, a
    # coordinator finds the run queued again: it starts it afresh, with fresh tokens.
    ada = ControlClient(coordinator.url, coordinator.store.add_person("ada"))
    run = ada.submit(make_bundle(tiny_project(tmp_path / "tiny")), None, None, federation="f")
    executor = coordinator.executor
    executor.close()  # this test steps the executor itself
    (executor.run_dir(run) / "app").mkdir(parents=True)
    (executor.run_dir(run) / "app" / "stale.txt").write_text("from the cut-short start")
    stale = coordinator.store.add_assignment(run, "n0")
    launched = []
    executor._launch = lambda run, port: launched.append(run["id"])
    executor._choose_nodes = lambda wanted: ["n0"]
    executor.tick()
    assert launched == [run] and coordinator.store.run(run)["status"] == "starting"
    assert not (executor.run_dir(run) / "app" / "stale.txt").exists()
    (assignment,) = coordinator.store.assignments(run=run)
    assert assignment["token"] != stale


def test_coordinator_records_why_a_run_server_failed(coordinator, tmp_path):
    executor = coordinator.executor
    executor.close()  # this test steps the executor itself
    ada = ControlClient(coordinator.url, coordinator.store.add_person("ada"))
    run = ada.submit(make_bundle(tiny_project(tmp_path / "tiny")), None, None, federation="f")
    coordinator.store.update_run(run, status="running")
    log = executor.run_dir(run) / "log.txt"
    with log.open("a") as file:
        file.write("round 1/3 ...\nroost: error: --run-config num-rounds must be an int\n")
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])
    failing.wait()
    executor._servers[run] = failing
    executor.tick()
    shown = ada.run(run)
    assert shown["status"] == "failed"
    assert shown["message"] == "roost: error: --run-config num-rounds must be an int"


def test_coordinator_fails_a_run_whose_client_failed_on_a_node(coordinator, tmp_path):
    # The run's server would wait for the crashed client forever: the run fails with the reason.
    executor = coordinator.executor
    executor.close()  # this test steps the executor itself
    key = Ed25519PrivateKey.generate()
    coordinator.store.register_node("n0", public_key_line(key))
    node = ProtocolNode(coordinator.url, "n0", key)
    node.log_in()
    ada = ControlClient(coordinator.url, coordinator.store.add_person("ada"))
    run = ada.submit(make_bundle(tiny_project(tmp_path / "tiny")), None, None, federation="f")
    coordinator.store.update_run(run, status="running")
    coordinator.store.add_assignment(run, "n0")
    reason = "client exited with status 3: ZeroDivisionError"
    assert node.call("/v1/nodes/report", {"run": run, "status": "failed", "reason": reason})[0]
    shown = ada.run(run)
    assert shown["status"] == "failed"
    assert shown["message"] == f"node n0's client failed: {reason}"


def test_coordinator_api_answers_bad_requests_in_one_line(coordinator):
    import urllib.request

    assert post(f"{coordinator.url}/v1/nope", {})[0] == 404
    request = urllib.request.Request(
        f"{coordinator.url}/v1/nodes/challenge", data=b"{not json", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read()) == {"error": "the request body is not JSON"}
    status, answer = post(f"{coordinator.url}/v1/runs/1/stop", {})
    assert status == 401 and "unknown token" in answer["error"]
