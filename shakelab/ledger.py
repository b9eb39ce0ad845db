"""A local SQLite record of every upload and every job: no duplicate jobs, resume after a crash.

The real service bills every job. A notebook kernel that restarts, a wait that times out or a
batch that is killed loses track of jobs already paid for; the ledger remembers them. The
client consults it when given one (``Client(..., ledger=...)``; ``connect()`` uses the default
ledger): the same file is not uploaded twice to the same service, and ``submit`` for a
(file, model, format, metadata) already completed or still in flight returns the recorded job
instead of creating a new one. :mod:`shakelab.batch` uses it to resume a killed batch.
"The same service" is ``client.service``: a remote service's base URL, a shakelab local
server's id (stable across processes, restarts and port changes).

One file, safe when several threads and processes use it at once: SQLite in WAL mode with a
busy timeout; every write is one short ``BEGIN IMMEDIATE`` transaction.

Where the file lives: the ``path`` argument, else the ``SHAKELAB_LEDGER`` environment
variable, else ``<user cache dir>/shakelab/ledger.sqlite`` (platformdirs).

Examples
--------
>>> import shakelab
>>> from shakelab.ledger import file_sha256
>>> client = shakelab.connect()   # its ledger: SHAKELAB_LEDGER, else the user cache
>>> asset = client.upload("song.wav", progress=False)
>>> client.ledger.lookup_asset(sha256=file_sha256("song.wav"), service=client.service)["id"] == asset.id
True
>>> jobs = client.submit("song.wav", ["vocals"], progress=False)
>>> client.ledger.jobs_frame()[["model", "status", "source_name"]]
    model     status source_name
0  vocals  completed    song.wav
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Any, BinaryIO

from shakelab.errors import MalformedResponseError, NotInLedgerError, ValidationError
from shakelab.models import FAILED_STATUSES, TERMINAL_STATUSES, Job, JobStatus

__all__ = ["FAILED_STATUSES", "TERMINAL_STATUSES", "Ledger", "default_path", "file_sha256"]

# 2: the key column ``base_url`` became ``service`` (a local server's id, else the URL);
# 3: the ``attempts`` table (POST /job attempts whose answer may have been lost)
# 4: the Tasks API: ``assets.api`` (the two APIs' uploads kept apart, also on one local server) and
#    the ``tasks`` table (one row per POST /tasks attempt, tagged, then the task as last seen)
# 5: the ``targets`` table (one row per target of a recorded task: its request, its cached result), so a
#    target is found by (file, model, format) in a task of several and its music segments are kept as a
#    job's are; filled from the tasks already recorded when a schema-4 ledger is opened
_SCHEMA_VERSION = 5
_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    service     TEXT NOT NULL,
    api         TEXT NOT NULL DEFAULT 'jobs',
    sha256      TEXT NOT NULL,
    size        INTEGER,
    path        TEXT,
    name        TEXT,
    asset_id    TEXT NOT NULL,
    payload     TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (service, api, sha256)
);
CREATE INDEX IF NOT EXISTS assets_by_id ON assets (service, asset_id);
CREATE INDEX IF NOT EXISTS assets_by_sha ON assets (sha256);
CREATE TABLE IF NOT EXISTS jobs (
    job_id       TEXT PRIMARY KEY,
    service      TEXT NOT NULL,
    asset_id     TEXT,
    model        TEXT,
    format       TEXT,
    metadata_key TEXT NOT NULL,
    status       TEXT,
    error        TEXT,
    source_path  TEXT,
    payload      TEXT NOT NULL,
    outputs      TEXT NOT NULL DEFAULT '[]',
    result       TEXT,
    first_seen   REAL NOT NULL,
    last_seen    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (service, asset_id, model, format, metadata_key);
CREATE TABLE IF NOT EXISTS attempts (
    attempt_id   TEXT PRIMARY KEY,
    service      TEXT NOT NULL,
    asset_id     TEXT NOT NULL,
    model        TEXT NOT NULL,
    format       TEXT NOT NULL,
    metadata_key TEXT NOT NULL,
    source       TEXT,
    sent_at      REAL NOT NULL,
    state        TEXT NOT NULL,
    job_id       TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_key ON attempts (service, asset_id, model, format, metadata_key, state);
CREATE TABLE IF NOT EXISTS tasks (
    attempt_id   TEXT PRIMARY KEY,
    service      TEXT NOT NULL,
    task_id      TEXT UNIQUE,
    source_key   TEXT NOT NULL,
    targets_key  TEXT NOT NULL,
    metadata_key TEXT NOT NULL,
    sha256       TEXT,
    source_path  TEXT,
    state        TEXT NOT NULL,
    status       TEXT,
    error        TEXT,
    payload      TEXT,
    outputs      TEXT NOT NULL DEFAULT '[]',
    sent_at      REAL NOT NULL,
    created_at   REAL,
    last_seen    REAL
);
CREATE INDEX IF NOT EXISTS tasks_by_key ON tasks (service, source_key, targets_key, metadata_key);
CREATE INDEX IF NOT EXISTS tasks_by_sha ON tasks (sha256);
CREATE TABLE IF NOT EXISTS targets (
    target_id    TEXT PRIMARY KEY,
    task_id      TEXT NOT NULL,
    target_key   TEXT NOT NULL,
    result       TEXT
);
CREATE INDEX IF NOT EXISTS targets_by_task ON targets (task_id);
"""
#: The columns of ``assets`` before schema 4 (no ``api``): copied into the rebuilt table.
_ASSET_COLUMNS = "service, sha256, size, path, name, asset_id, payload, recorded_at"
#: Seconds the Tasks API keeps an asset and a task's results (72 h); a record older than this is
#: never reused. A margin of one hour keeps a reused asset alive until its task is done.
TASKS_LIFETIME_S = 72 * 3600.0
_REUSE_MARGIN_S = 3600.0
#: What each API's records are kept under (``api`` of ``assets``; jobs vs tasks tables).
APIS = ("jobs", "tasks")

_BUSY_TIMEOUT_MS = 60_000


def default_path() -> Path:
    """Return the ledger file used when no path is given.

    ``SHAKELAB_LEDGER`` when set, else ``<user cache dir>/shakelab/ledger.sqlite``.

    Examples
    --------
    >>> import os
    >>> default_path() == Path(os.environ["SHAKELAB_LEDGER"])   # set for the doctests
    True
    >>> default_path().name
    'ledger.sqlite'
    """
    env = os.environ.get("SHAKELAB_LEDGER")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("shakelab", appauthor=False)) / "ledger.sqlite"


def file_sha256(source: str | os.PathLike | BinaryIO, *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's content, streamed in chunks (flat memory whatever the size).

    Parameters
    ----------
    source : str, PathLike or binary file object
        A file object is read from its current position and rewound there afterwards.

    Examples
    --------
    >>> import io
    >>> file_sha256(io.BytesIO(b"abc"))[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    if not isinstance(source, (str, os.PathLike)):
        start = source.tell() if hasattr(source, "tell") else None
        for block in iter(lambda: source.read(chunk_size), b""):
            digest.update(block)
        if start is not None:
            source.seek(start)
        return digest.hexdigest()
    with open(os.fspath(source), "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _api(api: str) -> str:
    if api not in APIS:
        raise ValidationError(f"`api` must be 'jobs' or 'tasks', not {api!r}")
    return api


def _norm_service(service: str) -> str:
    if not isinstance(service, str) or not service:
        raise ValidationError(f"`service` must be a non-empty string (a base URL or a local server id), "
                              f"not {service!r}")
    return service.rstrip("/")


def _metadata_key(metadata: dict | None) -> str:
    """Canonical form of a job's extra metadata: no name/format, no None values, sorted keys."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValidationError(f"`metadata` must be a dict, not {metadata!r}")
    extra = {k: v for k, v in metadata.items() if k not in ("name", "format") and v is not None}
    return json.dumps(extra, sort_keys=True, separators=(",", ":"), default=str)


def _job_fields(payload: Any) -> tuple[dict, dict]:
    """Return the job's API JSON (unwrapped) and the columns the ledger keeps, read through :class:`Job`."""
    if not isinstance(payload, dict):
        raise ValidationError(f"`payload` must be a job's API JSON (a dict), not {type(payload).__name__}")
    try:
        job = Job.from_payload(payload)
    except MalformedResponseError:
        raise ValidationError(f"`payload` must carry the job's 'id'; got keys {sorted(payload)}") from None
    raw = job.raw.get("status")
    # a status the models do not know is kept as the service wrote it (lower case), never as "unknown"
    status = None if raw is None else job.status.value if job.status is not JobStatus.UNKNOWN else str(raw).lower()
    return job.raw, {
        "asset_id": job.asset_id,
        "model": job.model,
        "format": job.format,
        "metadata_key": _metadata_key(job.metadata),
        "status": status,
        "error": job.error,
    }


def _targets_key(targets: Any) -> str:
    """Canonical form of a request's targets: order of targets and of formats does not matter."""
    if not isinstance(targets, (list, tuple)):
        raise ValidationError(f"`targets` must be a list of target dicts, not {targets!r:.80}")
    canon = []
    for t in targets:
        if not isinstance(t, dict):
            raise ValidationError(f"`targets` must be a list of target dicts, not {targets!r:.80}")
        item = {k: v for k, v in t.items() if v is not None and k not in ("id", "status", "output", "cost",
                                                                          "duration", "error", "taskId",
                                                                          "createdAt", "updatedAt", "url")}
        if isinstance(item.get("formats"), (list, tuple)):
            item["formats"] = sorted(item["formats"])
        canon.append(item)
    canon.sort(key=lambda t: json.dumps(t, sort_keys=True, default=str))
    return json.dumps(canon, sort_keys=True, separators=(",", ":"), default=str)


def _user_key(metadata: Any) -> str:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), default=str)


def _task_fields(payload: Any) -> dict:
    from shakelab.models import Task

    task = Task.from_payload(payload)  # MalformedResponseError names a missing id
    if not task.is_done:
        status = "processing"
    elif task.failed_targets:
        status = "failed"
    else:
        status = "completed"
    errors = [f"{t.name}: {t.error}" for t in task.failed_targets]
    source_key = f"asset:{task.asset_id}" if task.asset_id else f"url:{task.url}"
    return {"task_id": task.id, "attempt": task.attempt, "status": status, "error": "; ".join(errors) or None,
            "payload": json.dumps(task.raw, default=str), "source_key": source_key,
            "targets_key": _targets_key([dict(t.raw) for t in task.targets]),
            "metadata_key": _user_key(task.user_metadata),
            "created_at": task.created_at.timestamp() if task.created_at else None}


class Ledger:
    """The local record of uploads and jobs, one SQLite file shared by threads and processes.

    Parameters
    ----------
    path : str or PathLike, optional
        The SQLite file (created with its folder when missing). Default: ``SHAKELAB_LEDGER``,
        else ``<user cache dir>/shakelab/ledger.sqlite``.

    Notes
    -----
    Every record is filed under a ``service`` key, what :attr:`shakelab.Client.service` gives:
    the base URL of a remote service, the server id of a shakelab local server (its data dir's
    ``clientId``), so a local server is the same service from any process, after a restart and
    after it moved to another port.

    Tables: ``assets`` (one row per (service, content SHA-256): size, path, name, asset id, the
    upload payload) and ``jobs`` (one row per job id: service, asset id, model, format, extra
    metadata, status, error, source path, the job payload as last seen, output paths, cached
    result, first/last seen), ``attempts`` (``POST /job`` attempts), ``tasks`` (one row per
    ``POST /tasks`` attempt, then the task as last seen) and ``targets`` (one row per target of a
    recorded task: its request, its cached result). Each thread and each process gets its own connection; the
    object pickles as its path, so it can travel to executor workers.

    Examples
    --------
    >>> ledger = Ledger("ledger.sqlite")
    >>> ledger.record_asset(sha256="ab12", size=10, path="a.wav", service="http://x",
    ...                     payload={"id": "as1", "name": "a"})
    >>> ledger.lookup_asset(sha256="ab12", service="http://x")["id"]
    'as1'
    >>> ledger.lookup_asset(sha256="ab12", service="http://y") is None   # another service
    True
    """

    def __init__(self, path: str | os.PathLike | None = None):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ValidationError(f"`path` must be a str or os.PathLike, not {path!r}")
        self.path = Path(path).expanduser() if path is not None else default_path()
        if self.path.exists() and self.path.is_dir():
            raise ValidationError(f"`path` must be a file, not the directory {os.fspath(self.path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._init_schema()

    # -- plumbing ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Ledger({os.fspath(self.path)!r})"

    def __getstate__(self) -> dict:
        return {"path": os.fspath(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.path = Path(state["path"])
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(os.fspath(self.path), timeout=_BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    @staticmethod
    def _retry(fn, attempts: int = 50):
        # The busy handler covers ordinary lock waits; switching to WAL and a few schema
        # operations can still answer "database is locked" at once, so retry those briefly.
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or i == attempts - 1:
                    raise
                time.sleep(0.02 * (i + 1))

    def _write(self, fn):
        """Run ``fn(conn)`` inside one ``BEGIN IMMEDIATE`` transaction."""
        conn = self._conn()

        def attempt():
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out

        return self._retry(attempt)

    def _init_schema(self) -> None:
        def create(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 1:  # rows keep their URL keys: a local server's old random ports never match again
                for table in ("assets", "jobs"):
                    conn.execute(f"ALTER TABLE {table} RENAME COLUMN base_url TO service")
            columns = [r[1] for r in conn.execute("PRAGMA table_info(assets)")]
            if columns and "api" not in columns:  # before 4: rebuild with the API in the key
                conn.execute(f"ALTER TABLE assets RENAME TO assets_v{version}")
                conn.execute("DROP INDEX IF EXISTS assets_by_id")
            if version < _SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if columns and "api" not in columns:
                    conn.execute(f"INSERT INTO assets ({_ASSET_COLUMNS}, api) SELECT {_ASSET_COLUMNS}, 'jobs'"
                                 f" FROM assets_v{version}")
                    conn.execute(f"DROP TABLE assets_v{version}")
                if version == 4:  # before 5: the targets of the tasks already recorded
                    for (task_id,) in conn.execute("SELECT task_id FROM tasks WHERE task_id IS NOT NULL").fetchall():
                        self._index_targets(conn, task_id)
                conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

        self._write(create)

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- assets -----------------------------------------------------------------------------
    def lookup_asset(self, *, sha256: str, service: str, api: str = "jobs") -> dict | None:
        """Return the upload payload recorded for this content on this service, or None.

        ``api="tasks"``: an upload through the Tasks API (``POST /assets``), and only while the
        service still keeps it (recorded less than 71 of its 72 hours ago).

        Returns
        -------
        dict or None
            The asset's API payload as uploaded: ``{name, id, fileType, format, link}``.

        Examples
        --------
        >>> asset = client.upload("song.wav", progress=False)
        >>> ledger.lookup_asset(sha256=file_sha256("song.wav"), service=client.service)["name"]
        'song.wav'
        >>> ledger.lookup_asset(sha256=file_sha256("song.wav"), service=client.service, api="tasks") is None
        True
        """
        oldest = time.time() - (TASKS_LIFETIME_S - _REUSE_MARGIN_S) if _api(api) == "tasks" else float("-inf")
        row = self._conn().execute(
            "SELECT payload FROM assets WHERE service=? AND api=? AND sha256=? AND recorded_at>=?",
            (_norm_service(service), api, str(sha256), oldest),
        ).fetchone()
        return json.loads(row["payload"]) if row else None

    def record_asset(self, *, sha256: str, size: int, path: str | None, service: str,
                     payload: dict, api: str = "jobs") -> None:
        """Record an upload (replacing an older record of the same content on the same service).

        Examples
        --------
        >>> ledger.record_asset(sha256="ab12", size=10, path="a.wav", service="http://x",
        ...                     payload={"id": "as1", "name": "a"})
        >>> ledger.assets_frame()[["asset_id", "name", "size", "api"]]
          asset_id name  size   api
        0      as1    a    10  jobs
        """
        if not isinstance(payload, dict) or not payload.get("id"):
            raise ValidationError(f"`payload` must be an upload's API JSON with an 'id', not {payload!r}")
        if not isinstance(sha256, str) or not sha256:
            raise ValidationError(f"`sha256` must be a hex digest string, not {sha256!r}")
        row = (_norm_service(service), _api(api), sha256, int(size) if size is not None else None,
               os.fspath(path) if path is not None else None, payload.get("name"),
               str(payload["id"]), json.dumps(payload, default=str), time.time())
        self._write(lambda c: c.execute(
            "INSERT INTO assets (service, api, sha256, size, path, name, asset_id, payload, recorded_at)"
            " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(service, api, sha256) DO UPDATE SET"
            " size=excluded.size, path=COALESCE(excluded.path, assets.path), name=excluded.name,"
            " asset_id=excluded.asset_id, payload=excluded.payload, recorded_at=excluded.recorded_at",
            row))

    # -- jobs -------------------------------------------------------------------------------
    def lookup_job(self, *, asset_id: str, model: str, format: str, metadata: dict | None,
                   service: str) -> dict | None:
        """Return the newest recorded job for this key that has not failed, or None.

        ``metadata`` may be the job's whole ``metadata`` (``name`` and ``format`` are ignored
        there) or only its extra keys; keys whose value is None are ignored.

        Returns
        -------
        dict or None
            ``{"job_id", "status", "payload", "outputs", "error", "source_path"}``; ``payload``
            is the job's API JSON as last seen, ``outputs`` the recorded local output paths.

        Examples
        --------
        >>> ledger.record_job({"id": "j1", "status": "completed", "assetId": "as1",
        ...                 "metadata": {"name": "vocals", "format": "wav"}}, service="http://x")
        >>> ledger.lookup_job(asset_id="as1", model="vocals", format="wav",
        ...                   metadata={}, service="http://x")["job_id"]
        'j1'
        >>> ledger.lookup_job(asset_id="as1", model="vocals", format="flac", metadata={}, service="http://x")
        """
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE service=? AND asset_id=? AND model=? AND format=?"
            " AND metadata_key=? ORDER BY first_seen DESC, rowid DESC",
            (_norm_service(service), str(asset_id), model, format, _metadata_key(metadata)),
        ).fetchall()
        for row in rows:
            if row["status"] not in FAILED_STATUSES:
                return self._job_dict(row)
        return None

    # -- POST /job attempts (the lost-answer window) ----------------------------------------
    def record_attempt(self, *, asset_id: str, model: str, format: str, metadata: dict | None, service: str,
                       source: str | None = None, force: bool = False) -> str:
        """Record that a ``POST /job`` is about to be sent, before it is; returns the attempt's id.

        With ``force``, earlier unconfirmed attempts for the same key are marked ``forced`` (the
        user chose to send again), so they stop blocking.

        Examples
        --------
        >>> key = dict(asset_id="as1", model="vocals", format="wav", metadata={}, service="http://x")
        >>> aid = ledger.record_attempt(**key, source="a.wav")
        >>> ledger.unconfirmed_attempt(**key)["attempt_id"] == aid
        True
        """
        import secrets

        attempt_id = secrets.token_hex(12)
        key = (_norm_service(service), str(asset_id), model, format, _metadata_key(metadata))

        def insert(conn):
            if force:
                conn.execute("UPDATE attempts SET state='forced' WHERE service=? AND asset_id=? AND model=?"
                             " AND format=? AND metadata_key=? AND state='sent'", key)
            conn.execute("INSERT INTO attempts (attempt_id, service, asset_id, model, format, metadata_key, source,"
                         " sent_at, state) VALUES (?,?,?,?,?,?,?,?,'sent')", (attempt_id, *key, source, time.time()))

        self._write(insert)
        return attempt_id

    def settle_attempt(self, attempt_id: str, job_id: str | None) -> None:
        """Settle an attempt whose answer arrived: job ``job_id`` exists (``confirmed``), or None: nothing created."""
        def update(conn):
            if job_id is None:
                conn.execute("DELETE FROM attempts WHERE attempt_id=?", (attempt_id,))
            else:
                conn.execute("UPDATE attempts SET state='confirmed', job_id=? WHERE attempt_id=?",
                             (str(job_id), attempt_id))

        self._write(update)

    def unconfirmed_attempt(self, *, asset_id: str, model: str, format: str, metadata: dict | None,
                            service: str) -> dict | None:
        """Return the newest attempt for this key whose answer never arrived, or None.

        Returns
        -------
        dict or None
            ``{"attempt_id", "source", "sent_at"}`` (``sent_at`` in Unix seconds).
        """
        row = self._conn().execute(
            "SELECT attempt_id, source, sent_at FROM attempts WHERE service=? AND asset_id=? AND model=?"
            " AND format=? AND metadata_key=? AND state='sent' ORDER BY sent_at DESC LIMIT 1",
            (_norm_service(service), str(asset_id), model, format, _metadata_key(metadata))).fetchone()
        return dict(row) if row else None

    def get_job(self, job_id: str) -> dict | None:
        """Return the record of one job by id (same keys as :meth:`lookup_job`), or None."""
        row = self._conn().execute("SELECT * FROM jobs WHERE job_id=?", (str(job_id),)).fetchone()
        return self._job_dict(row) if row else None

    @staticmethod
    def _job_dict(row: sqlite3.Row) -> dict:
        return {
            "job_id": row["job_id"],
            "status": row["status"],
            "payload": json.loads(row["payload"]),
            "outputs": json.loads(row["outputs"]),
            "error": row["error"],
            "source_path": row["source_path"],
        }

    def record_job(self, payload: dict, *, service: str, source_path: str | None = None) -> None:
        """Upsert a job by id from its API JSON as last seen.

        A finished job (completed, failed, error) is never turned back into a pending one by
        an older payload arriving late from another thread or process.

        Examples
        --------
        >>> ledger.record_job({"id": "j1", "status": "completed", "assetId": "as1",
        ...                 "metadata": {"name": "vocals", "format": "wav"}}, service="http://x", source_path="a.wav")
        >>> ledger.get_job("j1")["status"], ledger.get_job("j1")["source_path"]
        ('completed', 'a.wav')
        """
        payload, fields = _job_fields(payload)
        now = time.time()
        job_id = str(payload["id"])
        base = _norm_service(service)
        src = os.fspath(source_path) if source_path is not None else None
        text = json.dumps(payload, default=str)

        def upsert(conn):
            old = conn.execute("SELECT status FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if old is None:
                conn.execute(
                    "INSERT INTO jobs (job_id, service, asset_id, model, format, metadata_key, status,"
                    " error, source_path, payload, first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job_id, base, fields["asset_id"], fields["model"], fields["format"],
                     fields["metadata_key"], fields["status"], fields["error"], src, text, now, now))
                return
            if old["status"] in TERMINAL_STATUSES and fields["status"] not in TERMINAL_STATUSES:
                conn.execute("UPDATE jobs SET last_seen=?, source_path=COALESCE(?, source_path)"
                             " WHERE job_id=?", (now, src, job_id))
                return
            conn.execute(
                "UPDATE jobs SET asset_id=COALESCE(?, asset_id), model=COALESCE(?, model),"
                " format=COALESCE(?, format), metadata_key=?, status=?, error=?,"
                " source_path=COALESCE(?, source_path), payload=?, last_seen=? WHERE job_id=?",
                (fields["asset_id"], fields["model"], fields["format"], fields["metadata_key"],
                 fields["status"], fields["error"], src, text, now, job_id))

        self._write(upsert)

    def record_outputs(self, job_id: str, paths: Iterable[str | os.PathLike]) -> None:
        """Add local output paths to a recorded job (kept in order, without duplicates).

        Raises :class:`~shakelab.errors.NotInLedgerError` (a ``KeyError``) naming the job when it
        was never recorded.

        Examples
        --------
        >>> ledger.record_job({"id": "j1", "status": "completed", "assetId": "as1",
        ...                 "metadata": {"name": "vocals", "format": "wav"}}, service="http://x")
        >>> ledger.record_outputs("j1", ["out/a/vocals.wav"])
        >>> ledger.get_job("j1")["outputs"]
        ['out/a/vocals.wav']
        """
        if isinstance(paths, (str, os.PathLike)):
            raise ValidationError(f"`paths` must be a list of paths, not the single path {paths!r}")
        new = [os.fspath(p) for p in paths]

        def update(conn):
            row = conn.execute("SELECT outputs FROM jobs WHERE job_id=?", (str(job_id),)).fetchone()
            if row is None:
                raise NotInLedgerError(f"`job_id` {job_id!r} is not in the ledger {os.fspath(self.path)!r}")
            merged = list(dict.fromkeys(json.loads(row["outputs"]) + new))
            conn.execute("UPDATE jobs SET outputs=? WHERE job_id=?", (json.dumps(merged), str(job_id)))

        self._write(update)

    def record_result(self, job_id: str, result: Any) -> None:
        """Keep a small JSON-able result of a job or of a task's target (e.g. its music-detection windows).

        Lets a rerun of a batch rebuild its segments without a single request. ``job_id`` is a
        job's id or a target's id (a recorded task's targets are filed by id).

        Examples
        --------
        >>> ledger.record_job({"id": "j1", "status": "completed", "assetId": "as1",
        ...                 "metadata": {"name": "vocals", "format": "wav"}}, service="http://x")
        >>> ledger.record_result("j1", [{"start_time": 0.0, "end_time": 10.0, "confidence": 0.9}])
        >>> ledger.lookup_result("j1")[0]["end_time"]
        10.0
        """
        text = json.dumps(result, default=str)

        def update(conn):
            for table, column in (("jobs", "job_id"), ("targets", "target_id")):
                if conn.execute(f"UPDATE {table} SET result=? WHERE {column}=?", (text, str(job_id))).rowcount:
                    return
            raise NotInLedgerError(f"`job_id` {job_id!r} is not in the ledger {os.fspath(self.path)!r}")

        self._write(update)

    def lookup_result(self, job_id: str) -> Any | None:
        """Return the result kept by :meth:`record_result` for a job or a target, or None."""
        row = self._conn().execute("SELECT result FROM jobs WHERE job_id=? UNION ALL SELECT result FROM targets"
                                   " WHERE target_id=?", (str(job_id), str(job_id))).fetchone()
        return json.loads(row["result"]) if row and row["result"] is not None else None

    # -- the Tasks API ----------------------------------------------------------------------
    # One row per POST /tasks attempt: written before the request is sent (state 'sent', with the
    # attempt id shakelab puts in the task's metadata), then 'confirmed' with the task id and the
    # task as last seen. A row still 'sent' is a task whose answer was lost (or a crash): the
    # client looks for it in GET /tasks before it ever creates another.
    def record_task_attempt(self, *, attempt_id: str, service: str, source_key: str, targets: list,
                            metadata: Any = None, sha256: str | None = None, source_path: str | None = None,
                            force: bool = False) -> None:
        """Record that a ``POST /tasks`` tagged ``attempt_id`` is about to be sent, before it is.

        With ``force``, earlier unconfirmed attempts for the same request are marked ``forced``
        (the caller chose to send again), so they are not looked for any more.

        Parameters
        ----------
        attempt_id : str
            The id in the task's ``metadata`` (:func:`shakelab.models.tag_metadata`).
        source_key : str
            ``"asset:<id>"`` or ``"url:<url>"``.
        targets : list of dict
            The request's targets (their order and the order of formats do not matter).
        metadata : any JSON value, optional
            The caller's own metadata.
        sha256 : str, optional
            Content of the local file the asset was uploaded from.

        Examples
        --------
        >>> request = dict(service="http://x", source_key="asset:as1",
        ...                targets=[{"model": "bass", "formats": ["wav"]}])
        >>> ledger.record_task_attempt(attempt_id="a1", **request)
        >>> [a["attempt_id"] for a in ledger.unconfirmed_task_attempts(**request)]
        ['a1']
        """
        key = (_norm_service(service), str(source_key), _targets_key(targets), _user_key(metadata))

        def insert(conn):
            if force:
                conn.execute("UPDATE tasks SET state='forced' WHERE service=? AND source_key=? AND targets_key=?"
                             " AND metadata_key=? AND state='sent'", key)
            conn.execute("INSERT INTO tasks (attempt_id, service, source_key, targets_key, metadata_key, sha256,"
                         " source_path, state, sent_at) VALUES (?,?,?,?,?,?,?,'sent',?)",
                         (str(attempt_id), *key, sha256, source_path, time.time()))

        self._write(insert)

    def unconfirmed_task_attempts(self, *, service: str, source_key: str, targets: list,
                                  metadata: Any = None) -> list[dict]:
        """Return the attempts of this request whose answer never arrived, newest first (within 72 h).

        Returns
        -------
        list of dict
            ``{"attempt_id", "sent_at", "source_path"}`` (``sent_at`` in Unix seconds).
        """
        rows = self._conn().execute(
            "SELECT attempt_id, sent_at, source_path FROM tasks WHERE service=? AND source_key=? AND targets_key=?"
            " AND metadata_key=? AND state='sent' AND sent_at>=? ORDER BY sent_at DESC",
            (_norm_service(service), str(source_key), _targets_key(targets), _user_key(metadata),
             time.time() - TASKS_LIFETIME_S)).fetchall()
        return [dict(r) for r in rows]

    def settle_task_attempt(self, attempt_id: str, payload: dict | None, *, service: str | None = None) -> None:
        """Settle an attempt: its task arrived or was found again (``payload``), or None: nothing was created."""
        if payload is None:
            self._write(lambda c: c.execute("DELETE FROM tasks WHERE attempt_id=? AND state='sent'",
                                            (str(attempt_id),)))
            return
        fields = _task_fields(payload)
        now = time.time()

        def update(conn):
            # the same task recorded under another row (fetched before it was settled): keep one row
            conn.execute("DELETE FROM tasks WHERE task_id=? AND attempt_id<>?", (fields["task_id"], str(attempt_id)))
            cur = conn.execute(
                "UPDATE tasks SET state='confirmed', task_id=?, status=?, error=?, payload=?, created_at=?,"
                " last_seen=? WHERE attempt_id=?",
                (fields["task_id"], fields["status"], fields["error"], fields["payload"], fields["created_at"], now,
                 str(attempt_id)))
            if cur.rowcount == 0 and service is not None:
                self._insert_task(conn, fields, _norm_service(service), None, str(attempt_id), now)
            self._index_targets(conn, fields["task_id"])

        self._write(update)

    @staticmethod
    def _index_targets(conn, task_id: str) -> None:
        """File each target of a recorded task under its request (the row's ``targets_key``, by model and variant).

        The request as sent is the key (the service's echo of a target may carry more fields);
        a row without one (a task only fetched) uses the payload's targets.
        """
        row = conn.execute("SELECT targets_key, payload FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        if row is None or not row["payload"]:
            return
        requested = {(t.get("model"), t.get("variant")): t for t in json.loads(row["targets_key"])}
        for target in json.loads(row["payload"]).get("targets") or []:
            if not isinstance(target, dict) or not target.get("id"):
                continue
            key = _targets_key([requested.get((target.get("model"), target.get("variant")), target)])
            conn.execute("INSERT INTO targets (target_id, task_id, target_key) VALUES (?,?,?) ON CONFLICT(target_id)"
                         " DO UPDATE SET task_id=excluded.task_id, target_key=excluded.target_key",
                         (str(target["id"]), task_id, key))

    @staticmethod
    def _insert_task(conn, fields: dict, service: str, source_path: str | None, attempt_id: str,
                     now: float) -> None:
        conn.execute(
            "INSERT INTO tasks (attempt_id, service, task_id, source_key, targets_key, metadata_key, source_path,"
            " state, status, error, payload, sent_at, created_at, last_seen)"
            " VALUES (?,?,?,?,?,?,?,'confirmed',?,?,?,?,?,?)",
            (attempt_id, service, fields["task_id"], fields["source_key"], fields["targets_key"],
             fields["metadata_key"], source_path, fields["status"], fields["error"], fields["payload"],
             fields["created_at"] or now, fields["created_at"], now))

    def record_task(self, payload: dict, *, service: str, source_path: str | None = None) -> None:
        """Upsert a task by id from its API JSON as last seen (a finished task never turns pending again).

        Examples
        --------
        >>> ledger.record_task({"id": "t1", "assetId": "as1", "targets": [{"model": "bass", "formats": ["wav"]}]},
        ...                    service="http://x", source_path="a.wav")
        >>> ledger.get_task("t1")["source_path"]
        'a.wav'
        """
        fields = _task_fields(payload)
        base = _norm_service(service)
        now = time.time()
        src = os.fspath(source_path) if source_path is not None else None

        def upsert(conn):
            write(conn)
            self._index_targets(conn, fields["task_id"])

        def write(conn):
            old = conn.execute("SELECT status FROM tasks WHERE task_id=?", (fields["task_id"],)).fetchone()
            if old is None:
                attempt = fields["attempt"]
                taken = attempt and conn.execute("SELECT 1 FROM tasks WHERE attempt_id=?", (attempt,)).fetchone()
                if taken:  # its attempt row is still 'sent': this payload settles it
                    conn.execute("UPDATE tasks SET state='confirmed', task_id=?, status=?, error=?, payload=?,"
                                 " created_at=?, last_seen=?, source_path=COALESCE(?, source_path)"
                                 " WHERE attempt_id=?",
                                 (fields["task_id"], fields["status"], fields["error"], fields["payload"],
                                  fields["created_at"], now, src, attempt))
                else:
                    self._insert_task(conn, fields, base, src, attempt or f"task:{fields['task_id']}", now)
                return
            if old["status"] in TERMINAL_STATUSES and fields["status"] not in TERMINAL_STATUSES:
                conn.execute("UPDATE tasks SET last_seen=?, source_path=COALESCE(?, source_path) WHERE task_id=?",
                             (now, src, fields["task_id"]))
                return
            conn.execute("UPDATE tasks SET status=?, error=?, payload=?, last_seen=?,"
                         " source_path=COALESCE(?, source_path) WHERE task_id=?",
                         (fields["status"], fields["error"], fields["payload"], now, src, fields["task_id"]))

        self._write(upsert)

    def lookup_task(self, *, service: str, source_key: str, targets: list, metadata: Any = None) -> dict | None:
        """Return the newest recorded task for this request that has not failed and whose results still exist.

        Tasks created more than 72 hours ago are skipped: the service no longer keeps their results.

        Returns
        -------
        dict or None
            ``{"task_id", "attempt_id", "status", "payload", "outputs", "error", "source_path"}``.
        """
        rows = self._conn().execute(
            "SELECT * FROM tasks WHERE service=? AND source_key=? AND targets_key=? AND metadata_key=?"
            " AND task_id IS NOT NULL AND COALESCE(created_at, sent_at)>=? ORDER BY sent_at DESC",
            (_norm_service(service), str(source_key), _targets_key(targets), _user_key(metadata),
             time.time() - (TASKS_LIFETIME_S - _REUSE_MARGIN_S))).fetchall()
        for row in rows:
            if row["status"] not in FAILED_STATUSES:
                return self._task_dict(row)
        return None

    def lookup_target(self, *, service: str, source_key: str, target: dict, metadata: Any = None) -> dict | None:
        """Return the newest recorded task with this target among its targets, the target not failed, or None.

        What :meth:`lookup_task` is for a whole request, for one target of it: a batch asks for
        (file, model, format) and finds it in the task that ran all the file's models. The same
        72 hours as :meth:`lookup_task`.

        Returns
        -------
        dict or None
            The keys of :meth:`lookup_task` and ``target_id``.

        Examples
        --------
        >>> ledger.record_task({"id": "t2", "assetId": "as2", "targets": [
        ...     {"id": "tg1", "model": "bass", "formats": ["wav"], "status": "completed"},
        ...     {"id": "tg2", "model": "drums", "formats": ["wav"], "status": "completed"}]}, service="http://x")
        >>> ledger.lookup_target(service="http://x", source_key="asset:as2",
        ...                      target={"model": "drums", "formats": ["wav"]})["target_id"]
        'tg2'
        """
        rows = self._conn().execute(
            "SELECT t.*, g.target_id FROM tasks t JOIN targets g ON g.task_id=t.task_id WHERE t.service=?"
            " AND t.source_key=? AND t.metadata_key=? AND g.target_key=? AND COALESCE(t.created_at, t.sent_at)>=?"
            " ORDER BY t.sent_at DESC",
            (_norm_service(service), str(source_key), _user_key(metadata), _targets_key([target]),
             time.time() - (TASKS_LIFETIME_S - _REUSE_MARGIN_S))).fetchall()
        for row in rows:
            record = self._task_dict(row)
            state = next((t for t in (record["payload"] or {}).get("targets") or []
                          if isinstance(t, dict) and str(t.get("id")) == row["target_id"]), {})
            if str(state.get("status", "")).lower() not in FAILED_STATUSES:
                return {**record, "target_id": row["target_id"]}
        return None

    def get_task(self, task_id: str) -> dict | None:
        """Return the record of one task by id (same keys as :meth:`lookup_task`), or None."""
        row = self._conn().execute("SELECT * FROM tasks WHERE task_id=?", (str(task_id),)).fetchone()
        return self._task_dict(row) if row else None

    @staticmethod
    def _task_dict(row: sqlite3.Row) -> dict:
        return {"task_id": row["task_id"], "attempt_id": row["attempt_id"], "status": row["status"],
                "payload": json.loads(row["payload"]) if row["payload"] else None,
                "outputs": json.loads(row["outputs"]), "error": row["error"], "source_path": row["source_path"],
                "service": row["service"], "sent_at": row["sent_at"]}

    def record_task_outputs(self, task_id: str, paths: Iterable[str | os.PathLike]) -> None:
        """Add local output paths to a recorded task (in order, without duplicates); ``NotInLedgerError`` if unknown."""
        if isinstance(paths, (str, os.PathLike)):
            raise ValidationError(f"`paths` must be a list of paths, not the single path {paths!r}")
        new = [os.fspath(p) for p in paths]

        def update(conn):
            row = conn.execute("SELECT outputs FROM tasks WHERE task_id=?", (str(task_id),)).fetchone()
            if row is None:
                raise NotInLedgerError(f"`task_id` {task_id!r} is not in the ledger {os.fspath(self.path)!r}")
            merged = list(dict.fromkeys(json.loads(row["outputs"]) + new))
            conn.execute("UPDATE tasks SET outputs=? WHERE task_id=?", (json.dumps(merged), str(task_id)))

        self._write(update)

    def done_elsewhere(self, *, sha256: str, api: str) -> list[dict]:
        """Return what the *other* API already did with this file's content (any service), oldest first.

        For ``api="tasks"`` the jobs of the Jobs API on an asset uploaded from this content; for
        ``api="jobs"`` the tasks of the Tasks API. A client says so before it bills the file again:
        the two APIs never share results.

        Returns
        -------
        list of dict
            ``{"api", "id", "models", "status", "service", "when"}`` (``when``: Unix seconds).

        Examples
        --------
        >>> jobs = client.submit("song.wav", ["vocals"], progress=False)
        >>> done = ledger.done_elsewhere(sha256=file_sha256("song.wav"), api="tasks")
        >>> [(d["api"], d["id"] == jobs[0].id, d["models"], d["status"]) for d in done]
        [('jobs', True, ['vocals'], 'completed')]
        """
        conn = self._conn()
        if _api(api) == "tasks":
            rows = conn.execute(
                "SELECT j.job_id, j.model, j.status, j.service, j.first_seen FROM jobs j JOIN assets a"
                " ON a.asset_id=j.asset_id AND a.service=j.service AND a.api='jobs' WHERE a.sha256=?"
                " ORDER BY j.first_seen, j.rowid", (str(sha256),)).fetchall()
            return [{"api": "jobs", "id": r["job_id"], "models": [r["model"]], "status": r["status"],
                     "service": r["service"], "when": r["first_seen"]} for r in rows]
        rows = conn.execute("SELECT task_id, payload, status, service, sent_at FROM tasks WHERE sha256=?"
                            " AND task_id IS NOT NULL ORDER BY sent_at, rowid", (str(sha256),)).fetchall()
        out = []
        for r in rows:
            payload = json.loads(r["payload"]) if r["payload"] else {}
            models = [t.get("model") for t in payload.get("targets") or [] if isinstance(t, dict)]
            out.append({"api": "tasks", "id": r["task_id"], "models": models, "status": r["status"],
                        "service": r["service"], "when": r["sent_at"]})
        return out

    # -- frames -----------------------------------------------------------------------------
    def assets_frame(self):
        """Every recorded upload, oldest first.

        Returns
        -------
        pandas.DataFrame
            ``asset_id`` (string), ``name`` (string), ``sha256`` (string), ``size`` (Int64
            bytes), ``path`` (string, the local file uploaded), ``service`` (string, see :class:`Ledger`),
            ``api`` (string, ``"jobs"`` or ``"tasks"``: which API the upload went through),
            ``format`` (string), ``recorded_at`` (datetime64[ns, UTC]). Built here with plain
            pandas: :mod:`shakelab.frames` has no asset frame.

        Examples
        --------
        >>> asset = client.upload("song.wav", progress=False)
        >>> ledger.assets_frame()[["name", "api", "format"]]
               name   api format
        0  song.wav  jobs    wav
        """
        import pandas as pd

        rows = self._conn().execute("SELECT * FROM assets ORDER BY recorded_at, rowid").fetchall()
        formats = [json.loads(r["payload"]).get("format") for r in rows]
        frame = pd.DataFrame({
            "asset_id": pd.array([r["asset_id"] for r in rows], dtype="string"),
            "name": pd.array([r["name"] for r in rows], dtype="string"),
            "sha256": pd.array([r["sha256"] for r in rows], dtype="string"),
            "size": pd.array([r["size"] for r in rows], dtype="Int64"),
            "path": pd.array([r["path"] for r in rows], dtype="string"),
            "service": pd.array([r["service"] for r in rows], dtype="string"),
            "api": pd.array([r["api"] for r in rows], dtype="string"),
            "format": pd.array(formats, dtype="string"),
            "recorded_at": pd.to_datetime([r["recorded_at"] for r in rows], unit="s", utc=True),
        })
        return frame.astype({"recorded_at": "datetime64[ns, UTC]"})

    def jobs_frame(self):
        """Every recorded job, oldest first.

        Returns
        -------
        pandas.DataFrame
            The columns of :func:`shakelab.frames.jobs_frame` (job_id, model, format, status,
            asset_id, source_name, created_at, started_at, updated_at, processing_s, audio_s, outputs,
            error), built by that function from the payloads as last seen, followed by the
            ledger's own: ``source_path`` (string, the local file), ``output_paths`` (object,
            list of local paths downloaded), ``service`` (string, see :class:`Ledger`), ``first_seen`` and
            ``last_seen`` (datetime64[ns, UTC], when this machine first/last saw the job).

        Examples
        --------
        >>> ledger.record_job({"id": "j1", "status": "completed", "assetId": "as1",
        ...                 "metadata": {"name": "vocals", "format": "wav"}}, service="http://x", source_path="a.wav")
        >>> ledger.jobs_frame()[["job_id", "model", "status", "source_path"]]
          job_id   model     status source_path
        0     j1  vocals  completed       a.wav
        """
        import pandas as pd

        from shakelab.frames import jobs_frame
        from shakelab.models import Job

        rows = self._conn().execute("SELECT * FROM jobs ORDER BY first_seen, rowid").fetchall()
        frame = jobs_frame([Job.from_payload(json.loads(r["payload"])) for r in rows])
        frame["source_path"] = pd.array([r["source_path"] for r in rows], dtype="string")
        frame["output_paths"] = pd.Series([json.loads(r["outputs"]) for r in rows], dtype=object,
                                          index=frame.index)
        frame["service"] = pd.array([r["service"] for r in rows], dtype="string")
        for col in ("first_seen", "last_seen"):
            frame[col] = pd.to_datetime([r[col] for r in rows], unit="s", utc=True).astype(
                "datetime64[ns, UTC]")
        return frame
