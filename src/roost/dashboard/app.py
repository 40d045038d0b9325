"""The dashboard's web application (Starlette): three pages, their live updates as server-sent
events, the script and style sheet, and the token check.

    app = dashboard_app(source, token=None)   # 127.0.0.1: no token needed

Pages: `/` the federation, `/runs/{id}` a run, `/nodes/{name}` a node; each page's
`/events/...` twin streams its parts (`parts` events, JSON of element id -> HTML) whenever the
source's version changes, and one `end` event when the dashboard stops.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from roost.dashboard import views
from roost.dashboard.sources import Source

POLL_S = 0.2
"""How often an open page's event stream checks its source for news: well within the second
the page promises after a round ends."""
TICK_S = 1.0
"""How often an open run page's clock (elapsed, ETA) is brought up to date between rounds."""
TOKEN_COOKIE = "roost_dashboard_token"
_STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_NO_STORE = {"Cache-Control": "no-store"}


class DashboardState:
    """What the app's handlers share: the source, the token and the stop signal."""

    def __init__(self, source: Source, token: str | None) -> None:
        self.source = source
        self.token = token
        self.stopping = threading.Event()
        self.streams = 0


def _render(
    kind: str, source: Source, key: str
) -> tuple[str, dict[str, str], dict[str, Any]] | None:
    """A page's title, its live parts and the rest of what its template shows; None when it
    names nothing the source has."""
    if kind == "federation":
        federation = source.federation()
        return federation.title, views.federation_parts(federation), {"note": federation.note}
    if kind == "run":
        run = source.run(key)
        if run is None:
            return None
        context = {"run_id": key, "config": run.config, "running": run.status == "running"}
        return f"run {run.title}", views.run_parts(run), context
    node = source.node(key)
    return None if node is None else (f"node {node.name}", views.node_parts(node), {"name": key})


def _authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    offered = (
        request.query_params.get("token")
        or request.cookies.get(TOKEN_COOKIE)
        or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    )
    return bool(offered) and hmac.compare_digest(offered.encode(), token.encode())


def dashboard_app(
    source: Source, token: str | None = None, allowed_hosts: list[str] | None = None
) -> Any:
    """The Starlette application serving `source`; with `token`, every request must carry it
    (`?token=` once, then a cookie; or `Authorization: Bearer`). `allowed_hosts` refuses
    requests for other Host names: a dashboard on 127.0.0.1 (no token) answers only to its own
    names, so a web page whose name was rebound to 127.0.0.1 cannot read it."""
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(
        middleware=middleware,
        routes=[
            Route("/", _page_endpoint("federation", "federation.html")),
            Route("/runs/{key}", _page_endpoint("run", "run.html")),
            Route("/nodes/{key:path}", _page_endpoint("node", "node.html")),
            Route("/events", _events_endpoint("federation")),
            Route("/events/runs/{key}", _events_endpoint("run")),
            Route("/events/nodes/{key:path}", _events_endpoint("node")),
            Route("/static/{name}", _static),
            # Browsers ask for it on every page; a 404 would be an error in their console.
            Route("/favicon.ico", _no_icon),
        ],
    )
    app.state.dashboard = DashboardState(source, token)
    return app


Endpoint = Callable[[Request], Awaitable[Response]]


async def _guarded(
    request: Request, handler: Callable[[DashboardState], Awaitable[Response]]
) -> Response:
    """`handler`'s response for a request that carries the token (when one is needed)."""
    state: DashboardState = request.app.state.dashboard
    if not _authorized(request, state.token):
        return PlainTextResponse(
            "this dashboard needs its token: open the URL it printed when it started "
            "(it ends in ?token=...)",
            status_code=401,
        )
    response = await handler(state)
    if state.token is not None and request.query_params.get("token"):
        # Later requests (links, the event stream) carry it without showing it in URLs.
        response.set_cookie(
            TOKEN_COOKIE,
            state.token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


def _page_endpoint(kind: str, template: str) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        async def handler(state: DashboardState) -> Response:
            key = request.path_params.get("key", "")
            rendered = await asyncio.to_thread(_render, kind, state.source, key)
            if rendered is None:
                return PlainTextResponse(f"no {kind} {key!r} here", status_code=404)
            title, parts, context = rendered
            events = "/events" + quote(request.url.path.rstrip("/"))
            html = views.page(template, title, parts, events, **context)
            return HTMLResponse(html, headers=_NO_STORE)

        return await _guarded(request, handler)

    return endpoint


def _events_endpoint(kind: str) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        async def handler(state: DashboardState) -> Response:
            stream = _stream(state, kind, request.path_params.get("key", ""))
            headers = {**_NO_STORE, "X-Accel-Buffering": "no"}
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

        return await _guarded(request, handler)

    return endpoint


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _STATIC:
        return PlainTextResponse("not found", status_code=404)
    body = files("roost.dashboard").joinpath("static", name).read_text(encoding="utf-8")
    return Response(body, media_type=_STATIC[name])


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204)


async def _stream(state: DashboardState, kind: str, key: str) -> AsyncIterator[str]:
    """A page's live parts that changed, sent whenever the source's version changes (and each
    `TICK_S` on a running run's page, for its clock); `end` on stop. (Starlette ends the
    stream when the browser goes away.)"""
    state.streams += 1
    try:
        last_version: object = object()
        last_parts: dict[str, str] = {}
        rendered_at, running = 0.0, False
        yield "retry: 1000\n\n"
        while True:
            stopping = state.stopping.is_set()
            version = await asyncio.to_thread(state.source.version)
            # A run page's clock (elapsed, ETA) moves on during a long round, too.
            ticking = running and time.monotonic() - rendered_at >= TICK_S
            if version != last_version or ticking:
                last_version, rendered_at = version, time.monotonic()
                rendered = await asyncio.to_thread(_render, kind, state.source, key)
                parts = {} if rendered is None else rendered[1]
                running = rendered is not None and rendered[2].get("running", False)
                changed = {k: v for k, v in parts.items() if last_parts.get(k) != v}
                if changed:  # only what changed: a tick of the clock is not every chart again
                    last_parts = parts
                    yield f"event: parts\ndata: {json.dumps(changed)}\n\n"
            if stopping:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(POLL_S)
    finally:
        state.streams -= 1
