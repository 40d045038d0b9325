"""The people's side of the API: submit, list, log, stop and pull runs; list nodes.

    POST /v1/runs {"federation", "bundle": B64, "signature": B64|null,
                   "publisher_key": str|null, "run_config": ["KEY=VALUE"], "nodes": int|null}
    GET  /v1/runs                      GET /v1/runs/ID
    GET  /v1/runs/ID/log?offset=N      POST /v1/runs/ID/stop
    GET  /v1/runs/ID/artifacts         GET /v1/runs/ID/artifacts/NAME
    GET  /v1/nodes

Every request carries `Authorization: Bearer TOKEN`. A person sees and stops only the runs they
submitted unless they are an operator; someone else's run answers as a run that does not exist.
"""

from __future__ import annotations

import time
from typing import Any

from roost.federation.api import ApiError, Download, Request, Router
from roost.federation.bundle import (
    MAX_BUNDLE_BYTES,
    BundleRefusedError,
    bundle_sha256,
    read_manifest,
    verify_bundle,
)
from roost.federation.keys import b64decode
from roost.federation.runs import ONLINE_S, RunExecutor
from roost.federation.store import FINISHED, Store

LOG_CHUNK_BYTES = 1 << 20


class PeopleApi:
    """Serves people: runs they submit and what the federation's nodes are doing."""

    def __init__(self, store: Store, executor: RunExecutor) -> None:
        self.store = store
        self.executor = executor

    def routes(self, router: Router) -> None:
        """Add the people's endpoints to `router`."""
        router.add("POST", "/v1/runs", self.submit)
        router.add("GET", "/v1/runs", self.list_runs)
        router.add("GET", "/v1/runs/{run}", self.show)
        router.add("GET", "/v1/runs/{run}/log", self.log)
        router.add("POST", "/v1/runs/{run}/stop", self.stop)
        router.add("GET", "/v1/runs/{run}/artifacts", self.artifacts)
        router.add("GET", "/v1/runs/{run}/artifacts/{name}", self.artifact)
        router.add("GET", "/v1/nodes", self.nodes)

    def person(self, request: Request) -> dict[str, Any]:
        """The person whose token authorizes `request`; 401 otherwise."""
        scheme, _, token = request.header("Authorization").partition(" ")
        person = self.store.person(token.strip()) if scheme == "Bearer" and token else None
        if person is None:
            raise ApiError(
                401,
                "unknown token: use the token an operator issued you "
                "(roost coordinator --add-person NAME prints it)",
            )
        return person

    def _run(self, request: Request) -> dict[str, Any]:
        person = self.person(request)
        text = request.params["run"]
        run = self.store.run(int(text)) if text.isdigit() else None
        if run is None or not (person["operator"] or run["owner"] == person["name"]):
            raise ApiError(404, f"no run {text} of yours: `roost ls` lists your runs")
        return run

    def submit(self, request: Request) -> dict[str, Any]:
        """Check a bundle and queue its run; returns the run id."""
        person = self.person(request)
        body = request.body
        try:
            bundle = b64decode(body.get("bundle"))
            signature = b64decode(body["signature"]) if body.get("signature") else None
        except ValueError as error:
            raise ApiError(400, f"bundle and signature must be base64url ({error})") from None
        publisher_key = body.get("publisher_key") or None
        if (signature is None) != (publisher_key is None):
            raise ApiError(400, "a signed bundle needs both its signature and publisher_key")
        run_config, wanted = body.get("run_config", []), body.get("nodes")
        if not isinstance(run_config, list) or not all(
            isinstance(item, str) and "=" in item for item in run_config
        ):
            raise ApiError(400, "run_config must be a list of KEY=VALUE strings")
        if wanted is not None and (not isinstance(wanted, int) or wanted < 1):
            raise ApiError(400, "nodes must be a whole number >= 1 (or null: all online nodes)")
        if len(bundle) > MAX_BUNDLE_BYTES:
            raise ApiError(
                413,
                f"the bundle is {len(bundle) >> 20} MiB, over the "
                f"{MAX_BUNDLE_BYTES >> 20} MiB cap; keep data out of the project",
            )
        try:
            manifest = (
                verify_bundle(bundle, signature, publisher_key, [publisher_key])
                if signature is not None
                else read_manifest(bundle)
            )
        except BundleRefusedError as error:
            raise ApiError(400, f"bundle refused: {error}") from None
        sha256 = bundle_sha256(bundle)
        path = self.executor.bundle_path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            partial = path.with_suffix(".part")
            partial.write_bytes(bundle)
            partial.replace(path)
        run_id = self.store.add_run(
            owner=person["name"],
            federation=str(body.get("federation") or "default"),
            project=manifest.name,
            bundle_sha256=sha256,
            signature=signature,
            publisher_key=publisher_key,
            run_config=run_config,
            wanted_nodes=wanted,
        )
        self.executor.note(
            run_id,
            f"run {run_id} of {manifest.name} ({manifest.kind}) queued "
            f"by {person['name']}; bundle sha256 {sha256[:16]}…",
        )
        return {"run": run_id}

    def list_runs(self, request: Request) -> dict[str, Any]:
        """The runs this person may see, oldest first."""
        person = self.person(request)
        runs = self.store.runs(owner=None if person["operator"] else person["name"])
        return {"runs": [_run_summary(run) for run in runs]}

    def show(self, request: Request) -> dict[str, Any]:
        """One run, with its nodes' assignments."""
        run = self._run(request)
        nodes = [
            {"node": a["node"], "status": a["status"], "reason": a["reason"]}
            for a in self.store.assignments(run=run["id"])
        ]
        return {**_run_summary(run), "nodes": nodes}

    def log(self, request: Request) -> dict[str, Any]:
        """The run's log from byte `offset` on (up to 1 MiB), the next offset, and whether the
        run has finished (then nothing more will come)."""
        run = self._run(request)
        try:
            offset = max(0, int(request.query.get("offset", "0")))
        except ValueError:
            raise ApiError(400, "offset must be a whole number of bytes") from None
        finished = run["status"] in FINISHED  # read before the log, so no last line is missed
        path = self.executor.run_dir(run["id"]) / "log.txt"
        data = b""
        if path.exists():
            with path.open("rb") as file:
                file.seek(offset)
                data = file.read(LOG_CHUNK_BYTES)
        more = len(data) == LOG_CHUNK_BYTES
        return {
            "text": data.decode("utf-8", "replace"),
            "offset": offset + len(data),
            "finished": finished and not more,
            "status": run["status"],
        }

    def stop(self, request: Request) -> dict[str, Any]:
        """Ask for the run to stop (its server ends, its nodes are told); idempotent."""
        run = self._run(request)
        if run["status"] in FINISHED:
            return {"run": run["id"], "status": run["status"]}
        self.store.update_run(run["id"], stop_requested=True)
        return {"run": run["id"], "status": "stopping"}

    def artifacts(self, request: Request) -> dict[str, Any]:
        """The run's result files (model.npz, history.json/csv, plot.png) with their sizes."""
        run = self._run(request)
        out = self.executor.run_dir(run["id"]) / "out"
        files = sorted(p for p in out.iterdir() if p.is_file()) if out.is_dir() else []
        return {"artifacts": [{"name": p.name, "bytes": p.stat().st_size} for p in files]}

    def artifact(self, request: Request) -> Download:
        """One result file of the run, by a name `artifacts` lists."""
        run = self._run(request)
        out = self.executor.run_dir(run["id"]) / "out"
        name = request.params["name"]
        names = {p.name for p in out.iterdir() if p.is_file()} if out.is_dir() else set()
        if name not in names:  # only listed names: nothing outside out/ can be asked for
            raise ApiError(404, f"run {run['id']} has no artifact {name!r}")
        return Download((out / name).read_bytes())

    def nodes(self, request: Request) -> dict[str, Any]:
        """Every registered node: online, last seen, runs served, failures."""
        self.person(request)
        now = time.time()
        return {
            "nodes": [
                {
                    "name": node["name"],
                    "online": (node["last_seen"] or 0) >= now - ONLINE_S,
                    "last_seen": node["last_seen"],
                    "runs_served": node["runs_served"],
                    "failures": node["failures"],
                }
                for node in self.store.nodes()
            ]
        }


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    status = run["status"]
    if status in ("queued", "starting", "running") and run["stop_requested"]:
        status = "stopping"
    return {
        "run": run["id"],
        "owner": run["owner"],
        "federation": run["federation"],
        "project": run["project"],
        "status": status,
        "message": run["message"],
        "created": run["created"],
        "started": run["started"],
        "finished": run["finished"],
    }
