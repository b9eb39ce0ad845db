"""The legacy Jobs API's routes: ``POST /upload``, ``/upload/link``, ``/job``, ``GET /job/{id}``, ``/usage``.

Exactly the routes of the legacy Jobs API page, behind ``Authorization: Bearer <token>``
(:class:`shakelab.server.auth.BearerAuth`, declared on the router). Uploads go through
:mod:`shakelab.server.uploads`, links through :mod:`shakelab.server.network`, jobs into the
store and the server's :class:`~shakelab.server.worker.Worker`. Every error is
``{error, message}`` (:class:`shakelab.server.web.APIProblem`).

Examples
--------
>>> from types import SimpleNamespace
>>> router = build_router(SimpleNamespace(token="t0k3n", store=None))   # a LocalServer in practice
>>> [r.path for r in router.routes]
['/upload', '/upload/link', '/job', '/job/{job_id}', '/usage']
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shakelab import catalog
from shakelab.server.auth import BearerAuth
from shakelab.server.network import check_url, public_addresses
from shakelab.server.uploads import clean_name, fetch_link, in_link_pool, receive_upload
from shakelab.server.web import APIProblem, read_json, storage_problem, typename

__all__ = ["IDEMPOTENCY_HEADER", "build_router", "validate_job"]

#: local-only: a POST /job sent again with the same key returns the job the first one created
IDEMPOTENCY_HEADER = "X-Shakelab-Idempotency-Key"


def build_router(ctx: Any) -> APIRouter:
    """Build the Jobs API's routes, bound to a server context ``ctx`` (a started LocalServer).

    ``ctx`` provides ``token``, ``store``, ``worker``, ``faults``, ``max_upload_bytes``,
    ``allow_private_links``, ``link_timeout``, ``count_upload()``, ``count_job()``,
    ``asset_payload(asset, base_url)`` and ``job_payload(job, base_url, variant=)``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> router = build_router(SimpleNamespace(token="t0k3n", store=None))
    >>> sorted({route.path for route in router.routes})
    ['/job', '/job/{job_id}', '/upload', '/upload/link', '/usage']
    """
    router = APIRouter(dependencies=[Depends(BearerAuth(ctx.token))])
    store = ctx.store

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # -- uploads ----------------------------------------------------------------------------
    @router.post("/upload")
    async def upload(request: Request) -> JSONResponse:
        return JSONResponse(await receive_upload(ctx, request, base(request)))

    @router.post("/upload/link")
    async def upload_link(request: Request) -> JSONResponse:
        body = await read_json(request)
        link, name = body.get("link"), body.get("name")
        if link is None:
            raise APIProblem(400, "missing_field", "`link` is required: the http(s) URL of the audio file")
        if not isinstance(link, str):
            raise APIProblem(400, "invalid_field", f"`link` must be a string URL, not {typename(link)} {link!r}")
        if name is not None and not isinstance(name, str):
            raise APIProblem(400, "invalid_field", f"`name` must be a string, not {typename(name)} {name!r}")
        try:
            check_url(link, field="link")
        except ValueError as exc:
            raise APIProblem(400, "invalid_link", str(exc)) from None
        fallback = clean_name(urlsplit(link).path.rsplit("/", 1)[-1], "download")
        display = clean_name(name, fallback) if name is not None else fallback
        return JSONResponse(await in_link_pool(fetch_link, ctx, base(request), link, display))

    # -- jobs -------------------------------------------------------------------------------
    @router.post("/job")
    async def create_job(request: Request) -> JSONResponse:
        body = await read_json(request)
        metadata, callback = validate_job(body)
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

    @router.get("/job/{job_id}")
    async def get_job(job_id: str, request: Request) -> JSONResponse:
        job = store.get_job(job_id) if len(job_id) <= 100 else None
        hide = ctx.faults.not_found_for
        if job is None or (hide and time.time() - job["created_at"] < hide):
            raise APIProblem(404, "job_not_found", f"no job with id {job_id[:100]!r} on this server")
        return JSONResponse({"job": ctx.job_payload(job, base(request), variant=ctx.faults.variant)})

    # -- usage ------------------------------------------------------------------------------
    @router.api_route("/usage", methods=["GET", "POST"])
    async def usage() -> JSONResponse:
        return JSONResponse({"clientId": store.client_id, "usage": store.usage(3)})

    return router


def validate_job(body: dict) -> tuple[dict, str | None]:
    """Check a POST /job body; returns (metadata, callbackUrl) or raises APIProblem naming the field."""
    metadata = body.get("metadata")
    if metadata is None:
        raise APIProblem(400, "missing_field", "`metadata` is required: an object {name, format}, "
                         "e.g. {\"name\": \"vocals\", \"format\": \"wav\"}")
    if not isinstance(metadata, dict):
        raise APIProblem(400, "invalid_field", f"`metadata` must be an object {{name, format}}, "
                         f"not {typename(metadata)} {metadata!r}"[:500])
    models = catalog.LOCAL_MODELS
    name, fmt = metadata.get("name"), metadata.get("format")
    allowed_models = ", ".join(repr(m) for m in models)
    if name is None:
        raise APIProblem(400, "missing_field", f"`metadata.name` (the model) is required; one of {allowed_models}")
    if not isinstance(name, str):
        raise APIProblem(400, "invalid_field", f"`metadata.name` must be a string, one of {allowed_models}, "
                         f"not {typename(name)} {name!r}"[:500])
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
        shown = f"{typename(fmt)} {fmt!r}" if not isinstance(fmt, str) else repr(fmt[:100])
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
                         f"not {typename(asset_id)} {asset_id!r}"[:300])
    callback = body.get("callbackUrl")
    if callback is not None:
        if not isinstance(callback, str):
            raise APIProblem(400, "invalid_field", f"`callbackUrl` must be a string URL, not {typename(callback)}")
        try:
            check_url(callback, field="callbackUrl")
        except ValueError as exc:
            raise APIProblem(400, "invalid_field", str(exc)) from None
    return metadata, callback
