"""Many recordings x many models: bounded concurrency, one shared 429 backoff, resumable.

:func:`run` uploads each file once, runs one job per (file, model), downloads the outputs
or fetches the music-detection JSON, and returns a :class:`BatchResult` with a jobs frame
and a segments frame. Everything goes through the ledger (:mod:`shakelab.ledger`), so a rerun
of the same call after a crash, a kernel restart or a kill polls the jobs still in flight
and skips the finished ones without a single request.

Examples
--------
>>> import os, shutil
>>> import numpy as np, soundfile as sf
>>> from shakelab import batch
>>> os.mkdir("takes")
>>> _ = shutil.copy("song.wav", "takes/song.wav")                      # 3 s of music
>>> sf.write("takes/quiet.wav", np.zeros(3 * 22050, dtype="float32"), 22050)   # 3 s of silence
>>> result = batch.run("takes/", ["music_detection"], progress=False)
>>> result.jobs[["source", "model", "status", "action"]]
            source            model     status     action
0  takes/quiet.wav  music_detection  completed  submitted
1   takes/song.wav  music_detection  completed  submitted
>>> result.coverage[["source", "finding"]]
            source         finding
0  takes/quiet.wav  no music found
1   takes/song.wav     music found
>>> result.segments["source"].unique().tolist()   # a recording without music has no segment
['takes/song.wav']
>>> again = batch.run("takes/", ["music_detection"], progress=False)   # all in the ledger: no request
>>> again.jobs["action"].tolist(), again.jobs["job_id"].tolist() == result.jobs["job_id"].tolist()
(['skipped', 'skipped'], True)

From a shell::

    shakelab batch recordings/ --models music_detection,vocals --out out/batch
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import glob as _glob
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shakelab import catalog
from shakelab.errors import (
    BatchCancelled, JobFailedError, NotFoundError, NotInLedgerError, RateLimitError, ShakelabError,
    ValidationError,
)
from shakelab.transport import RateGate

__all__ = ["AUDIO_EXTENSIONS", "JOBS_COLUMNS", "BatchResult", "RateGate", "main", "run"]

#: File extensions a folder source is searched for (case-insensitive), recursively.
AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".aiff", ".aif", ".aifc", ".mp3", ".ogg", ".oga",
                              ".opus", ".m4a", ".aac", ".mp4", ".mov"})

#: Columns of :attr:`BatchResult.jobs`, in order.
JOBS_COLUMNS = ("source", "model", "format", "status", "job_id", "asset_id", "action", "error",
                "started_at", "finished_at", "elapsed_s", "processing_s", "outputs", "n_segments")

_MAX_RATE_LIMIT_ROUNDS = 8  # whole-file retries after the client itself gave up on 429s
_FIRST_POLL_DELAY = 1.0     # seconds between creating a job and its first poll


# --------------------------------------------------------------------------- sources
def _collect_sources(sources: Any) -> tuple[list[Path], list[str], Path | None]:
    """Files to process (deduplicated, in order), their display names, and the folder root if any."""
    import pandas as pd

    root = None
    if isinstance(sources, pd.DataFrame):
        if "path" not in sources.columns:
            raise ValidationError(f"`sources` DataFrame must have a 'path' column; it has {list(sources.columns)!r}")
        items = list(sources["path"])
    elif isinstance(sources, (str, os.PathLike)):
        text = os.fspath(sources)
        p = Path(text).expanduser()
        if p.is_dir():
            root = p
            items = sorted((f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS),
                           key=lambda f: f.relative_to(p).as_posix())
        elif p.is_file():
            items = [p]
        elif any(ch in text for ch in "*?["):
            items = sorted(Path(m) for m in _glob.glob(os.path.expanduser(text), recursive=True)
                           if Path(m).is_file())
        else:
            raise ValidationError(f"`sources` must be a folder, a glob, a file, a list of paths or a DataFrame "
                                  f"with a 'path' column; {text!r} does not exist")
    elif isinstance(sources, Iterable) and not isinstance(sources, (bytes, Mapping)):
        items = list(sources)
    else:
        raise ValidationError(f"`sources` must be a folder, a glob, a list of paths or a DataFrame with a "
                              f"'path' column, not {type(sources).__name__}")
    paths, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike)):
            raise ValidationError(f"`sources` item {i} must be a path (str or os.PathLike), not {item!r}")
        path = Path(item).expanduser()
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            paths.append(path)
    return paths, [os.fspath(p) for p in paths], root


def _check_models(models: Any, fmt: Any) -> list[tuple[str, str]]:
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(models, (list, tuple)) or not models:
        raise ValidationError(f"`models` must be a model name or a non-empty list of model names, not {models!r}")
    specs = []
    for model in dict.fromkeys(models):
        catalog.check_model(model)
        if fmt is None:
            chosen = catalog.default_format(model)
        elif isinstance(fmt, str):
            chosen = fmt
        elif isinstance(fmt, Mapping):
            chosen = fmt.get(model) or catalog.default_format(model)
        else:
            raise ValidationError(f"`format` must be None, a format name or a dict model -> format, not {fmt!r}")
        specs.append((model, catalog.check_format(model, chosen)))
    return specs


def _output_dirs(paths: list[Path], root: Path | None, download_to: Path) -> list[Path]:
    """Give each recording one folder under ``download_to``.

    The folder is :func:`shakelab.client.output_folder` relative to the batch's folder (or to
    the files' common parent folder).
    """
    from shakelab.client import output_folder

    if root is None and paths:
        root = Path(os.path.commonpath([os.path.abspath(p.parent) for p in paths]))
    taken: dict = {}
    return [download_to / output_folder(p, root=root, taken=taken) for p in paths]


# --------------------------------------------------------------------------- one file
@dataclass
class _Task:
    index: int
    path: Path
    source: str
    specs: list[tuple[str, str]]
    out_dir: Path | None
    force: bool


def _now():
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _row(task: _Task, model: str, fmt: str, **values) -> dict:
    row: dict[str, Any] = {"source": task.source, "model": model, "format": fmt, "status": "failed", "job_id": None,
           "asset_id": None, "action": None, "error": None, "started_at": None, "finished_at": None,
           "elapsed_s": float("nan"), "processing_s": float("nan"), "outputs": [], "n_segments": None}
    row.update(values)
    return row


def _is_detection(model: str) -> bool:
    return model == "music_detection"


def _finish_job(client, ledger, task: _Task, model: str, fmt: str, job) -> dict:
    """Fetch the outputs of a completed job: downloads (when asked) and music segments; return row values."""
    from shakelab.frames import segments_frame

    values: dict[str, Any] = {"processing_s": job.duration_s if job.duration_s is not None else float("nan")}
    paths: list[str] = []
    if task.out_dir is not None:
        out_dir = task.out_dir.resolve()
        recorded = [p for p in client.downloaded(job) if Path(p).is_file() and Path(p).parent == out_dir]
        paths = recorded or [os.fspath(p) for p in client.download(job, task.out_dir, folder="", progress=False)]
    values["outputs"] = paths
    segments = None
    if _is_detection(model):
        windows = ledger.lookup_result(job.id) if ledger is not None else None
        origin = client.provenance(job) if hasattr(client, "provenance") else None
        if windows is not None:
            segments = segments_frame(windows, job=job.id, source=task.source, provenance=origin)
        else:
            mine = [p for p in paths if p.endswith("." + fmt)]
            if mine:
                segments = segments_frame(Path(mine[0]), job=job.id, source=task.source, provenance=origin)
            else:
                segments = client.segments(job)
                segments = segments_frame(segments[["start_time", "end_time", "confidence"]],
                                          job=job.id, source=task.source, provenance=origin)
            if ledger is not None:  # a job's or a Tasks target's: the ledger files both by id
                with contextlib.suppress(NotInLedgerError):  # the client could not record the run: nothing to keep
                    ledger.record_result(job.id, segments[["start_time", "end_time", "confidence"]].to_dict("records"))
        values["n_segments"] = len(segments)
        values["_windows"] = segments[["start_time", "end_time", "confidence"]].to_dict("records")
    return {"values": values, "segments": segments}


def _wait(client, job, cancel: threading.Event | None, *, first_delay: float = 0.0):
    """Poll ``job`` until it finishes, with the client's poller (``Client.wait``'s schedule).

    A cancelled batch interrupts its pauses at once (:class:`~shakelab.errors.BatchCancelled`).
    """
    try:
        return client.poller(job, first_delay=first_delay, cancel=cancel).run()
    except NotFoundError as exc:  # unknown to the service after the 404 grace (or gone after being seen)
        raise ShakelabError(f"job {job.id} is unknown to the service ({exc}); "
                            f"rerun with force=True to submit it again") from None


@dataclass(frozen=True)
class _ClientSpec:
    """What a worker in another process needs to build its own client.

    A Client never pickles: it holds the token, which the worker reads from its own
    ``AUDIOSHAKE_API_TOKEN``.
    """

    base_url: str
    service: str
    ledger_path: str | None
    timeout: float
    max_retries: int
    #: the client's class (Client or TasksClient: the worker reads its own token or key)
    client_type: type | None = None


_WORKER_CLIENTS: dict[_ClientSpec, Any] = {}
_WORKER_LOCK = threading.Lock()


def _worker_client(spec: _ClientSpec):
    with _WORKER_LOCK:
        client = _WORKER_CLIENTS.get(spec)
        if client is None:
            from shakelab.client import Client
            from shakelab.ledger import Ledger

            client = (spec.client_type or Client)(
                base_url=spec.base_url, timeout=spec.timeout, max_retries=spec.max_retries,
                ledger=Ledger(spec.ledger_path) if spec.ledger_path else None, service=spec.service)
            client.transport.gate = RateGate()   # one backoff per worker process, for its lifetime
            _WORKER_CLIENTS[spec] = client
        return client


def _process_file(client, task: _Task, cancel: threading.Event | None = None) -> dict:
    """Run every model of one file; never raises for a failure of the file (it is recorded)."""
    try:
        if isinstance(client, _ClientSpec):
            client = _worker_client(client)
        rows, segments = _process_file_once(client, getattr(client, "ledger", None), task, cancel)
    except Exception as exc:  # e.g. no token on a remote worker
        rows = [_row(task, m, f, error=f"{type(exc).__name__}: {exc}") for m, f in task.specs]
        segments = []
    return {"index": task.index, "rows": rows, "segments": segments}


def _unconfirmed(client, ledger, sha: str | None, model: str, fmt: str, exc: BaseException) -> bool:
    """Tell whether POST /job (or /tasks) of this (file, model) lost its answer: now, or in an earlier run."""
    from shakelab.errors import UnconfirmedJobError, UnconfirmedTaskError

    if isinstance(exc, (UnconfirmedJobError, UnconfirmedTaskError)):
        return True
    if ledger is None or sha is None:
        return False
    asset = ledger.lookup_asset(sha256=sha, service=_service(client))
    return asset is not None and ledger.unconfirmed_attempt(
        asset_id=asset["id"], model=model, format=fmt, metadata={}, service=_service(client)) is not None


def _process_file_once(client, ledger, task: _Task, cancel):
    from shakelab.ledger import file_sha256
    from shakelab.models import Job

    rows: list[dict] = []
    segments: list[Any] = []

    def done(model, fmt, started, t0, **values):
        values.setdefault("started_at", started)
        values.setdefault("finished_at", _now())
        values.setdefault("elapsed_s", time.monotonic() - t0)
        rows.append(_row(task, model, fmt, **values))

    if not task.path.is_file():
        for model, fmt in task.specs:
            done(model, fmt, _now(), time.monotonic(), error=f"file not found: {task.source!r}")
        return rows, segments
    try:
        sha = file_sha256(task.path) if ledger is not None else None
    except OSError as exc:
        for model, fmt in task.specs:
            done(model, fmt, _now(), time.monotonic(), error=f"cannot read {task.source!r}: {exc}")
        return rows, segments

    def recorded(model: str, fmt: str) -> Any:
        """Return what the client's ledger has for this file, model and format (no request)."""
        return None if task.force or ledger is None else client.recorded(task.path, model, fmt, sha256=sha)

    runs: dict[str, Any] = {}   # started for this file, not yet polled
    for index, (model, fmt) in enumerate(task.specs):
        started, t0 = _now(), time.monotonic()
        job, action = None, "submitted"
        for round_ in range(_MAX_RATE_LIMIT_ROUNDS + 1):
            if cancel is not None and cancel.is_set():
                done(model, fmt, started, t0, status="cancelled",
                     error="batch cancelled before this job; rerun to resume")
                break
            try:
                job, action = None, "submitted"
                # the run protocol both clients share: what the ledger has (no request), else start one
                known = None if model in runs else recorded(model, fmt)  # started with an earlier model
                if known is not None:
                    job = known
                else:
                    if model not in runs:  # this model and every later one not done yet, at once:
                        # one task with a target each on the Tasks API, a job each on the Jobs API
                        rest = dict([(model, fmt)] + [(m, f) for m, f in task.specs[index + 1:]
                                                      if m not in runs and recorded(m, f) is None])
                        started_runs = client.start(task.path, list(rest), format=rest, force=task.force,
                                                    progress=False)
                        runs.update(zip(rest, started_runs, strict=True))
                    job = runs.pop(model)
                if known is not None or job.reused:
                    action = "skipped" if job.completed else "resumed"
                if not job.is_done:
                    # A job polled right after POST /job is always still queued (and the real
                    # service may even answer 404): the first look at a new job waits a moment.
                    job = _wait(client, job, cancel,
                                first_delay=_FIRST_POLL_DELAY if action == "submitted" else 0.0)
                if job.failed:
                    raise JobFailedError(job, job.error or "failed")
                finished = _finish_job(client, ledger, task, model, fmt, job)
                done(model, fmt, started, t0, status="completed", job_id=job.id, asset_id=job.asset_id, action=action,
                     _payload=job.raw if isinstance(job, Job) else None, **finished["values"])
                if finished["segments"] is not None:
                    segments.append(finished["segments"])
                break
            except RateLimitError as exc:
                # The transport retried and gave up. The service refused those requests, so
                # nothing was created: go again; the next request waits at the shared gate (the
                # one backoff), and whatever was done so far is in the ledger and is resumed.
                if round_ == _MAX_RATE_LIMIT_ROUNDS:
                    done(model, fmt, started, t0, job_id=getattr(job, "id", None), action=action,
                         error=f"rate limited: {exc}; rerun to resume")
                    break
            except JobFailedError as exc:
                failed = exc.job if getattr(exc.job, "id", None) else job
                done(model, fmt, started, t0, job_id=getattr(failed, "id", None),
                     asset_id=getattr(failed, "asset_id", None), action=action, error=exc.message,
                     processing_s=getattr(failed, "duration_s", None) or float("nan"))
                break
            except BatchCancelled as exc:  # the job keeps running, a rerun resumes it
                done(model, fmt, started, t0, status=str(getattr(exc.job, "status", "pending")),
                     job_id=getattr(exc.job, "id", None), action=action,
                     error="batch cancelled while the job was running; rerun to resume")
                break
            except (ShakelabError, ValueError, OSError) as exc:
                if job is None and _unconfirmed(client, ledger, sha, model, fmt, exc):
                    # the job may exist (and be billed): neither failed nor submitted, and not resent
                    done(model, fmt, started, t0, status=None, action="unconfirmed",
                         error=f"{type(exc).__name__}: {exc}")
                    break
                done(model, fmt, started, t0, job_id=getattr(job, "id", None),
                     action=action if job is not None else None,
                     error=f"{type(exc).__name__}: {exc}")
                break
    return rows, segments


# --------------------------------------------------------------------------- the result
@dataclass
class BatchResult:
    """What a batch did.

    Attributes
    ----------
    jobs : pandas.DataFrame
        One row per (file, model), in input order. Columns: ``source`` (string, the path as
        given or found), ``model`` (category), ``format`` (string), ``status`` (category:
        completed, failed, or the job's status when the batch was cancelled), ``job_id``
        (string), ``asset_id`` (string), ``action`` (category: ``submitted`` through the client,
        ``resumed`` an in-flight job from the ledger, ``skipped`` finished in the ledger, no
        request, ``unconfirmed`` a ``POST /job`` whose answer was lost, now or in an earlier run:
        the job may exist and be billed, so it is not sent again without ``force=True``; its
        ``status`` is <NA>), ``error`` (string), ``started_at``/``finished_at`` (datetime64[ns, UTC], this
        run's handling), ``elapsed_s`` (float64, seconds this run spent on the file),
        ``processing_s`` (float64, how long the service worked on the job), ``outputs`` (object: list of
        downloaded paths), ``n_segments`` (Int64, music segments found, 0 when the recording
        has no music; <NA> for other models and for jobs that did not complete).
    segments : pandas.DataFrame
        The music segments of every file, concatenated: the columns of
        :func:`shakelab.frames.segments_frame` with ``source`` = the file's path. A recording
        without music has no row here (the service returns ``[]``): see ``coverage``.
    coverage : pandas.DataFrame
        One row per file run through ``music_detection``, in input order, whether or not music
        was found: ``source`` (string), ``job_id`` (string), ``finding`` (category: ``music
        found``, ``no music found``, or ``no result`` for a failed, missing or cancelled job),
        ``music_seconds``, ``duration`` (the recording's length, read from the file), ``share``
        (float64; NaN without a result), ``error`` (string).
    stats : dict
        ``files``, ``jobs``, ``completed``, ``failed``, ``submitted``, ``resumed``, ``skipped``, ``unconfirmed``,
        ``rate_limited`` (429 answers seen), ``throttled_s`` (worker-seconds held by the shared
        backoff), ``wall_s``.

    Examples
    --------
    >>> import os, shutil
    >>> os.mkdir("takes")
    >>> _ = shutil.copy("song.wav", "takes/song.wav")
    >>> _ = open("takes/broken.wav", "w").write("not audio")
    >>> result = run("takes/", ["music_detection"], progress=False)
    >>> result.ok, result.jobs["status"].tolist()
    (False, ['failed', 'completed'])
    >>> result.failed[["source", "error"]].values.tolist()   # doctest: +ELLIPSIS
    [['takes/broken.wav', "'broken.wav' is not a readable audio file: it holds plain text ..."]]
    """

    jobs: Any
    segments: Any
    stats: dict = field(default_factory=dict)
    coverage: Any = None

    @property
    def failed(self):
        """The rows of :attr:`jobs` that did not complete."""
        return self.jobs[self.jobs["status"] != "completed"]

    @property
    def ok(self) -> bool:
        """True when every (file, model) completed."""
        return bool((self.jobs["status"] == "completed").all())

    def __repr__(self) -> str:
        s = self.stats
        return (f"BatchResult({s.get('jobs', len(self.jobs))} jobs over {s.get('files', '?')} files: "
                f"{s.get('completed', 0)} completed, {s.get('failed', 0)} failed; "
                f"{len(self.segments)} segments)")


def _jobs_frame(rows: list[dict]):
    import pandas as pd

    def col(name):
        return [r[name] for r in rows]

    def ts(name):
        return pd.Series(pd.to_datetime(pd.Series(col(name), dtype=object), utc=True)).astype("datetime64[ns, UTC]")

    statuses = col("status")
    frame = pd.DataFrame({
        "source": pd.array(col("source"), dtype="string"),
        "model": pd.Categorical(col("model")),
        "format": pd.array(col("format"), dtype="string"),
        "status": pd.Categorical(statuses, categories=sorted({"completed", "failed", *statuses} - {None})),
        "job_id": pd.array(col("job_id"), dtype="string"),
        "asset_id": pd.array(col("asset_id"), dtype="string"),
        "action": pd.Categorical(col("action"), categories=["submitted", "resumed", "skipped", "unconfirmed"]),
        "error": pd.array(col("error"), dtype="string"),
        "started_at": ts("started_at"),
        "finished_at": ts("finished_at"),
        "elapsed_s": pd.array(col("elapsed_s"), dtype="float64"),
        "processing_s": pd.array([float("nan") if v is None else v for v in col("processing_s")], dtype="float64"),
        "outputs": pd.Series(col("outputs"), dtype=object),
        "n_segments": pd.array(col("n_segments"), dtype="Int64"),
    }, columns=list(JOBS_COLUMNS))
    return frame


# --------------------------------------------------------------------------- run
def run(sources: Any, models: str | Sequence[str], *, client=None, format: str | Mapping[str, str] | None = None,
        concurrency: int = 4, download_to: str | os.PathLike | None = None, progress: bool = True,
        executor: cf.Executor | None = None, force: bool = False) -> BatchResult:
    """Run ``models`` over many recordings, resumably.

    Each file is uploaded once and gets one job per model. Files are processed ``concurrency``
    at a time; a failure in one (missing, unreadable, rejected by the service, failed job) is
    recorded in its rows and never stops the others. When the service answers 429, every
    worker holds back for the wait it asked for (one shared backoff: the client's transport
    retries that request after the same pause, :class:`~shakelab.transport.RateGate`). Every
    upload and job is recorded in the client's ledger, so calling ``run`` again with the same
    arguments after a crash, a kernel restart or a kill polls the jobs still in flight instead
    of resubmitting them and skips the finished ones (music-detection windows are kept in the
    ledger too: a finished batch reruns with no request at all).

    Parameters
    ----------
    sources : str, PathLike, list of paths or pandas.DataFrame
        A folder (searched recursively for :data:`AUDIO_EXTENSIONS`), a glob
        (``"recordings/**/*.wav"``), one file, a list of paths, or a DataFrame with a ``path``
        column. Duplicates are processed once.
    models : str or list of str
        Model names (``"music_detection"``, ``"vocals"``, ...); a comma-separated string works.
    client : shakelab.Client, optional
        Default: :func:`shakelab.connect` (the real service when ``AUDIOSHAKE_API_TOKEN`` is set,
        else the embedded local server). Resume needs the client's ledger (``Client(...,
        ledger=...)``; ``connect()`` has the default one); without one, a rerun resubmits.
    format : str or dict, optional
        Output format for every model, or a dict model -> format; default: each model's natural
        format (json for music_detection, wav for stems).
    concurrency : int
        Files in flight at once (default 4).
    download_to : str or PathLike, optional
        Download every output under this folder, one subfolder per file (mirroring the source
        folder's tree). Default: download nothing; detection JSON is still fetched.
    progress : bool
        One ``tqdm.auto`` bar over (file, model) jobs, with queued / running / done / failed
        counts.
    executor : concurrent.futures.Executor, optional
        Where the per-file work runs; default a thread pool of ``concurrency`` workers. At most
        ``concurrency`` files are handed to it at a time. A ``ThreadPoolExecutor`` shares
        ``client``; any other executor (processes, Dask) runs each file in a worker that builds
        its own client for ``client.base_url`` with the token from the worker's
        ``AUDIOSHAKE_API_TOKEN`` (a Client never pickles: it holds the token) and the same
        ledger path.
    force : bool
        Resubmit even what the ledger says is done or in flight (new, billed jobs).

    Returns
    -------
    BatchResult
        ``.jobs`` (one row per (file, model)), ``.segments`` (the music segments of all
        files), ``.coverage`` (one row per file run through music detection, a recording without
        music included), ``.stats``.

    Raises
    ------
    ValidationError
        Bad ``sources``, ``models``, ``format``, ``concurrency`` or ``executor``, before any request.

    Notes
    -----
    **Scaling out with Dask.** A user who outgrows one machine can pass Dask's executor::

        from dask.distributed import Client as DaskClient
        dask = DaskClient("scheduler-address:8786")
        result = batch.run("recordings/", ["vocals"], executor=dask.get_executor(),
                           concurrency=64)

    Each file's work then runs on a Dask worker, which needs shakelab installed, the
    recordings at the same paths (a shared filesystem) and ``AUDIOSHAKE_API_TOKEN`` in its
    environment: the token is never pickled, so each worker process builds its own client
    (same base URL, timeout, retries) once and reuses it. The shared 429 backoff then holds
    per worker process. The ledger travels as its path: on one machine (``LocalCluster``)
    every worker writes the same file, so everything resumes as with threads; on a cluster
    each worker opens that path on its own disk (keep it off network filesystems, where
    SQLite is not safe), and the driver still records every finished job (payload, outputs,
    detection windows) in its own ledger as results come back, so a rerun skips finished
    work, while jobs in flight when a run died are resumed only from the workers' ledgers.
    Ctrl-C cancels the files not started yet; files already on a worker run to the end.

    Examples
    --------
    >>> result = run(["song.wav"], ["music_detection", "vocals"], concurrency=2,
    ...              download_to="out/stems", progress=False)
    >>> result.jobs[["model", "status", "n_segments"]]
                 model     status  n_segments
    0  music_detection  completed           1
    1           vocals  completed        <NA>
    >>> result.jobs["outputs"].tolist()   # one folder per recording
    [['out/stems/song/music_detection.json'], ['out/stems/song/vocals.wav']]
    """
    import pandas as pd

    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValidationError(f"`concurrency` must be a positive integer, not {concurrency!r}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise ValidationError(f"`executor` must be a concurrent.futures.Executor, not {type(executor).__name__}")
    if download_to is not None and not isinstance(download_to, (str, os.PathLike)):
        raise ValidationError(f"`download_to` must be a folder path, not {download_to!r}")
    specs = _check_models(models, format)
    paths, names, root = _collect_sources(sources)
    if client is None:
        from shakelab.client import connect

        client = connect()
    ledger = getattr(client, "ledger", None)
    if ledger is None:
        warnings.warn("the client has no ledger: this batch cannot be resumed and a rerun resubmits every "
                      "job; use shakelab.connect() or Client(..., ledger=shakelab.Ledger())", stacklevel=2)
    out_root = Path(download_to).expanduser() if download_to is not None else None
    out_dirs = _output_dirs(paths, root, out_root) if out_root is not None else [None] * len(paths)
    tasks = [_Task(i, p, n, specs, d, bool(force))
             for i, (p, n, d) in enumerate(zip(paths, names, out_dirs, strict=True))]

    gate = RateGate()
    cancel = threading.Event()
    t0 = time.monotonic()
    results: dict[int, dict] = {}
    counts = {"queued": len(tasks) * len(specs), "running": 0, "done": 0, "failed": 0}
    bar = None
    if progress and tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks) * len(specs), desc="batch", unit="job", dynamic_ncols=True)
        bar.set_postfix(counts, refresh=True)
    own_executor = executor is None
    pool = executor or cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="shakelab-batch")
    in_process = isinstance(pool, cf.ThreadPoolExecutor)
    spec = None if in_process else _ClientSpec(
        base_url=str(client.base_url), service=_service(client),
        ledger_path=os.fspath(ledger.path) if ledger is not None else None,
        timeout=float(getattr(client, "timeout", 30.0)), max_retries=int(getattr(client, "max_retries", 4)),
        client_type=type(client))
    try:
        with _gated(client, gate) as gate:
            pending: dict[cf.Future, _Task] = {}
            queue = list(tasks)
            while queue or pending:
                while queue and len(pending) < concurrency:
                    task = queue.pop(0)
                    fut = pool.submit(_process_file, client if in_process else spec, task,
                                      cancel if in_process else None)
                    pending[fut] = task
                    counts["queued"] -= len(specs)
                    counts["running"] += len(specs)
                    if bar is not None:
                        bar.set_postfix(counts, refresh=True)
                finished, _ = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    task = pending.pop(fut)
                    try:
                        out = fut.result()
                    except Exception as exc:  # a worker that could not even start (e.g. unpicklable client)
                        out = {"index": task.index, "segments": [],
                               "rows": [_row(task, m, f, error=f"{type(exc).__name__}: {exc}") for m, f in task.specs]}
                    results[task.index] = out
                    if not in_process and ledger is not None:
                        _record_remote(ledger, out, service=_service(client))
                    n_ok = sum(r["status"] == "completed" for r in out["rows"])
                    counts["running"] -= len(specs)
                    counts["done"] += n_ok
                    counts["failed"] += len(out["rows"]) - n_ok
                    if bar is not None:
                        bar.set_postfix(counts, refresh=False)
                        bar.update(len(out["rows"]))
    except BaseException:
        cancel.set()
        if own_executor:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if bar is not None:
            bar.set_postfix(counts, refresh=True)
            bar.close()
    if own_executor:
        pool.shutdown(wait=True)

    rows = [r for i in sorted(results) for r in results[i]["rows"]]
    frames = [s for i in sorted(results) for s in results[i]["segments"] if len(s)]
    from shakelab.frames import segments_frame

    segments = pd.concat(frames, ignore_index=True) if frames else segments_frame([])
    jobs = _jobs_frame(rows)
    coverage = _coverage(jobs, segments)
    completed = int((jobs["status"] == "completed").sum())
    actions = jobs["action"].astype(object)
    unconfirmed = int((jobs["action"].astype(object) == "unconfirmed").sum())
    stats = {"files": len(tasks), "jobs": len(jobs), "completed": completed,
             "failed": len(jobs) - completed - unconfirmed,
             "submitted": int((actions == "submitted").sum()), "resumed": int((actions == "resumed").sum()),
             "skipped": int((actions == "skipped").sum()),
             "unconfirmed": unconfirmed,
             "rate_limited": gate.hits, "throttled_s": round(gate.waited_s, 3),
             "wall_s": round(time.monotonic() - t0, 3)}
    return BatchResult(jobs=jobs, segments=segments, stats=stats, coverage=coverage)


FINDINGS = ("music found", "no music found", "no result")


def _coverage(jobs, segments):
    """One row per music_detection (file, job): music found, no music found (a result), or no result."""
    import pandas as pd

    from shakelab import segments as sg
    from shakelab.audio import info

    det = jobs[jobs["model"].astype(object) == "music_detection"]
    done = det[det["status"] == "completed"]
    lengths = {}
    for src in done["source"]:
        try:
            lengths[src] = float(info(src).duration)
        except Exception:  # the file went away after its job: no length, no share
            lengths[src] = float("nan")
    known = {k: v for k, v in lengths.items() if v == v}
    found = sg.coverage(segments[segments["source"].isin(list(known))], duration=known) if known else None
    music = dict(zip(found["source"], found["music_seconds"], strict=True)) if found is not None else {}
    rows = []
    for r in det.itertuples(index=False):
        if r.status != "completed":
            rows.append((r.source, r.job_id, "no result", float("nan"), float("nan"), r.error))
            continue
        seconds = music.get(r.source, float("nan"))
        if seconds != seconds:  # length unknown: the segments still say whether music was found
            seconds = float(segments.loc[segments["source"] == r.source, "duration"].sum())
        rows.append((r.source, r.job_id, "music found" if seconds > 0 else "no music found", seconds,
                     lengths[r.source], r.error))
    frame = pd.DataFrame({
        "source": pd.array([r[0] for r in rows], dtype="string"),
        "job_id": pd.array([r[1] for r in rows], dtype="string"),
        "finding": pd.Categorical([r[2] for r in rows], categories=list(FINDINGS)),
        "music_seconds": pd.array([r[3] for r in rows], dtype="float64"),
        "duration": pd.array([r[4] for r in rows], dtype="float64"),
        "error": pd.array([r[5] for r in rows], dtype="string"),
    })
    frame.insert(5, "share", (frame["music_seconds"] / frame["duration"].where(frame["duration"] > 0))
                 .astype("float64"))
    return frame


def _gated(client, gate: RateGate):
    """Every request of ``client`` through ``gate`` (or the gate of a batch already running on it)."""
    import contextlib

    transport = getattr(client, "transport", None)
    return transport.gated(gate) if transport is not None else contextlib.nullcontext(gate)


def _service(client) -> str:
    """Return the ledger's key for the client's service (a local server's id, else the base URL)."""
    return str(getattr(client, "service", None) or client.base_url)


def _record_remote(ledger, out: dict, *, service: str) -> None:
    """Work done in another process: keep the driver's ledger complete for the next rerun."""
    for row in out["rows"]:
        if not row.get("_payload"):
            continue
        job_id = str(row["_payload"].get("id"))
        ledger.record_job(row["_payload"], service=service, source_path=os.path.abspath(row["source"]))
        if row.get("outputs"):
            ledger.record_outputs(job_id, row["outputs"])
        if row.get("_windows") is not None:
            ledger.record_result(job_id, row["_windows"])


# --------------------------------------------------------------------------- CLI
def main(args) -> int:
    """``shakelab batch SOURCE --models M1,M2 [--format F] [--out OUT] [--concurrency N] [--api jobs|tasks]``.

    Runs :func:`run` with a progress bar, downloads the outputs under ``OUT``, and writes the
    summary ``OUT/jobs.csv`` (one row per (file, model)), ``OUT/segments.csv`` (the music
    segments) and, for ``music_detection``, ``OUT/coverage.csv`` (one row per file: music
    found, no music found, or no result). Returns 0 when every job completed, 1 when some
    failed (they are listed).

    Examples
    --------
    $ shakelab batch recordings/ --models music_detection --out out/batch
    """
    out = Path(args.out)
    client = None
    if getattr(args, "api", None) is not None:
        from shakelab.client import connect

        client = connect(api=args.api)
    result = run(args.source, args.models, client=client, format=args.format, concurrency=args.concurrency,
                 download_to=out, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    jobs = result.jobs.copy()
    jobs["outputs"] = jobs["outputs"].map(lambda paths: ";".join(paths))
    jobs.to_csv(out / "jobs.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    result.segments.to_csv(out / "segments.csv", index=False)
    if len(result.coverage):
        result.coverage.to_csv(out / "coverage.csv", index=False)
    s = result.stats
    print(f"{s['jobs']} jobs over {s['files']} files: {s['completed']} completed, {s['failed']} failed "
          f"({s['submitted']} submitted, {s['resumed']} resumed, {s['skipped']} already done); "
          f"summary in {out / 'jobs.csv'}")
    for row in result.failed.itertuples():
        print(f"  failed: {row.source} [{row.model}]: {row.error}")
    return 0 if result.ok else 1
