"""Test hooks: ``GET /_stats`` and ``POST /_faults``, mounted only when asked for.

``LocalServer(test_hooks=True)`` or ``shakelab serve --test-hooks`` mounts them (the test suite
does); on any other server they answer 404. They take the Jobs API's bearer token, and fault
injection never applies to them (a test can always clear what it armed).

Examples
--------
>>> from types import SimpleNamespace
>>> router = build_router(SimpleNamespace(token="t0k3n", store=None))   # a LocalServer in practice
>>> [r.path for r in router.routes]
['/_stats', '/_faults']
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from shakelab.server.auth import BearerAuth
from shakelab.server.web import APIProblem, read_json

__all__ = ["build_router"]


def build_router(ctx: Any) -> APIRouter:
    """Build the hooks on ``ctx.stats()`` and ``ctx.faults``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> router = build_router(SimpleNamespace(token="t0k3n", store=None))
    >>> sorted({route.path for route in router.routes})
    ['/_faults', '/_stats']
    """
    router = APIRouter(dependencies=[Depends(BearerAuth(ctx.token))])

    @router.get("/_stats")
    async def stats() -> JSONResponse:
        return JSONResponse(ctx.stats())

    @router.post("/_faults")
    async def faults(request: Request) -> JSONResponse:
        body = await read_json(request)
        try:
            ctx.faults.apply(body)
        except (ValueError, TypeError) as exc:
            raise APIProblem(400, "invalid_request", str(exc)) from None
        return JSONResponse({"ok": True, "pending": len(ctx.faults.pending()), "variant": ctx.faults.variant,
                             "not_found_for": ctx.faults.not_found_for,
                             "processing_delay": ctx.faults.processing_delay})

    return router
