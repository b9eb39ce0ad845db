"""Durable state of the local Jobs API server: one SQLite database plus files.

Layout of ``data_dir``::

    state.sqlite        assets, jobs and settings (WAL journal, survives restarts)
    files/<asset-id>/   one stored file per asset; its name is chosen here, never by a client
    tmp/                partial uploads, renamed into files/ once complete
    token, link-secret  0600 secrets (the API token when generated, the link signing key)

Every method is thread-safe (one connection guarded by a lock; statements are short).

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = Store(tmp)
...     asset = store.add_asset(name="song.wav", fmt="wav", file_type="audio/wav",
...                             path=store.asset_dir("c1") / "source.wav", size=44, source="upload")
...     name, count = store.get_asset(asset["id"])["name"], store.count("assets")
...     store.close()
>>> name, count
('song.wav', 1)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shakelab.errors import ValidationError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    file_type TEXT NOT NULL,
    format TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    source TEXT NOT NULL,
    job_id TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    metadata TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    updated_at REAL NOT NULL,
    status_code TEXT NOT NULL,
    status_message TEXT NOT NULL,
    callback_url TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    input_seconds REAL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, job_id TEXT NOT NULL, created_at REAL NOT NULL);
"""

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """Make a fresh unguessable id shaped like the service's (25 lowercase letters and digits, starting with 'c').

    Examples
    --------
    >>> len(new_id()), new_id()[0]
    (25, 'c')
    """
    return "c" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def iso(ts: float | None) -> str | None:
    """Unix seconds -> ISO 8601 UTC with milliseconds and a 'Z' (None stays None).

    Examples
    --------
    >>> iso(0.0)
    '1970-01-01T00:00:00.000Z'
    """
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` readable by the owner only (0600), atomically."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_or_create_secret(path: Path, nbytes: int = 32) -> tuple[str, bool]:
    """Read the secret stored in ``path``, creating it (0600) when absent; returns (value, created)."""
    if path.is_file():
        value = path.read_text().strip()
        if value:
            return value, False
    value = secrets.token_urlsafe(nbytes)
    write_secret(path, value)
    return value, True


class Store:
    """Assets and jobs of one data directory.

    Parameters
    ----------
    data_dir : str or PathLike
        Created if missing. Everything the server keeps lives under it.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     s = Store(tmp)
    ...     s.client_id.startswith("local-")
    ...     s.close()
    True
    """

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.files_dir = self.data_dir / "files"
        self.tmp_dir = self.data_dir / "tmp"
        for d in (self.data_dir, self.files_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.data_dir / "state.sqlite", check_same_thread=False,
                                   isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
            if "detail" not in columns:
                self._db.execute("ALTER TABLE jobs ADD COLUMN detail TEXT")  # a data dir of an older version
            if "target_id" not in columns:  # the Tasks API target a job runs for (None: a Jobs API job)
                self._db.execute("ALTER TABLE jobs ADD COLUMN target_id TEXT")
            self._db.execute("CREATE INDEX IF NOT EXISTS jobs_target ON jobs(target_id)")
        self.client_id = self._setting("client_id", lambda: "local-" + secrets.token_hex(6))
        self._clean_tmp()

    # -- plumbing ---------------------------------------------------------------------------
    def _setting(self, key: str, default_factory) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
            if row:
                return row["value"]
            value = default_factory()
            self._db.execute("INSERT OR IGNORE INTO settings(key, value) VALUES (?, ?)", (key, value))
            return self._db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()["value"]

    def _clean_tmp(self) -> None:
        """Partial uploads left by a crash are garbage: remove them."""
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                p.unlink()

    def close(self) -> None:
        """Close the database (further calls raise ``sqlite3.ProgrammingError``)."""
        with self._lock:
            self._db.close()

    def temp_path(self) -> Path:
        """Make a fresh path under ``tmp/`` for a partial upload (same file system as ``files/``)."""
        return self.tmp_dir / (secrets.token_hex(16) + ".part")

    def asset_dir(self, asset_id: str) -> Path:
        """Return the folder that holds the file of ``asset_id`` (created)."""
        d = self.files_dir / asset_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- assets -----------------------------------------------------------------------------
    def add_asset(self, *, name: str, fmt: str, file_type: str, path: Path, size: int, source: str,
                  asset_id: str | None = None, job_id: str | None = None) -> dict[str, Any]:
        """Record an asset whose file is already at ``path``; returns its row as a dict."""
        asset_id = asset_id or new_id()
        row = dict(id=asset_id, name=name, file_type=file_type, format=fmt, path=str(path), size=int(size),
                   source=source, job_id=job_id, created_at=time.time())
        with self._lock:
            self._db.execute(
                "INSERT INTO assets(id, name, file_type, format, path, size, source, job_id, created_at) "
                "VALUES (:id, :name, :file_type, :format, :path, :size, :source, :job_id, :created_at)", row)
        return row

    def get_asset(self, asset_id: str) -> dict[str, Any] | None:
        """Return the asset row, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM assets WHERE id=?", (asset_id,)).fetchone()
        return dict(row) if row else None

    def source_assets(self) -> list[dict[str, Any]]:
        """Return the uploaded and fetched assets (no job outputs), newest first."""
        return [dict(r) for r in self.rows("SELECT * FROM assets WHERE source != 'output' "
                                           "ORDER BY created_at DESC, rowid DESC")]

    def remove_outputs(self, job_id: str) -> int:
        """Forget the output assets recorded for ``job_id`` (their files are the caller's); returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM assets WHERE job_id=? AND source='output'", (job_id,)).rowcount

    def count(self, table: str) -> int:
        """Count the rows in ``assets`` or ``jobs``."""
        if table not in ("assets", "jobs"):
            raise ValidationError(f"`table` must be 'assets' or 'jobs', not {table!r}")
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # -- jobs -------------------------------------------------------------------------------
    def add_job(self, *, metadata: dict, asset_id: str, callback_url: str | None,
                idempotency_key: str | None = None) -> dict[str, Any]:
        """Record a new queued job; returns its row as a dict.

        With ``idempotency_key`` (shakelab's local-only header), a key seen before returns the job
        it created then, with ``"replayed": True``, and records nothing.
        """
        row = self.new_job_row(metadata=metadata, asset_id=asset_id, callback_url=callback_url)
        with self._lock:
            if idempotency_key is not None:
                seen = self._db.execute("SELECT job_id FROM idempotency WHERE key=?", (idempotency_key,)).fetchone()
                job = self.get_job(seen["job_id"]) if seen else None
                if job is not None:
                    return {**job, "replayed": True}
            with self.transaction():
                self.insert_job(row)
                if idempotency_key is not None:
                    self._db.execute("INSERT OR REPLACE INTO idempotency(key, job_id, created_at) VALUES (?, ?, ?)",
                                     (idempotency_key, row["id"], row["created_at"]))
        return self._decode_job(row)

    def new_job_row(self, *, metadata: dict, asset_id: str, callback_url: str | None,
                    target_id: str | None = None, now: float | None = None) -> dict[str, Any]:
        """Return the row of a new queued job (stored by :meth:`insert_job` inside :meth:`transaction`)."""
        now = time.time() if now is None else now
        return dict(id=new_id(), client_id=self.client_id, request_id=new_id(), metadata=json.dumps(metadata),
                    asset_id=asset_id, status="queued", created_at=now, started_at=None, updated_at=now,
                    status_code="queued", status_message="waiting for a worker", callback_url=callback_url,
                    outputs="[]", input_seconds=None, target_id=target_id)

    def insert_job(self, row: dict[str, Any]) -> None:
        """Store a row of :meth:`new_job_row`; call it inside :meth:`transaction`."""
        self._db.execute(
            "INSERT INTO jobs(id, client_id, request_id, metadata, asset_id, status, created_at, started_at,"
            " updated_at, status_code, status_message, callback_url, outputs, input_seconds, target_id) VALUES"
            " (:id, :client_id, :request_id, :metadata, :asset_id, :status, :created_at, :started_at,"
            " :updated_at, :status_code, :status_message, :callback_url, :outputs, :input_seconds, :target_id)", row)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements inside commit together or not at all (holds the store's lock)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT (disk full) has rolled back already
                    self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _decode_job(row) -> dict[str, Any]:
        job = dict(row)
        job["metadata"] = json.loads(job["metadata"])
        job["outputs"] = json.loads(job["outputs"])
        job["detail"] = json.loads(job["detail"]) if job.get("detail") else None
        return job

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """Return the job row (metadata and outputs decoded), or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._decode_job(row) if row else None

    def update_job(self, job_id: str, *, status: str, code: str, message: str, started: bool = False,
                   outputs: list[str] | None = None, input_seconds: float | None = None,
                   detail: dict | None = None) -> dict[str, Any]:
        """Move a job to ``status`` with ``statusInfo`` (code, message); returns the updated job.

        ``detail`` is how the output was computed (music detection: detector, window,
        all-windows flag), reported in the job payload under ``shakelab``.
        """
        now = time.time()
        sets = ["status=?", "status_code=?", "status_message=?", "updated_at=?"]
        args: list[Any] = [status, code, message, now]
        if started:
            sets.append("started_at=?")
            args.append(now)
        if outputs is not None:
            sets.append("outputs=?")
            args.append(json.dumps(outputs))
        if input_seconds is not None:
            sets.append("input_seconds=?")
            args.append(float(input_seconds))
        if detail is not None:
            sets.append("detail=?")
            args.append(json.dumps(detail))
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))
            job = self.get_job(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r} in the store")
        return job

    def jobs_of_targets(self, target_ids: list[str]) -> list[dict[str, Any]]:
        """Return the jobs run for these Tasks API targets (decoded), oldest first."""
        if not target_ids:
            return []
        marks = ",".join("?" * len(target_ids))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE target_id IN ({marks}) ORDER BY created_at, rowid",
                                    target_ids).fetchall()
        return [self._decode_job(r) for r in rows]

    def rows(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        """Return the rows of one read-only statement, run under the store's lock."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def jobs_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Jobs in any of ``statuses``, oldest first."""
        marks = ",".join("?" * len(statuses))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at",
                                    statuses).fetchall()
        return [self._decode_job(r) for r in rows]

    def usage(self, months: int = 3, *, now: float | None = None) -> list[dict[str, Any]]:
        """``[{month: 'YYYY-MM', totalJobs, totalMinutes}]`` for the last ``months`` months (current included).

        Counts the jobs that actually ran to completion, by the month they finished, and the
        minutes of input audio they processed (jobs of the Tasks API's targets are counted by
        its statistics instead). Months without jobs are listed with zeros.
        """
        t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        keys = []
        y, m = t.year, t.month
        for _ in range(months):
            keys.append(f"{y:04d}-{m:02d}")
            y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        keys.reverse()
        start = datetime(int(keys[0][:4]), int(keys[0][5:]), 1, tzinfo=UTC).timestamp()
        with self._lock:
            rows = self._db.execute(
                "SELECT strftime('%Y-%m', updated_at, 'unixepoch') AS month, COUNT(*) AS n,"
                " COALESCE(SUM(input_seconds), 0) AS secs FROM jobs"
                " WHERE status='completed' AND target_id IS NULL AND updated_at >= ? GROUP BY month",
                (start,)).fetchall()
        found = {r["month"]: (int(r["n"]), float(r["secs"])) for r in rows}
        return [{"month": k, "totalJobs": found.get(k, (0, 0.0))[0],
                 "totalMinutes": round(found.get(k, (0, 0.0))[1] / 60.0, 3)} for k in keys]
