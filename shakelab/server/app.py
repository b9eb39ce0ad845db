"""HTTP routes of the local Jobs API (FastAPI), and the gate in front of them.

The gate (:class:`Gate`, plain ASGI, outermost) counts requests, checks the bearer token in
constant time and injects faults. The routes implement the legacy Jobs API page exactly:
``POST /upload``, ``POST /upload/link``, ``POST /job``, ``GET /job/{id}``, ``GET|POST /usage``;
plus ``GET /files/{id}/{name}`` (signed links, no token), ``GET /_stats`` and ``POST /_faults``.
Every error is JSON ``{"error": <short code>, "message": <text naming the field and what is allowed>}``.

Examples
--------
>>> app = create_app(server)      # doctest: +SKIP   (server: a started LocalServer's context)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
import http.client
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from shakelab import catalog
from shakelab.errors import scrubbed_logger
from shakelab.server.worker import PinnedHTTP, PinnedHTTPS, check_url, public_addresses

log = scrubbed_logger("shakelab.server")

MAX_JSON_BYTES = 1024 * 1024
#: local-only: a POST /job sent again with the same key returns the job the first one created
IDEMPOTENCY_HEADER = "X-Shakelab-Idempotency-Key"
MAX_NAME_CHARS = 200
# Formats a source asset can have: the stored file's extension always comes from this table.
SOURCE_TYPES = {
    "wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "aiff": "audio/aiff", "ogg": "audio/ogg",
    "m4a": "audio/mp4", "aac": "audio/aac", "mp4": "video/mp4", "mov": "video/quicktime",
    "json": "application/json", "txt": "text/plain", "bin": "application/octet-stream",
}
_EXT_ALIASES = {"aif": "aiff", "aifc": "aiff", "oga": "ogg", "opus": "ogg", "wave": "wav", "mpeg": "mp3",
                "mpga": "mp3"}
_CT_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
               "audio/flac": "flac", "audio/x-flac": "flac", "audio/mpeg": "mp3", "audio/mp3": "mp3",
               "audio/aiff": "aiff", "audio/x-aiff": "aiff", "audio/ogg": "ogg", "audio/mp4": "m4a",
               "audio/x-m4a": "m4a", "audio/aac": "aac", "video/mp4": "mp4", "video/quicktime": "mov"}


# -- errors ---------------------------------------------------------------------------------
class APIProblem(Exception):
    """An answer ``{error, message}`` with an HTTP status, raised anywhere in a route."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers


def problem(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error response every failure uses."""
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def _typename(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# -- names and formats ----------------------------------------------------------------------
def clean_name(raw: object, fallback: str = "upload") -> str:
    """A display name from a client-supplied file name: no directories, no control characters, bounded.

    The name is only ever shown (payloads, Content-Disposition); stored file names are chosen by the server.

    Examples
    --------
    >>> clean_name("../../etc/passwd")
    'passwd'
    >>> clean_name("a\\x00b\\nc.wav")
    'abc.wav'
    """
    if not isinstance(raw, str):
        return fallback
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    name = re.sub(r"\s+", " ", name)
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:10] if dot and len(ext) <= 10 else ""
        name = name[: MAX_NAME_CHARS - len(ext) - 1].rstrip() + ("." + ext if ext else "")
    return name or fallback


def sniff_format(head: bytes, name: str = "", content_type: str = "") -> str:
    """The file's format from its first bytes, else its name's extension, else its content type.

    Always a key of :data:`SOURCE_TYPES` (``'bin'`` when unknown).

    Examples
    --------
    >>> sniff_format(b"fLaC\\x00\\x00", "x.wav")
    'flac'
    >>> sniff_format(b"hello", "notes.txt")
    'txt'
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" or head[:4] in (b"RF64", b"BW64"):
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mov" if head[8:10] == b"qt" else ("mp4" if head[8:12] in (b"isom", b"mp41", b"mp42") else "m4a")
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    ext = _EXT_ALIASES.get(ext, ext)
    if ext in SOURCE_TYPES:
        return ext
    ct = content_type.split(";")[0].strip().lower()
    return _CT_FORMATS.get(ct, "bin")


# -- the gate -------------------------------------------------------------------------------
def stats_key(method: str, path: str) -> str:
    """The route template a request is counted under in ``stats()``.

    Examples
    --------
    >>> stats_key("GET", "/job/cabc123")
    'GET /job/{id}'
    """
    from shakelab.server import api_tasks

    tasks_key = api_tasks.stats_key(method, path)
    if tasks_key is not None:
        return tasks_key
    if path in ("/upload", "/upload/link", "/job", "/usage", "/_stats", "/_faults"):
        return f"{method} {path}"
    if path.startswith("/job/"):
        return f"{method} /job/{{id}}"
    if path.startswith("/files/"):
        return f"{method} /files/{{id}}"
    return f"{method} (other)"


class Gate:
    """Outermost ASGI layer: counts each request, checks auth (except signed links), injects faults."""

    def __init__(self, app, ctx):
        self.app = app
        self.ctx = ctx
        self._token = ctx.token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        self.ctx.count_request(stats_key(method, path))
        from shakelab.server import api_tasks

        tasks_api = api_tasks.is_tasks_path(path)
        if tasks_api:
            key = next((v for k, v in scope["headers"] if k == b"x-api-key"), b"")
            if not hmac.compare_digest(key.strip(), self._token):
                msg = ("Unauthorized: Missing or incorrect API key (send `x-api-key: <key>`)" if not key
                       else "Unauthorized: Missing or incorrect API key")
                return await api_tasks.fastify_error(401, msg, "unauthorized")(scope, receive, send)
        elif not path.startswith("/files/"):
            given = b""
            for k, v in scope["headers"]:
                if k == b"authorization":
                    given = v
                    break
            scheme, _, value = given.partition(b" ")
            # constant-time on the token; the scheme is case-insensitive (RFC 7235)
            if not (hmac.compare_digest(value.strip(), self._token) and scheme.lower() == b"bearer"):
                msg = ("missing `Authorization` header: send `Authorization: Bearer <token>`" if not given
                       else "invalid token in the `Authorization: Bearer <token>` header")
                return await problem(401, "unauthorized", msg, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        receive = _idle_receive(receive, getattr(self.ctx, "body_idle_timeout", BODY_IDLE_TIMEOUT))
        if path in ("/_faults", "/_stats"):
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
        if fault.drop:
            return await _drop(scope, send)
        if fault.status is None and fault.after:
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
        if fault.body is None and tasks_api:
            resp = api_tasks.fastify_error(fault.status, f"fault injected for {method} {path}", "injected_fault",
                                           headers)
        elif fault.body is None:
            resp = problem(fault.status, "injected_fault", f"fault injected for {method} {path}", headers)
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
#: Seconds a connection may take to send complete request headers (a new connection, or an idle
#: keep-alive one after its last answer).
HEADER_TIMEOUT = 20.0
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
        except asyncio.TimeoutError:
            raise APIProblem(408, "body_timeout", f"no byte of the request body arrived for {idle:g} s; "
                             "the request was abandoned and nothing was stored", {"Connection": "close"}) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            done = True
        return message

    return wrapped


def header_timeout_protocol():
    """uvicorn's h11 protocol, closing connections whose request headers do not complete in time.

    uvicorn has a keep-alive timeout but no header timeout: a client that opens a connection
    and trickles (or never sends) its headers would hold it forever. Passed as ``Config(http=...)``.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
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


# -- the app --------------------------------------------------------------------------------
def create_app(ctx) -> FastAPI:
    """The FastAPI application of the local Jobs API, bound to a server context ``ctx``.

    ``ctx`` provides ``store``, ``signer``, ``faults``, ``worker``, ``max_upload_bytes``,
    ``allow_private_links``, ``link_timeout``, ``count_upload()``, ``count_job()``,
    ``stats()`` and ``job_payload(job, base_url)``.
    """
    app = FastAPI(title="shakelab local Jobs API", docs_url=None, redoc_url=None, openapi_url=None)
    store = ctx.store

    @app.exception_handler(APIProblem)
    async def _api_problem(request: Request, exc: APIProblem):
        return problem(exc.status, exc.error, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"`{loc or 'body'}`: {err.get('msg', 'invalid')}")
        return problem(400, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        from shakelab.server import api_tasks

        if api_tasks.is_tasks_path(request.url.path):
            message = (f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404 else
                       f"{request.method} is not allowed on {request.url.path}" if exc.status_code == 405 else
                       str(exc.detail))
            return api_tasks.fastify_error(exc.status_code, message, None, dict(exc.headers or {}) or None)
        if exc.status_code == 404:
            return problem(404, "not_found", f"no such endpoint: {request.method} {request.url.path}; the API has "
                           "POST /upload, POST /upload/link, POST /job, GET /job/{id}, GET|POST /usage")
        if exc.status_code == 405:
            return problem(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}",
                           dict(exc.headers or {}))
        return problem(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        import sqlite3

        if isinstance(exc, (OSError, sqlite3.OperationalError)):
            p = storage_problem(exc, f"{request.method} {request.url.path}")
            return problem(p.status, p.error, p.message)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", f"the server failed on {request.method} {request.url.path}: "
                       f"{type(exc).__name__}")

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # -- uploads ----------------------------------------------------------------------------
    @app.post("/upload")
    async def upload(request: Request):
        ctype = request.headers.get("content-type", "")
        from python_multipart.multipart import parse_options_header

        mtype, params = parse_options_header(ctype)
        boundary = params.get(b"boundary")
        if mtype != b"multipart/form-data" or not boundary:
            raise APIProblem(400, "invalid_request", "the upload must be multipart/form-data with a `file` field "
                             f"(curl -F 'file=@song.mp3'), not Content-Type {ctype[:100]!r}")
        limit = ctx.max_upload_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + 1024 * 1024:
            raise _too_large(limit, int(length))
        received = await _receive_multipart(request, boundary, store.temp_path(), limit)
        return JSONResponse(await run_in_threadpool(_store_upload, ctx, request, *received))

    @app.post("/upload/link")
    async def upload_link(request: Request):
        body = await _json_body(request)
        link, name = body.get("link"), body.get("name")
        if link is None:
            raise APIProblem(400, "missing_field", "`link` is required: the http(s) URL of the audio file")
        if not isinstance(link, str):
            raise APIProblem(400, "invalid_field", f"`link` must be a string URL, not {_typename(link)} {link!r}")
        if name is not None and not isinstance(name, str):
            raise APIProblem(400, "invalid_field", f"`name` must be a string, not {_typename(name)} {name!r}")
        try:
            check_url(link, field="link")
        except ValueError as exc:
            raise APIProblem(400, "invalid_link", str(exc)) from None
        fallback = clean_name(urlsplit(link).path.rsplit("/", 1)[-1], "download")
        display = clean_name(name, fallback) if name is not None else fallback
        return JSONResponse(await _in_link_pool(_fetch_link, ctx, request, link, display))

    # -- jobs -------------------------------------------------------------------------------
    @app.post("/job")
    async def create_job(request: Request):
        body = await _json_body(request)
        metadata, callback = _validate_job(body)
        if callback is not None:
            try:  # resolved now, so a private callback is refused before a job exists
                await run_in_threadpool(public_addresses, callback, allow_private=ctx.allow_private_links,
                                        field="callbackUrl")
            except ValueError as exc:
                raise APIProblem(400, "invalid_field", str(exc)) from None
        asset_id = body["assetId"]
        if store.get_asset(asset_id) is None:
            raise APIProblem(404, "asset_not_found", f"`assetId` {asset_id!r} is not an asset on this server; "
                             "upload the file first (POST /upload or /upload/link) and use the `id` it returns")
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", key):
            raise APIProblem(400, "invalid_header", f"`{IDEMPOTENCY_HEADER}` must be 1-100 letters, digits, "
                             f"'-' or '_', not {key[:100]!r}")
        try:
            job = store.add_job(metadata=metadata, asset_id=asset_id, callback_url=callback, idempotency_key=key)
        except (OSError, sqlite3.OperationalError) as exc:
            raise storage_problem(exc, "the job") from None
        if job.pop("replayed", False):
            return JSONResponse({"job": ctx.job_payload(job, base(request))}, headers={IDEMPOTENCY_HEADER: "replayed"})
        ctx.count_job()
        ctx.worker.submit(job["id"])
        return JSONResponse({"job": ctx.job_payload(job, base(request))})

    @app.get("/job/{job_id}")
    async def get_job(job_id: str, request: Request):
        job = store.get_job(job_id) if len(job_id) <= 100 else None
        hide = ctx.faults.not_found_for
        if job is None or (hide and time.time() - job["created_at"] < hide):
            raise APIProblem(404, "job_not_found", f"no job with id {job_id[:100]!r} on this server")
        return JSONResponse({"job": ctx.job_payload(job, base(request), variant=ctx.faults.variant)})

    # -- usage ------------------------------------------------------------------------------
    @app.api_route("/usage", methods=["GET", "POST"])
    async def usage():
        return JSONResponse({"clientId": store.client_id, "usage": store.usage(3)})

    # -- signed downloads (no token) --------------------------------------------------------
    @app.api_route("/files/{asset_id}/{name:path}", methods=["GET", "HEAD"])
    async def download(asset_id: str, name: str, request: Request):
        q = request.query_params
        verdict = ctx.signer.check(asset_id, q.get("expires"), q.get("signature"))
        if verdict == "expired":
            raise APIProblem(403, "link_expired", "this download link has expired; GET /job/{id} again "
                             "(or keep the upload response) for a fresh link")
        if verdict != "ok":
            raise APIProblem(403, "invalid_signature", "this download link is not valid (bad or missing signature)")
        asset = store.get_asset(asset_id)
        if asset is None or not Path(asset["path"]).is_file():
            raise APIProblem(404, "file_not_found", f"asset {asset_id!r} has no stored file any more")
        return FileResponse(asset["path"], media_type=asset["file_type"], filename=asset["name"])

    from shakelab.server import api_tasks

    app.include_router(api_tasks.build_router(ctx))

    # -- test hooks (token required) --------------------------------------------------------
    @app.get("/_stats")
    async def stats():
        return JSONResponse(ctx.stats())

    @app.post("/_faults")
    async def faults(request: Request):
        body = await _json_body(request)
        try:
            ctx.faults.apply(body)
        except (ValueError, TypeError) as exc:
            raise APIProblem(400, "invalid_request", str(exc)) from None
        return JSONResponse({"ok": True, "pending": len(ctx.faults.pending()), "variant": ctx.faults.variant,
                             "not_found_for": ctx.faults.not_found_for,
                             "processing_delay": ctx.faults.processing_delay})

    return app


# -- helpers of the routes ------------------------------------------------------------------
def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left" / "quota exceeded" / SQLite's "database or disk is full"."""
    import errno
    import sqlite3

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def storage_problem(exc: BaseException, what: str) -> APIProblem:
    """The 507 answer for a failed write of ``what`` (logged once, with the server-side reason)."""
    log.error("%s could not be stored: %s", what, exc)
    reason = "the server's disk is full" if is_disk_full(exc) else \
        f"the server could not write its data dir ({getattr(exc, 'strerror', None) or type(exc).__name__})"
    return APIProblem(507, "insufficient_storage", f"{what} was not stored: {reason}; nothing was created")


def _too_large(limit: int, size: int | None = None) -> APIProblem:
    got = f" ({size} bytes)" if size is not None else ""
    return APIProblem(413, "file_too_large", f"`file` is larger than this server's limit of {limit} bytes{got}")


MAX_JSON_DEPTH = 32


class _NonFinite:
    """Stands for a NaN/Infinity (or an overflowing number) while the body is checked."""

    def __init__(self, text: str):
        self.text = text


def parse_json(raw: bytes) -> dict:
    """The one JSON body parser of the API: an object, finite numbers only, at most 32 levels deep.

    Raises :class:`APIProblem` (400 ``invalid_json``) naming the field, before any state changes.

    Examples
    --------
    >>> parse_json(b'{"a": 1}')
    {'a': 1}
    >>> parse_json(b'{"metadata": {"gain": NaN}}')
    Traceback (most recent call last):
    ...
    shakelab.server.app.APIProblem: `metadata.gain` must be a finite number, not NaN
    """
    if not raw.strip():
        raise APIProblem(400, "invalid_json", "the request body must be a JSON object, but it is empty")

    def number(text: str):
        value = float(text)
        return value if value - value == 0 else _NonFinite(text)

    try:
        body = json.loads(raw, parse_constant=_NonFinite, parse_float=number)
    except RecursionError:
        raise APIProblem(400, "invalid_json", f"the request body is nested deeper than {MAX_JSON_DEPTH} "
                         "levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIProblem(400, "invalid_json", f"the request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise APIProblem(400, "invalid_json", f"the request body must be a JSON object, not {_typename(body)}")
    todo: list[tuple[Any, str, int]] = [(body, "", 0)]
    while todo:  # iterative: a deep body cannot exhaust the stack here
        value, where, depth = todo.pop()
        if depth > MAX_JSON_DEPTH:
            raise APIProblem(400, "invalid_json", f"`{where or 'body'}` is nested deeper than "
                             f"{MAX_JSON_DEPTH} levels")
        if isinstance(value, _NonFinite):
            raise APIProblem(400, "invalid_json", f"`{where or 'body'}` must be a finite number, "
                             f"not {value.text[:40]}")
        if isinstance(value, dict):
            todo.extend((v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
    return body


async def _json_body(request: Request) -> dict:
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_JSON_BYTES:
                raise APIProblem(413, "body_too_large", f"the JSON body must be at most {MAX_JSON_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise APIProblem(400, "incomplete_request", "the client disconnected before the JSON body was sent "
                         "completely") from None
    return parse_json(b"".join(chunks))


def _validate_job(body: dict) -> tuple[dict, str | None]:
    """Check a POST /job body; returns (metadata, callbackUrl) or raises APIProblem naming the field."""
    metadata = body.get("metadata")
    if metadata is None:
        raise APIProblem(400, "missing_field", "`metadata` is required: an object {name, format}, "
                         "e.g. {\"name\": \"vocals\", \"format\": \"wav\"}")
    if not isinstance(metadata, dict):
        raise APIProblem(400, "invalid_field", f"`metadata` must be an object {{name, format}}, "
                         f"not {_typename(metadata)} {metadata!r}"[:500])
    models = catalog.LOCAL_MODELS
    name, fmt = metadata.get("name"), metadata.get("format")
    allowed_models = ", ".join(repr(m) for m in models)
    if name is None:
        raise APIProblem(400, "missing_field", f"`metadata.name` (the model) is required; one of {allowed_models}")
    if not isinstance(name, str):
        raise APIProblem(400, "invalid_field", f"`metadata.name` must be a string, one of {allowed_models}, "
                         f"not {_typename(name)} {name!r}"[:500])
    if name not in models:
        extra = (" (a model of the AudioShake service that this local server does not run)"
                 if name in catalog.SERVICE_MODELS else "")
        raise APIProblem(400, "unknown_model", f"`metadata.name` must be one of {allowed_models}, "
                         f"not {name[:100]!r}{extra}")
    allowed_formats = ", ".join(repr(f) for f in models[name])
    if fmt is None:
        raise APIProblem(400, "missing_field", f"`metadata.format` is required; for model {name!r} one of "
                         f"{allowed_formats}")
    if not isinstance(fmt, str) or fmt not in models[name]:
        shown = f"{_typename(fmt)} {fmt!r}" if not isinstance(fmt, str) else repr(fmt[:100])
        raise APIProblem(400, "unsupported_format", f"`metadata.format` must be one of {allowed_formats} "
                         f"for model {name!r}, not {shown}"[:500])
    if "window" in metadata:
        w = metadata["window"]
        if name != "music_detection":
            raise APIProblem(400, "invalid_field", f"`metadata.window` applies only to 'music_detection', "
                             f"not to {name!r}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (0.5 <= w <= 600):
            raise APIProblem(400, "invalid_field", f"`metadata.window` must be a number of seconds between "
                             f"0.5 and 600, not {w!r}"[:300])
    if "all_windows" in metadata:  # local-only: every window with its score, for threshold studies
        if name != "music_detection":
            raise APIProblem(400, "invalid_field", f"`metadata.all_windows` applies only to 'music_detection', "
                             f"not to {name!r}")
        if not isinstance(metadata["all_windows"], bool):
            raise APIProblem(400, "invalid_field", f"`metadata.all_windows` must be true or false, "
                             f"not {metadata['all_windows']!r}"[:300])
    if len(json.dumps(metadata)) > 16384:
        raise APIProblem(400, "invalid_field", "`metadata` must be at most 16384 bytes of JSON")
    asset_id = body.get("assetId")
    if asset_id is None:
        raise APIProblem(400, "missing_field", "`assetId` is required: the `id` returned by POST /upload")
    if not isinstance(asset_id, str) or not asset_id or len(asset_id) > 100:
        raise APIProblem(400, "invalid_field", f"`assetId` must be the string id returned by POST /upload, "
                         f"not {_typename(asset_id)} {asset_id!r}"[:300])
    callback = body.get("callbackUrl")
    if callback is not None:
        if not isinstance(callback, str):
            raise APIProblem(400, "invalid_field", f"`callbackUrl` must be a string URL, not {_typename(callback)}")
        try:
            check_url(callback, field="callbackUrl")
        except ValueError as exc:
            raise APIProblem(400, "invalid_field", str(exc)) from None
    return metadata, callback


async def _receive_multipart(request: Request, boundary: bytes, tmp: Path, limit: int):
    """Stream a multipart body: the ``file`` part goes to ``tmp`` chunk by chunk (never held in memory).

    Returns ``(tmp_path, size, filename, part_content_type, head_bytes)``.
    """
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "in_file": False, "found": False,
                             "size": 0, "filename": None, "ctype": "", "head": b"", "other": 0}
    fh = None

    def on_part_begin():
        state["headers"] = {}

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        nonlocal fh
        disp, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if opts.get(b"name") == b"file" and not state["found"]:
            state["found"] = state["in_file"] = True
            fn = opts.get(b"filename")
            state["filename"] = fn.decode("utf-8", "replace") if fn is not None else None
            state["ctype"] = state["headers"].get(b"content-type", b"").decode("latin-1")
            fh = open(tmp, "wb")
        else:
            state["in_file"] = False

    def on_part_data(data, start, end):
        n = end - start
        if state["in_file"]:
            state["size"] += n
            if state["size"] > limit:
                raise _too_large(limit)
            if len(state["head"]) < 64:
                state["head"] += bytes(data[start:min(end, start + 64)])
            fh.write(data[start:end])
        else:
            state["other"] += n
            if state["other"] > MAX_JSON_BYTES:
                raise APIProblem(413, "body_too_large", "form fields other than `file` must total at most "
                                 f"{MAX_JSON_BYTES} bytes")

    def on_part_end():
        state["in_file"] = False

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end}, max_header_size=64 * 1024)
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except APIProblem:
        _discard(fh, tmp)
        raise
    except ClientDisconnect:
        _discard(fh, tmp)
        raise APIProblem(400, "incomplete_upload", "the client disconnected before the upload finished") from None
    except OSError as exc:  # disk full, data dir gone
        _discard(fh, tmp)
        raise storage_problem(exc, "the upload") from None
    except Exception as exc:
        _discard(fh, tmp)
        raise APIProblem(400, "invalid_request", f"the multipart body with the `file` field could not be parsed: "
                         f"{str(exc)[:200]}") from None
    if fh is not None:
        fh.close()
    if parser.state != MultipartState.END:
        _discard(None, tmp)
        raise APIProblem(400, "incomplete_upload", "the multipart body ended before its closing boundary "
                         f"(--{boundary.decode('latin-1')[:70]}--): the `file` was not sent completely")
    if not state["found"]:
        raise APIProblem(400, "missing_field", "the multipart form has no `file` field: send the audio as "
                         "-F 'file=@song.mp3;type=audio/mpeg'")
    return tmp, state["size"], state["filename"], state["ctype"], state["head"]


def _discard(fh, tmp: Path) -> None:
    if fh is not None:
        fh.close()
    try:
        tmp.unlink()
    except OSError:
        pass


def _store_upload(ctx, request: Request, tmp: Path, size: int, filename: str | None, ctype: str,
                  head: bytes, source: str = "upload", display: str | None = None) -> dict:
    """Move a complete temp file into the store under a server-chosen name; returns the upload payload."""
    from shakelab.server.store import new_id

    fmt = sniff_format(head, filename or "", ctype)
    name = display if display is not None else clean_name(filename)
    asset_id = new_id()
    try:
        dest = ctx.store.asset_dir(asset_id) / f"source.{fmt}"
        os.replace(tmp, dest)
        asset = ctx.store.add_asset(asset_id=asset_id, name=name, fmt=fmt, file_type=SOURCE_TYPES[fmt],
                                    path=dest, size=size, source=source)
    except Exception as exc:
        import shutil
        import sqlite3

        _discard(None, tmp)
        shutil.rmtree(ctx.store.files_dir / asset_id, ignore_errors=True)
        if isinstance(exc, (OSError, sqlite3.OperationalError)):
            raise storage_problem(exc, "the upload") from None
        raise
    ctx.count_upload()
    return ctx.asset_payload(asset, str(request.base_url).rstrip("/"))


#: ``/upload/link`` downloads run at most this many at once, in a pool of their own (a trickling
#: host never holds the threads that uploads and jobs need); this many more may wait for it. One
#: pool per process, shared by its servers, like the model processes.
LINK_WORKERS = 4
LINK_QUEUE = 16
_link_pool = None
_link_pending = 0
_link_lock = threading.Lock()


async def _in_link_pool(fn, *args):
    """Run ``fn(*args)`` in the link pool, or answer 503 (with Retry-After) when it is full."""
    global _link_pool, _link_pending
    from concurrent.futures import ThreadPoolExecutor

    with _link_lock:
        if _link_pending >= LINK_WORKERS + LINK_QUEUE:
            raise APIProblem(503, "too_many_links", f"{_link_pending} `link` downloads are in progress or "
                             "waiting on this server; retry later", {"Retry-After": "5"})
        if _link_pool is None:
            _link_pool = ThreadPoolExecutor(LINK_WORKERS, thread_name_prefix="shakelab-link")
        _link_pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_link_pool, fn, *args)
    finally:
        with _link_lock:
            _link_pending -= 1


def _open_link(url: str, allow_private: bool, timeout: float):
    """GET ``url`` (no redirects followed) from an address vetted by :func:`public_addresses`."""
    try:
        host, port, addresses = public_addresses(url, allow_private=allow_private)
    except ValueError as exc:
        raise APIProblem(400, "invalid_link", str(exc)) from None
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cls = PinnedHTTPS if parts.scheme == "https" else PinnedHTTP
    last: Exception | None = None
    for address in addresses or [None]:
        conn = cls(host, port, address, timeout=timeout)
        try:
            conn.request("GET", target, headers={"User-Agent": "shakelab-server", "Accept": "*/*"})
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            last = exc
    raise APIProblem(400, "link_failed", f"`link` could not be fetched: {last}")


def _fetch_link(ctx, request: Request, link: str, name: str) -> dict:
    """Download ``link`` into the store (http/https only, public hosts unless allowed, size and time caps)."""
    limit, deadline = ctx.max_upload_bytes, time.monotonic() + ctx.link_timeout
    url = link
    for _hop in range(6):
        resp = _open_link(url, ctx.allow_private_links, min(10.0, max(1.0, deadline - time.monotonic())))
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.getheader("Location")
            resp.close()
            if not location:
                raise APIProblem(400, "link_failed", f"`link` answered HTTP {resp.status} (a redirect) "
                                 "without a Location header")
            try:
                url = urljoin(url, location.strip())
                check_url(url, field="link")
            except ValueError as exc:
                raise APIProblem(400, "link_failed", f"`link` redirected to a bad URL: {exc}") from None
            continue
        if resp.status >= 400:
            resp.close()
            raise APIProblem(400, "link_failed", f"`link` answered HTTP {resp.status} {resp.reason}")
        break
    else:
        raise APIProblem(400, "link_failed", "`link` redirected more than 5 times")
    tmp = ctx.store.temp_path()
    size, head = 0, b""
    try:
        try:
            fh = open(tmp, "wb")
        except OSError as exc:
            resp.close()
            raise storage_problem(exc, "the download of `link`") from None
        with resp, fh:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise _too_large(limit, int(length))
            while True:
                if time.monotonic() > deadline:
                    raise APIProblem(408, "link_timeout", f"`link` took longer than {ctx.link_timeout:g} s to download")
                chunk = resp.read1(256 * 1024)  # what has arrived: a trickling host meets the deadline
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                if len(head) < 64:
                    head += chunk[:64]
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise storage_problem(exc, "the download of `link`") from None
            if length and length.isdigit() and size != int(length):
                raise http.client.IncompleteRead(b"", int(length) - size)
    except APIProblem:
        _discard(None, tmp)
        raise
    except (OSError, ValueError, http.client.HTTPException) as exc:
        _discard(None, tmp)
        raise APIProblem(400, "link_failed", f"`link` download broke off: {exc}") from None
    path_name = urlsplit(url).path.rsplit("/", 1)[-1]
    ctype = resp.headers.get("Content-Type", "")
    fmt_hint = path_name if "." in path_name else name
    return _store_upload(ctx, request, tmp, size, fmt_hint, ctype, head, source="link", display=name)
