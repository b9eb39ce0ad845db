"""The job queue of the local server: a bounded pool of worker threads that run queued jobs.

Jobs live in the store; the in-memory queue only holds their ids, so a restart loses nothing:
:meth:`Worker.start` puts every job left ``queued`` or ``processing`` back in the queue. A job's
model runs in a model process of :mod:`shakelab.server.pool` (or in the worker thread itself when
the server's ``isolation`` is ``"thread"``) through :func:`shakelab.server.processing.execute`;
its outputs are recorded in the store and each status change goes to the job's callback through
:class:`shakelab.server.callbacks.CallbackSender`.

Examples
--------
>>> import tempfile
>>> from shakelab.server.faults import Faults
>>> from shakelab.server.store import Store
>>> tmp = tempfile.TemporaryDirectory()
>>> store = Store(tmp.name)
>>> worker = Worker(store, workers=2, faults=Faults(), payload=lambda job: {"job": job}, isolation="thread")
>>> worker.start()      # the jobs a previous run left unfinished, resumed: none here
0
>>> worker.stop(); store.close(); tmp.cleanup()
"""

from __future__ import annotations

import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shakelab import catalog
from shakelab.errors import ValidationError, scrubbed_logger
from shakelab.server.callbacks import CallbackSender
from shakelab.server.pool import Aborted, ProcessDied, ProcessTimeout, run_in_process
from shakelab.server.web import is_disk_full

__all__ = ["Worker"]

log = scrubbed_logger("shakelab.server")


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
            raise ValidationError(f"`isolation` must be 'process' or 'thread', not {isolation!r}")
        self.isolation = isolation
        self.job_timeout = 7200.0  #: seconds one model may run (process isolation only)
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValidationError(f"`workers` must be a positive integer, not {workers!r}")
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
        #: called with the job each time one finishes (completed or failed), in the worker thread
        self.on_finish: Callable[[dict], None] | None = None
        #: runs of a model so far (one per job: a Tasks target's formats share theirs)
        self.model_runs = 0

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
        """Jobs waiting in the queue."""
        return self._queue.qsize()

    # -- internals --------------------------------------------------------------------------
    def _execute(self, model: str, src: str, out_dir: str, formats: list[str], options: dict) -> tuple:
        with self._active_lock:
            self.model_runs += 1
        if self.isolation == "thread":
            from shakelab.server.processing import execute

            return execute(model, src, out_dir, formats, options)
        return run_in_process(model, src, out_dir, formats, options, abort=self._stop.is_set, timeout=self.job_timeout)

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
        if self.on_finish is not None:
            try:
                self.on_finish(job)
            except Exception:  # a failing listener never touches the job
                log.exception("the finish listener failed for job %s", job_id)

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
        meta = job["metadata"]
        model = meta["name"]
        # a Tasks API target's job: every format of the target from one run of the model
        formats = list(meta["formats"]) if job.get("target_id") and meta.get("formats") else [meta["format"]]
        job = self.store.update_job(job_id, status="processing", code="processing",
                                    message=f"running {model!r} ({', '.join(formats)})", started=True)
        self._notify(job)
        t0 = time.monotonic()
        while True:  # faults.processing_delay, re-read so that clearing it releases waiting jobs
            remaining = self.faults.processing_delay - (time.monotonic() - t0)
            if remaining <= 0:
                break
            if self._stop.wait(min(remaining, 0.1)):
                return
        if model in self.faults.fail_models:
            return self._finish(job_id, "failed", "processing_error", f"{model!r} failed: fault injected")
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
        options = {k: v for k, v in meta.items() if k not in ("name", "format", "formats")}
        try:
            outcome = self._execute(model, str(src), str(out_dir), formats, options)
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
            mime = catalog.MIME_TYPES.get(ext, "application/octet-stream")
            out = self.store.add_asset(name=p.name, fmt=ext, file_type=mime, path=p,
                                       size=p.stat().st_size, source="output", job_id=job_id)
            outputs.append(out["id"])
        return outputs


def _disk_full(exc: BaseException) -> bool:
    """"No space left on device" (or a quota), raised here or inside a model process (by its message)."""
    return is_disk_full(exc) or any(text in str(exc) for text in
                                    ("No space left on device", "Disk quota exceeded", "database or disk is full"))


def _clean(exc: BaseException | str, path: Path, name: str) -> str:
    """Return the message of ``exc`` without the server's internal file path."""
    return str(exc).replace(str(path), name).replace(path.name, name)
