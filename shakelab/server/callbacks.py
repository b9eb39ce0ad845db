"""Callback delivery of the local server: job payloads POSTed to ``callbackUrl`` from one thread.

Each status change of a job (``processing``, then ``completed`` or ``failed``) is POSTed to its
``callbackUrl`` as ``{"job": <the job object, as GET /job/{id} returns it>}``, with 3 retries and
exponential backoff (0.5, 1, 2 s); a newer status supersedes an older pending retry, and a
failing callback never touches the job. Every delivery goes to an address vetted at that moment
(:func:`shakelab.server.network.open_vetted`).

Examples
--------
>>> sender = CallbackSender(allow_private=False)
>>> sender.delivered, sender.failed
(0, 0)
>>> sender.stop()
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time

from shakelab.errors import scrubbed_logger
from shakelab.server.network import open_vetted

__all__ = ["CallbackSender"]

log = scrubbed_logger("shakelab.server")


class CallbackSender:
    """Delivers job payloads to callback URLs from one background thread.

    Parameters
    ----------
    allow_private : bool
        Let callbacks reach private/loopback hosts (tests post to a loopback receiver).
    retries : int
        Attempts after the first one.
    backoff : float
        First wait between attempts in seconds; doubled after each failure.
    timeout : float
        Seconds per attempt.
    """

    def __init__(self, *, allow_private: bool, retries: int = 3, backoff: float = 0.5, timeout: float = 5.0):
        self.allow_private = allow_private
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.delivered = 0
        self.failed = 0
        self._heap: list = []
        self._seq = itertools.count()
        self._latest: dict[str, int] = {}
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="shakelab-callbacks", daemon=True)
        self._thread.start()

    def send(self, url: str, job_id: str, payload: dict) -> None:
        """Queue one delivery; an older pending retry for the same job is superseded by it."""
        body = json.dumps(payload).encode()
        with self._cv:
            seq = next(self._seq)
            self._latest[job_id] = seq
            heapq.heappush(self._heap, (time.monotonic(), seq, job_id, url, body, 0))
            self._cv.notify()

    def stop(self) -> None:
        """Stop the sender thread (pending deliveries are dropped)."""
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic()))
                if self._stopped:
                    return
                _, seq, job_id, url, body, attempt = heapq.heappop(self._heap)
            if attempt > 0 and self._latest.get(job_id, seq) > seq:
                continue  # a newer status of this job is on its way; this retry is stale
            try:
                self._post(url, body)
                self.delivered += 1
            except Exception as exc:  # a failing callback never breaks the job
                if attempt < self.retries:
                    with self._cv:
                        heapq.heappush(self._heap, (time.monotonic() + self.backoff * 2 ** attempt, seq, job_id,
                                                    url, body, attempt + 1))
                else:
                    self.failed += 1
                    log.warning("callback for job %s failed after %d attempts: %s", job_id, attempt + 1, exc)

    def _post(self, url: str, body: bytes) -> None:
        """One delivery to an address vetted now (redirects are not followed)."""
        resp = open_vetted(url, allow_private=self.allow_private, timeout=self.timeout, field="callbackUrl",
                           method="POST", body=body, headers={"Content-Type": "application/json"})
        try:
            resp.read(65536)
            if resp.status >= 300:
                raise RuntimeError(f"callback answered HTTP {resp.status}")
        finally:
            resp.close()
