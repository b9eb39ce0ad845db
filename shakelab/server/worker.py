"""The job queue of the local server: a bounded pool of worker threads, and callback delivery.

Jobs live in the store; the in-memory queue only holds their ids, so a restart loses nothing:
:meth:`Worker.start` puts every job left ``queued`` or ``processing`` back in the queue.
Each status change is POSTed to the job's ``callbackUrl`` by a separate sender thread with
retries and exponential backoff; a failing callback never touches the job.

Examples
--------
>>> worker = Worker(store, workers=2, faults=Faults(), payload=lambda job: {"job": job})  # doctest: +SKIP
>>> worker.start(); worker.submit(job_id)                                                 # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import json
import logging
import queue
import secrets
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from shakelab import catalog

log = logging.getLogger("shakelab.server")

# Longest input each model accepts (service-facts.md: stems up to 3 h).
MAX_INPUT_SECONDS = 3 * 3600.0


def check_public_url(url: str, *, allow_private: bool, field: str = "link") -> tuple[str, int]:
    """Check that ``url`` is http(s) and that its host resolves only to public addresses.

    Returns ``(host, port)``. Raises ``ValueError`` naming ``field`` otherwise; with
    ``allow_private`` the address check is skipped (the scheme check is not).

    Examples
    --------
    >>> check_public_url("ftp://x/y", allow_private=True)
    Traceback (most recent call last):
    ...
    ValueError: `link` must be an http or https URL, not 'ftp://x/y'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"`{field}` must be an http or https URL, not {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"`{field}` has an invalid port: {url!r}") from None
    host = parts.hostname
    if allow_private:
        return host, port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"`{field}` host {host!r} does not resolve: {exc}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified or not addr.is_global):
            raise ValueError(f"`{field}` host {host!r} resolves to a private, loopback or link-local "
                             f"address ({addr}); the server refuses those unless started with "
                             "--allow-private-links")
    return host, port


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # callbacks are not followed to other hosts
        return None


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
        self._opener = urllib.request.build_opener(_NoRedirect)
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
                due, seq, job_id, url, body, attempt = heapq.heappop(self._heap)
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
        check_public_url(url, allow_private=self.allow_private, field="callbackUrl")
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "shakelab-server"})
        with self._opener.open(req, timeout=self.timeout) as resp:
            resp.read(65536)
            if resp.status >= 300:
                raise RuntimeError(f"callback answered HTTP {resp.status}")


class Worker:
    """A bounded pool of threads that run queued jobs through ``shakelab.server.processing``.

    Parameters
    ----------
    store : shakelab.server.store.Store
    workers : int
        Jobs processed at once.
    faults : shakelab.server.faults.Faults
        Read for ``processing_delay``.
    payload : callable
        ``payload(job_row) -> dict``: the job's API JSON, used for callbacks.
    callbacks : CallbackSender, optional
    """

    def __init__(self, store, *, workers: int, faults, payload: Callable[[dict], dict],
                 callbacks: CallbackSender | None = None):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"`workers` must be a positive integer, not {workers!r}")
        self.store = store
        self.workers = workers
        self.faults = faults
        self.payload = payload
        self.callbacks = callbacks
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.active = 0
        self._active_lock = threading.Lock()

    def start(self) -> int:
        """Start the threads and resume the jobs a previous run left unfinished; returns how many."""
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"shakelab-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        resumed = 0
        for job in self.store.jobs_with_status("queued", "processing"):
            if job["status"] == "processing":
                self.store.update_job(job["id"], status="queued", code="queued",
                                      message="resumed after a server restart")
            self._queue.put(job["id"])
            resumed += 1
        if resumed:
            log.info("resumed %d unfinished job(s)", resumed)
        return resumed

    def submit(self, job_id: str) -> None:
        """Queue a job that the store already holds as ``queued``."""
        self._queue.put(job_id)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop taking jobs. A job in the middle of its model keeps its store status and is resumed next start."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # -- internals --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            job_id = self._queue.get()
            if job_id is None or self._stop.is_set():
                return
            with self._active_lock:
                self.active += 1
            try:
                self._run(job_id)
            except Exception:  # never let one job kill the worker thread
                if not self._stop.is_set():
                    log.exception("job %s crashed the worker", job_id)
                    try:
                        self._finish(job_id, "failed", "internal_error", "the server failed while running this job")
                    except Exception:
                        pass
            finally:
                with self._active_lock:
                    self.active -= 1

    def _notify(self, job: dict) -> None:
        if self.callbacks is not None and job.get("callback_url"):
            try:
                self.callbacks.send(job["callback_url"], job["id"], self.payload(job))
            except Exception:
                log.exception("could not queue the callback of job %s", job["id"])

    def _finish(self, job_id: str, status: str, code: str, message: str, **kw: Any) -> None:
        if self._stop.is_set():
            return  # the store may be closed; the job is resumed at the next start
        job = self.store.update_job(job_id, status=status, code=code, message=message, **kw)
        self._notify(job)

    def _run(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job is None or job["status"] not in ("queued", "processing"):
            return
        model, fmt = job["metadata"]["name"], job["metadata"]["format"]
        job = self.store.update_job(job_id, status="processing", code="processing",
                                    message=f"running {model!r} ({fmt})", started=True)
        self._notify(job)
        t0 = time.monotonic()
        while True:  # faults.processing_delay, re-read so that clearing it releases waiting jobs
            remaining = self.faults.processing_delay - (time.monotonic() - t0)
            if remaining <= 0:
                break
            if self._stop.wait(min(remaining, 0.1)):
                return
        asset = self.store.get_asset(job["asset_id"])
        if asset is None or not Path(asset["path"]).is_file():
            return self._finish(job_id, "failed", "asset_missing",
                                f"the source asset {job['asset_id']!r} is no longer stored on this server")
        src = Path(asset["path"])
        try:
            from shakelab.server import processing
        except ImportError as exc:
            return self._finish(job_id, "failed", "processing_unavailable",
                                f"audio processing is not available on this server: {exc}")
        try:
            info = processing.probe(src)
        except ValueError as exc:
            return self._finish(job_id, "failed", "invalid_audio",
                                f"{asset['name']!r} is not decodable audio: {_clean(exc, src, asset['name'])}")
        if info.duration > MAX_INPUT_SECONDS:
            return self._finish(job_id, "failed", "input_too_long",
                                f"{asset['name']!r} lasts {info.duration / 60:.1f} min; the limit is "
                                f"{MAX_INPUT_SECONDS / 60:.0f} min")
        # A resumed job starts clean, in a folder of its own attempt: a thread of a stopped server
        # that is still finishing the same job can never overwrite this attempt's files.
        job_dir = self.store.data_dir / "outputs" / job_id
        shutil.rmtree(job_dir, ignore_errors=True)
        out_dir = job_dir / secrets.token_hex(4)
        out_dir.mkdir(parents=True, exist_ok=True)
        options = {k: v for k, v in job["metadata"].items() if k not in ("name", "format")}
        try:
            paths = processing.run_model(model, src, out_dir, fmt, options=options)
        except ValueError as exc:
            return self._finish(job_id, "failed", "invalid_audio", _clean(exc, src, asset["name"]))
        except Exception as exc:
            log.exception("model %s failed on job %s", model, job_id)
            return self._finish(job_id, "failed", "processing_error",
                                f"{model!r} failed: {type(exc).__name__}: {_clean(exc, src, asset['name'])}")
        if self._stop.is_set():
            return
        outputs = []
        for p in paths:
            p = Path(p).resolve()
            if not p.is_file() or out_dir.resolve() not in p.parents:
                return self._finish(job_id, "failed", "processing_error",
                                    f"{model!r} produced no usable output file")
            ext = p.suffix.lstrip(".").lower()
            out = self.store.add_asset(name=p.name, fmt=ext, file_type=catalog.MIME_TYPES.get(ext, "application/octet-stream"),
                                       path=p, size=p.stat().st_size, source="output", job_id=job_id)
            outputs.append(out["id"])
        if not outputs:
            return self._finish(job_id, "failed", "processing_error", f"{model!r} produced no output")
        self._finish(job_id, "completed", "completed",
                     f"{model!r} finished: {len(outputs)} output file(s), {info.duration:.1f} s of audio",
                     outputs=outputs, input_seconds=info.duration)


def _clean(exc: BaseException, path: Path, name: str) -> str:
    """An exception message without the server's internal file path."""
    return str(exc).replace(str(path), name).replace(path.name, name)
