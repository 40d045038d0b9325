"""A client of the coordinator's control API, for people (what `roost ls | log | stop | pull |
nodes` and `roost run --federation` use).

    control = ControlClient("https://fl.example.org:9091", token, root_certificate="ca.pem")
    run = control.submit(bundle, signature, publisher_key, federation="prod")
    for run in control.runs(): ...
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from roost.errors import RoostError
from roost.federation.keys import b64encode

TIMEOUT_S = 60.0


class ControlError(RoostError):
    """The coordinator refused a request, or could not be reached; the message says which."""


class ControlClient:
    """Talks to one coordinator as one person (their bearer token)."""

    def __init__(self, url: str, token: str, root_certificate: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._context = None
        if self.url.startswith("https://"):
            self._context = ssl.create_default_context(cafile=root_certificate)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer (or bytes, for downloads) of one API call; ControlError otherwise."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._context) as reply:
                payload = reply.read()
                if reply.headers.get("Content-Type") == "application/json":
                    return json.loads(payload)
                return payload
        except urllib.error.HTTPError as error:
            raise ControlError(_error_line(error)) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ControlError(
                f"the coordinator at {self.url} is down or unreachable ({reason}); check the "
                "address, or start it with `roost coordinator`"
            ) from None

    def submit(
        self,
        bundle: bytes,
        signature: bytes | None,
        publisher_key: str | None,
        *,
        federation: str,
        run_config: Sequence[str] = (),
        nodes: int | None = None,
    ) -> int:
        """Submit a bundle as a new run; its id."""
        body = {
            "federation": federation,
            "bundle": b64encode(bundle),
            "signature": b64encode(signature) if signature is not None else None,
            "publisher_key": publisher_key,
            "run_config": list(run_config),
            "nodes": nodes,
        }
        return int(self.request("POST", "/v1/runs", body)["run"])

    def runs(self) -> list[dict[str, Any]]:
        """The runs this person may see."""
        return list(self.request("GET", "/v1/runs")["runs"])

    def run(self, run_id: str | int) -> dict[str, Any]:
        """One run."""
        return dict(self.request("GET", f"/v1/runs/{run_id}"))

    def stop(self, run_id: str | int) -> dict[str, Any]:
        """Ask a run to stop."""
        return dict(self.request("POST", f"/v1/runs/{run_id}/stop", {}))

    def nodes(self) -> list[dict[str, Any]]:
        """The federation's nodes."""
        return list(self.request("GET", "/v1/nodes")["nodes"])

    def artifacts(self, run_id: str | int) -> list[dict[str, Any]]:
        """A run's result files (name, bytes)."""
        return list(self.request("GET", f"/v1/runs/{run_id}/artifacts")["artifacts"])

    def artifact(self, run_id: str | int, name: str) -> bytes:
        """One result file's bytes."""
        return bytes(self.request("GET", f"/v1/runs/{run_id}/artifacts/{name}"))

    def follow_log(
        self,
        run_id: str | int,
        write: Callable[[str], Any],
        *,
        follow: bool = False,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """Write the run's log; with `follow`, keep writing until the run finishes. Returns
        the run's last log answer (its `status`)."""
        offset = 0
        while True:
            answer = self.request("GET", f"/v1/runs/{run_id}/log?offset={offset}")
            if answer["text"]:
                write(answer["text"])
            offset = answer["offset"]
            if not follow or answer["finished"]:
                return dict(answer)
            if not answer["text"]:
                time.sleep(interval)


def _error_line(error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read())["error"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {error.code} {error.reason}"
    return str(message)
