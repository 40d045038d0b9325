"""A node's configuration: one TOML file that its data owner writes and keeps.

    # node.toml (`roost node --init DIR --name NAME` writes a skeleton)
    name = "hospital-a"                        # the name the operator registers
    coordinator = "https://coord.example.org:9443"
    root_certificate = "coordinator-ca.pem"    # CA of the coordinator's TLS (default: system's)
    private_key = "node.pem"                   # this node's key; node.pub goes to the operator
    trusted_publishers = ["alice.pub"]         # whose signed bundles may run here
    partition_id = 0                           # which part of the data this node holds ...
    num_partitions = 3                         # ... of how many
    max_concurrent_runs = 2
    allow_unsigned = false                     # development only: runs anyone's code
    allow_install = false                      # may this node pip install a bundle's requirements?

    [data]                                     # handed to each run's app as ROOST_DATA_<NAME>
    train = "/srv/data/train.csv"

Relative paths are read from the file's directory, which is also the node's working directory
(`work_dir` to choose another): each run gets `runs/RUN_ID/` under it. Keys may be written with
`-` or `_` (`partition-id` is `partition_id`).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from roost.errors import ConfigurationError

__all__ = ["NodeConfig", "check_node_name", "load_node_config", "node_config_text"]

REQUIRED = ("name", "coordinator", "private_key", "partition_id", "num_partitions")


@dataclass(frozen=True)
class NodeConfig:
    """Everything a long-lived node needs; `load_node_config` reads and checks it."""

    name: str
    coordinator: str
    """The control API's base URL (`https://host:port`; `http://` only on loopback or with
    `insecure`)."""
    private_key: Path
    partition_id: int
    num_partitions: int
    work_dir: Path
    trusted_publishers: tuple[Path, ...] = ()
    root_certificate: Path | None = None
    certificate: tuple[Path, Path] | None = None
    """Mutual TLS of the runs' gRPC connections: this node's certificate and key."""
    data: dict[str, str] = field(default_factory=dict)
    max_concurrent_runs: int = 1
    allow_unsigned: bool = False
    allow_install: bool = False
    insecure: bool = False
    poll_interval: float = 1.0
    """Seconds between two polls of the coordinator."""
    run_reconnect_timeout: float = 7 * 24 * 3600.0
    """How long a run's client waits for its server to come back (a coordinator restart)."""

    @property
    def runs_dir(self) -> Path:
        """Where each run gets its own working directory, `runs/RUN_ID/`."""
        return self.work_dir / "runs"


def check_node_name(name: str, where: str = "the node name") -> str:
    """`name` when it is a valid node name (letters, digits, `.`, `_`, `-`; at most 63)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", name):
        raise ConfigurationError(
            f"{where} {name!r} must start with a letter or digit and hold only letters, digits, "
            ". _ - (at most 63)"
        )
    return name


def _normalize_coordinator(value: str, insecure: bool) -> str:
    url = value if "://" in value else f"https://{value}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ConfigurationError(
            f"coordinator = {value!r}: give the control API as https://HOST:PORT"
        )
    if parts.scheme == "http" and not (insecure or _loopback(parts.hostname)):
        raise ConfigurationError(
            f"coordinator = {value!r} is plain HTTP to another machine: use https:// (or, on "
            "a trusted network only, set insecure = true)"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigurationError(
            f"cannot read the node config {path}: {error.strerror}; write one with "
            "`roost node --init DIR --name NAME`"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{path} is not valid TOML: {error}") from None
    table = {key.replace("-", "_"): value for key, value in raw.items()}
    known = {item.name for item in fields(NodeConfig)}
    for key in table:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigurationError(f"{path}: unknown key {key!r}{hint}")
    missing = [key for key in REQUIRED if key not in table]
    if missing:
        raise ConfigurationError(
            f"{path} lacks {', '.join(missing)}: `roost node --init DIR --name NAME` writes a "
            "config with every key"
        )
    return table


def _typed(path: Path, table: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise ConfigurationError(f"{path}: {key} must be {kind.__name__}, got {value!r}")
    return value


def load_node_config(path: str | Path) -> NodeConfig:
    """The node config in the TOML file `path`, checked; one-line errors name the key."""
    path = Path(path)
    table = _read(path)
    base = path.resolve().parent

    def where(value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{path}: {key} must be a path, got {value!r}")
        return base / Path(value).expanduser()

    name = check_node_name(_typed(path, table, "name", str, ""), f"{path}: name")
    num_partitions = _typed(path, table, "num_partitions", int, 1)
    partition_id = _typed(path, table, "partition_id", int, 0)
    if num_partitions < 1 or not 0 <= partition_id < num_partitions:
        raise ConfigurationError(
            f"{path}: partition_id must be in [0, num_partitions - 1] and num_partitions >= 1, "
            f"got {partition_id} of {num_partitions}"
        )
    publishers = _typed(path, table, "trusted_publishers", list, [])
    data = _typed(path, table, "data", dict, {})
    if not all(isinstance(value, str) for value in data.values()):
        raise ConfigurationError(f"{path}: [data] values must be paths (strings)")
    certificate = table.get("certificate")
    if certificate is not None and (not isinstance(certificate, list) or len(certificate) != 2):
        raise ConfigurationError(f"{path}: certificate must be [CERT.pem, KEY.pem]")
    max_runs = _typed(path, table, "max_concurrent_runs", int, 1)
    poll = _typed(path, table, "poll_interval", float, 1.0)
    reconnect = _typed(path, table, "run_reconnect_timeout", float, 7 * 24 * 3600.0)
    if max_runs < 1 or poll <= 0 or reconnect <= 0:
        raise ConfigurationError(
            f"{path}: max_concurrent_runs must be >= 1 and poll_interval, run_reconnect_timeout > 0"
        )
    insecure = _typed(path, table, "insecure", bool, False)
    root = table.get("root_certificate")
    return NodeConfig(
        name=name,
        coordinator=_normalize_coordinator(_typed(path, table, "coordinator", str, ""), insecure),
        private_key=where(table["private_key"], "private_key"),
        partition_id=partition_id,
        num_partitions=num_partitions,
        work_dir=where(table.get("work_dir", "."), "work_dir"),
        trusted_publishers=tuple(where(item, "trusted_publishers") for item in publishers),
        root_certificate=where(root, "root_certificate") if root is not None else None,
        certificate=(
            (where(certificate[0], "certificate"), where(certificate[1], "certificate"))
            if certificate is not None
            else None
        ),
        data={str(key): str(where(value, f"data.{key}")) for key, value in data.items()},
        max_concurrent_runs=max_runs,
        allow_unsigned=_typed(path, table, "allow_unsigned", bool, False),
        allow_install=_typed(path, table, "allow_install", bool, False),
        insecure=insecure,
        poll_interval=poll,
        run_reconnect_timeout=reconnect,
    )


def node_config_text(name: str, coordinator: str) -> str:
    """The skeleton `roost node --init` writes: the keys every node sets, with comments."""
    check_node_name(name)
    _normalize_coordinator(coordinator, insecure=False)
    return f"""\
# The config of roost node {name!r}: run it with `roost node --config node.toml`.
# Relative paths are read from this file's directory; runs work in runs/RUN_ID/ here.
name = "{name}"
coordinator = {json.dumps(coordinator)}
# root_certificate = "coordinator-ca.pem"  # the CA of the coordinator's TLS, if not public
private_key = "node.pem"                   # node.pub goes to the operator, to register
trusted_publishers = []                    # .pub files of publishers whose bundles may run
partition_id = 0                           # this node's part of the data ...
num_partitions = 1                         # ... of how many
max_concurrent_runs = 1
allow_unsigned = false                     # development only: runs code nobody signed
allow_install = false                      # true: pip install a bundle's missing requirements

[data]                                     # each path reaches the app as ROOST_DATA_<NAME>
# train = "/srv/data/train.csv"
"""
