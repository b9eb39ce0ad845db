"""Signed downloads: ``GET|HEAD /files/{id}/{name}``, the links in every payload; no credentials.

The router declares no auth scheme: the link's signature (:class:`shakelab.server.links.LinkSigner`)
is the credential, like the service's presigned URLs. Shared by every API of the server (each
payload's ``link`` points here).

Examples
--------
>>> from types import SimpleNamespace
>>> router = build_router(SimpleNamespace(token="t0k3n", store=None))   # a LocalServer in practice
>>> [r.path for r in router.routes]
['/files/{asset_id}/{name:path}']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from shakelab.server.web import APIProblem

__all__ = ["build_router"]


def build_router(ctx: Any) -> APIRouter:
    """Build the signed-download route on ``ctx.signer`` and ``ctx.store``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> router = build_router(SimpleNamespace(token="t0k3n", store=None))
    >>> sorted({route.path for route in router.routes})
    ['/files/{asset_id}/{name:path}']
    """
    router = APIRouter()

    @router.api_route("/files/{asset_id}/{name:path}", methods=["GET", "HEAD"])
    async def download(asset_id: str, name: str, request: Request) -> FileResponse:
        q = request.query_params
        verdict = ctx.signer.check(asset_id, q.get("expires"), q.get("signature"))
        if verdict == "expired":
            raise APIProblem(403, "link_expired", "this download link has expired; GET /job/{id} again "
                             "(or keep the upload response) for a fresh link")
        if verdict != "ok":
            raise APIProblem(403, "invalid_signature", "this download link is not valid (bad or missing signature)")
        asset = ctx.store.get_asset(asset_id)
        if asset is None or not Path(asset["path"]).is_file():
            raise APIProblem(404, "file_not_found", f"asset {asset_id!r} has no stored file any more")
        return FileResponse(asset["path"], media_type=asset["file_type"], filename=asset["name"])

    return router
