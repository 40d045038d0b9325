"""A client without a server: one line per attempt with the next delay, and `roost client` gives
up after about a minute, saying how to wait longer."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from grpc_support import free_port

from roost.cli import build_parser
from roost.transport.grpc.client import _gist
from roost.transport.grpc.options import ClientOptions

ATTEMPT = re.compile(
    r"^\d\d:\d\d:\d\d WARNING connection to 127\.0\.0\.1:\d+ failed: UNAVAILABLE: (.+); "
    r"attempt (\d+), retrying in (\d+\.\d) s$"
)


def test_roost_client_without_a_server_logs_one_line_per_attempt_then_says_how_to_wait_longer():
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    command = ["client", "--server", address, "--partition-id", "0", "--num-partitions", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "roost.cli", *command, "--reconnect-timeout", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    attempts = [ATTEMPT.match(line) for line in lines]
    assert all(attempts), done.stdout
    assert [int(match.group(2)) for match in attempts] == list(range(1, len(lines) + 1))
    # Each delay is what the client then waits: the first about initial_backoff, none past
    # the time left of the two seconds.
    delays = [float(match.group(3)) for match in attempts]
    assert 0.3 <= delays[0] <= 0.7 and max(delays) <= 2.0, delays
    error = done.stderr.strip().splitlines()
    assert len(error) == 1, done.stderr
    assert error[0].startswith(f"roost: error: no connection to the server at {address}")
    assert error[0].endswith("to wait longer, pass --reconnect-timeout SECONDS (now 2)")


def test_roost_client_waits_a_minute_by_default_and_the_library_ten():
    args = build_parser().parse_args(["client", "--partition-id", "0", "--num-partitions", "2"])
    assert args.reconnect_timeout == 60.0
    assert ClientOptions().reconnect_timeout == 600.0


def test_the_gist_of_a_refused_connection_is_the_last_error():
    details = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Failed to connect to remote host: Connection refused"
    )
    assert _gist(details) == "Connection refused"
    assert _gist("Socket closed") == "Socket closed"
    assert _gist(None) == "no details"
