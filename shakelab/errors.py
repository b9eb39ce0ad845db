"""One exception hierarchy for shakelab.

Every error raised on purpose by shakelab derives from :class:`ShakelabError`, so a
notebook can catch them all at once. Messages name the parameter and echo the bad
value; secrets never appear in any of them: every message, ``body`` and log record of shakelab
passes through :func:`scrub`, which hides registered tokens and anything that looks like a
signed link's signature. Every class pickles with its fields, so an error raised in a worker
process (``ProcessPoolExecutor``, Dask) arrives intact.

Examples
--------
>>> from shakelab.errors import ValidationError
>>> try:
...     raise ValidationError("`model` must be one of 'vocals', 'drums', not 'kazoo'")
... except ShakelabError as exc:
...     print(type(exc).__name__)
ValidationError
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

HIDDEN = "<hidden>"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
#: query parameters and headers whose value is a credential (signed links: AWS, GCS, shakelab's own)
_SECRET_PARAMS = re.compile(
    r"(?i)\b(signature|sig|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
    r"x-goog-credential|token|access_token|api[_-]?key|x-api-key)=([^&\s\"'<>]+)")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_SECRET_KEYS = frozenset({"token", "apikey", "api_key", "x-api-key", "authorization", "signature",
                          "access_token", "secret", "password"})


def register_secret(value: str | None) -> None:
    """Have :func:`scrub` hide ``value`` (an API token) wherever it appears from now on.

    Examples
    --------
    >>> register_secret("s3cr3t-token-value")
    >>> scrub("echo: s3cr3t-token-value")
    'echo: <hidden>'
    """
    if isinstance(value, str) and len(value.strip()) >= 8:
        with _secrets_lock:
            _secrets.add(value.strip())


def scrub(value: Any) -> Any:
    """``value`` with secrets hidden: registered tokens, ``Bearer ...``, ``signature=...`` and similar.

    Strings, and the strings inside dicts and lists (a dict key that names a credential hides its
    value); anything else is returned as it is.

    Examples
    --------
    >>> scrub("GET /files/c1/a.wav?expires=99&signature=ab12cd")
    'GET /files/c1/a.wav?expires=99&signature=<hidden>'
    >>> scrub({"token": "t", "n": 1})
    {'token': '<hidden>', 'n': 1}
    """
    if isinstance(value, str):
        with _secrets_lock:
            known = sorted(_secrets, key=len, reverse=True)
        for secret in known:
            if secret in value:
                value = value.replace(secret, HIDDEN)
        value = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}={HIDDEN}", value)
        return _BEARER.sub(lambda m: f"{m.group(1)} {HIDDEN}", value)
    if isinstance(value, dict):
        return {k: HIDDEN if isinstance(k, str) and k.lower() in _SECRET_KEYS and v else scrub(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(v) for v in value)
    return value


class ScrubFilter(logging.Filter):
    """A logging filter that :func:`scrub`-s each record's message (installed on shakelab's loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; always keep it."""
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        if isinstance(record.args, tuple):  # kept as arguments (numbers stay numbers for %d, %.2f)
            record.args = tuple(a if isinstance(a, (int, float)) or a is None or scrub(str(a)) == str(a)
                                else scrub(str(a)) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = scrub(record.args)
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True


def scrubbed_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with a :class:`ScrubFilter` (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, ScrubFilter) for f in logger.filters):
        logger.addFilter(ScrubFilter())
    return logger


class ShakelabError(Exception):
    """Base class of every shakelab error; its message is scrubbed of secrets."""

    def __init__(self, *args: Any):
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return scrub(super().__str__())  # secrets registered after it was raised are hidden too


class ValidationError(ShakelabError, ValueError):
    """A bad argument, caught before any network call."""


class NotInLedgerError(ShakelabError, KeyError):
    """The ledger has no record of that job (a ``KeyError`` too)."""


class WaitTimeoutError(ShakelabError, TimeoutError):
    """Waiting for local work (a widget's submissions) ran out of time; the work goes on."""


class NotPicklableError(ShakelabError, TypeError):
    """The object holds a credential and is never pickled (a ``TypeError``, as pickle expects)."""


class TransportError(ShakelabError):
    """The request never got an HTTP answer (connection refused, reset, timeout).

    ``maybe_sent`` is False only when the request certainly never left this machine.
    """

    maybe_sent: bool = True


class APIError(ShakelabError):
    """The service answered with an HTTP error status.

    Parameters
    ----------
    status : int
        HTTP status code.
    message : str
        The service's message (from the ``{error, message}`` body when present).
    body : Any, optional
        The decoded response body (JSON or text), for inspection.
    request_id : str, optional
        The request id the service gave, if any.
    """

    def __init__(self, status: int, message: str, body: Any = None, request_id: str | None = None):
        self.status = status
        self.message = scrub(message)
        self.body = scrub(body)
        self.request_id = request_id
        suffix = f" (request {request_id})" if request_id else ""
        super().__init__(f"HTTP {status}: {self.message}{suffix}")

    def __reduce__(self):
        return type(self), (self.status, self.message, self.body, self.request_id), self.__dict__


class AuthenticationError(APIError):
    """401 (bad or missing token) or 403 (no permission)."""


class NotFoundError(APIError):
    """404: no such job, asset or link."""


class RateLimitError(APIError):
    """429 answered more often, or for longer, than the retry policy allows.

    ``retry_after`` is the wait in seconds the service last asked for (or None).
    """

    def __init__(self, status: int, message: str, body: Any = None, request_id: str | None = None,
                 retry_after: float | None = None):
        super().__init__(status, message, body, request_id)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the service is unavailable or failed."""


class MalformedResponseError(APIError, ValueError):
    """A 2xx answer whose body is not what the API documents (not JSON, no ``id``, no outputs).

    ``status`` is the (successful) HTTP status; the body is kept only when it is safe to show.

    Examples
    --------
    >>> str(MalformedResponseError("GET /job/j1: the service answered a body that is not JSON"))
    'HTTP 200: GET /job/j1: the service answered a body that is not JSON'
    """

    def __init__(self, message: str, body: Any = None, request_id: str | None = None, *, status: int = 200):
        super().__init__(status, message, body, request_id)

    def __reduce__(self):
        return _rebuild_malformed, (self.message, self.body, self.request_id, self.status), self.__dict__


def _rebuild_malformed(message: str, body: Any, request_id: str | None, status: int) -> MalformedResponseError:
    return MalformedResponseError(message, body, request_id, status=status)


class JobFailedError(ShakelabError):
    """A job ended ``failed`` or ``error``; carries the job and the server's message."""

    def __init__(self, job: Any, message: str):
        self.job = job
        self.message = scrub(message)
        job_id = getattr(job, "id", job)
        super().__init__(f"job {job_id} failed: {message}")

    def __reduce__(self):
        return type(self), (self.job, self.message), self.__dict__


class JobTimeoutError(ShakelabError):
    """Waiting for a job ran out of time; the job itself is still running on the service.

    ``resume_hint`` says how to pick it up again (default ``client.wait('<id>')``).
    """

    def __init__(self, job: Any, timeout: float, resume_hint: str | None = None):
        self.job = job
        self.timeout = timeout
        self.resume_hint = resume_hint
        job_id = getattr(job, "id", job)
        status = getattr(job, "status", "pending")
        hint = resume_hint or f"client.wait({job_id!r})"
        super().__init__(
            f"job {job_id} is still {status} after waiting {timeout:g} s; it keeps running on the "
            f"service (nothing is lost). Pick it up again with {hint}."
        )

    def __reduce__(self):
        return type(self), (self.job, self.timeout, self.resume_hint), self.__dict__


class BatchCancelled(ShakelabError):
    """Waiting was cancelled (a batch interrupted, a widget stopped); the job keeps running.

    Attributes
    ----------
    job : Job, str or None
        The job as last seen (or its id), None when cancelled before it was created.
    """

    def __init__(self, job: Any = None, resume_hint: str | None = None):
        self.job = job
        self.resume_hint = resume_hint
        if job is None:
            message = "cancelled before the job was created; rerun to resume"
        else:
            job_id = getattr(job, "id", job)
            status = getattr(job, "status", "pending")
            message = (f"cancelled while job {job_id} was still {status}; it keeps running on the service. "
                       f"Pick it up again with {resume_hint or 'a rerun (the ledger resumes it)'}.")
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.job, self.resume_hint), self.__dict__


class UnconfirmedJobError(ShakelabError):
    """A job was sent before but its answer never arrived: it may exist, and be billed, already.

    The Jobs API has no idempotency key and no job list, so the client cannot find out. The
    ledger recorded the attempt; sending it again needs ``force=True``.

    Attributes
    ----------
    file, model, format : str
    attempted_at : float
        Unix time of the unconfirmed attempt.
    """

    def __init__(self, file: str, model: str, format: str, attempted_at: float):
        import time as _time

        self.file, self.model, self.format, self.attempted_at = file, model, format, attempted_at
        when = _time.strftime("%Y-%m-%d %H:%M:%S UTC", _time.gmtime(attempted_at))
        super().__init__(
            f"a {model!r} ({format}) job for {file!r} was sent at {when} but its answer was lost: the job may "
            "exist and be billed already (the Jobs API cannot tell). Check the service's usage or "
            "dashboard; to send it again anyway, pass force=True")

    def __reduce__(self):
        return type(self), (self.file, self.model, self.format, self.attempted_at), self.__dict__


class TaskFailedError(JobFailedError):
    """A Tasks API task ended with failed targets (``error`` or ``failed``); raised once it is done.

    A :class:`JobFailedError` (what catches one catches both), with the task and the failed
    targets, each target's ``error.message`` and the task and target ids in the message.

    Attributes
    ----------
    task : shakelab.models.Task
        The task as last seen (also ``.job``).
    targets : list of shakelab.models.Target
        The failed targets; ``.target`` is the first.

    Examples
    --------
    >>> from shakelab.models import Task
    >>> task = Task.from_payload({"id": "t1", "completedAt": "2026-03-25T03:20:00Z", "targets": [
    ...     {"id": "g1", "model": "drums", "status": "error", "error": {"code": 422, "message": "no audio"}}]})
    >>> str(TaskFailedError(task))
    'target g1 (drums) of task t1 failed: no audio'
    """

    def __init__(self, task: Any, targets: Any = None):
        self.task = task
        self.targets = list(targets) if targets is not None else list(getattr(task, "failed_targets", []))
        self.target = self.targets[0] if self.targets else None
        parts = [f"target {t.id} ({t.name}) of task {task.id} failed: {t.error}" for t in self.targets]
        if len(parts) > 1:
            text = f"{len(parts)} of {len(task.targets)} targets of task {task.id} failed: " + "; ".join(
                f"{t.id} ({t.name}): {t.error}" for t in self.targets)
        else:
            text = parts[0] if parts else f"task {getattr(task, 'id', task)} failed"
        super().__init__(task, text)
        self.message = scrub(text)
        self.args = (self.message,)

    def __str__(self) -> str:
        return scrub(self.message)

    def __reduce__(self):
        return type(self), (self.task, self.targets), self.__dict__


class UnconfirmedTaskError(ShakelabError):
    """The answer of ``POST /tasks`` was lost and ``GET /tasks`` could not be read to find the task.

    The attempt stays in the ledger: the next ``create_task`` / ``submit`` of the same request
    looks for it first (and creates it only if it is not there).

    Attributes
    ----------
    attempt : str
        The attempt id in the task's ``metadata``.
    sent_at : float
        Unix time the request was sent.
    cause : BaseException or None
        What went wrong.
    """

    def __init__(self, attempt: str, sent_at: float, cause: Any = None, *, recorded: bool = True):
        import time as _time

        self.attempt, self.sent_at, self.cause, self.recorded = attempt, sent_at, cause, recorded
        when = _time.strftime("%H:%M:%S UTC", _time.gmtime(sent_at))
        why = f" ({cause})" if cause is not None else ""
        then = ("run the same request again later and it is looked for first (created only if it is not there), "
                "or pass force=True to send it anyway (a second billed task may result)"
                if recorded else f"without a ledger nothing remembers it: look for metadata attempt {attempt!r} in "
                "client.tasks() before sending it again")
        super().__init__(
            f"POST /tasks sent at {when} lost its answer{why} and GET /tasks could not be read to find the task "
            f"(attempt {attempt}); it may exist. Nothing is sent again blindly: {then}")

    def __reduce__(self):
        return _rebuild_unconfirmed_task, (self.attempt, self.sent_at, self.recorded), self.__dict__


def _rebuild_unconfirmed_task(attempt: str, sent_at: float, recorded: bool) -> UnconfirmedTaskError:
    return UnconfirmedTaskError(attempt, sent_at, None, recorded=recorded)
