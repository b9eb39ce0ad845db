r"""Signed, expiring download links, like the service's presigned URLs.

A link is ``{base}/files/{asset_id}/{name}?expires={unix seconds, up to 3 decimals}&signature={hex}``
where the signature is HMAC-SHA256 over ``"{asset_id}\n{expires}"`` with a per-data-dir secret. Links need no
Authorization header; a bad signature answers 403, an expired one 403 as well.

Examples
--------
>>> signer = LinkSigner("secret", ttl=60)
>>> url = signer.make("http://127.0.0.1:8077", "cabc", "song.wav", now=1000.0)
>>> url.split("?")[0]
'http://127.0.0.1:8077/files/cabc/song.wav'
>>> signer.check("cabc", "1060", url.rsplit("=", 1)[1], now=1001.0)
'ok'
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import quote

from shakelab.errors import ValidationError


class LinkSigner:
    """Makes and checks download links.

    Parameters
    ----------
    secret : str
        The signing key (kept in the data dir, so links survive a restart).
    ttl : float
        Seconds a link stays valid after it is made.
    """

    def __init__(self, secret: str, *, ttl: float = 3600.0):
        if not (isinstance(ttl, (int, float)) and ttl > 0):
            raise ValidationError(f"`link_ttl` must be a positive number of seconds, not {ttl!r}")
        self._key = secret.encode()
        self.ttl = float(ttl)

    def _sign(self, asset_id: str, expires: str) -> str:
        return hmac.new(self._key, f"{asset_id}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def make(self, base_url: str, asset_id: str, name: str, *, now: float | None = None) -> str:
        """Make a fresh link to ``asset_id`` valid for exactly ``ttl`` seconds from ``now`` (millisecond precision)."""
        stamp = (time.time() if now is None else now) + self.ttl
        expires = f"{stamp:.3f}".rstrip("0").rstrip(".")
        safe = quote(name.replace("/", "_") or "file", safe="")
        return (f"{base_url.rstrip('/')}/files/{asset_id}/{safe}"
                f"?expires={expires}&signature={self._sign(asset_id, expires)}")

    def check(self, asset_id: str, expires: str | None, signature: str | None, *,
              now: float | None = None) -> str:
        """``'ok'``, ``'invalid'`` (missing or forged) or ``'expired'``; constant-time comparison."""
        if not expires or not signature or not _EXPIRES.fullmatch(expires):
            return "invalid"
        good = self._sign(asset_id, expires)
        if not hmac.compare_digest(good.encode(), signature.encode("utf-8", "replace")):
            return "invalid"
        if float(expires) < (time.time() if now is None else now):
            return "expired"
        return "ok"


_EXPIRES = re.compile(r"[0-9]{1,12}(\.[0-9]{1,3})?")
