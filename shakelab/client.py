"""The client of the AudioShake legacy Jobs API (and of shakelab's local server, which speaks the same API).

One :class:`Client` holds one :class:`~shakelab.transport.Transport` (``client.transport``: the
``requests.Session``, the token, the retry rule); every API call goes through
``Transport.request``, which applies the retry rule below (the rule is the transport's; how
this client uses it is written here). Waiting is :class:`~shakelab.transport.Poller`
(:meth:`Client.poller`). One public method per endpoint of the
page (``upload``, ``upload_link``, ``create_job``, ``get_job``, ``usage``) plus what a notebook
needs (``wait``, ``submit``, ``download``, ``music_detection``, ``segments``, ``jobs_frame``).

Retry rule
----------
- **Idempotent requests** (every ``GET``, ``/usage``) and **uploads** (``POST /upload``,
  ``POST /upload/link``) are retried, up to ``max_retries`` times, on:

  * connection errors and timeouts (refused, reset, dropped, read timeout);
  * ``429 Too Many Requests``: after the ``Retry-After`` the service gives (seconds or an
    HTTP-date); with none, after an exponential backoff. A ``Retry-After`` longer than
    ``max_retry_after`` (or a 429 still answered after the last retry) raises
    :class:`~shakelab.errors.RateLimitError` carrying ``retry_after``;
  * ``502``, ``503``, ``504``: exponential backoff (``backoff * 2**attempt``, capped at
    ``max_backoff``) with full jitter (a uniform random fraction 0.5-1 of it);
  * a 2xx answer whose body is not the JSON expected (a garbled proxy answer).

  An upload re-opens/rewinds its file before every attempt; a file object that cannot seek
  is sent once only.
- **``POST /job`` is never sent twice once it may have reached the service**, so no job is
  billed twice: it is retried only when the connection failed *before* the request was sent
  (connection refused, DNS failure, connect timeout), or when the service answered ``429``:
  a rate-limited request was refused, not processed (RFC 6585), so it is sent again after the
  ``Retry-After`` like any other. A read timeout, a reset, a dropped connection or a 5xx after
  sending raises at once (``TransportError`` / ``ServerError``); the job may exist: look at
  ``client.jobs_frame()`` or the ledger before resubmitting.
- Other 4xx answers are never retried: 401/403 raise ``AuthenticationError``, 404
  ``NotFoundError``, the rest ``APIError`` with the service's message.

The token lives in a :class:`~shakelab.transport.Secret` whose ``repr`` is ``<hidden>``; it is
added to each API request by an auth hook (:class:`~shakelab.transport.BearerAuth`), never
stored in headers, messages or log records, and never sent to download links (those are signed
URLs on other hosts).

Examples
--------
>>> import shakelab
>>> client = shakelab.connect()
>>> segments = client.music_detection("data/demo.flac", progress=False)
>>> segments[["start_time", "end_time"]].round(1).values.tolist()
[[10.0, 44.0]]
>>> jobs = client.submit("song.wav", ["vocals", "drums"], progress=False)
>>> client.download(jobs[0], "out/", progress=False)
[PosixPath('out/song/vocals.wav')]
"""

from __future__ import annotations

import hashlib
import io
import json as _json
import logging
import os
import re
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any, Self
from urllib.parse import quote, urljoin, urlsplit

import requests

from shakelab import catalog
from shakelab.errors import (
    APIError, AuthenticationError, JobFailedError, MalformedResponseError, NotFoundError, NotPicklableError,
    ShakelabError, TransportError, UnconfirmedJobError, ValidationError, scrubbed_logger,
)
from shakelab.models import FAILED_STATUSES, Asset, Job, OutputAsset
from shakelab.transport import (  # noqa: F401  (parse_retry_after: re-exported, its old home)
    BEFORE_SEND, IDEMPOTENT, NEVER, BearerAuth, Poller, Schedule, Secret, Transport, describe, is_loopback,
    parse_retry_after,
)

__all__ = ["DEFAULT_BASE_URL", "LOCAL_ONLY_METADATA", "Client", "connect", "is_service_url", "output_folder"]

log = scrubbed_logger("shakelab.client")

DEFAULT_BASE_URL = "https://groovy.audioshake.ai"
TOKEN_ENV = "AUDIOSHAKE_API_TOKEN"
BASE_URL_ENV = "AUDIOSHAKE_BASE_URL"
#: Local-only (shakelab's server): the id of a POST /job attempt, so that sending it again cannot
#: create a second job. The AudioShake Jobs API has no such header; it is sent to loopback hosts only.
IDEMPOTENCY_HEADER = "X-Shakelab-Idempotency-Key"
_CHUNK = 1024 * 1024
#: metadata keys only shakelab's local server knows (the service must never receive them)
LOCAL_ONLY_METADATA = ("window", "all_windows")


def is_service_url(url: str) -> bool:
    """Whether ``url`` is AudioShake's own service (a host under ``audioshake.ai``).

    Examples
    --------
    >>> is_service_url("https://groovy.audioshake.ai"), is_service_url("http://127.0.0.1:8077")
    (True, False)
    """
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host == "audioshake.ai" or host.endswith(".audioshake.ai")


# --------------------------------------------------------------------------- output names
def output_folder(source: str | os.PathLike, *, root: str | os.PathLike | None = None,
                  taken: dict | None = None, key: Any = None) -> Path:
    """Return the folder, relative to a download destination, for the outputs of one recording.

    The one naming rule of shakelab (``Client.download``, the ``JobSubmitter`` widget and
    ``batch.run`` all use it): the recording's path without its extension, relative to
    ``root`` (or, without one, as given: relative to the current directory when it lies
    under it, ``..`` steps and the drive dropped), so ``a/take1.wav`` and ``b/take1.wav`` go
    to ``a/take1/`` and ``b/take1/`` and the service's output names (``vocals.wav``) never
    meet. With ``taken`` (a dict kept by the caller, folder -> key), a folder already given
    to another recording (another ``key``) gets ``-2``, ``-3``, ... (``take1.wav`` beside
    ``take1.flac``).

    Parameters
    ----------
    source : str or PathLike
        The recording (a path, or just a file name for an upload).
    root : str or PathLike, optional
        A folder the recording lies under (a batch's folder).
    taken : dict, optional
        Folders handed out so far (updated in place).
    key : hashable, optional
        What makes two recordings the same (default: the resolved path).

    Returns
    -------
    pathlib.Path
        A relative path, never empty, never leaving the destination.

    Examples
    --------
    >>> output_folder("a/take1.wav").as_posix(), output_folder("b/take1.wav").as_posix()
    ('a/take1', 'b/take1')
    >>> output_folder("/data/set/a/take1.wav", root="/data/set").as_posix()
    'a/take1'
    >>> taken = {}
    >>> [output_folder(f, taken=taken).as_posix() for f in ("x/take1.wav", "x/take1.flac", "x/take1.wav")]
    ['x/take1', 'x/take1-2', 'x/take1']
    """
    p = Path(os.fspath(source)).expanduser()
    rel = None
    if root is not None:
        try:
            rel = p.absolute().relative_to(Path(root).expanduser().absolute())
        except ValueError:
            rel = None
    if rel is None and p.is_absolute():
        try:
            rel = p.relative_to(Path.cwd())
        except ValueError:
            rel = Path(*p.parts[1:])
    parts = [part for part in (rel if rel is not None else p).parts if part not in ("", ".", "..")]
    folder = Path(*parts).with_suffix("") if parts else Path("recording")
    if not folder.name:
        folder = folder / "recording"
    if taken is None:
        return folder
    key = key if key is not None else os.path.abspath(p)
    candidate, n = folder, 1
    while taken.setdefault(candidate.as_posix(), key) != key:
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate


def _refused(exc: BaseException) -> bool:
    """Tell whether a failed POST /job certainly created nothing (never sent, or refused with a 4xx)."""
    if isinstance(exc, TransportError):
        return not getattr(exc, "maybe_sent", True)
    if isinstance(exc, APIError):
        return 400 <= exc.status < 500
    return isinstance(exc, ValidationError)


def _is_json(value: Any) -> bool:
    """Tell whether ``value`` is plain JSON with finite numbers."""
    try:
        _json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _looks_like_asset_id(source: Any) -> bool:
    """Return a string that names no file and looks like an id (no suffix, no separator) is an asset id."""
    return (isinstance(source, str) and re.fullmatch(r"[A-Za-z0-9_-]{6,64}", source) is not None
            and not os.path.exists(source))


# --------------------------------------------------------------------------- sources
class _Source:
    """A validated upload source: a file path or a binary file object."""

    def __init__(self, source: Any, name: str | None):
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValidationError(f"`name` must be a non-empty string or None, not {name!r:.100}")
        self.path: Path | None = None
        self.fileobj: Any = None
        if isinstance(source, (str, os.PathLike)) and not isinstance(source, bytes):
            path = Path(os.fspath(source)).expanduser()
            try:
                path.stat()
            except ValueError:  # an embedded NUL byte: no file system has such a name
                raise ValidationError(f"`source` is not a valid file name: {os.fspath(source)!r:.200}") from None
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:  # name too long, permission denied, a loop of links
                raise ValidationError(f"`source` cannot be read ({exc.strerror}): {os.fspath(source)!r:.200}") from None
            if not path.exists():
                raise ValidationError(f"`source` file does not exist: {os.fspath(source)!r}")
            if path.is_dir():
                raise ValidationError(f"`source` must be a file, not a directory: {os.fspath(source)!r}")
            size = path.stat().st_size
            if size == 0:
                raise ValidationError(f"`source` file is empty (0 bytes): {os.fspath(source)!r}")
            self.path, self.start = path, 0
            self.size: int | None = size
            self.name = name or path.name
        elif hasattr(source, "read") and callable(source.read):
            if isinstance(source, io.TextIOBase) or "b" not in getattr(source, "mode", "b"):
                raise ValidationError("`source` file object must be opened in binary mode ('rb'), "
                                      f"not text mode: {source!r}")
            self.fileobj = source
            self.seekable = bool(getattr(source, "seekable", lambda: False)())
            self.start = source.tell() if self.seekable else 0
            if self.seekable:
                end = source.seek(0, io.SEEK_END)
                source.seek(self.start)
                self.size = end - self.start
                if self.size <= 0:
                    raise ValidationError(f"`source` file object is empty (0 bytes left to read): {source!r}")
            else:
                self.size = None
            raw_name = getattr(source, "name", None)
            self.name = name or (Path(raw_name).name if isinstance(raw_name, str) and raw_name else "upload")
        else:
            raise ValidationError("`source` must be a path (str or pathlib.Path) or a binary file object "
                                  f"(open(..., 'rb'), io.BytesIO), not {type(source).__name__} {source!r:.80}")
        if not isinstance(self.name, str) or not self.name:
            raise ValidationError(f"`name` must be a non-empty string, not {name!r}")

    @property
    def rewindable(self) -> bool:
        return self.path is not None or self.seekable

    def open(self):
        """Return a binary stream at the start of the content (a new handle for paths)."""
        if self.path is not None:
            return open(self.path, "rb")
        if self.seekable:
            self.fileobj.seek(self.start)
        return _NoClose(self.fileobj, self.size)

    def sha256(self) -> str | None:
        if not self.rewindable:
            return None
        digest = hashlib.sha256()
        f = self.open()
        try:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        finally:
            f.close()
        return digest.hexdigest()

    @property
    def content_type(self) -> str:
        ext = Path(self.name).suffix.lower().lstrip(".")
        ext = {"aif": "aiff", "m4a": "mp4"}.get(ext, ext)
        return catalog.MIME_TYPES.get(ext, {"mp4": "audio/mp4", "aac": "audio/aac", "mov": "video/quicktime"}
                                      .get(ext, "application/octet-stream"))


class _NoClose:
    """Wraps a caller's file object so that we never close it; ``len`` is the bytes left to send."""

    def __init__(self, f, size: int | None):
        self._f = f
        self._left = size

    @property
    def len(self) -> int | None:  # requests_toolbelt reads this to know how much is left
        return self._left

    def read(self, n: int = -1) -> bytes:
        if self._left is not None:
            n = self._left if n is None or n < 0 else min(n, self._left)
        chunk = self._f.read(n)
        if self._left is not None:
            self._left -= len(chunk)
        return chunk

    def close(self) -> None:
        pass


class _ProgressReader:
    """A file-like view of a MultipartEncoder that ticks a progress bar as requests reads it."""

    def __init__(self, encoder, bar):
        self._encoder = encoder
        self._bar = bar
        self.len = encoder.len

    def __len__(self) -> int:
        return self.len

    def read(self, size: int = -1) -> bytes:
        # Larger reads than asked are fine for urllib3 and far cheaper than its 16 KiB blocks.
        chunk = self._encoder.read(max(size or 0, _CHUNK))
        if chunk:
            self._bar.update(len(chunk))
        return chunk


def _multipart_body(src: _Source, bar: Any) -> Callable[[], tuple[Any, dict]]:
    """Build the ``body=`` of an upload (field ``file``): rebuilt, from the start of the file, for each attempt.

    Streamed by ``requests_toolbelt.MultipartEncoder`` (flat memory whatever the size); a stream
    of unknown length (a pipe) goes as a chunked body. Both clients' uploads use it.
    """
    from requests_toolbelt import MultipartEncoder

    def make_body() -> tuple[Any, dict]:
        bar.reset(total=src.size)
        stream = src.open()
        if src.size is None:  # a pipe: size unknown, so a chunked multipart body of our own
            return _chunked_multipart(src, stream, bar)
        encoder = MultipartEncoder(fields={"file": (src.name, stream, src.content_type)})
        reader = _ProgressReader(encoder, bar)
        reader.close = stream.close  # type: ignore[attr-defined]
        return reader, {"Content-Type": encoder.content_type}

    return make_body


def _chunked_multipart(src: _Source, stream: Any, bar: Any) -> tuple[Any, dict]:
    """Return a multipart body for a stream of unknown length, sent with chunked transfer encoding."""
    import uuid

    boundary = uuid.uuid4().hex
    filename = src.name.replace('"', "%22").replace("\r", "").replace("\n", "")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {src.content_type}\r\n\r\n").encode()

    def chunks():
        yield head
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            bar.update(len(chunk))
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    return chunks(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _download_to(dest_dir: Path, name: str, fetch: Callable[[Callable[[requests.Response], Path]], Path], *,
                 transport: Any, progress: bool, logger: logging.Logger) -> Path:
    """Stream one output into ``dest_dir/name``: a temporary file renamed when complete, retried on drops.

    ``fetch(consume)`` GETs the output's link (renewing it when expired) and returns
    ``consume(response)``. A dropped or short download is retried under the transport's backoff
    (``max_retries`` times); no half-written file is ever left under ``name``. Both clients'
    downloads use it.
    """
    from tqdm.auto import tqdm

    target = dest_dir / name

    def consume(resp: requests.Response) -> Path:
        total = int(resp.headers.get("Content-Length") or 0) or None
        tmp = os.fspath(dest_dir / f".{name}.{secrets.token_hex(6)}.part")
        # 0o666 less the umask, like any file the user saves (not mkstemp's 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                                desc=f"download {name}", disable=not progress, leave=False) as bar:
                for chunk in resp.iter_content(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            if total is not None and os.path.getsize(tmp) != total:
                raise TransportError(f"download of {name} stopped after {os.path.getsize(tmp)} of {total} bytes")
            os.replace(tmp, target)
        except requests.RequestException as exc:
            os.unlink(tmp)
            raise TransportError(f"download of {name} failed: {describe(exc)}") from None
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return target

    attempt = 0
    while True:
        try:
            return fetch(consume)
        except TransportError as exc:
            if attempt >= transport.max_retries:
                raise
            delay = transport.backoff_delay(attempt)
            logger.warning("%s; retry %d/%d in %.2f s", exc, attempt + 1, transport.max_retries, delay)
            time.sleep(delay)
            attempt += 1


def note_done_elsewhere(ledger: Any, sha256: str, *, api: str, source: str, logger: logging.Logger,
                        shown: int = 3, told: int = 0) -> int:
    """Warn when the ledger shows this content was already processed through the *other* API.

    The two APIs never share uploads or results, so what runs now is billed again; both clients
    say so when such a file is uploaded (:meth:`shakelab.ledger.Ledger.done_elsewhere`): once per
    client and content, and again when the other API has run it more than the ``told`` times
    already said. The warning names the first ``shown`` runs and counts the others, so a file run
    many times stays one line; ``ledger.done_elsewhere`` lists them all. Returns the number of
    runs the ledger holds through the other API (``told`` when it did not warn).

    Examples
    --------
    >>> import logging, sys
    >>> from shakelab.ledger import file_sha256
    >>> log = logging.getLogger("doctest.done_elsewhere")
    >>> log.addHandler(logging.StreamHandler(sys.stdout))
    >>> jobs = [client.submit("song.wav", [m], progress=False) for m in ("music_detection", "bass")]  # in turn
    >>> note_done_elsewhere(ledger, file_sha256("song.wav"), api="tasks", source="song.wav", logger=log,
    ...                     shown=1)   # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    song.wav was already processed through the Jobs API (2 jobs: music_detection and 1 more; job ids
    ... and 1 more): the Tasks API cannot reuse them, so what runs on it now is billed again
    (ledger.done_elsewhere lists them all)
    2
    >>> note_done_elsewhere(ledger, file_sha256("song.wav"), api="tasks", source="song.wav", logger=log,
    ...                     told=2)   # nothing new since: silent
    2
    """
    try:
        done = ledger.done_elsewhere(sha256=sha256, api=api)
    except Exception as exc:  # the ledger is a convenience: never let it break an upload
        logger.warning("ledger.done_elsewhere failed: %s: %s", type(exc).__name__, exc)
        return told
    if len(done) <= told:
        return told
    other, this = ("Jobs", "Tasks") if api == "tasks" else ("Tasks", "Jobs")
    kind = "job" if other == "Jobs" else "task"

    def first(items: list[str]) -> str:
        return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")

    models = list(dict.fromkeys(m for d in done for m in map(str, d["models"])))
    ids = [str(d["id"]) for d in done]
    plural = "s" if len(done) > 1 else ""
    logger.warning("%s was already processed through the %s API (%d %s%s: %s; %s id%s %s): the %s API cannot "
                   "reuse them, so what runs on it now is billed again (ledger.done_elsewhere lists them all)",
                   source, other, len(done), kind, plural, first(models), kind, plural, first(ids), this)
    return len(done)


def check_client_options(*, base_url: Any, default_url: str, timeout: Any, max_retries: Any, max_retry_after: Any,
                         backoff: Any, max_backoff: Any, service: Any) -> None:
    """Refuse a malformed ``base_url``, timing option or ``service`` of a client (both clients' rule).

    Examples
    --------
    >>> check_client_options(base_url="ftp://x", default_url=DEFAULT_BASE_URL, timeout=1, max_retries=0,
    ...                      max_retry_after=1, backoff=1, max_backoff=1, service=None)
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: `base_url` must be an http(s) URL such as 'https://groovy.audioshake.ai', not 'ftp://x'
    """
    if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https") \
            or not urlsplit(base_url).netloc:
        raise ValidationError(f"`base_url` must be an http(s) URL such as {default_url!r}, not {base_url!r}")
    for pname, value in (("timeout", timeout), ("max_retry_after", max_retry_after),
                         ("backoff", backoff), ("max_backoff", max_backoff)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                or (pname == "timeout" and value == 0):
            raise ValidationError(f"`{pname}` must be a positive number of seconds, not {value!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValidationError(f"`max_retries` must be a whole number >= 0, not {max_retries!r}")
    if service is not None and (not isinstance(service, str) or not service.strip()):
        raise ValidationError(f"`service` must be a non-empty string, not {service!r}")


# --------------------------------------------------------------------------- client
class _Policy:
    """A Client attribute that lives on its transport (``client.max_retries = 1`` sets the transport's)."""

    def __init__(self, name: str, doc: str):
        self.name = name
        self.__doc__ = doc

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return self if obj is None else getattr(obj.transport, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.transport, self.name, value)


class _ServiceClient:
    """What both clients share: one transport, one ledger, the service key, the uploads they remember.

    :class:`Client` (Jobs API) and :class:`shakelab.TasksClient` (Tasks API) extend it; what differs
    between the two APIs is a class attribute (the credential's name and auth, the default URL,
    the upload endpoint) or a method of the subclass.
    """

    #: which API this client speaks (the ledger keeps the two apart)
    api = "jobs"
    _name = "Client"
    _credential = "token"                       # the constructor's parameter, hidden in the repr
    _auth: Any = BearerAuth                     # how the credential is sent
    _default_url = DEFAULT_BASE_URL
    _upload_path = "/upload"
    _unpicklable = "a Client cannot be pickled (it holds the API token); pass base_url and build a new one"
    _log: logging.Logger = log

    def __init__(self, credential: Any, *, base_url: str | None, timeout: float, max_retries: int,
                 max_retry_after: float, backoff: float, max_backoff: float, ledger: Any, service: str | None):
        if not isinstance(credential, str) or not credential.strip():
            raise ValidationError(f"`{self._credential}` must be a non-empty string, not {type(credential).__name__}")
        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or self._default_url
        check_client_options(base_url=base_url, default_url=self._default_url, timeout=timeout,
                             max_retries=max_retries, max_retry_after=max_retry_after, backoff=backoff,
                             max_backoff=max_backoff, service=service)
        #: the session, the credential (a :class:`~shakelab.transport.BearerAuth` or
        #: :class:`~shakelab.transport.ApiKeyAuth`) and the retry rule
        self.transport = Transport(base_url, self._auth(Secret(credential.strip())), timeout=timeout,
                                   max_retries=max_retries, max_retry_after=max_retry_after, backoff=backoff,
                                   max_backoff=max_backoff, logger=self._log)
        self.base_url = self.transport.base_url
        #: what the ledger knows this service by: a local server's id, else the base URL
        self.service = service.strip() if service is not None else self.base_url
        self.ledger = ledger
        self._assets: dict[str, Asset] = {}
        self._asset_paths: dict[str, str] = {}     # asset id -> resolved path
        self._asset_sources: dict[str, str] = {}   # the path as the caller gave it (for output_folder)
        self._asset_sha: dict[str, str] = {}       # asset id -> content SHA-256
        self._audio_s: dict[str, float] = {}       # asset id -> length of the recording, seconds
        self._folders: dict[str, Any] = {}         # output_folder's `taken`, per client
        self._told_elsewhere: dict[str, int] = {}  # content -> how many of its other-API runs were warned about
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{self._name}(base_url={self.base_url!r}, {self._credential}=<hidden>)"

    __str__ = __repr__

    def __getstate__(self):
        raise NotPicklableError(self._unpicklable)

    def close(self) -> None:
        """Close the HTTP session (connections are pooled until then)."""
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ transport
    session = _Policy("session", "the ``requests.Session`` of :attr:`transport`")
    timeout = _Policy("timeout", "seconds to connect and to read each answer")
    max_retries = _Policy("max_retries", "retries of one request under the retry rule")
    max_retry_after = _Policy("max_retry_after", "longest ``Retry-After`` honoured, seconds")
    backoff = _Policy("backoff", "first delay of the exponential backoff, seconds")
    max_backoff = _Policy("max_backoff", "cap of the exponential backoff, seconds")

    def _request(self, method: str, path: str, **options: Any) -> Any:
        """One API request under the retry rule (:meth:`shakelab.transport.Transport.request`)."""
        return self.transport.request(method, path, **options)

    # ------------------------------------------------------------------ bookkeeping
    def _ledger_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.ledger is None:
            return None
        try:
            return getattr(self.ledger, name)(*args, **kwargs)
        except Exception as exc:  # the ledger is a convenience: never let it break an API call
            self._log.warning("ledger.%s failed: %s: %s", name, type(exc).__name__, exc)
            return None

    def _parse_asset(self, payload: Any) -> Asset:
        return Asset.from_payload(payload)

    def _upload(self, source: Any, *, name: str | None, progress: bool) -> Asset:
        """Both APIs' upload: a ledger hit is reused, else a streamed multipart POST (the public ``upload``)."""
        from tqdm.auto import tqdm

        if not isinstance(progress, bool):
            raise ValidationError(f"`progress` must be True or False, not {progress!r}")
        src = _Source(source, name)
        sha256 = src.sha256() if self.ledger is not None else None
        if sha256 is not None:
            self._told_elsewhere[sha256] = note_done_elsewhere(  # said again only when there are more runs
                self.ledger, sha256, api=self.api, source=src.name, logger=self._log,
                told=self._told_elsewhere.get(sha256, 0))
            payload = self._ledger_call("lookup_asset", sha256=sha256, service=self.service, api=self.api)
            if payload:
                asset = Asset.from_payload(payload)
                self._log.info("upload of %s reused asset %s (same content, from the ledger)", src.name, asset.id)
                self._note_source(asset, src, sha256)
                return asset
        bar = tqdm(total=src.size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"upload {src.name}",
                   disable=not progress, leave=False)
        try:
            payload = self._request("POST", self._upload_path, body=_multipart_body(src, bar),
                                    retry=IDEMPOTENT if src.rewindable else NEVER)
        finally:
            bar.close()
        asset = self._parse_asset(payload)
        self._note_source(asset, src, sha256)
        if sha256 is not None:
            self._ledger_call("record_asset", sha256=sha256, size=int(src.size or 0),
                              path=str(src.path.resolve()) if src.path is not None else None,
                              service=self.service, payload=asset.raw, api=self.api)
        return asset

    @staticmethod
    def _check_dest(dest: Any, folder: Any) -> Path:
        """Refuse a ``download`` destination that is not a directory path, or a ``folder`` outside it."""
        if not isinstance(dest, (str, os.PathLike)):
            raise ValidationError(f"`dest` must be a directory path, not {type(dest).__name__} {dest!r:.80}")
        dest_dir = Path(dest).expanduser()
        if dest_dir.exists() and not dest_dir.is_dir():
            raise ValidationError(f"`dest` must be a directory, not a file: {os.fspath(dest)!r}")
        if folder is not None and (not isinstance(folder, (str, os.PathLike)) or Path(folder).is_absolute()
                                   or ".." in Path(folder).parts):
            raise ValidationError(f"`folder` must be a relative path inside `dest`, not {folder!r}")
        return dest_dir

    def _into(self, dest_dir: Path, folder: Any, run: Any) -> Path:
        """Create and return the folder of ``dest_dir`` for a run's outputs (``folder``, else its own)."""
        dest_dir = dest_dir / (Path(folder) if folder is not None else self._output_folder(run))
        dest_dir.mkdir(parents=True, exist_ok=True)
        return dest_dir

    def _output_folder(self, run: Any) -> Path:
        raise NotImplementedError

    def _note_source(self, asset: Asset, src: _Source, sha256: str | None) -> None:
        """Remember an asset and where it came from: its path (as given and resolved), content hash, length."""
        with self._lock:
            self._assets[asset.id] = asset
            if sha256 is not None:
                self._asset_sha[asset.id] = sha256
            if src.path is None:
                self._asset_sources[asset.id] = src.name
                return
            self._asset_paths[asset.id] = str(src.path.resolve())
            self._asset_sources[asset.id] = os.fspath(src.path)
        try:
            from shakelab import audio

            self._audio_s[asset.id] = audio.info(src.path).duration
        except Exception:  # not audio we can read here: the service will say so
            pass


class Client(_ServiceClient):
    """A client for the AudioShake legacy Jobs API (or shakelab's local server).

    Parameters
    ----------
    token : str, optional
        API token; default: the ``AUDIOSHAKE_API_TOKEN`` environment variable. Never shown in
        any repr, message or log record.
    base_url : str, optional
        Default: ``AUDIOSHAKE_BASE_URL``, else ``https://groovy.audioshake.ai``.
    timeout : float, default 30
        Seconds to wait for the service to connect and to answer each read (uploads and
        downloads stream, so this is not a limit on their total time).
    max_retries : int, default 4
        Retries of one request under the retry rule of this module's docstring.
    max_retry_after : float, default 60
        Longest ``Retry-After`` honoured; a longer one raises ``RateLimitError`` at once.
    backoff, max_backoff : float, default 0.5 and 8
        First delay and cap of the exponential backoff between retries (before jitter).
    ledger : shakelab.ledger.Ledger, optional
        With a ledger, uploads of an identical file (same SHA-256) and ``submit`` of a job
        already recorded (same asset, model, format, metadata; not failed) are reused, and
        every job payload and downloaded path is recorded.
    service : str, optional
        The key the ledger files this service's uploads and jobs under (:attr:`service`);
        default: ``base_url``. ``connect()`` passes a local server's id, so its records are found
        again whatever port it runs on.

    Raises
    ------
    ValidationError
        No token (names ``AUDIOSHAKE_API_TOKEN``) or a malformed ``base_url``/``timeout``.

    Notes
    -----
    Retries follow the rule in this module's docstring: idempotent requests and uploads are
    retried on connection errors, 429 (``Retry-After`` honoured up to ``max_retry_after``) and
    502/503/504 (exponential backoff with jitter); ``POST /job`` only when the connection failed
    before anything was sent, so a job is never created twice.

    Examples
    --------
    >>> client = Client(token="t0k3n", base_url="http://127.0.0.1:8077")
    >>> client
    Client(base_url='http://127.0.0.1:8077', token=<hidden>)
    """

    def __init__(self, token: str | None = None, *, base_url: str | None = None, timeout: float = 30.0,
                 max_retries: int = 4, max_retry_after: float = 60.0, backoff: float = 0.5,
                 max_backoff: float = 8.0, ledger: Any = None, service: str | None = None):
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        if token is None:
            raise ValidationError(f"no API token: pass `token=` or set the {TOKEN_ENV} environment variable "
                                  "(or use shakelab.connect(), which starts the local server without one)")
        super().__init__(token, base_url=base_url, timeout=timeout, max_retries=max_retries,
                         max_retry_after=max_retry_after, backoff=backoff, max_backoff=max_backoff, ledger=ledger,
                         service=service)
        #: send shakelab's local-only ``X-Shakelab-Idempotency-Key`` with POST /job (loopback servers)
        self.local_idempotency = is_loopback(self.base_url)
        self._jobs: dict[str, Job] = {}

    def _remember(self, job: Job) -> Job:
        with self._lock:
            previous = self._jobs.get(job.id)
            if previous is not None:
                job = job.with_source_name(previous.source_name)
            if job.source_name is None and job.asset_id in self._assets:
                job = job.with_source_name(self._assets[job.asset_id].name)
            self._jobs[job.id] = job  # a job already known keeps its place (first seen)
        self._ledger_call("record_job", job.raw, service=self.service,
                          source_path=self._asset_paths.get(job.asset_id or ""))
        return job

    def jobs_frame(self):
        """Return the jobs this client created or fetched, newest state of each, as a DataFrame.

        Returns
        -------
        pandas.DataFrame
            The columns of :func:`shakelab.frames.jobs_frame`, one row per job in the order the
            jobs were submitted (or first fetched); ``audio_s`` is known for the recordings this
            client uploaded.

        Examples
        --------
        >>> jobs = client.submit("song.wav", ["vocals", "drums"], progress=False)
        >>> client.jobs_frame()[["model", "status"]]
            model     status
        0  vocals  completed
        1   drums  completed
        """
        from shakelab.frames import jobs_frame

        with self._lock:
            jobs = list(self._jobs.values())
            audio_s = dict(self._audio_s)
        return jobs_frame(jobs, audio_s=audio_s)

    # ------------------------------------------------------------------ endpoints
    def upload(self, source: Any, *, name: str | None = None, progress: bool = True) -> Asset:
        """Upload a file (``POST /upload``, streamed multipart) and return its :class:`Asset`.

        Memory stays flat whatever the file size: the multipart body is streamed from disk
        by ``requests_toolbelt.MultipartEncoder``.

        Parameters
        ----------
        source : str, pathlib.Path or binary file object
            The audio file.
        name : str, optional
            File name announced to the service (default: the file's name).
        progress : bool, default True
            Show a ``tqdm.auto`` progress bar (notebook or terminal).

        Returns
        -------
        Asset

        Raises
        ------
        ValidationError
            Missing file, directory, empty file, text-mode file object, other types.

        Examples
        --------
        >>> asset = client.upload("data/demo.flac", progress=False)
        >>> asset.name, len(asset.id) > 0
        ('demo.flac', True)
        """
        return self._upload(source, name=name, progress=progress)

    def upload_link(self, url: str, *, name: str | None = None) -> Asset:
        """Have the service fetch a file from a URL (``POST /upload/link``).

        Parameters
        ----------
        url : str
            An ``http(s)://`` URL the service can reach.
        name : str, optional
            Asset name (default: the last path segment of the URL).

        Returns
        -------
        Asset

        Examples
        --------
        >>> client.upload_link("https://example.com/audio.mp3", name="song")  # doctest: +SKIP
        ... # skipped: the service fetches the URL, which needs the internet
        """
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValidationError(f"`url` must be an http(s):// URL, not {url!r}")
        if name is None:
            name = Path(urlsplit(url).path).name or urlsplit(url).netloc
        if not isinstance(name, str) or not name:
            raise ValidationError(f"`name` must be a non-empty string, not {name!r}")
        payload = self._request("POST", "/upload/link", json={"link": url, "name": name})
        asset = Asset.from_payload(payload)
        self._assets[asset.id] = asset
        return asset

    @staticmethod
    def _id_of(value: Any, kind: type[Asset] | type[Job], param: str) -> str:
        """Return the id of an ``Asset``/``Job`` or of an id string; else a ValidationError naming ``param``."""
        if isinstance(value, kind):
            return value.id
        if isinstance(value, str) and value.strip():
            return value.strip()
        article = "an" if param[0] in "aeiou" else "a"
        raise ValidationError(f"`{param}` must be {article} {kind.__name__} or {article} {param} id string, "
                              f"not {type(value).__name__} {value!r:.80}")

    def _asset_id(self, asset: Any) -> str:
        return self._id_of(asset, Asset, "asset")

    def _job_id(self, job: Any) -> str:
        return self._id_of(job, Job, "job")

    @staticmethod
    def _check_metadata(metadata: dict) -> dict:
        for key in ("name", "format"):
            if key in metadata:
                raise ValidationError(f"`{key}` is not an extra metadata key: it is set from "
                                      f"`{'model' if key == 'name' else 'format'}`")
        try:
            _json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            bad = next((k for k, v in metadata.items() if not _is_json(v)), None)
            if bad is not None and "Out of range float" in str(exc):
                raise ValidationError(f"`{bad}` (extra metadata) must hold finite numbers only, not "
                                      f"{metadata[bad]!r:.100}: JSON has no NaN or Infinity") from None
            shown = f"`{bad}` (extra metadata)" if bad is not None else "extra metadata"
            raise ValidationError(f"{shown} must be JSON values, not {metadata!r:.200}") from None
        return dict(metadata)

    def _check_local_only(self, metadata: dict) -> None:
        """Refuse the local server's extensions before anything is sent to the real service."""
        if not is_service_url(self.base_url):
            return
        for key in LOCAL_ONLY_METADATA:
            if key in metadata:
                raise ValidationError(f"`{key}` ({key}={metadata[key]!r}) is an extension of shakelab's local "
                                      f"server; the AudioShake service at {self.base_url} does not know it "
                                      "(it answers music segments on its 10-s grid): drop it")

    def create_job(self, asset: Asset | str, model: str, *, format: str | None = None,
                   callback_url: str | None = None, force: bool = False, **metadata: Any) -> Job:
        """Create one job: ``model`` run on ``asset`` (``POST /job``). Never sent twice.

        With a ledger, the attempt is recorded before it is sent. When its answer is lost (a
        dropped connection, a timeout, a 5xx or garbled answer after sending), the job may exist
        and be billed, and the Jobs API cannot tell: the same job is then refused with
        :class:`~shakelab.errors.UnconfirmedJobError` until ``force=True``. Against the local
        server (a loopback ``base_url``) the client sends the attempt's id in the local-only
        ``X-Shakelab-Idempotency-Key`` header instead, so sending it again returns the job the
        lost answer was about, or creates it once.

        Parameters
        ----------
        asset : Asset or str
            The uploaded asset or its id.
        model : str
            One of :data:`shakelab.catalog.SERVICE_MODELS` (``"vocals"``, ``"music_detection"``, ...).
        format : str, optional
            Output format; default: the model's natural one (``"wav"`` for stems, ``"json"`` for
            music_detection / transcription / alignment).
        callback_url : str, optional
            Webhook the service calls on status changes.
        force : bool, default False
            Send even though an earlier attempt's answer was lost (a second, billed job may result).
        **metadata
            Extra metadata passed through (``variant``, ``residual``, ``language``). The local
            server also reads ``window`` (seconds) and ``all_windows`` (every window with its
            score) for ``music_detection``; they are refused, before sending, when this client
            talks to the AudioShake service.

        Returns
        -------
        Job
            The job as created (status ``queued`` or ``created``).

        Raises
        ------
        ValidationError
            Unknown model, format not allowed for the model, bad asset or callback URL.
        UnconfirmedJobError
            With a ledger, an earlier attempt of this job lost its answer (names the file, the
            model, when, and ``force=True``).
        TransportError, RateLimitError, ServerError
            When the request may have reached the service; it is not resent (see the retry rule).

        Examples
        --------
        >>> asset = client.upload("song.wav", progress=False)
        >>> job = client.create_job(asset, "vocals", format="flac")
        >>> job.model, job.format, job.asset_id == asset.id
        ('vocals', 'flac', True)
        """
        asset_id = self._asset_id(asset)
        catalog.check_model(model)
        fmt = catalog.default_format(model) if format is None else catalog.check_format(model, format)
        if callback_url is not None and (not isinstance(callback_url, str)
                                         or urlsplit(callback_url).scheme not in ("http", "https")):
            raise ValidationError(f"`callback_url` must be an http(s):// URL or None, not {callback_url!r}")
        if not isinstance(force, bool):
            raise ValidationError(f"`force` must be True or False, not {force!r}")
        extra = self._check_metadata(metadata)
        self._check_local_only(extra)
        body: dict[str, Any] = {"metadata": {"name": model, "format": fmt, **extra}, "assetId": asset_id}
        if callback_url is not None:
            body["callbackUrl"] = callback_url
        source = self._asset_paths.get(asset_id) or (asset.name if isinstance(asset, Asset) else asset_id)
        attempt = self._begin_attempt(asset_id, model, fmt, extra, str(source), force)
        headers = {IDEMPOTENCY_HEADER: attempt} if attempt is not None and self.local_idempotency else None
        try:
            payload = self._request("POST", "/job", json=body, retry=BEFORE_SEND, headers=headers)
        except BaseException as exc:
            if attempt is not None and _refused(exc):
                self._ledger_call("settle_attempt", attempt, None)
            raise
        job = Job.from_payload(payload)
        if attempt is not None:
            self._ledger_call("settle_attempt", attempt, job.id)
        if isinstance(asset, Asset):
            job = job.with_source_name(asset.name)
        return self._remember(job)

    def _begin_attempt(self, asset_id: str, model: str, fmt: str, extra: dict, source: str,
                       force: bool) -> str | None:
        """Record a POST /job attempt in the ledger (its id), or refuse when an earlier one is unconfirmed."""
        if self.ledger is None:
            return None
        key = dict(asset_id=asset_id, model=model, format=fmt, metadata=extra, service=self.service)
        if not force:
            try:
                lost = self.ledger.unconfirmed_attempt(**key)
            except Exception as exc:  # an unreadable ledger must not create a job blindly either
                raise ShakelabError(f"the ledger could not be read before POST /job ({type(exc).__name__}: "
                                    f"{exc}); pass force=True to send without it") from None
            if lost is not None:
                if self.local_idempotency:  # the local server knows the attempt's key: the same job, once
                    return lost["attempt_id"]
                raise UnconfirmedJobError(lost["source"] or source, model, fmt, lost["sent_at"])
        return self.ledger.record_attempt(**key, source=source, force=force)

    def get_job(self, job_id: Job | str) -> Job:
        """Return the job's current state (``GET /job/{id}``).

        Examples
        --------
        >>> (job,) = client.submit("song.wav", ["vocals"], progress=False)
        >>> client.get_job(job.id).status
        <JobStatus.COMPLETED: 'completed'>
        """
        jid = self._job_id(job_id)
        payload = self._request("GET", f"/job/{quote(jid, safe='')}")
        job = Job.from_payload(payload)
        if isinstance(job_id, Job):
            job = job.with_source_name(job_id.source_name)
        return self._remember(job)

    #: Seconds ``wait`` tolerates 404 for a job it has not seen yet (the real service answers 404
    #: for a few seconds after ``POST /job``).
    not_found_grace = 60.0

    def wait(self, job: Job | str, *, timeout: float | None = None, poll_interval: float | None = None,
             progress: bool = True) -> Job:
        """Poll a job until it completes.

        Polls back off from about 1 s to about 15 s (``poll_interval`` fixes the interval). The
        ``404`` the service answers for a few seconds after creation is tolerated until the
        job has been seen once (at most ``Client.not_found_grace`` = 60 s), and transient errors
        (connection, 429, 5xx, a garbled answer) are survived until the deadline, which is
        measured on a monotonic clock. The loop is :meth:`poller` (:class:`~shakelab.transport.Poller`).

        Parameters
        ----------
        job : Job or str
        timeout : float, optional
            Seconds to wait in all (default: no limit).
        poll_interval : float, optional
            Fixed seconds between polls instead of the backoff.
        progress : bool, default True
            Show the status in a ``tqdm.auto`` line.

        Returns
        -------
        Job
            The completed job.

        Raises
        ------
        JobFailedError
            The job ended ``failed``/``error``; ``.job`` and the service's ``.message``.
        JobTimeoutError
            ``timeout`` passed; the job keeps running: ``client.wait("<id>")`` picks it up again.

        Examples
        --------
        >>> (job,) = client.submit("song.wav", ["vocals"], wait=False, progress=False)
        >>> client.wait(job, timeout=600).status
        <JobStatus.COMPLETED: 'completed'>
        """
        jid = self._job_id(job)
        for pname, value in (("timeout", timeout), ("poll_interval", poll_interval)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValidationError(f"`{pname}` must be a positive number of seconds or None, not {value!r}")
        from tqdm.auto import tqdm

        bar = tqdm(total=None, desc=f"job {jid}", bar_format="{desc} [{elapsed}]{postfix}", disable=not progress,
                   leave=False)
        poller = self.poller(job, timeout=timeout, poll_interval=poll_interval,
                             on_update=lambda current: bar.set_postfix_str(current.status_text, refresh=True))
        try:
            return poller.run()
        finally:
            bar.close()

    def poller(self, job: Job | str, *, timeout: float | None = None, poll_interval: float | None = None,
               first_delay: float = 0.0, cancel: threading.Event | None = None,
               on_update: Callable[[Job], Any] | None = None) -> Poller[Job]:
        """Return a :class:`~shakelab.transport.Poller` of ``job`` with this client's rule (what ``wait`` runs).

        Backoff 1 s growing by 1.5 to 15 s (``poll_interval`` fixes it), the 404 grace of
        :attr:`not_found_grace`, transient errors logged and survived. Drive it with ``.run()``
        (blocking) or ``.step()`` / ``.next_delay()`` (a widget's thread).

        Examples
        --------
        >>> (job,) = client.submit("song.wav", ["vocals"], wait=False, progress=False)
        >>> client.poller(job, timeout=60).run().status
        <JobStatus.COMPLETED: 'completed'>
        """
        jid = self._job_id(job)
        schedule = Schedule() if poll_interval is None else Schedule(first=poll_interval, growth=1.0,
                                                                     cap=poll_interval)

        def fetch() -> Job:
            last = poller.last
            return self.get_job(last if isinstance(last, Job) else jid)

        poller: Poller[Job] = Poller(
            fetch, lambda current: current.status, subject=job if isinstance(job, Job) else jid,
            schedule=schedule, first_delay=first_delay, timeout=timeout, not_found_grace=self.not_found_grace,
            seen=isinstance(job, Job) and job.is_done, cancel=cancel, on_update=on_update,
            on_error=lambda exc: log.warning("polling job %s: %s; still waiting", jid, exc))
        return poller

    def submit(self, source: Any, models: str | Iterable[str], *, format: str | dict | None = None, wait: bool = True,
               callback_url: str | None = None, force: bool = False, timeout: float | None = None,
               progress: bool = True, **metadata: Any) -> list[Job]:
        """Upload once, then one job per model (submitted concurrently), optionally waiting.

        Parameters
        ----------
        source : str, pathlib.Path, binary file object, Asset or asset id
            What to process (an Asset or asset id skips the upload).
        models : str or list of str
            Model names; one job each.
        format : str or dict, optional
            One format for every model, or a dict model -> format (models it omits get their
            natural format); default: each model's natural format (json for music_detection,
            wav for stems).
        wait : bool, default True
            Block until every job is done (``timeout`` applies to each), with one progress
            line; ``wait=False`` returns the jobs as soon as they are created.
        callback_url : str, optional
        force : bool, default False
            With a ledger, create new jobs even when a matching one is recorded, or when an
            earlier attempt lost its answer (see :meth:`create_job`; a second billed job may result).
        **metadata
            Extra metadata for every job.

        Returns
        -------
        list of Job
            In the order of ``models``. A job the ledger already had (same file, model,
            format) is returned with ``reused=True``: nothing was sent for it.

        Raises
        ------
        ValidationError
            Before anything is sent, for any bad model/format/source.
        JobFailedError
            With ``wait=True``, for the first failed job (after all have finished).

        Examples
        --------
        >>> jobs = client.submit("song.wav", ["vocals", "drums"], format="flac", progress=False)
        >>> [(job.model, job.format, job.status.value) for job in jobs]
        [('vocals', 'flac', 'completed'), ('drums', 'flac', 'completed')]
        """
        names = [models] if isinstance(models, str) else list(models) if isinstance(models, Iterable) else None
        if not names:
            raise ValidationError(f"`models` must be a model name or a non-empty list of them, not {models!r}")
        if len(set(names)) != len(names):
            raise ValidationError(f"`models` lists a model twice: {names!r}")
        if format is not None and not isinstance(format, (str, dict)):
            raise ValidationError(f"`format` must be None, a format name or a dict model -> format, not {format!r}")
        chosen = format if isinstance(format, dict) else {m: format for m in names}
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValidationError(f"`format` names model(s) {unknown!r} that are not in `models` {names!r}")
        formats = [catalog.check_format(m, chosen[m]) if chosen.get(m) is not None else catalog.default_format(m)
                   for m in names]  # check_format checks the model too
        extra = self._check_metadata(metadata)
        self._check_local_only(extra)
        if callback_url is not None and (not isinstance(callback_url, str)
                                         or urlsplit(callback_url).scheme not in ("http", "https")):
            raise ValidationError(f"`callback_url` must be an http(s):// URL or None, not {callback_url!r}")
        if isinstance(source, Asset) or _looks_like_asset_id(source):
            asset = source
        else:
            asset = self.upload(source, progress=progress)
        asset_id = self._asset_id(asset)

        def one(model: str, fmt: str) -> Job:
            if self.ledger is not None and not force:
                record = self._ledger_call("lookup_job", asset_id=asset_id, model=model, format=fmt,
                                           metadata=extra, service=self.service)
                if record and record.get("status") not in FAILED_STATUSES:
                    try:
                        previous = self.get_job(record["job_id"])
                    except NotFoundError:
                        previous = None
                    if previous is not None and not previous.failed:
                        log.info("reusing job %s (%s on asset %s, from the ledger)", previous.id, model, asset_id)
                        return replace(previous, reused=True)
            return self.create_job(asset, model, format=fmt, callback_url=callback_url, force=force, **extra)

        with self._lock:
            known = set(self._jobs)
        with ThreadPoolExecutor(max_workers=min(8, len(names)), thread_name_prefix="shakelab-submit") as pool:
            jobs = list(pool.map(one, names, formats))
        with self._lock:  # created concurrently: list them in the order of `models`
            for job in jobs:
                if job.id not in known and job.id in self._jobs:
                    self._jobs[job.id] = self._jobs.pop(job.id)
        if not wait:
            return jobs
        from tqdm.auto import tqdm

        # one line for all the jobs: stacked per-job bars leave debris in logs and notebooks
        bar = tqdm(total=len(jobs), desc=f"{len(jobs)} job(s)", unit="job", disable=not progress, leave=False)
        with bar, ThreadPoolExecutor(max_workers=min(8, len(jobs)), thread_name_prefix="shakelab-wait") as pool:
            futures = [pool.submit(self.wait, j, timeout=timeout, progress=False) for j in jobs]
            for _ in as_completed(futures):
                bar.update(1)
        done: list[Job] = []
        first_error: BaseException | None = None
        for job, future in zip(jobs, futures, strict=True):
            try:
                result = future.result()
            except JobFailedError as exc:
                result = exc.job
                first_error = first_error or exc
            except BaseException as exc:
                result = job
                first_error = first_error or exc
            done.append(replace(result, reused=True) if job.reused else result)
        if first_error is not None:
            raise first_error
        return done

    # ------------------------------------------------------------------ outputs
    def _completed(self, job: Any) -> Job:
        current = job if isinstance(job, Job) and job.is_done else self.get_job(job)
        if current.failed:
            raise JobFailedError(current, current.error or "no message")
        if not current.is_done:
            raise ValidationError(f"`job` {current.id!r} is still {current.status_text}; call "
                                  f"client.wait({current.id!r}) before fetching its outputs")
        if not current.outputs:
            raise MalformedResponseError(f"job {current.id} is completed but lists no output assets", current.raw)
        return current

    def _fetch_output(self, job: Job, index: int, consume: Callable[[requests.Response], Any]) -> tuple[Job, Any]:
        """GET output ``index`` of ``job`` (no token); on 403/404 re-fetch the job once for fresh links."""
        refreshed = False
        while True:
            output = job.outputs[index]
            if not output.link:
                raise MalformedResponseError(f"output {output.name!r} of job {job.id} has no link", output.raw)
            try:
                resp = self._request("GET", urljoin(self.base_url + "/", output.link), auth=False, stream=True)
            except (AuthenticationError, NotFoundError) as exc:
                if refreshed:
                    raise
                log.info("link of %s (job %s) answered %s; fetching the job for fresh links",
                         output.name, job.id, exc.status)
                refreshed = True
                fresh = self.get_job(job)
                if len(fresh.outputs) <= index:
                    raise
                job = fresh
                continue
            try:
                return job, consume(resp)
            finally:
                resp.close()

    @staticmethod
    def _safe_name(output: OutputAsset, job: Job, index: int) -> str:
        name = output.name or Path(urlsplit(output.link or "").path).name
        name = Path(name.replace("\\", "/")).name if name else ""
        if not name or name in (".", ".."):
            name = f"{job.model or 'output'}-{index}.{output.format or job.format or 'bin'}"
        if not Path(name).suffix and (output.format or job.format):
            name = f"{name}.{output.format or job.format}"
        return name

    def download(self, job: Job | str, dest: str | os.PathLike = ".", *, folder: str | os.PathLike | None = None,
                 progress: bool = True) -> list[Path]:
        """Download every output of a completed job into a folder of ``dest`` for its recording.

        Outputs keep the service's names (``vocals.wav``) inside a folder that mirrors the
        recording's path (:func:`output_folder`): ``a/take1.wav`` -> ``dest/a/take1/vocals.wav``,
        ``b/take1.wav`` -> ``dest/b/take1/vocals.wav``, so two recordings never overwrite each
        other (a second recording that would get the same folder in this client gets
        ``take1-2``). Each file is streamed to a temporary file and renamed when complete, so
        no half-written file is ever left under the final name. An expired link (403/404)
        re-fetches the job once for fresh links. Links are fetched without the token.

        Parameters
        ----------
        job : Job or str
        dest : str or pathlib.Path, default "."
            Directory (created if missing).
        folder : str or pathlib.Path, optional
            The recording's folder inside ``dest`` instead of :func:`output_folder`'s (``""``
            writes into ``dest`` itself).
        progress : bool, default True

        Returns
        -------
        list of pathlib.Path
            The files written, in the order of the job's outputs.

        Examples
        --------
        >>> import os, shutil
        >>> os.mkdir("a")
        >>> _ = shutil.copy("song.wav", "a/take1.wav")
        >>> jobs = client.submit("a/take1.wav", ["vocals"], progress=False)
        >>> client.download(jobs[0], "out/", progress=False)
        [PosixPath('out/a/take1/vocals.wav')]
        """
        dest_dir = self._check_dest(dest, folder)
        current = self._completed(job)
        dest_dir = self._into(dest_dir, folder, current)
        paths: list[Path] = []
        for index in range(len(current.outputs)):
            name = self._safe_name(current.outputs[index], current, index)

            def fetch(consume: Callable[[requests.Response], Path], index: int = index) -> Path:
                nonlocal current
                current, path = self._fetch_output(current, index, consume)
                return path

            paths.append(_download_to(dest_dir, name, fetch, transport=self.transport, progress=progress,
                                      logger=log))
        self._ledger_call("record_outputs", current.id, [str(p.resolve()) for p in paths])
        return paths

    def _output_folder(self, job: Job) -> Path:
        """:func:`output_folder` of the recording a job analysed (as given to ``upload``)."""
        key = job.asset_id or job.id
        with self._lock:
            source = self._asset_sources.get(key)
        if source is None:
            record = self._ledger_call("get_job", job.id) or {}
            source = record.get("source_path") or job.source_name or job.id
        with self._lock:
            return output_folder(source, taken=self._folders, key=key)

    def provenance(self, job: Job) -> str | None:
        """Where ``job``'s music detection comes from, for the ``provenance`` column.

        ``"audioshake"`` when this client talks to the service; for shakelab's local server,
        ``"local:<detector>:window=<w>s[:all_windows]"`` from the detector the server reports
        in the job (``shakelab`` field) and the window / all-window options of the job's own
        request. None when neither is known (never guessed).

        Examples
        --------
        >>> (job,) = client.submit("song.wav", ["music_detection"], progress=False)
        >>> client.provenance(client.get_job(job.id))
        'local:cnn:window=10s'
        """
        from shakelab.frames import provenance

        if is_service_url(self.base_url):
            return provenance()
        detail = job.raw.get("shakelab") if isinstance(job.raw, dict) else None
        if not isinstance(detail, dict) or not isinstance(detail.get("detector"), str):
            return None
        meta = job.metadata or {}
        window = meta.get("window", detail.get("window"))
        return provenance(detail["detector"], window=10.0 if window is None else float(window),
                          all_windows=bool(meta.get("all_windows", detail.get("allWindows", False))))

    def segments(self, job: Job | str):
        """Return the segments DataFrame of a completed ``music_detection`` job (its json or txt output).

        Every row is a segment where music was found (or, with the local ``all_windows``
        option, every window with its score); ``provenance`` says which (:meth:`provenance`).

        Returns
        -------
        pandas.DataFrame
            See :func:`shakelab.frames.segments_frame`.

        Examples
        --------
        >>> (job,) = client.submit("song.wav", ["music_detection"], progress=False)
        >>> client.segments(job.id).columns.tolist()
        ['source', 'job_id', 'start_time', 'end_time', 'duration', 'confidence', 'provenance']
        """
        from shakelab.frames import segments_frame

        current = self._completed(job)
        index = next((i for i, o in enumerate(current.outputs)
                      if (o.format or Path(o.name or "").suffix.lstrip(".")) in ("json", "txt")), 0)
        current, content = self._fetch_output(current, index, lambda resp: resp.content)
        try:
            return segments_frame(content, job=current, provenance=self.provenance(current))
        except ValueError as exc:
            raise MalformedResponseError(f"music_detection output of job {current.id} is malformed: {exc}",
                                         content[:2000]) from None

    def music_detection(self, source: Any, *, wait: bool = True, timeout: float | None = None,
                        progress: bool = True, **metadata: Any):
        """Music detection of a file as a segments DataFrame: upload + job + wait + fetch.

        Parameters
        ----------
        source : str, pathlib.Path, binary file object, Asset or asset id
            An Asset or asset id reuses an earlier upload.
        wait : bool, default True
            ``False`` returns the :class:`Job` at once instead of a frame (pass it to
            ``client.wait`` then ``client.segments``).
        timeout : float, optional
            Seconds to wait for the job.
        **metadata
            Extra metadata. The local server reads ``window`` (seconds, its grid instead of
            10 s) and ``all_windows=True`` (every window with its score, music or not, for
            threshold studies); both are refused against the AudioShake service.

        Returns
        -------
        pandas.DataFrame
            Columns ``source``, ``job_id``, ``start_time``, ``end_time``, ``duration``,
            ``confidence``, ``provenance`` (see :func:`shakelab.frames.segments_frame`): one row
            per music segment, none when no music was found.

        Examples
        --------
        >>> client.music_detection("song.wav", progress=False)[["source", "start_time", "end_time"]]
             source  start_time  end_time
        0  song.wav         0.0       3.0
        """
        (job,) = self.submit(source, ["music_detection"], format="json", wait=wait, timeout=timeout,
                             progress=progress, **metadata)
        if not wait:
            return job
        return self.segments(job)

    def usage(self):
        """Usage of the last three months (``GET /usage``; ``POST`` if the service answers 405).

        Returns
        -------
        pandas.DataFrame
            Columns ``month`` (period[M]), ``total_jobs`` (int64), ``total_minutes`` (float64);
            ``attrs["counts"]`` is ``"jobs"``.

        Examples
        --------
        >>> client.usage().columns.tolist(), client.usage().attrs
        (['month', 'total_jobs', 'total_minutes'], {'counts': 'jobs'})
        """
        from shakelab.frames import usage_frame

        try:
            payload = self._request("GET", "/usage")
        except APIError as exc:
            if exc.status != 405:
                raise
            payload = self._request("POST", "/usage")
        try:
            return usage_frame(payload, counts="jobs")
        except ValueError as exc:
            raise MalformedResponseError(f"/usage answered a malformed payload: {exc}", payload) from None


    # ------------------------------------------------------------------ runs (what TasksClient shares)
    @property
    def catalogue(self) -> dict[str, tuple[str, ...]]:
        """The models this client can run, with their formats: the local server's on loopback, else the Jobs API's.

        Examples
        --------
        >>> sorted(Client(token="t", base_url="http://127.0.0.1:8077").catalogue)[:2]
        ['bass', 'dialogue']
        """
        loopback = urlsplit(self.base_url).hostname in ("127.0.0.1", "localhost", "::1")
        return catalog.LOCAL_MODELS if loopback else catalog.SERVICE_MODELS

    def start(self, source: Any, models: str | Iterable[str], *, format: str | dict | None = None,
              force: bool = False, progress: bool = True, **options: Any) -> list[Job]:
        """Start ``models`` on ``source`` without waiting: one run per model, in the order of ``models``.

        The call widgets and batches make on either client (``TasksClient.start`` returns the
        targets of one task); here the jobs of :meth:`submit` with ``wait=False``. A run has
        ``id``, ``model``, ``status_text``, ``is_done``, ``failed``, ``error``, ``outputs`` and
        ``reused``; :meth:`refresh`, :meth:`poller`, :meth:`download`, :meth:`segments` and
        :meth:`provenance` take it.

        Examples
        --------
        >>> runs = client.start("song.wav", ["vocals", "drums"], progress=False)
        >>> [run.model for run in runs]
        ['vocals', 'drums']
        >>> [client.wait(run).status_text for run in runs]
        ['completed', 'completed']
        """
        return self.submit(source, models, format=format, wait=False, force=force, progress=progress, **options)

    def recorded(self, source: str | os.PathLike, model: str, format: str, *, sha256: str | None = None) -> Job | None:
        """Return the job the ledger has for this file, model and format on this service (no request), or None.

        What ``batch.run`` resumes or skips without asking the service (``TasksClient.recorded``
        answers from the Tasks API's records: the two APIs' records stay apart).

        Examples
        --------
        >>> client.recorded("song.wav", "vocals", "wav") is None
        True
        >>> (job,) = client.submit("song.wav", ["vocals"], format="wav", progress=False)
        >>> client.recorded("song.wav", "vocals", "wav").id == job.id
        True
        """
        from shakelab.ledger import file_sha256

        if self.ledger is None:
            return None
        asset = self._ledger_call("lookup_asset", sha256=sha256 or file_sha256(source), service=self.service)
        record = asset and self._ledger_call("lookup_job", asset_id=asset["id"], model=model, format=format,
                                             metadata={}, service=self.service)
        return Job.from_payload(record["payload"]) if record else None

    def downloaded(self, run: Job) -> list[str]:
        """Return the paths the ledger recorded for a run's downloaded outputs (earlier sessions too), else [].

        Examples
        --------
        >>> (job,) = client.submit("song.wav", ["vocals"], progress=False)
        >>> client.downloaded(job)
        []
        >>> paths = client.download(job, "out/", progress=False)
        >>> client.downloaded(job) == [str(p.resolve()) for p in paths]
        True
        """
        record = self._ledger_call("get_job", run.id) or {}
        return list(record.get("outputs") or [])

    def refresh(self, runs: Any) -> Any:
        """Return the newest state of a run of :meth:`start` (``get_job``), or of each run of a list, in order.

        Examples
        --------
        >>> runs = client.start("song.wav", ["vocals"], progress=False)
        >>> [(run.id == runs[0].id, run.model) for run in client.refresh(runs)]
        [(True, 'vocals')]
        """
        if isinstance(runs, (list, tuple)):
            return [self.get_job(run) for run in runs]
        return self.get_job(runs)


# --------------------------------------------------------------------------- connect
_ANNOUNCED: set[tuple[str, str]] = set()
#: the Tasks API's key variable (``shakelab.tasks.KEY_ENV``)
KEY_ENV = "AUDIOSHAKE_API_KEY"
APIS = ("jobs", "tasks")


class LocalServerInfo:
    """Where the embedded local server runs: ``token``, ``url``, ``server_id`` and a one-line ``where``."""

    def __init__(self, token: str, url: str, server_id: str, where: str):
        self.token, self.url, self.server_id, self.where = token, url, server_id, where

    def __repr__(self) -> str:
        return f"LocalServerInfo(url={self.url!r}, server_id={self.server_id!r}, token=<hidden>)"


def _local_server() -> LocalServerInfo:
    """Find or start the embedded local server (both APIs on one port), shared or private as ``connect`` does."""
    from shakelab.server import daemon

    if daemon.mode() == "private":
        from shakelab.server import start

        server = start()
        return LocalServerInfo(server.token, server.base_url, server.server_id,
                               f"{server.base_url} (private to this process, {daemon.MODE_ENV}=private; data in "
                               f"{server.data_dir}; it stops with this process)")
    info, started = daemon.ensure()
    return LocalServerInfo(info.token, info.url, info.server_id, info.describe(started))


def _default_ledger(ledger: Any) -> Any:
    if ledger is True:
        try:
            from shakelab.ledger import Ledger

            return Ledger()
        except Exception as exc:  # no ledger module, or its file cannot be opened: carry on without
            log.warning("no ledger (%s: %s); uploads and jobs will not be deduplicated", type(exc).__name__, exc)
            return None
    return None if ledger is False else ledger


def connect(api: str | None = None, **kwargs: Any) -> Any:
    """Return a ready client: :class:`Client` (Jobs API) or :class:`shakelab.TasksClient` (Tasks API).

    Which API and which host, from the environment (never a silent switch of a notebook):

    - only ``AUDIOSHAKE_API_KEY`` set: the Tasks API at ``api.audioshake.ai``;
    - only ``AUDIOSHAKE_API_TOKEN`` set: the Jobs API at ``groovy.audioshake.ai``;
    - both set: a :class:`~shakelab.errors.ValidationError` asking for ``api="jobs"`` or
      ``api="tasks"``;
    - neither: the embedded local server, which speaks both (its Jobs API; ``api="tasks"``
      picks its Tasks API). ``AUDIOSHAKE_BASE_URL`` points either at another host.

    The local server is one per user, shared by every notebook, terminal and kernel restart:
    the one running on the data dir (``SHAKELAB_SERVER_DIR``, else the user data dir) is used,
    or a detached ``shakelab serve`` is started on port 8077 (a free port when that is taken)
    that outlives this process and stops after ``SHAKELAB_IDLE_TIMEOUT`` seconds idle (default
    30 min) or with ``shakelab server stop`` (see :mod:`shakelab.server.daemon`). With
    ``SHAKELAB_LOCAL_SERVER=private`` the server runs inside this process instead and stops
    with it. The ledger knows a local server by its server id, whatever its port.

    It says which one it chose once per process and target, as a single line on stderr
    (visible in notebooks and terminals, kept out of stdout) and an INFO log record on
    ``shakelab.client``; for the local server that line says where it runs and how it stops.

    Parameters
    ----------
    api : {None, "jobs", "tasks"}
        None: from the environment as above.
    **kwargs
        Passed to the client (``timeout``, ``max_retries``, ...). ``token=`` (Jobs) or
        ``api_key=`` (Tasks) select the service like the variables do. ``ledger`` defaults to
        True: a :class:`shakelab.ledger.Ledger` (``SHAKELAB_LEDGER`` or the user cache), so
        uploads, jobs and tasks are not repeated across kernel restarts (the two APIs' records
        kept apart); ``ledger=None`` disables it.

    Raises
    ------
    ValidationError
        Both variables set and no ``api``; an ``api`` other than "jobs"/"tasks".

    Examples
    --------
    >>> client = connect()
    >>> client.base_url.startswith("http://127.0.0.1:")
    True
    >>> tasks = connect(api="tasks")
    >>> type(tasks).__name__, tasks.base_url == client.base_url
    ('TasksClient', True)
    """
    if api is not None and api not in APIS:
        raise ValidationError(f"`api` must be 'jobs', 'tasks' or None (from the environment), not {api!r}")
    token = kwargs.pop("token", None) or os.environ.get(TOKEN_ENV) or None
    key = kwargs.pop("api_key", None) or os.environ.get(KEY_ENV) or None
    if api is None:
        if token is not None and key is not None:
            raise ValidationError(
                f"both {KEY_ENV} (the Tasks API) and {TOKEN_ENV} (the legacy Jobs API) are set: say which API "
                'this notebook uses, shakelab.connect(api="tasks") or shakelab.connect(api="jobs")')
        api = "tasks" if key is not None else "jobs"
    ledger = _default_ledger(kwargs.pop("ledger", True))
    variable, secret = (KEY_ENV, key) if api == "tasks" else (TOKEN_ENV, token)
    what = "Tasks API of the " if api == "tasks" else ""
    if api == "tasks":
        from shakelab.tasks import TasksClient

        make: Callable[..., Any] = lambda secret, **kw: TasksClient(secret, **kw)  # noqa: E731
    else:
        make = lambda secret, **kw: Client(secret, **kw)  # noqa: E731
    if secret is not None or kwargs.get("base_url") is not None:  # base_url without one: the client says what
        client = make(secret, ledger=ledger, **kwargs)
        message = f"shakelab: {variable} is set; using the {what}service at {client.base_url}"
    else:
        kwargs.pop("base_url", None)
        local = _local_server()
        client = make(local.token, base_url=local.url, ledger=ledger, service=local.server_id, **kwargs)
        message = f"shakelab: no {variable} set; using the {what}embedded local server at {local.where}"
    if (client.base_url, api) not in _ANNOUNCED:
        _ANNOUNCED.add((client.base_url, api))
        log.info("%s", message)
        print(message, file=sys.stderr)
    return client
