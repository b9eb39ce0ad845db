"""One exception hierarchy for shakelab.

Every error raised on purpose by shakelab derives from :class:`ShakelabError`, so a
notebook can catch them all at once. Messages name the parameter and echo the bad
value; the API token never appears in any of them.

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

from typing import Any


class ShakelabError(Exception):
    """Base class of every shakelab error."""


class ValidationError(ShakelabError, ValueError):
    """A bad argument, caught before any network call."""


class TransportError(ShakelabError):
    """The request never got an HTTP answer (connection refused, reset, timeout)."""


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
        self.message = message
        self.body = body
        self.request_id = request_id
        suffix = f" (request {request_id})" if request_id else ""
        super().__init__(f"HTTP {status}: {message}{suffix}")


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


class JobFailedError(ShakelabError):
    """A job ended ``failed`` or ``error``; carries the job and the server's message."""

    def __init__(self, job: Any, message: str):
        self.job = job
        self.message = message
        job_id = getattr(job, "id", job)
        super().__init__(f"job {job_id} failed: {message}")


class JobTimeoutError(ShakelabError):
    """Waiting for a job ran out of time; the job itself is still running on the service."""

    def __init__(self, job: Any, timeout: float):
        self.job = job
        self.timeout = timeout
        job_id = getattr(job, "id", job)
        status = getattr(job, "status", "pending")
        super().__init__(
            f"job {job_id} is still {status} after waiting {timeout:g} s; it keeps running on the "
            f"service (nothing is lost). Pick it up again with client.wait({job_id!r})."
        )
