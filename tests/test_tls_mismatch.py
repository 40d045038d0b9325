"""A client whose TLS settings do not fit its server's stops within seconds, saying what to fix,
instead of retrying for its whole reconnect timeout; an absent server is still retried."""

from __future__ import annotations

import re
import ssl
import threading
import time

import pytest
from grpc_support import (
    LinearClient,
    free_port,
    make_certificates,
    make_client_certificate,
    processes,
    serving,
)

from roost.errors import ServerUnreachableError, TlsMismatchError
from roost.transport.grpc.client import GrpcClient
from roost.transport.grpc.options import ClientOptions
from roost.transport.grpc.probe import (
    client_context,
    explain_tls_failure,
    looks_like_tls_failure,
    split_address,
)

# Far longer than any test may run: a mismatch must be named long before it runs out.
RECONNECT_TIMEOUT_S = 300.0
# Naming a mismatch takes well under a second; this bound is for a loaded two-core machine.
NAMED_WITHIN_S = 20.0
# `roost client` starts a Python interpreter and imports its app before it connects.
CLI_STARTUP_S = 20.0
# gRPC's own C-core log lines look like `E0101 12:00:00.000000 123 file.cc:45] ...`.
GRPC_CORE_LINE = re.compile(r"^[DIWEF]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict:
    """A CA with a server certificate and a client certificate for node `alice`, and a client
    certificate for `alice` that another CA signed."""
    ca = make_certificates(tmp_path_factory.mktemp("ca"))
    stranger = make_certificates(tmp_path_factory.mktemp("stranger"), "some other CA")
    return {
        **ca,
        "server_pair": (ca["server"], ca["server-key"]),
        "stranger_ca": stranger["ca"],
        "alice": make_client_certificate(ca, "alice"),
        "forged": make_client_certificate(stranger, "alice"),
    }


def first_error(address: str, reconnect_timeout: float = RECONNECT_TIMEOUT_S, **tls) -> Exception:
    """Run a client of `address` in a thread; the error it stopped with within NAMED_WITHIN_S."""
    options = ClientOptions(reconnect_timeout=reconnect_timeout, **tls)
    client = GrpcClient(address, lambda: LinearClient(0), "alice", options)
    errors: list[Exception] = []

    def serve() -> None:
        try:
            client.run()
        except Exception as error:  # the outcome under test
            errors.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(NAMED_WITHIN_S)
    elapsed = time.monotonic() - started
    client.stop()
    thread.join(10)
    assert elapsed < NAMED_WITHIN_S, f"the client still retried after {elapsed:.0f} s"
    assert errors, "the client returned without an error"
    return errors[0]


def mismatch(address: str, **tls) -> str:
    error = first_error(address, **tls)
    assert isinstance(error, TlsMismatchError), f"{type(error).__name__}: {error}"
    return str(error)


def test_a_client_without_tls_is_told_the_server_uses_it(certs):
    with serving(certificates=certs["server_pair"]) as transport:
        message = mismatch(f"127.0.0.1:{transport.port}")
        assert transport.connected() == []
    assert "the server uses TLS and this client does not" in message
    assert "pass --root-certificate PEM" in message


def test_a_tls_client_is_told_the_server_does_not_use_it(certs):
    with serving() as transport:
        message = mismatch(f"127.0.0.1:{transport.port}", root_certificates=certs["ca"])
    assert "the server does not use TLS and this client does" in message
    assert "drop --root-certificate" in message
    assert "--certificates CERT KEY" in message  # the server's flag that turns TLS on


def test_a_server_certificate_the_root_did_not_sign_is_named(certs):
    with serving(certificates=certs["server_pair"]) as transport:
        message = mismatch(f"127.0.0.1:{transport.port}", root_certificates=certs["stranger_ca"])
    assert "the server's certificate does not verify against --root-certificate" in message
    assert "unable to get local issuer certificate" in message


@pytest.mark.parametrize(
    ("client_certificate", "expected"),
    [
        (None, "requires a client certificate (mutual TLS) and this client has none"),
        ("forged", "refused this client's certificate"),
    ],
)
def test_mutual_tls_names_a_missing_or_untrusted_client_certificate(
    certs, client_certificate, expected
):
    certificate = certs[client_certificate] if client_certificate else None
    with serving(certificates=certs["server_pair"], client_ca=certs["ca"]) as transport:
        address = f"127.0.0.1:{transport.port}"
        message = mismatch(address, root_certificates=certs["ca"], certificate=certificate)
        without_tls = mismatch(address)
        assert transport.connected() == []
    assert expected in message
    assert "--client-ca" in message
    assert "the server uses TLS" in without_tls
    assert "--certificate CERT KEY if the server requires client certificates" in without_tls


def test_a_server_that_is_not_there_is_retried_until_the_reconnect_timeout(certs):
    address = f"127.0.0.1:{free_port()}"
    for tls in ({}, {"root_certificates": certs["ca"]}):
        started = time.monotonic()
        error = first_error(address, reconnect_timeout=0.8, **tls)
        assert time.monotonic() - started >= 0.8
        assert type(error) is ServerUnreachableError, error
        assert "no connection to the server" in str(error)


def test_the_probe_finds_nothing_wrong_with_fitting_settings(certs):
    """Fitting settings are never taken for a mismatch: the client keeps reconnecting."""
    with serving(certificates=certs["server_pair"], client_ca=certs["ca"]) as transport:
        address = f"127.0.0.1:{transport.port}"
        alice = tuple(path.read_bytes() for path in certs["alice"])
        assert explain_tls_failure(address, certs["ca"].read_bytes(), alice) is None
    with serving() as transport:
        assert explain_tls_failure(f"127.0.0.1:{transport.port}", None, None) is None
    assert explain_tls_failure(f"127.0.0.1:{free_port()}", None, None) is None


def test_unusable_tls_files_are_named_rather_than_probed_with():
    with pytest.raises(ssl.SSLError):
        client_context(b"not a certificate", None)
    message = explain_tls_failure("127.0.0.1:1", b"not a certificate", None)
    assert message is not None and "TLS files are not usable" in message


def test_what_the_probe_looks_at():
    assert looks_like_tls_failure("ipv4:127.0.0.1:5: Socket closed")
    assert looks_like_tls_failure("Tls handshake failed (TSI_PROTOCOL_FAILURE): WRONG_VERSION")
    assert not looks_like_tls_failure("Failed to connect to remote host: Connection refused")
    assert not looks_like_tls_failure(None)
    assert split_address("localhost:8080") == ("localhost", 8080)
    assert split_address("[::1]:8080") == ("::1", 8080)
    assert split_address("dns:///server.example:443") == ("server.example", 443)
    assert split_address("unix:/tmp/roost.sock") is None
    assert split_address("localhost") is None


@pytest.mark.slow  # starts a Python process
def test_roost_client_exits_with_one_line_that_names_the_fix(certs, tmp_path):
    with serving(certificates=certs["server_pair"]) as transport, processes(tmp_path) as run:
        run.env.pop("GRPC_VERBOSITY", None)  # the command itself must keep gRPC's lines quiet
        started = time.monotonic()
        client = run.start(
            "client",
            "client",
            "--app",
            "grpc_support:app",
            "--server",
            f"127.0.0.1:{transport.port}",
            "--partition-id",
            "0",
            "--num-partitions",
            "2",
            "--reconnect-timeout",
            str(RECONNECT_TIMEOUT_S),
        )
        status = run.wait(client, CLI_STARTUP_S + NAMED_WITHIN_S)
        elapsed = time.monotonic() - started
        output = run.log(client)
    assert status != 0, output
    assert elapsed < CLI_STARTUP_S + NAMED_WITHIN_S
    assert output.strip().splitlines() == [output.strip()], output  # one line
    assert output.startswith("roost: error: no connection to the server at 127.0.0.1:")
    assert "the server uses TLS and this client does not; pass --root-certificate PEM" in output
    assert not GRPC_CORE_LINE.search(output), output
