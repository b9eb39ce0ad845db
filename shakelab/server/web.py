"""HTTP building blocks every router of the local server uses: the error answer and the JSON body.

Every error of every API is JSON ``{"error": <short code>, "message": <text naming the field
and what is allowed>}``, raised anywhere as :class:`APIProblem` and answered by the handlers
that :func:`install_error_handlers` puts on the app. :func:`parse_json` is the one JSON body
parser (an object, finite numbers, bounded depth); :func:`read_json` streams a request body
into it under the :data:`MAX_JSON_BYTES` cap.

Examples
--------
>>> parse_json(b'{"a": 1}')
{'a': 1}
>>> APIProblem(400, "missing_field", "`link` is required").status
400
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from shakelab.errors import scrubbed_logger

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "RENDERER", "APIProblem", "install_error_handlers", "is_disk_full",
           "parse_json", "problem", "read_json", "storage_problem", "too_large", "typename"]

log: logging.Logger = scrubbed_logger("shakelab.server")

#: Largest JSON request body, in bytes.
MAX_JSON_BYTES = 1024 * 1024
#: Deepest nesting of a JSON request body.
MAX_JSON_DEPTH = 32
#: request scope key holding how the API a request goes to writes its errors (set by the gate;
#: :func:`problem` when absent): the Tasks API answers Fastify-style ``{statusCode, error, message}``
RENDERER = "shakelab.problem"


class APIProblem(Exception):
    """An answer ``{error, message}`` with an HTTP status, raised anywhere in a route.

    Parameters
    ----------
    status : int
        HTTP status code.
    error : str
        Short machine-readable code (``"missing_field"``).
    message : str
        What was wrong, naming the field and what is allowed.
    headers : dict, optional
        Extra response headers (``Retry-After``, ``WWW-Authenticate``).

    Examples
    --------
    >>> p = APIProblem(404, "job_not_found", "no job with id 'cx' on this server")
    >>> p.error, str(p)
    ('job_not_found', "no job with id 'cx' on this server")
    """

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers


def problem(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Make the JSON error response every failure uses.

    Examples
    --------
    >>> problem(400, "invalid_json", "the body is empty").body
    b'{"error":"invalid_json","message":"the body is empty"}'
    """
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def typename(value: object) -> str:
    """Name the JSON type of ``value`` as error messages do.

    Examples
    --------
    >>> typename([1]), typename(None), typename(2.5)
    ('an array', 'null', 'a number')
    """
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def is_disk_full(exc: BaseException) -> bool:
    """Tell whether ``exc`` is "no space left" / "quota exceeded" / SQLite's "database or disk is full".

    Examples
    --------
    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
    """
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def storage_problem(exc: BaseException, what: str) -> APIProblem:
    """Make the 507 answer for a failed write of ``what`` (logged once, with the server-side reason).

    Examples
    --------
    >>> storage_problem(OSError(errno.ENOSPC, "full"), "the upload").status
    507
    """
    log.error("%s could not be stored: %s", what, exc)
    reason = "the server's disk is full" if is_disk_full(exc) else \
        f"the server could not write its data dir ({getattr(exc, 'strerror', None) or type(exc).__name__})"
    return APIProblem(507, "insufficient_storage", f"{what} was not stored: {reason}; nothing was created")


def too_large(limit: int, size: int | None = None, *, field: str = "file") -> APIProblem:
    """Make the 413 answer for a file over the server's limit of ``limit`` bytes.

    Examples
    --------
    >>> too_large(10, 12).message
    "`file` is larger than this server's limit of 10 bytes (12 bytes)"
    """
    got = f" ({size} bytes)" if size is not None else ""
    return APIProblem(413, "file_too_large", f"`{field}` is larger than this server's limit of {limit} bytes{got}")


class _NonFinite:
    """Stands for a NaN/Infinity (or an overflowing number) while the body is checked."""

    def __init__(self, text: str):
        self.text = text


def parse_json(raw: bytes) -> dict:
    """Parse a JSON request body (the one parser of the API): an object, finite numbers, <= 32 levels deep.

    Raises :class:`APIProblem` (400 ``invalid_json``) naming the field, before any state changes.

    Examples
    --------
    >>> parse_json(b'{"a": 1}')
    {'a': 1}
    >>> parse_json(b'{"metadata": {"gain": NaN}}')
    Traceback (most recent call last):
    ...
    shakelab.server.web.APIProblem: `metadata.gain` must be a finite number, not NaN
    """
    if not raw.strip():
        raise APIProblem(400, "invalid_json", "the request body must be a JSON object, but it is empty")

    def number(text: str) -> Any:
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
        raise APIProblem(400, "invalid_json", f"the request body must be a JSON object, not {typename(body)}")
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


async def read_json(request: Request) -> dict:
    """Read the request's JSON object body (streamed, at most :data:`MAX_JSON_BYTES`) via :func:`parse_json`.

    Examples
    --------
    >>> import asyncio
    >>> from starlette.requests import Request
    >>> async def receive():
    ...     return {"type": "http.request", "body": b'{"model": "vocals"}', "more_body": False}
    >>> asyncio.run(read_json(Request({"type": "http", "method": "POST", "headers": []}, receive)))
    {'model': 'vocals'}
    """
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


def install_error_handlers(app: FastAPI, endpoints: Iterable[str] = ()) -> None:
    """Answer every error of ``app`` as ``{error, message}``: problems, validation, 404/405, crashes.

    A request whose scope carries :data:`RENDERER` (the gate puts there the one of the API it goes
    to) is answered by that function instead, with the same arguments as :func:`problem`.

    Parameters
    ----------
    app : fastapi.FastAPI
    endpoints : iterable of str
        What a 404 lists as the endpoints the server has (``"POST /upload"``, ...).

    Examples
    --------
    >>> app = FastAPI()
    >>> install_error_handlers(app, ["GET /usage"])
    """
    listed = ", ".join(endpoints)

    def render(request: Request, status: int, error: str, message: str,
               headers: dict[str, str] | None = None) -> JSONResponse:
        return request.scope.get(RENDERER, problem)(status, error, message, headers)

    @app.exception_handler(APIProblem)
    async def _api_problem(request: Request, exc: APIProblem) -> JSONResponse:
        return render(request, exc.status, exc.error, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"`{loc or 'body'}`: {err.get('msg', 'invalid')}")
        return render(request, 400, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return render(request, 404, "not_found", f"no such endpoint: {request.method} {request.url.path}"
                          + (f"; the API has {listed}" if listed else ""))
        if exc.status_code == 405:
            return render(request, 405, "method_not_allowed", f"{request.method} is not allowed on "
                          f"{request.url.path}", dict(exc.headers or {}))
        return render(request, exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, (OSError, sqlite3.OperationalError)):
            p = storage_problem(exc, f"{request.method} {request.url.path}")
            return render(request, p.status, p.error, p.message)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(request, 500, "internal_error", f"the server failed on {request.method} {request.url.path}: "
                       f"{type(exc).__name__}")
