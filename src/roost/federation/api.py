"""The coordinator's HTTP API: JSON over HTTP/1.1 (TLS outside 127.0.0.1), for people and nodes.

The standard library's `ThreadingHTTPServer` serves it: the API is a handful of small JSON
requests and a bundle download, so an ASGI stack would add dependencies and nothing needed.
Every refusal is a status code and `{"error": "one line"}`.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 80 << 20
"""Largest request body: a 50 MiB bundle in base64 with room to spare."""


class ApiError(Exception):
    """A refusal: HTTP `status` and a one-line `message` that says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    """One API request: its path's captured `params`, `query`, headers and JSON `body`."""

    params: dict[str, str]
    query: dict[str, str]
    headers: Any
    raw: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str:
        """The header `name`, or ""."""
        return str(self.headers.get(name, "") or "")


@dataclass(frozen=True)
class Download:
    """A response of raw bytes (a bundle, an artifact) rather than JSON."""

    data: bytes
    content_type: str = "application/octet-stream"


Handler = Callable[[Request], Any]


class Router:
    """Routes `METHOD /path/{name}` patterns to handlers."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve `method pattern` with `handler`; `{name}` captures one path segment."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method, re.compile(f"^{regex}$"), handler))

    def handle(self, method: str, target: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        """The status and response (a JSON-able dict or a `Download`) for one request."""
        parts = urlsplit(target)
        allowed = False
        for route_method, regex, handler in self._routes:
            if (match := regex.match(parts.path)) is None:
                continue
            allowed = True
            if route_method != method:
                continue
            query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            request = Request(match.groupdict(), query, headers, raw)
            try:
                if raw:
                    request.body = _json_object(raw)
                return 200, handler(request)
            except ApiError as error:
                return error.status, {"error": error.message}
            except Exception:
                log.exception("the API failed on %s %s", method, parts.path)
                return 500, {"error": "the coordinator failed on this request; see its log"}
        if allowed:
            return 405, {"error": f"{method} is not allowed on {parts.path}"}
        return 404, {"error": f"no such API path: {parts.path}"}


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _handler_class(router: Router) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._reply(413, {"error": f"the request is over {MAX_BODY_BYTES >> 20} MiB"})
                self.close_connection = True
                return
            raw = self.rfile.read(length) if length else b""
            self._reply(*router.handle(self.command, self.path, self.headers, raw))

        do_GET = do_POST = _serve

        def _reply(self, status: int, response: Any) -> None:
            if isinstance(response, Download):
                data, content_type = response.data, response.content_type
            else:
                data, content_type = json.dumps(response).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return _Handler


class _Server(ThreadingHTTPServer):
    # Hundreds of nodes poll every second or two; the default backlog of 5 made the kernel
    # reset connections that arrived together.
    request_queue_size = 1024
    daemon_threads = True


class ApiServer:
    """The API served on `host:port` from a thread of its own (TLS with `certificates`)."""

    def __init__(
        self, router: Router, host: str, port: int, certificates: tuple[str, str] | None
    ) -> None:
        self.httpd = _Server((host, port), _handler_class(router))
        if certificates is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*certificates)
            # The handshake happens in the request's own thread, so a client that connects and
            # says nothing cannot stall accepting the others.
            self.httpd.socket = context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.1,), name="roost-api", daemon=True
        )

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
