"""Network safety of the local server: every URL it fetches or posts to is vetted here.

The server reaches out in two places: ``POST /upload/link`` downloads a client's ``link`` (and the
Tasks API's ``url`` source the same way, through :func:`download`), and job callbacks POST to a
``callbackUrl``. Both go through one shape check (:func:`check_url`), one address check
(:func:`public_addresses`: the host must resolve only to public addresses unless the server
allows private links) and connections pinned to the vetted addresses (:class:`PinnedHTTP`,
:class:`PinnedHTTPS`, via :func:`open_vetted`), so a second DNS answer cannot swap in a
private one. Redirects are never followed blindly: :func:`download` vets every hop again.

Examples
--------
>>> check_url("https://example.com/a.wav")
('example.com', 443)
>>> public_addresses("http://127.0.0.1/x.wav", allow_private=False)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
shakelab.errors.ValidationError: `link` host '127.0.0.1' resolves to a private, loopback or link-local address ...
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from shakelab.server.web import APIProblem, storage_problem, too_large

from shakelab.errors import ValidationError

__all__ = ["MAX_REDIRECTS", "MAX_URL_CHARS", "Downloaded", "PinnedHTTP", "PinnedHTTPS", "check_public_url",
           "check_url", "download", "open_vetted", "public_addresses"]

MAX_URL_CHARS = 8192
_URL_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


def check_url(url: object, *, field: str = "link") -> tuple[str, int]:
    """Check the shape of a URL the server touches (the one such check); returns ``(host, port)``.

    http or https, a host, a valid port and IPv6 literal, no credentials, no whitespace or
    control characters, at most :data:`MAX_URL_CHARS`. Raises ``ValidationError`` (a ``ValueError``) naming ``field``.

    Examples
    --------
    >>> check_url("https://example.com/a.wav")
    ('example.com', 443)
    >>> check_url("http://[::1", field="callbackUrl")
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: `callbackUrl` is not a valid URL ('http://[::1'): Invalid IPv6 URL
    """
    if not isinstance(url, str):
        raise ValidationError(f"`{field}` must be a string URL, not {type(url).__name__}")
    shown = url[:200]
    if len(url) > MAX_URL_CHARS:
        raise ValidationError(f"`{field}` must be at most {MAX_URL_CHARS} characters, not {len(url)}")
    if _URL_BAD_CHARS.search(url):
        raise ValidationError(f"`{field}` must not contain spaces or control characters: {shown!r}")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # malformed IPv6 literal, port out of range or not a number
        what = "has an invalid port" if "port" in str(exc).lower() else "is not a valid URL"
        raise ValidationError(f"`{field}` {what} ({shown!r}): {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError(f"`{field}` must be an http or https URL, not {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(f"`{field}` must not carry credentials (user:password@): "
                         f"{parts.scheme}://...@{host}")
    if "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValidationError(f"`{field}` has an invalid IPv6 address: {shown!r}") from None
    try:
        host.encode("idna")
    except UnicodeError:
        raise ValidationError(f"`{field}` has an invalid host name: {shown!r}") from None
    return host, port or (443 if parts.scheme == "https" else 80)


def check_public_url(url: str, *, allow_private: bool, field: str = "link") -> tuple[str, int]:
    """Like :func:`public_addresses`, returning only ``(host, port)``."""
    host, port, _ = public_addresses(url, allow_private=allow_private, field=field)
    return host, port


def public_addresses(url: str, *, allow_private: bool, field: str = "link") -> tuple[str, int, list[str] | None]:
    """Check that ``url`` is http(s) and that its host resolves only to public addresses.

    Returns ``(host, port, addresses)``: the vetted IP addresses to connect to (so a second DNS
    answer cannot swap in a private one), or None with ``allow_private``, where the address check
    is skipped (the scheme check is not). Raises ``ValidationError`` (a ``ValueError``) naming ``field`` otherwise.

    Examples
    --------
    >>> public_addresses("ftp://x/y", allow_private=True)
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: `link` must be an http or https URL, not 'ftp://x/y'
    """
    host, port = check_url(url, field=field)
    if allow_private:
        return host, port, None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationError(f"`{field}` host {host!r} does not resolve: {exc}") from None
    vetted: list[str] = []
    for info in infos:
        ip = str(info[4][0])
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip.split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified or not addr.is_global):
            raise ValidationError(f"`{field}` host {host!r} resolves to a private, loopback or link-local "
                             f"address ({addr}); the server refuses those unless started with "
                             "--allow-private-links")
        vetted.append(ip)
    return host, port, vetted


class PinnedHTTP(http.client.HTTPConnection):
    """Connects to a vetted address while sending the URL's host name (Host header)."""

    def __init__(self, host: str, port: int, address: str | None, **kw):
        super().__init__(host, port, **kw)
        self._address = address or host

    def connect(self):
        """Open the socket to the vetted address."""
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a vetted address, with SNI and certificate checks against the URL's host name."""

    def __init__(self, host: str, port: int, address: str | None, **kw):
        super().__init__(host, port, context=ssl.create_default_context(), **kw)
        self._address = address or host

    def connect(self):
        """Open the socket to the vetted address and wrap it in TLS for the URL's host."""
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def open_vetted(url: str, *, allow_private: bool, timeout: float, field: str = "link", method: str = "GET",
                body: bytes | None = None, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """Send one request to ``url`` from an address vetted by :func:`public_addresses` (no redirects followed).

    Tries each vetted address in turn. Raises ``ValidationError`` (a ``ValueError``, naming ``field``) for a
    refused URL, ``OSError`` / ``http.client.HTTPException`` when no address answers.

    Examples
    --------
    >>> resp = open_vetted("https://example.com/a.wav", allow_private=False, timeout=10)  # doctest: +SKIP
    >>> resp.status                                                                        # doctest: +SKIP
    200
    """
    host, port, addresses = public_addresses(url, allow_private=allow_private, field=field)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cls = PinnedHTTPS if parts.scheme == "https" else PinnedHTTP
    sent = {"User-Agent": "shakelab-server", "Accept": "*/*", **(headers or {})}
    last: Exception | None = None
    candidates: list[str | None] = list(addresses) if addresses else [None]
    for address in candidates:
        conn = cls(host, port, address, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers=sent)
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            last = exc
    assert last is not None
    raise last


#: Redirects :func:`download` follows (each hop vetted again).
MAX_REDIRECTS = 5


class Downloaded:
    """What :func:`download` wrote: ``size`` bytes, the first 64 (``head``), the final URL and type.

    Attributes
    ----------
    size : int
    head : bytes
    url : str
        The URL after redirects.
    content_type : str
    """

    def __init__(self, size: int, head: bytes, url: str, content_type: str):
        self.size, self.head, self.url, self.content_type = size, head, url, content_type

    def __repr__(self) -> str:
        return f"Downloaded(size={self.size}, url={self.url[:80]!r})"


def download(url: str, dest: str | os.PathLike, *, allow_private: bool, limit: int, timeout: float,
             field: str = "link") -> Downloaded:
    """Download ``url`` into the file ``dest``: vetted addresses, vetted redirects, size and time caps.

    Parameters
    ----------
    url : str
        http or https; its host (and every redirect's) must resolve to public addresses unless
        ``allow_private``.
    dest : path
        File to write (created; removed again when the download fails).
    allow_private : bool
        Let the URL reach private, loopback and link-local hosts.
    limit : int
        Largest accepted size in bytes (413 beyond it, also from ``Content-Length``).
    timeout : float
        Seconds the whole download may take (a trickling host meets it: 408).
    field : str
        The request field named in error messages (``"link"``; the Tasks API's ``"url"``).

    Returns
    -------
    Downloaded

    Raises
    ------
    shakelab.server.web.APIProblem
        400 ``invalid_link`` (refused URL) or ``link_failed`` (no answer, an HTTP error, too many
        or bad redirects, a broken transfer), 408 ``link_timeout``, 413 ``file_too_large``,
        507 ``insufficient_storage``; ``dest`` does not exist afterwards.

    Examples
    --------
    >>> download("https://example.com/a.wav", "/tmp/a.wav", allow_private=False,
    ...          limit=2**30, timeout=120)                  # doctest: +SKIP
    Downloaded(size=441044, url='https://example.com/a.wav')
    """
    deadline = time.monotonic() + timeout
    resp, url = _follow(url, allow_private, deadline, field)
    dest = Path(dest)
    size, head = 0, b""
    try:
        try:
            fh = open(dest, "wb")  # noqa: SIM115 - closed by the with below, after the response
        except OSError as exc:
            resp.close()
            raise storage_problem(exc, f"the download of `{field}`") from None
        with resp, fh:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise too_large(limit, int(length))
            while True:
                if time.monotonic() > deadline:
                    raise APIProblem(408, "link_timeout", f"`{field}` took longer than {timeout:g} s to download")
                chunk = resp.read1(256 * 1024)  # what has arrived: a trickling host meets the deadline
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                if len(head) < 64:
                    head += chunk[:64]
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise storage_problem(exc, f"the download of `{field}`") from None
            if length and length.isdigit() and size != int(length):
                raise http.client.IncompleteRead(b"", int(length) - size)
    except APIProblem:
        _remove(dest)
        raise
    except (OSError, ValueError, http.client.HTTPException) as exc:
        _remove(dest)
        raise APIProblem(400, "link_failed", f"`{field}` download broke off: {exc}") from None
    return Downloaded(size, head, url, resp.headers.get("Content-Type", ""))


def _follow(url: str, allow_private: bool, deadline: float, field: str) -> tuple[Any, str]:
    """GET ``url``, following at most :data:`MAX_REDIRECTS` vetted redirects: ``(answer, its URL)``."""
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            resp = open_vetted(url, allow_private=allow_private, field=field,
                               timeout=min(10.0, max(1.0, deadline - time.monotonic())))
        except ValueError as exc:
            raise APIProblem(400, "invalid_link", str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise APIProblem(400, "link_failed", f"`{field}` could not be fetched: {exc}") from None
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.getheader("Location")
            resp.close()
            if not location:
                raise APIProblem(400, "link_failed", f"`{field}` answered HTTP {resp.status} (a redirect) "
                                 "without a Location header")
            try:
                url = urljoin(url, location.strip())
                check_url(url, field=field)
            except ValueError as exc:
                raise APIProblem(400, "link_failed", f"`{field}` redirected to a bad URL: {exc}") from None
            continue
        if resp.status >= 400:
            resp.close()
            raise APIProblem(400, "link_failed", f"`{field}` answered HTTP {resp.status} {resp.reason}")
        return resp, url
    raise APIProblem(400, "link_failed", f"`{field}` redirected more than {MAX_REDIRECTS} times")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
