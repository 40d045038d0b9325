"""The node side of the API: challenge, session, poll, bundle download, report.

    POST /v1/nodes/challenge {"node": NAME} -> {"challenge": B64}
    POST /v1/nodes/session {"node", "challenge", "signature"} -> {"session", "expires_in"}
    POST /v1/nodes/poll {"running": [RUN...], "capacity": K} -> {"assign": [...], "stop": [...]}
    GET  /v1/nodes/bundles/HEX -> the bundle's bytes
    POST /v1/nodes/report {"run", "status", "reason"}

Poll, download and report need `Authorization: Node SESSION`. An assignment carries, besides
what the node dials and its run token, the bundle's signature and publisher key (null when
unsigned), so the node checks the publisher itself, and the run config overrides as a table
(`{"num-rounds": 3}`).
"""

from __future__ import annotations

import re
import time
from typing import Any

from roost.federation.api import ApiError, Download, Request, Router
from roost.federation.auth import signature_valid
from roost.federation.keys import b64decode, b64encode
from roost.federation.runs import ACTIVE, RunExecutor
from roost.federation.store import SESSION_TTL_S, Store

REPORTS = ("refused", "started", "failed", "exited")


class NodeApi:
    """Serves nodes: authenticates them and hands them runs."""

    def __init__(self, store: Store, executor: RunExecutor, root_certificate: str | None) -> None:
        self.store = store
        self.executor = executor
        self.root_certificate = root_certificate

    def routes(self, router: Router) -> None:
        """Add the node endpoints to `router`."""
        router.add("POST", "/v1/nodes/challenge", self.challenge)
        router.add("POST", "/v1/nodes/session", self.session)
        router.add("POST", "/v1/nodes/poll", self.poll)
        router.add("GET", "/v1/nodes/bundles/{sha256}", self.bundle)
        router.add("POST", "/v1/nodes/report", self.report)

    def _registered(self, request: Request) -> dict[str, Any]:
        name = request.body.get("node")
        node = self.store.node(name) if isinstance(name, str) else None
        if node is None:
            raise ApiError(
                401,
                f"node {name!r} is not registered: ask an operator to register "
                "its public key (roost coordinator --add-node NAME KEY.pub)",
            )
        return node

    def challenge(self, request: Request) -> dict[str, Any]:
        """Issue a fresh challenge to a registered node."""
        node = self._registered(request)
        return {"challenge": b64encode(self.store.new_challenge(node["name"]))}

    def session(self, request: Request) -> dict[str, Any]:
        """A session for a node that signed its challenge with its registered key."""
        node = self._registered(request)
        try:
            challenge = b64decode(request.body.get("challenge"))
            signature = b64decode(request.body.get("signature"))
        except ValueError as error:
            raise ApiError(400, f"challenge and signature must be base64url ({error})") from None
        if not self.store.take_challenge(node["name"], challenge):
            raise ApiError(401, "unknown, used or expired challenge: ask for a new one")
        if not signature_valid(node["public_key"], challenge, signature):
            raise ApiError(
                401,
                f"wrong key: the signature does not match node {node['name']!r}'s "
                "registered public key",
            )
        return {"session": self.store.new_session(node["name"]), "expires_in": int(SESSION_TTL_S)}

    def node_of(self, request: Request) -> str:
        """The node whose session authorizes `request`; 401 otherwise."""
        scheme, _, token = request.header("Authorization").partition(" ")
        node = self.store.session_node(token.strip()) if scheme == "Node" else None
        if node is None:
            raise ApiError(401, "no valid node session: sign a new challenge")
        return node

    def poll(self, request: Request) -> dict[str, Any]:
        """Record the node as seen; hand it new runs and tell it which to stop."""
        node = self.node_of(request)
        running = request.body.get("running", [])
        capacity = request.body.get("capacity", 1)
        if not isinstance(running, list) or not isinstance(capacity, int) or capacity < 0:
            raise ApiError(400, "poll needs running: [run ids] and capacity: a count >= 0")
        reported = {str(run) for run in running}
        self.executor.reported[node] = frozenset(reported)
        self.store.update_node(node, last_seen=time.time(), capacity=capacity)
        assign, active = [], set()
        for assignment in self.store.assignments(node=node):
            run = self.store.run(assignment["run"])
            if run is None or run["status"] not in ACTIVE:
                continue
            active.add(str(run["id"]))
            if assignment["status"] == "assigned" and str(run["id"]) not in reported:
                assign.append(self._assignment(run, assignment["token"]))
                self.store.update_assignment(run["id"], node, status="delivered")
        return {"assign": assign, "stop": sorted(reported - active, key=_run_order)}

    def _assignment(self, run: dict[str, Any], token: str) -> dict[str, Any]:
        import json

        host = self.executor.options.public_host
        signature = run["signature"]
        return {
            "run": run["id"],
            "server": f"[{host}]:{run['port']}" if ":" in host else f"{host}:{run['port']}",
            "token": token,
            "root_certificate": self.root_certificate,
            "bundle_sha256": run["bundle_sha256"],
            "bundle_url": f"/v1/nodes/bundles/{run['bundle_sha256']}",
            "signature": b64encode(signature) if signature else None,
            "publisher_key": run["publisher_key"],
            "run_config": run_config_table(json.loads(run["run_config"])),
        }

    def bundle(self, request: Request) -> Download:
        """The bundle of a run assigned to this node."""
        node = self.node_of(request)
        sha256 = request.params["sha256"]
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ApiError(400, "a bundle is named by its sha256: 64 hex digits")
        mine = {a["run"] for a in self.store.assignments(node=node)}
        if not any(self.store.run(run)["bundle_sha256"] == sha256 for run in mine):
            raise ApiError(404, f"no bundle {sha256[:16]}… is assigned to node {node}")
        return Download(self.executor.bundle_path(sha256).read_bytes())

    def report(self, request: Request) -> dict[str, Any]:
        """Record what happened to a node's part of a run."""
        node = self.node_of(request)
        status, reason = request.body.get("status"), str(request.body.get("reason", ""))[:500]
        try:
            run_id = int(request.body.get("run"))
        except (TypeError, ValueError):
            raise ApiError(400, "report needs run: a run id") from None
        if status not in REPORTS:
            raise ApiError(400, f"report status must be one of {', '.join(REPORTS)}")
        if not any(a["run"] == run_id for a in self.store.assignments(run=run_id, node=node)):
            raise ApiError(404, f"run {run_id} is not assigned to node {node}")
        reason = " ".join(reason.split())  # one line, whatever the node sent
        self.store.update_assignment(run_id, node, status=status, reason=reason)
        self.executor.note(run_id, f"node {node}: {status}" + (f": {reason}" if reason else ""))
        if status == "started":
            self.store.count_on_node(node, "runs_served")
            run = self.store.run(run_id)
            if run is not None and run["status"] == "starting":
                self.store.update_run(run_id, status="running")
        elif status in ("refused", "failed"):
            self.store.count_on_node(node, "failures")
        if status == "refused":
            self.executor.refuse(run_id, node, reason or "no reason given")
        elif status == "failed":
            self.executor.client_failed(run_id, node, reason or "no reason given")
        return {}


def run_config_table(overrides: list[str]) -> dict[str, Any]:
    """`["num-rounds=3", "name='cnn'"]` -> `{"num-rounds": 3, "name": "cnn"}`: values read as
    TOML, as `--run-config KEY=VALUE` reads them; one that is not TOML stays a string."""
    import tomllib

    table: dict[str, Any] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            table[key.strip()] = tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError:
            table[key.strip()] = value
    return table


def _run_order(run: str) -> tuple[int, str]:
    return (int(run), run) if run.isdigit() else (1 << 62, run)
