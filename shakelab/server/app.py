"""The local server's ASGI application: the routers of each API, and the gate in front of them.

:func:`create_app` mounts one router per API, each built by its module's
``build_router(ctx) -> fastapi.APIRouter`` (:data:`API_MODULES`): the legacy Jobs API
(:mod:`shakelab.server.api_jobs`, ``Authorization: Bearer``) and the signed downloads
(:mod:`shakelab.server.api_files`, no credentials); the test hooks ``/_stats`` and ``/_faults``
(:mod:`shakelab.server.api_hooks`) only with ``test_hooks=True``. The gate (:class:`Gate`, plain
ASGI, outermost) counts each request under its route, checks the credentials of the router the
request goes to (in constant time, before any body is read), and injects the faults armed on
``ctx.faults`` for any route path (never on the hooks). Every error is JSON
``{"error": <short code>, "message": <text naming the field and what is allowed>}``
(:mod:`shakelab.server.web`), except where a router carries a ``problem`` of its own: the
Tasks API (:mod:`shakelab.server.api_tasks`, ``x-api-key``) answers Fastify-style
``{statusCode, error, message}``, its refusals and injected faults included.

Mounting a second API
---------------------
Write a module ``shakelab/server/api_<name>.py`` with ``build_router(ctx) -> fastapi.APIRouter``
whose router declares its auth scheme as a dependency, e.g. the Tasks API::

    def build_router(ctx):
        router = APIRouter(dependencies=[Depends(ApiKeyAuth(ctx.token))])   # x-api-key, same token

        @router.get("/tasks/{task_id}")
        async def get_task(task_id: str): ...

        return router

and add its import path to :data:`API_MODULES`. It is served on the same app and port; the
gate then asks requests routed to it for ``x-api-key`` (:mod:`shakelab.server.auth`), counts
them as ``"GET /tasks/{id}"`` and injects faults on its paths like on any other. ``ctx`` is the
running :class:`~shakelab.server.LocalServer`: ``token``, ``store``, ``worker``, ``signer``,
``faults``, ``callbacks``, ``max_upload_bytes``, ``allow_private_links``, ``link_timeout``,
``count_upload()``, ``count_job()``, ``asset_payload(asset, base_url)``, ``base_url``. Uploads
and URL downloads are shared through :mod:`shakelab.server.uploads` and
:mod:`shakelab.server.network` (``fetch_link(ctx, base_url, url, name, field="url")``).
A path no router has is answered 404 after the first API's credentials are checked.

Examples
--------
>>> from fastapi import APIRouter
>>> route_key("/job/{job_id}"), route_key("/files/{asset_id}/{name:path}"), route_key("/usage")
('/job/{id}', '/files/{id}', '/usage')
>>> stats_key("GET", "/job/cabc123")
'GET /job/{id}'
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from re import Pattern
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.routing import compile_path

from shakelab.server.api_jobs import IDEMPOTENCY_HEADER
from shakelab.transport import MAX_POLL_INTERVAL
from shakelab.server.auth import CHECKED, Auth, auth_of
from shakelab.server.uploads import LINK_QUEUE, LINK_WORKERS, SOURCE_TYPES, clean_name, sniff_format
from shakelab.server.web import (MAX_JSON_BYTES, RENDERER, APIProblem, install_error_handlers, is_disk_full,
                                 parse_json, problem, storage_problem)

__all__ = ["API_MODULES", "BODY_IDLE_TIMEOUT", "HEADER_TIMEOUT", "HOOKS_MODULE", "IDEMPOTENCY_HEADER",
           "LINK_QUEUE", "LINK_WORKERS", "MAX_CONNECTIONS", "MAX_JSON_BYTES", "SOURCE_TYPES", "APIProblem",
           "Gate", "Mount", "clean_name", "create_app", "header_timeout_protocol", "is_disk_full", "parse_json",
           "problem", "route_key", "sniff_format", "stats_key", "storage_problem"]

#: The APIs every server mounts, in order: modules with ``build_router(ctx) -> APIRouter``. The
#: first one's auth scheme also guards paths that no router has (they answer 404 once authorised).
API_MODULES: tuple[str, ...] = ("shakelab.server.api_jobs", "shakelab.server.api_tasks", "shakelab.server.api_files")
#: The test hooks' module, mounted by ``create_app(ctx, test_hooks=True)``.
HOOKS_MODULE = "shakelab.server.api_hooks"


@dataclass
class Mount:
    """One router on the app: the auth scheme it declares and whether faults are injected on it.

    Attributes
    ----------
    router : fastapi.APIRouter
    auth : shakelab.server.auth.Auth or None
        None: no credentials (signed links).
    faults : bool
        False for the test hooks.
    routes : list of (compiled path regex, path template)
    render : callable
        How this API writes an error answer, with the arguments of :func:`~shakelab.server.web.problem`:
        the router's ``problem`` attribute when it has one (the Tasks API's Fastify-style errors).
    """

    router: APIRouter
    auth: Auth | None
    faults: bool = True
    routes: tuple[tuple[Pattern[str], str], ...] = ()
    render: Callable[..., Response] = problem

    @classmethod
    def of(cls, router: APIRouter, *, faults: bool = True) -> Mount:
        """Make the mount of ``router``, its auth read from its dependencies."""
        routes = tuple((compile_path(r.path)[0], r.path) for r in router.routes if hasattr(r, "path"))
        return cls(router, auth_of(router), faults, routes, getattr(router, "problem", problem))

    def match(self, path: str) -> str | None:
        """Return the template of this router's route that ``path`` matches (any method), else None."""
        return next((template for regex, template in self.routes if regex.match(path)), None)


def route_key(template: str) -> str:
    """Name a route template as ``stats()`` does: everything from its first parameter on is ``{id}``.

    Examples
    --------
    >>> route_key("/tasks/statistics")
    '/tasks/statistics'
    """
    head, brace, _ = template.partition("{")
    return head + "{id}" if brace else template


# The Jobs API's, the Tasks API's, the downloads' and the hooks' routes, for stats_key() outside a running server.
_KNOWN = tuple((compile_path(t)[0], t) for t in ("/upload", "/upload/link", "/job", "/job/{job_id}", "/usage",
                                                 "/assets", "/tasks", "/tasks/statistics", "/tasks/{task_id}",
                                                 "/files/{asset_id}/{name:path}", "/_stats", "/_faults"))


def stats_key(method: str, path: str, templates: tuple[tuple[Pattern[str], str], ...] = _KNOWN) -> str:
    """Name the route a request is counted under in ``stats()``: ``"GET /job/{id}"``, ``"PUT (other)"``.

    Examples
    --------
    >>> stats_key("GET", "/files/abc/x.wav"), stats_key("PUT", "/etc")
    ('GET /files/{id}', 'PUT (other)')
    """
    template = next((t for regex, t in templates if regex.match(path)), None)
    return f"{method} {route_key(template)}" if template is not None else f"{method} (other)"


def create_app(ctx: Any, *, test_hooks: bool = False) -> FastAPI:
    """Build the FastAPI application of the local server: every API of :data:`API_MODULES` on ``ctx``.

    Parameters
    ----------
    ctx : shakelab.server.LocalServer
        The started server (see the module docstring for what routers use of it).
    test_hooks : bool
        Also mount ``GET /_stats`` and ``POST /_faults``.

    Returns
    -------
    fastapi.FastAPI
        Its mounts (:class:`Mount`) in ``app.state.mounts``, which :class:`Gate` reads.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> app = create_app(SimpleNamespace(token="t0k3n", store=None), test_hooks=True)  # a LocalServer in practice
    >>> [(m.auth, m.faults) for m in app.state.mounts]
    [(BearerAuth(), True), (ApiKeyAuth(), True), (None, True), (BearerAuth(), False)]
    """
    app = FastAPI(title="shakelab local server", docs_url=None, redoc_url=None, openapi_url=None)
    mounts = [Mount.of(importlib.import_module(name).build_router(ctx)) for name in API_MODULES]
    if test_hooks:
        mounts.append(Mount.of(importlib.import_module(HOOKS_MODULE).build_router(ctx), faults=False))
    listed = []
    for mount in mounts:
        app.include_router(mount.router)
        if mount.auth is not None and mount.faults:  # the APIs, not the downloads or the hooks
            listed += [f"{'|'.join(sorted(getattr(r, 'methods', ())))} {route_key(getattr(r, 'path', ''))}"
                       for r in mount.router.routes]
    install_error_handlers(app, listed)
    app.state.mounts = mounts
    return app


class Gate:
    """Outermost ASGI layer: counts each request, checks its router's auth, injects faults.

    Parameters
    ----------
    app : fastapi.FastAPI
        Made by :func:`create_app`.
    ctx : shakelab.server.LocalServer
        Gives ``count_request(key)``, ``faults`` and ``body_idle_timeout``.
    """

    def __init__(self, app: FastAPI, ctx: Any):
        self.app = app
        self.ctx = ctx
        self.mounts: list[Mount] = list(app.state.mounts)
        self._default = next((m.auth for m in self.mounts if m.auth is not None), None)
        self._templates = tuple(r for m in self.mounts for r in m.routes)

    def route(self, path: str) -> tuple[Mount | None, str | None]:
        """Return the mount and route template ``path`` goes to; ``(None, None)`` when no router has it.

        A path no route matches belongs to the API whose routes start with its first segment
        (``/tasks/a/b`` to the Tasks API: its key, its error shape), with no template.
        """
        for mount in self.mounts:
            template = mount.match(path)
            if template is not None:
                return mount, template
        head = "/" + path.lstrip("/").split("/", 1)[0]
        owner = next((m for m in self.mounts if m.auth is not None and m.faults
                      and any(t == head or t.startswith(head + "/") for _, t in m.routes)), None)
        return owner, None

    async def __call__(self, scope, receive, send):
        """Serve one ASGI connection scope."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        mount, template = self.route(path)
        self.ctx.count_request(f"{method} {route_key(template)}" if template is not None else f"{method} (other)")
        auth = mount.auth if mount is not None else self._default
        render = mount.render if mount is not None else problem
        scope[RENDERER] = render
        if auth is not None:
            refusal = auth.verify(scope["headers"])
            if refusal is not None:
                return await render(refusal.status, refusal.error, refusal.message, refusal.headers)(
                    scope, receive, send)
        scope[CHECKED] = True
        receive = _idle_receive(receive, getattr(self.ctx, "body_idle_timeout", BODY_IDLE_TIMEOUT))
        if mount is not None and not mount.faults:
            return await self.app(scope, receive, send)
        fault = self.ctx.faults.take(method, path)
        if fault is None:
            return await self.app(scope, receive, send)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.after:  # the request is handled (a job or task is created), then its answer is lost
            async def lost(message):
                pass

            await self.app(scope, receive, lost)
            if fault.status is None:
                return await _drop(scope, send)
        if fault.drop:
            return await _drop(scope, send)
        if fault.status is None and fault.delay_after:
            async def late_send(message, _send=send, _wait=fault.delay_after):
                if message["type"] == "http.response.start":
                    await asyncio.sleep(_wait)
                await _send(message)

            return await self.app(scope, receive, late_send)
        if fault.status is None:
            return await self.app(scope, receive, send)
        headers = dict(fault.headers)
        resp: Response
        if fault.body is None:
            resp = render(fault.status, "injected_fault", f"fault injected for {method} {path}", headers)
        elif isinstance(fault.body, (dict, list)):
            resp = JSONResponse(fault.body, status_code=fault.status, headers=headers)
        else:
            body = fault.body.encode() if isinstance(fault.body, str) else fault.body
            media = next((v for k, v in headers.items() if k.lower() == "content-type"), "application/json")
            resp = Response(body, status_code=fault.status, headers=headers, media_type=media)
        await resp(scope, receive, send)


#: Seconds a request body may go without a single byte arriving (never a limit on its total time:
#: a slow 2 GB upload that keeps sending is never cut).
BODY_IDLE_TIMEOUT = 60.0
#: Seconds an idle keep-alive connection stays open after its last answer: longer than the
#: clients' longest pause between polls (:data:`shakelab.transport.MAX_POLL_INTERVAL`, 15 s), so a
#: poll reuses its connection; at 5 s (uvicorn's default) every later poll met a connection closed
#: under it (a reset a GET retries, but a POST then goes to lost-answer recovery).
KEEP_ALIVE_TIMEOUT = int(MAX_POLL_INTERVAL) + 5
#: Seconds a connection may take to send complete request headers (a new connection, or an idle
#: keep-alive one after its last answer: so never less than :data:`KEEP_ALIVE_TIMEOUT`).
HEADER_TIMEOUT = max(20.0, float(KEEP_ALIVE_TIMEOUT))
#: Connections served at once; beyond it uvicorn answers 503.
MAX_CONNECTIONS = 1000


def _idle_receive(receive, idle: float):
    """``receive`` that raises 408 when no part of the request body arrives within ``idle`` seconds."""
    done = False

    async def wrapped():
        nonlocal done
        if done:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), idle)
        except TimeoutError:
            raise APIProblem(408, "body_timeout", f"no byte of the request body arrived for {idle:g} s; "
                             "the request was abandoned and nothing was stored", {"Connection": "close"}) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            done = True
        return message

    return wrapped


def header_timeout_protocol():
    """Make uvicorn's h11 protocol, closing connections whose request headers do not complete in time.

    uvicorn has a keep-alive timeout but no header timeout: a client that opens a connection
    and trickles (or never sends) its headers would hold it forever. Passed as ``Config(http=...)``.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT, self._header_timeout_handler)

        def _cancel_header_timer(self) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
                self._header_timer = None

        def _header_timeout_handler(self) -> None:
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._cancel_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:  # the API's JSON error shape, not uvicorn's text
            body = json.dumps({"error": "invalid_request", "message": "the request line, `headers` or chunked "
                               "framing are not valid HTTP/1.1 (malformed, conflicting or oversized header, missing "
                               "Host, or a Transfer-Encoding other than chunked)"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                try:
                    self.transport.write(self.conn.send(event))
                except h11.LocalProtocolError:
                    break
            self.transport.close()

    return HeaderTimeoutH11


async def _drop(scope, send) -> None:
    """Close the connection without answering (uvicorn's transport, reached through its ``send``)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort() if hasattr(transport, "abort") else transport.close()
        for _ in range(3):
            await asyncio.sleep(0)  # let uvicorn see the disconnect so it writes nothing
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # fallback: break mid-answer
    raise ConnectionAbortedError("fault injection: connection dropped")
