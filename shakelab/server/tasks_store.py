"""Tasks of the local Tasks API, in the same SQLite database as the Jobs API's assets and jobs.

A task is a source (an asset, or the asset fetched from its ``url``) and 1-20 targets; each
target runs as ONE job through the same worker pool and models as the Jobs API
(``jobs.target_id`` names the target): the model runs once and each requested format is encoded
from that one result (the job's ``metadata.formats``; its ``format`` is the first). A target's
status, duration and finish time are read from its jobs, so a restart that resumes the jobs
resumes the tasks too, and nothing is stored twice. (A data dir written before this kept one job
per format; such targets are read the same way.)

Examples
--------
>>> from shakelab.server.store import Store
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     store = Store(d)
...     tasks = TasksStore(store)
...     task, jobs = tasks.add_task(asset_id="casset", url=None, metadata=None,
...                                 targets=[{"model": "bass", "formats": ["wav", "mp3"]}])
...     [state(t)["status"] for t in tasks.get_task(task["id"])["targets"]], len(jobs)
...     store.close()
(['processing'], 1)
"""

from __future__ import annotations

import json
import time
from datetime import datetime, UTC
from typing import Any

from shakelab.server.store import Store, new_id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    url TEXT,
    metadata TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks(created_at);
CREATE TABLE IF NOT EXISTS targets (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    model TEXT NOT NULL,
    formats TEXT NOT NULL,
    variant TEXT,
    residual INTEGER,
    language TEXT,
    options TEXT NOT NULL,
    created_at REAL NOT NULL,
    notified_at REAL
);
CREATE INDEX IF NOT EXISTS targets_task ON targets(task_id, position);
"""

#: the target keys that go to the model with the job (the rest describe the target)
_JOB_OPTIONS = ("variant", "residual", "language", "window", "all_windows")


def state(target: dict[str, Any]) -> dict[str, Any]:
    """Derive a target's status from its jobs: ``{status, finished_at, duration, failed, done}``.

    ``processing`` while any job is queued or running; then ``error`` when a job failed
    (``failed`` is that job), else ``completed``. ``duration`` is the source's length in
    seconds once a job measured it.

    Examples
    --------
    >>> state({"jobs": [{"status": "completed", "updated_at": 5.0, "input_seconds": 9.5}]})["status"]
    'completed'
    """
    jobs = target["jobs"]
    done = [j for j in jobs if j["status"] in ("completed", "failed")]
    failed = next((j for j in done if j["status"] == "failed"), None)
    duration = next((j["input_seconds"] for j in jobs if j.get("input_seconds") is not None), None)
    finished = bool(jobs) and len(done) == len(jobs)
    status = "processing" if not finished else ("error" if failed is not None else "completed")
    return {"status": status, "finished_at": max(j["updated_at"] for j in done) if finished else None,
            "duration": duration, "failed": failed, "done": done}


class TasksStore:
    """Tasks and targets of one :class:`~shakelab.server.store.Store` (its database, its lock).

    Parameters
    ----------
    store : shakelab.server.store.Store
    """

    def __init__(self, store: Store):
        self.store = store
        with store.transaction() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    def add_task(self, *, asset_id: str, url: str | None, metadata: str | None,
                 targets: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
        """Record a task, its targets and their queued jobs in one transaction.

        ``targets`` are validated request targets (``model``, ``formats`` and the optional keys).
        Returns ``(task, job_ids)``; the caller hands the jobs to the worker.
        """
        now = time.time()
        task = {"id": new_id(), "client_id": self.store.client_id, "asset_id": asset_id, "url": url,
                "metadata": metadata, "created_at": now}
        job_ids = []
        with self.store.transaction() as db:
            db.execute("INSERT INTO tasks(id, client_id, asset_id, url, metadata, created_at) VALUES "
                       "(:id, :client_id, :asset_id, :url, :metadata, :created_at)", task)
            for position, spec in enumerate(targets):
                target_id = new_id()
                options = {k: spec[k] for k in _JOB_OPTIONS if spec.get(k) is not None}
                residual = spec.get("residual")
                db.execute("INSERT INTO targets(id, task_id, position, model, formats, variant, residual, language,"
                           " options, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (target_id, task["id"], position, spec["model"], json.dumps(spec["formats"]),
                            spec.get("variant"), None if residual is None else int(residual), spec.get("language"),
                            json.dumps(options), now))
                formats = list(spec["formats"])
                row = self.store.new_job_row(metadata={"name": spec["model"], "format": formats[0],
                                                       "formats": formats, **options},
                                             asset_id=asset_id, callback_url=None, target_id=target_id, now=now)
                self.store.insert_job(row)
                job_ids.append(row["id"])
        return task, job_ids

    def _assemble(self, task_rows: list) -> list[dict[str, Any]]:
        """Return tasks with their targets (``targets[i]["jobs"]``), in the order of ``task_rows``."""
        if not task_rows:
            return []
        tasks = {r["id"]: {**dict(r), "targets": []} for r in task_rows}
        marks = ",".join("?" * len(tasks))
        targets = self.store.rows(f"SELECT * FROM targets WHERE task_id IN ({marks}) ORDER BY task_id, position",
                                  list(tasks))
        by_id = {}
        for r in targets:
            target = dict(r)
            target["formats"] = json.loads(target["formats"])
            target["options"] = json.loads(target["options"])
            target["residual"] = None if target["residual"] is None else bool(target["residual"])
            target["jobs"] = []
            by_id[target["id"]] = target
            tasks[target["task_id"]]["targets"].append(target)
        for job in self.store.jobs_of_targets(list(by_id)):
            by_id[job["target_id"]]["jobs"].append(job)
        return [tasks[r["id"]] for r in task_rows]

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """Return the task with its targets and their jobs, or None."""
        found = self._assemble(self.store.rows("SELECT * FROM tasks WHERE id=?", (task_id,)))
        return found[0] if found else None

    def task_of_target(self, target_id: str) -> dict[str, Any] | None:
        """Return the task a target belongs to, or None."""
        rows = self.store.rows("SELECT task_id FROM targets WHERE id=?", (target_id,))
        return self.get_task(rows[0]["task_id"]) if rows else None

    def list_tasks(self, *, skip: int = 0, take: int = 10) -> list[dict[str, Any]]:
        """List tasks newest first (creation time, then insertion order), ``take`` of them after ``skip``."""
        return self._assemble(self.store.rows("SELECT * FROM tasks ORDER BY created_at DESC, rowid DESC "
                                              "LIMIT ? OFFSET ?", (take, skip)))

    def count(self) -> int:
        """Count the tasks."""
        return int(self.store.rows("SELECT COUNT(*) FROM tasks")[0][0])

    def mark_notified(self, target_id: str) -> bool:
        """Mark a target notified: True the first time (its webhook is sent once), then False."""
        with self.store.transaction() as db:
            return db.execute("UPDATE targets SET notified_at=? WHERE id=? AND notified_at IS NULL",
                              (time.time(), target_id)).rowcount == 1

    def finished_targets(self, months: int = 3, *, now: float | None = None) -> tuple[list[str], list[dict]]:
        """Return the month keys of the last ``months`` months (oldest first) and the targets completed in them.

        Each target is ``{month, model, seconds}``: the month it finished in, its model and the
        seconds of source audio it processed (a target with several formats counts once).
        """
        t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        keys, y, m = [], t.year, t.month
        for _ in range(months):
            keys.append(f"{y:04d}-{m:02d}")
            y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        keys.reverse()
        start = datetime(int(keys[0][:4]), int(keys[0][5:]), 1, tzinfo=UTC).timestamp()
        rows = self.store.rows(
            "SELECT t.id, t.model, MAX(j.updated_at) AS finished, MAX(j.input_seconds) AS secs,"
            " SUM(j.status='completed') AS ok, COUNT(*) AS n FROM targets t JOIN jobs j ON j.target_id = t.id"
            " GROUP BY t.id HAVING ok = n AND finished >= ?", (start,))
        done = [{"month": datetime.fromtimestamp(r["finished"], UTC).strftime("%Y-%m"),
                 "model": r["model"], "seconds": float(r["secs"] or 0.0)} for r in rows]
        return keys, [d for d in done if d["month"] in keys]
