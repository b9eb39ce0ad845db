"""The client core: one HTTP transport and one poll loop, shared by every shakelab client.

:class:`Transport` owns what every API client needs and nothing API-specific: the
``requests.Session``, the credential (a pluggable ``requests`` auth whose secret never appears
in any repr, message or log record), joining paths to the base URL, timeouts, **the** retry
rule, the ``Retry-After`` parser (:func:`parse_retry_after`), mapping error answers to
:class:`~shakelab.errors.APIError` subclasses, :class:`~shakelab.errors.MalformedResponseError`
for a 2xx whose body is not JSON, and a hook for a rate gate shared by many workers
(:class:`RateGate`, :meth:`Transport.gated`). :func:`poll` / :class:`Poller` is the one loop
that waits for something on the service to finish (backoff schedule, 404 grace, deadline,
cancel event).

Building a second client (the Tasks API) on it
----------------------------------------------
Compose, do not subclass: the client holds one ``Transport`` built with its own base URL and
auth, and keeps only what its API adds (endpoints, payload models)::

    transport = Transport("https://api.audioshake.ai", ApiKeyAuth(key), logger=log)
    task = transport.request("GET", f"/tasks/{task_id}")          # JSON, retried (idempotent)
    created = transport.request("POST", "/tasks", json=body, retry=BEFORE_SEND)  # never billed twice
    done = poll(lambda: transport.request("GET", f"/tasks/{task_id}"),
                classify=lambda t: JobStatus.COMPLETED if t.get("completedAt") else JobStatus.PROCESSING,
                subject=task_id, timeout=600, resume_hint=f"client.wait({task_id!r})")

Hooks: ``auth=`` (any :class:`SecretAuth`: :class:`BearerAuth` for the Jobs API,
:class:`ApiKeyAuth` for ``x-api-key``), ``logger=`` (retries are logged there), ``retry=``
per request (:data:`IDEMPOTENT`, :data:`BEFORE_SEND`, :data:`NEVER`), ``body=`` (a callable
that rebuilds a streamed body for each attempt), ``Transport.gate`` / :meth:`Transport.gated`
(a batch-wide :class:`RateGate`), and for :func:`poll` the ``fetch`` / ``classify`` callables
(status classification goes through :class:`shakelab.models.JobStatus`).

The retry rule
--------------
- ``retry=IDEMPOTENT`` (every ``GET``; uploads whose body can be rebuilt): retried up to
  ``max_retries`` times on connection errors and timeouts; on ``429`` after the
  ``Retry-After`` the service gives (seconds or HTTP-date; without one, the exponential
  backoff); on ``502``/``503``/``504`` with exponential backoff (``backoff * 2**attempt``,
  capped at ``max_backoff``, full jitter 0.5-1); on a 2xx whose body is not JSON.
- ``retry=BEFORE_SEND`` (a request that creates something billed): retried only when the
  connection failed before anything was sent (refused, DNS, connect timeout), or on ``429``
  (a rate-limited request was refused unprocessed, RFC 6585). Anything after sending raises
  at once.
- ``retry=NEVER``: one attempt.
- A ``Retry-After`` longer than ``max_retry_after`` raises :class:`~shakelab.errors.RateLimitError`
  at once; other 4xx are never retried (401/403 ``AuthenticationError``, 404 ``NotFoundError``).
- With a gate attached, every attempt first waits its turn at the gate, every answer is
  reported to it, and a 429 waits at the gate (one shared pause for all workers) instead of a
  private sleep: one backoff layer, not three.

Examples
--------
>>> parse_retry_after("3")
3.0
>>> t = Transport("http://127.0.0.1:9/", BearerAuth(Secret("example-token-123")))
>>> t, t.url("/job/j1")
(Transport('http://127.0.0.1:9', auth=BearerAuth(<hidden>)), 'http://127.0.0.1:9/job/j1')
>>> t.close()
"""

from __future__ import annotations

import contextlib
import email.utils
import json as _json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from shakelab.errors import (
    APIError, AuthenticationError, BatchCancelled, JobFailedError, JobTimeoutError, MalformedResponseError,
    NotFoundError, NotPicklableError, RateLimitError, ServerError, ShakelabError, TransportError, register_secret,
    scrubbed_logger,
)

__all__ = [
    "BEFORE_SEND", "IDEMPOTENT", "MAX_POLL_INTERVAL", "NEVER", "RETRY_STATUSES", "TRANSIENT", "ApiKeyAuth",
    "BearerAuth", "Poller", "RateGate", "RetryMode", "Schedule", "Secret", "SecretAuth", "Transport", "describe",
    "is_loopback", "parse_retry_after", "poll",
]

log = scrubbed_logger("shakelab.transport")

RetryMode = Literal["idempotent", "before-send", "never"]
IDEMPOTENT: Final = "idempotent"
BEFORE_SEND: Final = "before-send"
NEVER: Final = "never"
#: statuses an idempotent request is retried on with backoff (429 has its own rule)
RETRY_STATUSES = frozenset({502, 503, 504})
#: errors a poll survives until its deadline (the transport already retried them)
TRANSIENT: tuple[type[BaseException], ...] = (TransportError, ServerError, RateLimitError, MalformedResponseError)
_GATE_CAP = 60.0  # longest shared pause of a RateGate, seconds


# --------------------------------------------------------------------------- Retry-After
def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), else None.

    Examples
    --------
    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --------------------------------------------------------------------------- secrets and auth
class Secret:
    """Holds a credential; its repr/str never show it, it never pickles, :func:`scrub` hides it.

    Examples
    --------
    >>> Secret("example-token-123")
    <hidden>
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        """Return the credential itself (only for the auth hook)."""
        return self._value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__

    def __reduce__(self):  # never pickled along with a client
        raise NotPicklableError("the API token cannot be pickled")


class SecretAuth(requests.auth.AuthBase):
    """Base of the auth hooks: adds ``header: prefix + secret`` to an API request at send time.

    Subclass it (set ``header`` and ``prefix``) for another scheme; the transport hides
    ``secret`` in every error message it builds.
    """

    header = "Authorization"
    prefix = ""

    def __init__(self, secret: Secret | str):
        self.secret = secret if isinstance(secret, Secret) else Secret(secret)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Add the header to ``request`` (requests calls this at send time)."""
        request.headers[self.header] = f"{self.prefix}{self.secret.reveal()}"
        return request

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<hidden>)"


class BearerAuth(SecretAuth):
    """``Authorization: Bearer <token>`` (the legacy Jobs API, shakelab's local server)."""

    prefix = "Bearer "


class ApiKeyAuth(SecretAuth):
    """``x-api-key: <key>`` (the Tasks API)."""

    header = "x-api-key"


# --------------------------------------------------------------------------- the rate gate
class RateGate:
    """One backoff shared by every worker (thread) that sends through a gated transport.

    When any request is answered 429, no request goes out until the wait the service asked for
    (``Retry-After``; doubling from 1 s while 429s go on when absent; capped at 60 s) is over.
    Attach it with :meth:`Transport.gated`; the transport then waits its turn before each
    attempt, reports every answer with :meth:`note`, and waits at the gate instead of its own
    sleep after a 429.

    Attributes
    ----------
    hits : int
        429 answers seen.
    waited_s : float
        Total seconds requests spent held at the gate.
    pauses : list of (float, float)
        Monotonic (start, end) of each pause.

    Examples
    --------
    >>> gate = RateGate()
    >>> gate.note(429, "0.01"); gate.wait_turn(); gate.hits
    1
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._streak = 0
        self.hits = 0
        self.waited_s = 0.0
        self.pauses: list[tuple[float, float]] = []

    def __getstate__(self) -> dict:   # travels to executor workers as a fresh gate
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    def wait_turn(self) -> None:
        """Block while the gate is paused."""
        while True:
            with self._lock:
                delay = self._until - time.monotonic()
            if delay <= 0:
                return
            time.sleep(min(delay, 0.25))
            with self._lock:
                self.waited_s += min(delay, 0.25)

    def note(self, status: int, retry_after: str | None) -> None:
        """Record an answer: a 429 pushes the shared pause forward, anything else ends a 429 streak."""
        with self._lock:
            if status != 429:
                self._streak = 0
                return
            self.hits += 1
            self._streak += 1
            wait = parse_retry_after(retry_after)
            if wait is None:
                wait = min(2.0 ** (self._streak - 1), _GATE_CAP)
            now = time.monotonic()
            until = now + min(max(wait, 0.0), _GATE_CAP)
            if until > self._until:
                self._until = until
                self.pauses.append((now, until))


# --------------------------------------------------------------------------- the transport
class _RetryLater(Exception):
    """Internal: this attempt failed in a retryable way."""

    def __init__(self, error: ShakelabError, delay: float | None = None):
        self.error = error
        self.delay = delay


def _sent_nothing(exc: requests.RequestException) -> bool:
    """Tell whether the request certainly never left this machine (connection not established)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)  # MaxRetryError -> its reason
        return isinstance(reason, (urllib3.exceptions.NewConnectionError,
                                   urllib3.exceptions.ConnectTimeoutError,
                                   urllib3.exceptions.NameResolutionError))
    return False


def describe(exc: BaseException) -> str:
    """Describe a transport exception, briefly and without any token.

    Examples
    --------
    >>> describe(requests.ConnectionError("refused"))
    'ConnectionError: refused'
    """
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", reason)
    text = str(reason) or type(reason).__name__
    text = re.sub(r"<urllib3\.[^>]*>:?\s*", "", text)
    return f"{type(exc).__name__}: {text}"[:300]


def is_loopback(url: str) -> bool:
    """Tell whether ``url`` points at this machine (shakelab's local server).

    Examples
    --------
    >>> is_loopback("http://127.0.0.1:8077"), is_loopback("https://api.audioshake.ai")
    (True, False)
    """
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


class Transport:
    """One session, one credential, one retry rule for one API (see the module docstring).

    Parameters
    ----------
    base_url : str
        The API's root (``https://groovy.audioshake.ai``); paths are joined to it.
    auth : requests.auth.AuthBase
        Added to API requests (not to ``auth=False`` ones such as signed download links).
    timeout : float, default 30
        Connect and read timeout of each attempt, seconds.
    max_retries : int, default 4
    max_retry_after : float, default 60
        Longest ``Retry-After`` honoured; a longer one raises ``RateLimitError`` at once.
    backoff, max_backoff : float, default 0.5 and 8
        First delay and cap of the exponential backoff (before jitter).
    logger : logging.Logger, optional
        Where retries are logged (default ``shakelab.transport``).
    user_agent : str, default "shakelab/0.1"

    Attributes
    ----------
    session : requests.Session
        Proxies from the environment are ignored for loopback URLs.
    gate : RateGate or None
        The rate gate every request waits at (see :meth:`gated`).

    Examples
    --------
    >>> t = Transport("http://127.0.0.1:9", ApiKeyAuth("example-key-123"), max_retries=0)
    >>> t.backoff_delay(0) <= 0.5
    True
    >>> t.close()
    """

    def __init__(self, base_url: str, auth: requests.auth.AuthBase | None, *, timeout: float = 30.0,
                 max_retries: int = 4, max_retry_after: float = 60.0, backoff: float = 0.5,
                 max_backoff: float = 8.0, logger: logging.Logger | None = None,
                 user_agent: str = "shakelab/0.1"):
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_retry_after = float(max_retry_after)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.log = logger or log
        self.gate: RateGate | None = None
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": user_agent})
        self.session.trust_env = not is_loopback(self.base_url)

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r}, auth={self.auth!r})"

    def __getstate__(self):
        raise NotPicklableError("a Transport cannot be pickled (it holds the API credential)")

    def close(self) -> None:
        """Close the session (connections are pooled until then)."""
        self.session.close()

    # ------------------------------------------------------------------ pieces
    def url(self, path: str) -> str:
        """``path`` joined to the base URL (an absolute ``http(s)://`` URL is kept as it is)."""
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url + "/", path.lstrip("/"))

    def backoff_delay(self, attempt: int) -> float:
        """Return the pause before retry ``attempt`` (0-based): exponential, capped, full jitter 0.5-1."""
        return min(self.max_backoff, self.backoff * (2 ** attempt)) * random.uniform(0.5, 1.0)

    @contextlib.contextmanager
    def gated(self, gate: RateGate) -> Iterator[RateGate]:
        """Send every request through ``gate`` inside the ``with`` block; yields the gate in use.

        When a gate is already attached (a batch already running on this client), that one is
        kept and yielded, so nested batches share one pause.
        """
        if self.gate is not None:
            yield self.gate
            return
        self.gate = gate
        try:
            yield gate
        finally:
            self.gate = None

    def _hide(self, text: str) -> str:
        secret = getattr(self.auth, "secret", None)
        value = secret.reveal() if isinstance(secret, Secret) else None
        return text.replace(value, "<hidden>") if value and value in text else text

    def error_for(self, resp: requests.Response, method: str, path: str) -> APIError:
        """Map an error answer to its :class:`~shakelab.errors.APIError` subclass (``{error, message}`` read)."""
        body: Any = None
        message = ""
        try:
            body = resp.json()
        except ValueError:
            body = resp.text[:2000] if resp.content else None
        if isinstance(body, dict):
            msg = body.get("message") or body.get("detail") or body.get("error")
            if isinstance(msg, (dict, list)):
                msg = _json.dumps(msg)[:500]
            message = str(msg) if msg else ""
            code = body.get("error")
            if isinstance(code, str) and code and message and code != message:
                message = f"{message} [{code}]"
        elif isinstance(body, str):
            message = body.strip()[:300]
            body = self._hide(body)
        if not message:
            message = resp.reason or "no message"
        message = f"{method} {path}: {self._hide(message)}"
        request_id = resp.headers.get("X-Request-Id") or resp.headers.get("x-amzn-requestid")
        if request_id is None and isinstance(body, dict) and isinstance(body.get("requestId"), str):
            request_id = body["requestId"]
        status = resp.status_code
        if status in (401, 403):
            return AuthenticationError(status, message, body, request_id)
        if status == 404:
            return NotFoundError(status, message, body, request_id)
        if status == 429:
            return RateLimitError(status, message, body, request_id,
                                  retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        if status >= 500:
            return ServerError(status, message, body, request_id)
        return APIError(status, message, body, request_id)

    # ------------------------------------------------------------------ requests
    def request(self, method: str, path: str, *, retry: RetryMode = "idempotent", json: Any = None,
                body: Callable[[], tuple[Any, dict | None]] | None = None, params: dict | None = None,
                auth: bool = True, stream: bool = False, parse: bool = True,
                headers: dict | None = None) -> Any:
        """Send one request under the retry rule; return the decoded JSON (or the Response).

        Parameters
        ----------
        method, path : str
            ``path`` relative to the base URL, or an absolute URL (a signed link).
        retry : {"idempotent", "before-send", "never"}
            See the module docstring.
        json : optional
            A JSON body.
        body : callable, optional
            Returns ``(data, headers)`` fresh for each attempt (uploads rewind their file).
        params, headers : dict, optional
        auth : bool
            Add the credential (False for signed download links).
        stream, parse : bool
            ``stream=True`` returns the open streamed ``Response``; ``parse=False`` the
            ``Response`` without decoding JSON.

        Raises
        ------
        TransportError, APIError (and subclasses), MalformedResponseError
        """
        url = self.url(path)
        shown = urlsplit(url).path if url.startswith(self.base_url) else urlsplit(url).path.rsplit("/", 1)[-1]
        attempt = 0
        while True:
            if self.gate is not None:
                self.gate.wait_turn()
            try:
                return self._attempt(method, url, shown, retry=retry, json=json, body=body, params=params,
                                     auth=auth, stream=stream, parse=parse, extra_headers=headers)
            except _RetryLater as later:
                if attempt >= self.max_retries:
                    raise later.error from None
                gated = self.gate is not None and isinstance(later.error, RateLimitError)
                delay = later.delay if later.delay is not None else self.backoff_delay(attempt)
                self.log.warning("%s %s: %s; retry %d/%d in %.2f s", method, shown, later.error, attempt + 1,
                                 self.max_retries, delay)
                if not gated:  # a gated 429 waits at the gate (wait_turn above), once for everyone
                    time.sleep(delay)
                attempt += 1

    def _attempt(self, method: str, url: str, shown: str, *, retry: str, json: Any, body: Any,
                 params: Any, auth: bool, stream: bool, parse: bool, extra_headers: dict | None) -> Any:
        data, headers = (None, None) if body is None else body()
        if extra_headers:
            headers = {**(headers or {}), **extra_headers}
        try:
            resp = self.session.request(method, url, json=json, data=data, headers=headers, params=params,
                                        auth=self.auth if auth else None, stream=stream,
                                        timeout=(self.timeout, self.timeout), allow_redirects=True)
        except requests.RequestException as exc:
            error = TransportError(f"{method} {shown} failed: {describe(exc)}")
            error.maybe_sent = not _sent_nothing(exc)
            if retry == IDEMPOTENT or (retry == BEFORE_SEND and _sent_nothing(exc)):
                raise _RetryLater(error) from None
            raise error from None
        finally:
            if data is not None and hasattr(data, "close"):
                data.close()
        if self.gate is not None:
            self.gate.note(resp.status_code, resp.headers.get("Retry-After"))
        self.log.debug("%s %s -> %s", method, shown, resp.status_code)
        if resp.status_code >= 400:
            answer = self.error_for(resp, method, shown)
            resp.close()
            if retry in (IDEMPOTENT, BEFORE_SEND) and isinstance(answer, RateLimitError):
                wait = answer.retry_after
                if wait is not None and wait > self.max_retry_after:
                    raise RateLimitError(429, f"{answer.message} (Retry-After {wait:g} s is longer than "
                                              f"max_retry_after={self.max_retry_after:g} s)", answer.body,
                                         answer.request_id, retry_after=wait) from None
                raise _RetryLater(answer, wait)
            if retry == IDEMPOTENT and resp.status_code in RETRY_STATUSES:
                raise _RetryLater(answer)
            raise answer
        if stream or not parse:
            return resp
        try:
            return resp.json()
        except ValueError:
            # never the body itself: it may echo anything, the token included
            ctype = resp.headers.get("Content-Type", "no Content-Type")
            malformed = MalformedResponseError(
                f"{method} {shown}: the service answered a body that is not JSON ({len(resp.content)} bytes, "
                f"{ctype[:60]})", request_id=resp.headers.get("X-Request-Id"), status=resp.status_code)
            if retry == IDEMPOTENT:
                raise _RetryLater(malformed) from None
            raise malformed from None


# --------------------------------------------------------------------------- polling
#: The longest pause of the default poll schedule (``Client.wait``, batches, the Tasks API), in
#: seconds. The local server keeps an idle keep-alive connection open longer than this
#: (:data:`shakelab.server.app.KEEP_ALIVE_TIMEOUT`), so a poll reuses its connection instead of
#: meeting one the server has just closed.
MAX_POLL_INTERVAL: Final = 15.0


@dataclass(frozen=True)
class Schedule:
    """Pauses between polls: ``first``, growing by ``growth`` each time, at most ``cap`` seconds.

    Examples
    --------
    >>> s = Schedule(first=1.0, growth=1.5, cap=3.0)
    >>> [s.delay(n) for n in range(4)]
    [1.0, 1.5, 2.25, 3.0]
    """

    first: float = 1.0
    growth: float = 1.5
    cap: float = MAX_POLL_INTERVAL

    def delay(self, n: int) -> float:
        """Return the pause after poll ``n`` (0-based)."""
        return min(self.cap, self.first * self.growth ** n)


T = TypeVar("T")


class Poller(Generic[T]):
    """Polls something on the service until it is done, one :meth:`step` at a time.

    :meth:`run` blocks (``Client.wait``, batch); a widget drives :meth:`step` from its own
    thread or timer and sleeps :meth:`next_delay` between steps, so the kernel never blocks.

    Parameters
    ----------
    fetch : callable
        ``fetch()`` returns the current state (a ``Job``, a task dict, ...).
    classify : callable
        ``classify(state)`` returns a :class:`shakelab.models.JobStatus`; its ``failed`` /
        ``is_done`` decide (unknown statuses are pending).
    subject : optional
        What is polled (a job or its id), shown in errors until a state arrives.
    schedule : Schedule, optional
        Default ``Schedule()`` (1 s growing by 1.5 to 15 s).
    first_delay : float, default 0
        Pause before the first fetch (:meth:`run` only).
    timeout : float, optional
        Seconds in all; then :class:`~shakelab.errors.JobTimeoutError` (the job keeps running).
    not_found_grace : float, default 60
        Seconds a 404 is tolerated until the state was seen once (the service answers 404 for a
        few seconds after creation); then the ``NotFoundError`` is raised.
    seen : bool, default False
        The subject is known to exist already (no 404 grace).
    cancel : threading.Event, optional
        Set -> :class:`~shakelab.errors.BatchCancelled` at the next pause.
    transient : tuple of exception types
        Errors survived until the deadline (default :data:`TRANSIENT`).
    on_update, on_error : callable, optional
        Called with each fetched state / each survived error.
    failure : callable, optional
        Builds the exception for a failed state (default ``JobFailedError(state, state.error)``).
    resume_hint : str, optional
        How to pick the job up again, for the timeout and cancel messages.

    Examples
    --------
    >>> from shakelab.models import JobStatus
    >>> states = iter(["queued", "processing", "completed"])
    >>> poll(lambda: next(states), JobStatus, schedule=Schedule(first=0.001))
    'completed'
    """

    def __init__(self, fetch: Callable[[], T], classify: Callable[[T], Any], *, subject: Any = None,
                 schedule: Schedule | None = None, first_delay: float = 0.0, timeout: float | None = None,
                 not_found_grace: float = 60.0, seen: bool = False, cancel: threading.Event | None = None,
                 transient: tuple[type[BaseException], ...] = TRANSIENT,
                 on_update: Callable[[T], Any] | None = None,
                 on_error: Callable[[BaseException], Any] | None = None,
                 failure: Callable[[T], BaseException] | None = None, resume_hint: str | None = None):
        self.fetch, self.classify = fetch, classify
        self.schedule = schedule or Schedule()
        self.first_delay = first_delay
        self.timeout = timeout
        self.not_found_grace = not_found_grace
        self.seen = seen
        self.cancel = cancel or threading.Event()
        self.transient = transient
        self.on_update, self.on_error = on_update, on_error
        self.failure = failure
        self.resume_hint = resume_hint
        self.last: Any = subject
        self.polls = 0
        self.started = time.monotonic()
        self.deadline = None if timeout is None else self.started + timeout

    def step(self) -> T | None:
        """Fetch once: the state when done, None while pending.

        Raises
        ------
        JobFailedError (or what ``failure`` builds)
            The state is a terminal failure.
        NotFoundError
            404 after the state was seen, or past the grace.
        JobTimeoutError
            Still pending at the deadline.
        """
        self.polls += 1
        try:
            state = self.fetch()
        except NotFoundError:
            if self.seen or time.monotonic() - self.started > self.not_found_grace:
                raise
            self.log_error(None)
        except self.transient as exc:
            self.log_error(exc)
        else:
            self.seen, self.last = True, state
            if self.on_update is not None:
                self.on_update(state)
            status = self.classify(state)
            if status.failed:
                raise (self.failure(state) if self.failure is not None
                       else JobFailedError(state, getattr(state, "error", None) or "no message"))
            if status.is_done:
                return state
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self._timeout()
        return None

    def log_error(self, exc: BaseException | None) -> None:
        """Report a survived error (None: a 404 within the grace)."""
        if exc is None:
            log.info("%s not found yet (the service answers 404 just after creation); polling", self._name())
        elif self.on_error is not None:
            self.on_error(exc)

    def next_delay(self) -> float:
        """Seconds to pause before the next :meth:`step` (never past the deadline)."""
        pause = self.schedule.delay(max(self.polls - 1, 0))
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout()
            pause = min(pause, remaining)
        return pause

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise :class:`~shakelab.errors.BatchCancelled` when cancelled meanwhile."""
        if self.cancel.wait(seconds) if seconds > 0 else self.cancel.is_set():
            raise BatchCancelled(self.last, self.resume_hint)

    def run(self) -> T:
        """Poll until done; return the final state (raises like :meth:`step`, or ``BatchCancelled``)."""
        self.pause(self.first_delay)
        while True:
            state = self.step()
            if state is not None:
                return state
            self.pause(self.next_delay())

    def _name(self) -> str:
        return str(getattr(self.last, "id", self.last))

    def _timeout(self) -> JobTimeoutError:
        return JobTimeoutError(self.last, self.timeout if self.timeout is not None else 0.0,
                               resume_hint=self.resume_hint)


def poll(fetch: Callable[[], T], classify: Callable[[T], Any], **options: Any) -> T:
    """Poll until done: ``Poller(fetch, classify, **options).run()`` (see :class:`Poller`).

    Examples
    --------
    >>> from shakelab.models import JobStatus
    >>> poll(lambda: "completed", JobStatus)
    'completed'
    """
    return Poller(fetch, classify, **options).run()
