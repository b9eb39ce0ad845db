"""The job queue of the local server: a bounded pool of worker threads, and callback delivery.

Jobs live in the store; the in-memory queue only holds their ids, so a restart loses nothing:
:meth:`Worker.start` puts every job left ``queued`` or ``processing`` back in the queue.
Each status change (``processing``, then ``completed`` or ``failed``) is POSTed to the job's
``callbackUrl`` as ``{"job": <the job object, as GET /job/{id} returns it>}`` by a separate sender
thread, with 3 retries and exponential backoff (0.5, 1, 2 s); a failing callback never touches the
job. Models run in long-lived child processes (``python -m shakelab.server.worker``) unless the
server's ``isolation`` is ``"thread"``.

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
import os
import queue
import re
import secrets
import shutil
import socket
import threading
import time
import http.client
import ssl
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from shakelab import catalog
from shakelab.errors import scrubbed_logger

log = scrubbed_logger("shakelab.server")

# Longest input each model accepts (the service takes stems up to 3 h).
MAX_INPUT_SECONDS = 3 * 3600.0


MAX_URL_CHARS = 8192
_URL_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


def check_url(url: object, *, field: str = "link") -> tuple[str, int]:
    """The one check of the shape of every URL the server touches; returns ``(host, port)``.

    http or https, a host, a valid port and IPv6 literal, no credentials, no whitespace or
    control characters, at most :data:`MAX_URL_CHARS`. Raises ``ValueError`` naming ``field``.

    Examples
    --------
    >>> check_url("https://example.com/a.wav")
    ('example.com', 443)
    >>> check_url("http://[::1", field="callbackUrl")
    Traceback (most recent call last):
    ...
    ValueError: `callbackUrl` is not a valid URL ('http://[::1'): Invalid IPv6 URL
    """
    if not isinstance(url, str):
        raise ValueError(f"`{field}` must be a string URL, not {type(url).__name__}")
    shown = url[:200]
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"`{field}` must be at most {MAX_URL_CHARS} characters, not {len(url)}")
    if _URL_BAD_CHARS.search(url):
        raise ValueError(f"`{field}` must not contain spaces or control characters: {shown!r}")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # malformed IPv6 literal, port out of range or not a number
        what = "has an invalid port" if "port" in str(exc).lower() else "is not a valid URL"
        raise ValueError(f"`{field}` {what} ({shown!r}): {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"`{field}` must be an http or https URL, not {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"`{field}` must not carry credentials (user:password@): "
                         f"{parts.scheme}://...@{host}")
    if "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValueError(f"`{field}` has an invalid IPv6 address: {shown!r}") from None
    try:
        host.encode("idna")
    except UnicodeError:
        raise ValueError(f"`{field}` has an invalid host name: {shown!r}") from None
    return host, port or (443 if parts.scheme == "https" else 80)


def check_public_url(url: str, *, allow_private: bool, field: str = "link") -> tuple[str, int]:
    """Like :func:`public_addresses`, returning only ``(host, port)``."""
    host, port, _ = public_addresses(url, allow_private=allow_private, field=field)
    return host, port


def public_addresses(url: str, *, allow_private: bool, field: str = "link") -> tuple[str, int, list[str] | None]:
    """Check that ``url`` is http(s) and that its host resolves only to public addresses.

    Returns ``(host, port, addresses)``: the vetted IP addresses to connect to (so a second DNS
    answer cannot swap in a private one), or None with ``allow_private``, where the address check
    is skipped (the scheme check is not). Raises ``ValueError`` naming ``field`` otherwise.

    Examples
    --------
    >>> public_addresses("ftp://x/y", allow_private=True)
    Traceback (most recent call last):
    ...
    ValueError: `link` must be an http or https URL, not 'ftp://x/y'
    """
    host, port = check_url(url, field=field)
    if allow_private:
        return host, port, None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"`{field}` host {host!r} does not resolve: {exc}") from None
    vetted = []
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified or not addr.is_global):
            raise ValueError(f"`{field}` host {host!r} resolves to a private, loopback or link-local "
                             f"address ({addr}); the server refuses those unless started with "
                             "--allow-private-links")
        vetted.append(info[4][0])
    return host, port, vetted


class PinnedHTTP(http.client.HTTPConnection):
    """Connects to a vetted address while sending the URL's host name (Host header)."""

    def __init__(self, host: str, port: int, address: str | None, **kw):
        super().__init__(host, port, **kw)
        self._address = address or host

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a vetted address, with SNI and certificate checks against the URL's host name."""

    def __init__(self, host: str, port: int, address: str | None, **kw):
        super().__init__(host, port, context=ssl.create_default_context(), **kw)
        self._address = address or host

    def connect(self):
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


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
        """One delivery to an address vetted now (redirects are not followed)."""
        host, port, addresses = public_addresses(url, allow_private=self.allow_private, field="callbackUrl")
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        cls = PinnedHTTPS if parts.scheme == "https" else PinnedHTTP
        conn = cls(host, port, (addresses or [None])[0], timeout=self.timeout)
        try:
            conn.request("POST", target, body=body,
                         headers={"Content-Type": "application/json", "User-Agent": "shakelab-server"})
            resp = conn.getresponse()
            resp.read(65536)
            if resp.status >= 300:
                raise RuntimeError(f"callback answered HTTP {resp.status}")
        finally:
            conn.close()


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
    isolation : {'process', 'thread'}
        Where models run: long-lived child processes shared by the servers of this process (default;
        the API never waits on the GIL and a crashing decoder cannot take the server down) or the
        worker threads themselves.
    """

    def __init__(self, store, *, workers: int, faults, payload: Callable[[dict], dict],
                 callbacks: CallbackSender | None = None, isolation: str = "process"):
        if isolation not in ("process", "thread"):
            raise ValueError(f"`isolation` must be 'process' or 'thread', not {isolation!r}")
        self.isolation = isolation
        self.job_timeout = 7200.0  #: seconds one model may run (process isolation only)
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
    def _execute(self, model: str, src: str, out_dir: str, fmt: str, options: dict) -> tuple:
        if self.isolation == "thread":
            return execute(model, src, out_dir, fmt, options)
        return run_in_process(model, src, out_dir, fmt, options, abort=self._stop.is_set, timeout=self.job_timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            job_id = self._queue.get()
            if job_id is None or self._stop.is_set():
                return
            with self._active_lock:
                self.active += 1
            try:
                self._run(job_id)
            except Exception as exc:  # never let one job kill the worker thread
                if not self._stop.is_set():
                    log.exception("job %s crashed the worker", job_id)
                    code, message = (self._failure(exc, "the model", Path(), "") if _disk_full(exc) else
                                     ("internal_error", "the server failed while running this job"))
                    try:
                        shutil.rmtree(self.store.data_dir / "outputs" / job_id, ignore_errors=True)
                        self._finish(job_id, "failed", code, message)
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

    def _failure(self, exc: Exception, model: str, src: Path, name: str) -> tuple[str, str]:
        """``(code, message)`` of a job whose model raised ``exc`` (before its partial outputs are removed).

        Decoders report a full disk vaguely (libsndfile: "System error."), so a disk with
        (almost) no space left counts as full whatever the message.
        """
        try:
            no_space = shutil.disk_usage(self.store.data_dir).free < 256 * 1024
        except OSError:
            no_space = False
        if _disk_full(exc) or no_space:
            log.error("model %s could not write its output: %s", model, exc)
            return ("insufficient_storage", f"{model!r} could not write its output: the server's disk is full; "
                    "free some space and submit the job again")
        if isinstance(exc, ImportError):
            return ("processing_unavailable", f"audio processing is not available on this server: {exc}")
        if isinstance(exc, ProcessTimeout):
            return ("processing_timeout", f"{model!r}: {exc}")
        if isinstance(exc, ProcessDied):
            return ("processing_error", f"the process running {model!r} died (out of memory or a crash in a decoder)")
        kind = getattr(exc, "type_name", type(exc).__name__)
        log.error("model %s failed: %s: %s", model, kind, exc)
        return ("processing_error", f"{model!r} failed: {kind}: {_clean(exc, src, name)}")

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
        # A resumed job starts clean, in a folder of its own attempt: a run of a stopped server
        # that is still finishing the same job can never overwrite this attempt's files.
        job_dir = self.store.data_dir / "outputs" / job_id
        shutil.rmtree(job_dir, ignore_errors=True)
        out_dir = job_dir / secrets.token_hex(4)
        out_dir.mkdir(parents=True, exist_ok=True)
        options = {k: v for k, v in job["metadata"].items() if k not in ("name", "format")}
        try:
            outcome = self._execute(model, str(src), str(out_dir), fmt, options)
        except Aborted:
            return  # stays "processing" in the store: resumed at the next start
        except Exception as exc:
            failure = self._failure(exc, model, src, asset["name"])
            shutil.rmtree(job_dir, ignore_errors=True)  # no partial outputs; frees the space _finish may need
            return self._finish(job_id, "failed", *failure)
        if outcome[0] != "ok":
            shutil.rmtree(job_dir, ignore_errors=True)
            code, message = outcome
            if code == "invalid_audio":
                message = _clean(message, src, asset['name'])  # probe's message names the file already
            return self._finish(job_id, "failed", code, message)
        _, duration, paths, detail = outcome
        if self._stop.is_set():
            return
        try:
            outputs = self._record_outputs(job_id, model, paths, out_dir)
            if outputs:
                return self._finish(job_id, "completed", "completed",
                                    f"{model!r} finished: {len(outputs)} output file(s), {duration:.1f} s of audio",
                                    outputs=outputs, input_seconds=duration, detail=detail)
            failure = ("processing_error", f"{model!r} produced no usable output file")
        except Exception as exc:  # a full disk while recording: the job fails, nothing of it is kept
            failure = self._failure(exc, model, src, asset["name"])
        shutil.rmtree(job_dir, ignore_errors=True)
        self.store.remove_outputs(job_id)
        self._finish(job_id, "failed", *failure)

    def _record_outputs(self, job_id: str, model: str, paths: list, out_dir: Path) -> list[str] | None:
        """Output asset ids of a finished model run; None when a path is missing or outside ``out_dir``."""
        outputs = []
        for p in paths:
            p = Path(p).resolve()
            if not p.is_file() or out_dir.resolve() not in p.parents:
                return None
            ext = p.suffix.lstrip(".").lower()
            out = self.store.add_asset(name=p.name, fmt=ext, file_type=catalog.MIME_TYPES.get(ext, "application/octet-stream"),
                                       path=p, size=p.stat().st_size, source="output", job_id=job_id)
            outputs.append(out["id"])
        return outputs


def _disk_full(exc: BaseException) -> bool:
    """"No space left on device" (or a quota), raised here or inside a model process."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc) \
        or "database or disk is full" in str(exc)


def _clean(exc: BaseException | str, path: Path, name: str) -> str:
    """An exception message without the server's internal file path."""
    return str(exc).replace(str(path), name).replace(path.name, name)


def execute(model: str, src: str, out_dir: str, fmt: str, options: dict) -> tuple:
    """Probe and run one job (in a worker process or thread).

    Returns ``("ok", duration_seconds, [output paths], detail)`` (``detail``: how music
    detection was computed, see :func:`shakelab.server.processing.run_detection`; None for other
    models), or ``(code, message)`` for a failure the user caused (``invalid_audio``,
    ``input_too_long``). Other errors propagate.
    """
    from shakelab.server import processing

    try:
        info = processing.probe(src)
    except ValueError as exc:
        return ("invalid_audio", str(exc))
    if info.duration > MAX_INPUT_SECONDS:
        return ("input_too_long", f"the input lasts {info.duration / 60:.1f} min; the limit is "
                                  f"{MAX_INPUT_SECONDS / 60:.0f} min")
    detail = None
    try:
        if model == "music_detection":
            paths, detail = processing.run_detection(src, out_dir, fmt, options=options)
        else:
            paths = processing.run_model(model, src, out_dir, fmt, options=options)
    except ValueError as exc:
        return ("invalid_audio", str(exc))
    return ("ok", float(info.duration), [str(p) for p in paths], detail)


# -- model processes ---------------------------------------------------------------------------
#: niceness added to model processes, so that the API process wins the CPU when both want it
MODEL_NICENESS = 5
MAX_IDLE_PROCESSES = 8


class ProcessDied(RuntimeError):
    """The process running a model ended without an answer (killed, out of memory, crashed)."""


class ProcessTimeout(RuntimeError):
    """A model ran longer than the job time limit; its process was ended."""


class Aborted(Exception):
    """The server stopped while a job ran; its process was ended and the job resumes next start."""


class RemoteError(RuntimeError):
    """An exception raised inside a model process, carried back by type name and message."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


class ModelProcess:
    """A long-lived ``python -m shakelab.server.worker`` child that runs jobs sent as JSON lines.

    A plain subprocess (not multiprocessing), so the user's ``__main__`` is never re-imported,
    whatever script or notebook started the server.
    """

    def __init__(self) -> None:
        import subprocess
        import sys

        import shakelab

        # the child imports this very shakelab, even when the parent found it through sys.path edits
        root = str(Path(shakelab.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        # Its own session: a kernel shutting down signals the children in its process group and
        # waits for them to vanish, which these (reaped by nobody until our atexit) never do in time.
        self.proc = subprocess.Popen([sys.executable, "-m", "shakelab.server.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                     close_fds=True, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, *args, abort: Callable[[], bool] = lambda: False, timeout: float = 7200.0) -> tuple:
        """Send one job and wait for its answer; ``abort()`` is polled twice a second."""
        import select

        deadline = time.monotonic() + timeout
        try:
            self.proc.stdin.write(json.dumps(list(args)) + "\n")
            self.proc.stdin.flush()
            while not select.select([self.proc.stdout], [], [], 0.5)[0]:
                if abort():
                    self.close()
                    raise Aborted("the server stopped while the model ran")
                if time.monotonic() > deadline:
                    self.close()
                    raise ProcessTimeout(f"the model ran longer than {timeout:g} s and was stopped")
            line = self.proc.stdout.readline()
        except (OSError, ValueError):
            line = ""
        if not line:
            self.close()
            raise ProcessDied("the model process ended without an answer")
        answer = json.loads(line)
        if answer[0] == "error":
            if answer[1] in ("ImportError", "ModuleNotFoundError"):
                raise ImportError(answer[2])
            raise RemoteError(answer[1], answer[2])
        return tuple(answer[1])

    def close(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except Exception:
                pass


_idle: list[ModelProcess] = []
busy: set[ModelProcess] = set()
_procs_lock = threading.Lock()
_atexit_registered = False


def run_in_process(*args, abort: Callable[[], bool] = lambda: False, timeout: float = 7200.0) -> tuple:
    """Run :func:`execute` in an idle model process (started on demand, reused afterwards)."""
    global _atexit_registered
    with _procs_lock:
        proc = None
        while _idle and proc is None:
            candidate = _idle.pop()
            proc = candidate if candidate.alive() else None
        if proc is None:
            proc = ModelProcess()
            if not _atexit_registered:
                import atexit

                atexit.register(_close_all)
                _atexit_registered = True
        busy.add(proc)
    try:
        result = proc.run(*args, abort=abort, timeout=timeout)
    except RemoteError:
        _release(proc)
        raise
    except Exception:
        with _procs_lock:
            busy.discard(proc)
        proc.close()
        raise
    _release(proc)
    return result


def prewarm(n: int) -> None:
    """Start model processes in the background until ``n`` are idle, so the first jobs skip the imports."""
    def spawn():
        for _ in range(n):
            with _procs_lock:
                if len(_idle) + len(busy) >= n or len(_idle) >= MAX_IDLE_PROCESSES:
                    return
            proc = ModelProcess()
            _release(proc)

    global _atexit_registered
    with _procs_lock:
        if not _atexit_registered:
            import atexit

            atexit.register(_close_all)
            _atexit_registered = True
    threading.Thread(target=spawn, name="shakelab-prewarm", daemon=True).start()


def _release(proc: ModelProcess) -> None:
    with _procs_lock:
        busy.discard(proc)
        if proc.alive() and len(_idle) < MAX_IDLE_PROCESSES:
            _idle.append(proc)
            return
    proc.close()


def _close_all() -> None:
    """At interpreter exit: end every model process (unfinished jobs resume at the next start)."""
    with _procs_lock:
        procs = list(_idle) + list(busy)
        _idle.clear()
    for proc in procs:
        proc.close()


def _child_main() -> None:
    """Body of a model process: read ``[model, src, out_dir, fmt, options]`` lines, answer JSON lines."""
    import signal
    import sys
    import warnings

    # Ctrl-C / a kernel interrupt reaches the whole process group; the parent decides when a model
    # process ends (it closes stdin or kills it), so the child ignores SIGINT instead of printing a
    # KeyboardInterrupt traceback into the notebook.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(MODEL_NICENESS)
    except OSError:
        pass
    warnings.simplefilter("ignore")
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    try:  # the slow imports, before the first job arrives
        import librosa  # noqa: F401
        import scipy.signal  # noqa: F401
        import soundfile  # noqa: F401

        import shakelab.server.processing  # noqa: F401
    except Exception:
        pass  # reported per job by execute()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # whatever the models print cannot corrupt the protocol
    sys.stdout = open(os.devnull, "w")
    for line in sys.stdin:
        try:
            answer = ["ok", list(execute(*json.loads(line)))]
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            answer = ["error", type(exc).__name__, str(exc)]
        proto.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    _child_main()
