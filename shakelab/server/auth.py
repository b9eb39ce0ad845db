"""How each API of the local server authenticates: one object per scheme, declared by its router.

A router declares its scheme by carrying it as a dependency,
``APIRouter(dependencies=[Depends(BearerAuth(ctx.token))])`` (the Jobs API) or
``Depends(ApiKeyAuth(ctx.token))`` (the Tasks API: header ``x-api-key``). The outermost ASGI
gate of :mod:`shakelab.server.app` finds that object on the router a request is routed to
and checks it before anything else runs (before fault injection, before a body is read); the
dependency itself checks again only when the app runs without the gate. A router without one
(the signed-link downloads) needs no credentials. Tokens are compared in constant time and
never appear in an answer.

Examples
--------
>>> bearer = BearerAuth("t0k3n")
>>> bearer.verify([(b"authorization", b"Bearer t0k3n")]) is None
True
>>> bearer.verify([]).status
401
>>> ApiKeyAuth("t0k3n").verify([(b"x-api-key", b"nope")]).message
'Unauthorized: Missing or incorrect API key (an invalid key in the `x-api-key` header)'
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi import Request

from shakelab.server.web import APIProblem

__all__ = ["ApiKeyAuth", "Auth", "BearerAuth", "auth_of"]

#: request scope key the gate sets once a request's credentials were checked
CHECKED = "shakelab.auth_checked"


class Auth:
    """A scheme: :meth:`verify` a request's raw ASGI headers; also usable as a FastAPI dependency."""

    header = b""  #: the (lower-case) request header carrying the credential

    def __init__(self, token: str):
        self._token = token.encode()

    def __repr__(self) -> str:  # never shows the token
        return f"{type(self).__name__}()"

    def verify(self, headers: Iterable[tuple[bytes, bytes]]) -> APIProblem | None:
        """Return None when ``headers`` carry the credential, else the 401 :class:`APIProblem` to answer."""
        given = next((v for k, v in headers if k == self.header), None)
        return None if given is not None and self._accepts(given) else self._refusal(given)

    def _accepts(self, given: bytes) -> bool:
        return hmac.compare_digest(given.strip(), self._token)

    def _refusal(self, given: bytes | None) -> APIProblem:
        raise NotImplementedError

    async def __call__(self, request: Request) -> None:
        """Check ``request`` as a FastAPI dependency (unless the gate did already)."""
        if request.scope.get(CHECKED):
            return
        refusal = self.verify(request.scope["headers"])
        if refusal is not None:
            raise refusal


class BearerAuth(Auth):
    """``Authorization: Bearer <token>`` (the legacy Jobs API); the scheme word is case-insensitive.

    Examples
    --------
    >>> BearerAuth("x").verify([(b"authorization", b"bearer x")]) is None
    True
    """

    header = b"authorization"

    def _accepts(self, given: bytes) -> bool:
        scheme, _, value = given.partition(b" ")
        # constant-time on the token; the scheme is case-insensitive (RFC 7235)
        return hmac.compare_digest(value.strip(), self._token) and scheme.lower() == b"bearer"

    def _refusal(self, given: bytes | None) -> APIProblem:
        msg = ("missing `Authorization` header: send `Authorization: Bearer <token>`" if not given
               else "invalid token in the `Authorization: Bearer <token>` header")
        return APIProblem(401, "unauthorized", msg, {"WWW-Authenticate": "Bearer"})


class ApiKeyAuth(Auth):
    """``x-api-key: <key>`` (the Tasks API); the message starts with the service's observed text.

    Examples
    --------
    >>> ApiKeyAuth("k").verify([(b"x-api-key", b"k")]) is None
    True
    >>> ApiKeyAuth("k").verify([]).message
    'Unauthorized: Missing or incorrect API key (no `x-api-key` header: send `x-api-key: <key>`)'
    """

    header = b"x-api-key"

    def _refusal(self, given: bytes | None) -> APIProblem:
        msg = "Unauthorized: Missing or incorrect API key " + (
            "(no `x-api-key` header: send `x-api-key: <key>`)" if not given
            else "(an invalid key in the `x-api-key` header)")
        return APIProblem(401, "unauthorized", msg)


def auth_of(router: object) -> Auth | None:
    """Return the :class:`Auth` a router declares among its dependencies; None for a public router.

    Examples
    --------
    >>> from fastapi import APIRouter, Depends
    >>> auth_of(APIRouter(dependencies=[Depends(BearerAuth("t"))]))
    BearerAuth()
    >>> auth_of(APIRouter()) is None
    True
    """
    for dep in getattr(router, "dependencies", None) or ():
        if isinstance(getattr(dep, "dependency", None), Auth):
            return dep.dependency
    return None
