"""A node's link to its coordinator: the node protocol's calls, and backoff between attempts.

The node proves who it is with no shared secret: it asks for a challenge, signs it with its own
Ed25519 key, and gets a session the coordinator checks on every later call (`Authorization: Node
SESSION`). A session the coordinator no longer knows (it expired, or the coordinator lost it) is
replaced once, by signing a new challenge, before a call fails.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roost.errors import RoostError
from roost.federation.keys import b64decode, b64encode, sign

__all__ = ["CoordinatorLink", "CoordinatorRefusedError", "CoordinatorUnreachableError"]


class CoordinatorUnreachableError(RoostError):
    """The coordinator did not answer (down, restarting, network): try again later."""


class CoordinatorRefusedError(RoostError):
    """The coordinator answered with a refusal (`status`, its one-line `error`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class CoordinatorLink:
    """The node protocol's calls to the coordinator at `base_url` (`https://host:port`)."""

    def __init__(
        self,
        base_url: str,
        node: str,
        private_key: Ed25519PrivateKey,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.node = node
        self.private_key = private_key
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.session: str | None = None

    def _request(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.session is not None:
            headers["Authorization"] = f"Node {self.session}"
        if not path.startswith("/"):  # the session goes to the coordinator only, never elsewhere
            raise CoordinatorRefusedError(f"{path[:80]!r} is not a path on the coordinator", 400)
        url = self.base_url + path
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self.ssl_context
            ) as r:
                payload = r.read()
        except urllib.error.HTTPError as error:
            message = _error_message(error)
            if error.code >= 500:
                raise CoordinatorUnreachableError(f"HTTP {error.code}: {message}") from None
            raise CoordinatorRefusedError(message, error.code) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            # HTTPException: a coordinator that died mid-answer (IncompleteRead, BadStatusLine).
            reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
            raise CoordinatorUnreachableError(str(reason)) from None
        if raw:
            return payload
        try:
            return json.loads(payload) if payload else {}
        except ValueError:
            raise CoordinatorUnreachableError("the coordinator's answer is not JSON") from None

    def authenticate(self) -> None:
        """Sign a fresh challenge and keep the session it buys."""
        self.session = None
        answer = self._request("POST", "/v1/nodes/challenge", {"node": self.node})
        try:
            challenge = b64decode(answer["challenge"])
        except (KeyError, TypeError, ValueError):
            raise CoordinatorUnreachableError("the coordinator sent no challenge") from None
        signature = b64encode(sign(self.private_key, challenge))
        body = {"node": self.node, "challenge": answer["challenge"], "signature": signature}
        session = self._request("POST", "/v1/nodes/session", body).get("session")
        if not isinstance(session, str) or not session:
            raise CoordinatorUnreachableError("the coordinator sent no session")
        self.session = session

    def call(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        """One authenticated call; a refused session is renewed once first."""
        if self.session is None:
            self.authenticate()
        try:
            return self._request(method, path, body, raw)
        except CoordinatorRefusedError as error:
            if error.status != 401:
                raise
        self.authenticate()
        return self._request(method, path, body, raw)

    def poll(self, running: list[Any], capacity: int) -> dict[str, Any]:
        """Say which runs this node has and how many more it takes; new runs and runs to stop."""
        answer = self.call("POST", "/v1/nodes/poll", {"running": running, "capacity": capacity})
        return answer if isinstance(answer, dict) else {}

    def download(self, url: str) -> bytes:
        """The bytes at `url` (a path on the coordinator, e.g. a bundle's)."""
        return self.call("GET", url, raw=True)

    def report(self, run: Any, status: str, reason: str) -> None:
        """Tell the coordinator what happened to this node's part of `run`."""
        self.call("POST", "/v1/nodes/report", {"run": run, "status": status, "reason": reason})


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read().decode(errors="replace")
        message = json.loads(text).get("error") or text
    except (ValueError, AttributeError, OSError):
        message = str(error.reason)
    return " ".join(str(message).split())[:300] or f"HTTP {error.code}"
