"""A test fixture only: the coordinator's side of the node protocol, minimal, in a thread.

It knows one node's public key, checks its signed challenges, hands out the assignments a test
queues (`assign`), serves their bundles and records polls and reports. Plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from roost.federation.keys import b64decode, b64encode, load_public_key, verify


class FakeCoordinator:
    def __init__(self, node: str, public_key: Any) -> None:
        self.node, self.key = node, load_public_key(public_key)
        self.challenges: set[bytes] = set()
        self.sessions: set[str] = set()
        self.pending: list[dict[str, Any]] = []
        self.stop: list[Any] = []
        self.bundles: dict[str, bytes] = {}
        self.polls: list[dict[str, Any]] = []
        self.reports: list[tuple[Any, str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeCoordinator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def assign(self, assignment: dict[str, Any], bundle: bytes) -> None:
        with self.lock:
            self.bundles[assignment["bundle_sha256"]] = bundle
            self.pending.append(assignment)

    def report_of(self, run: Any, status: str) -> str | None:
        with self.lock:
            found = [r for n, s, r in self.reports if n == run and s == status]
        return found[-1] if found else None

    # -- the endpoints: (status, answer) ----------------------------------------------------

    def handle(self, method: str, path: str, body: Any, authorization: str) -> tuple[int, Any]:
        if path == "/v1/nodes/challenge":
            if body.get("node") != self.node:
                return 401, {"error": f"node {body.get('node')!r} is not registered"}
            challenge = secrets.token_bytes(32)
            with self.lock:
                self.challenges.add(challenge)
            return 200, {"challenge": b64encode(challenge)}
        if path == "/v1/nodes/session":
            challenge = b64decode(body["challenge"])
            with self.lock:
                known = challenge in self.challenges
                self.challenges.discard(challenge)
            if not known or not verify(self.key, b64decode(body["signature"]), challenge):
                return 401, {"error": "wrong key: the signature does not match"}
            session = secrets.token_urlsafe(16)
            with self.lock:
                self.sessions.add(session)
            return 200, {"session": session, "expires_in": 3600}
        if authorization.removeprefix("Node ") not in self.sessions:
            return 401, {"error": "no valid node session"}
        with self.lock:
            if path == "/v1/nodes/poll":
                self.polls.append(body)
                answer = {"assign": self.pending[: body["capacity"]], "stop": self.stop}
                self.pending, self.stop = self.pending[body["capacity"] :], []
                return 200, answer
            if path == "/v1/nodes/report":
                self.reports.append((body["run"], body["status"], body["reason"]))
                return 200, {}
            if method == "GET" and path.startswith("/v1/nodes/bundles/"):
                return 200, self.bundles[path.rsplit("/", 1)[-1]]
        return 404, {"error": f"no such endpoint {path}"}


def _handler(coordinator: FakeCoordinator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            status, answer = coordinator.handle(
                self.command, self.path, body, self.headers.get("Authorization", "")
            )
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler
