"""The legacy Jobs API against the Tasks API on the local server: requests per model and batch wall time.

1. **Requests per model**, one file x 5 models (vocals, instrumental, drums, bass,
   music_detection), both APIs on the same server in the same run, counted by the server
   (``stats()``): the Jobs API through ``shakelab.Client`` (``submit``: upload, a job per model,
   its polls; a download per output), the Tasks API through ``shakelab.TasksClient`` (``submit``:
   one asset, one task of 5 targets, its polls; ``download``), and the Tasks API with plain
   ``requests`` polling like ``Client.wait`` (first poll 1 s after creation, then every 1 s
   growing x1.5 to 15 s), the floor a hand-written client reaches.
2. **Batch wall time**, N files (default 100) x 3 models (music_detection, bass, drums):
   ``shakelab.batch.run`` (concurrency 8) on each API (a job per file x model on the Jobs API,
   a task per file on the Tasks API), each on a fresh server with 4 workers; detection JSON
   fetched, stems not downloaded (``batch.run``'s default).
3. **What a rerun costs**, ``batch.run`` over 3 files x 2 models (music_detection, bass) on each
   API, without and with ``download_to``: requests of the first run and of a rerun of the
   finished batch (everything in the ledger: target 0 on both APIs).
4. **A target of several formats**, one 20-s file, ``bass`` in wav, then in wav+flac+mp3, on a
   server with 1 worker (warmed up): model runs (``stats()["model_runs"]``) and wall time per
   task (the model runs once per target; each format is encoded from that result).

Prints figures and Tasks/Jobs ratios; never passes or fails on time.

Knobs: BENCH_TASKS_FILES (default 100), BENCH_TASKS_SECONDS (length of each file, default 1.5).
Usage: python benchmarks/bench_tasks.py [rerun | formats]   (section 3 or 4 alone)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

FIVE = ["vocals", "instrumental", "drums", "bass", "music_detection"]
THREE = ["music_detection", "bass", "drums"]
TOKEN = "bench-token-0123456789"


def make_files(folder: Path, n: int, seconds: float, *, seed: int = 0) -> list[Path]:
    """``n`` short mono WAV files of tones and noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sr = 16000
    paths = []
    for i in range(n):
        t = np.arange(int(sr * seconds)) / sr
        y = 0.3 * np.sin(2 * np.pi * (200 + 7 * i + seed) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
        paths.append(path)
    return paths


def fmt(model: str) -> str:
    return "json" if model == "music_detection" else "wav"


def diff(after: dict, before: dict) -> dict[str, int]:
    """Requests per route between two ``stats()``, the zero ones dropped."""
    out = {k: v - before["requests"].get(k, 0) for k, v in after["requests"].items()}
    return {k: v for k, v in out.items() if v}


def poll_task(session: requests.Session, base: str, task_id: str, timeout: float = 1800.0) -> dict:
    """GET /tasks/{id} until ``completedAt`` is set, pausing like ``Client.wait``."""
    deadline = time.monotonic() + timeout
    pause, interval = 1.0, 1.0
    while True:
        time.sleep(pause)
        task = session.get(f"{base}/tasks/{task_id}", timeout=60).json()
        if "completedAt" in task:
            return task
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} still processing after {timeout:g} s")
        pause, interval = interval, min(15.0, interval * 1.5)


def tasks_session() -> requests.Session:
    s = requests.Session()
    s.headers["x-api-key"] = TOKEN
    return s


def run_task(session: requests.Session, base: str, path: Path, models: list[str], *,
             download: str | None) -> dict:
    """Asset + one task of ``models`` + polls; fetch detection JSON, and every output into ``download``."""
    with path.open("rb") as fh:
        asset = session.post(f"{base}/assets", files={"file": (path.name, fh, "audio/wav")}, timeout=120).json()
    body = {"assetId": asset["id"], "targets": [{"model": m, "formats": [fmt(m)]} for m in models]}
    created = session.post(f"{base}/tasks", json=body, timeout=60)
    created.raise_for_status()
    task = poll_task(session, base, created.json()["id"])
    for target in task["targets"]:
        for out in target["output"]:
            if download is not None or out["format"] == "json":
                r = requests.get(out["link"], timeout=120)  # signed: no key
                r.raise_for_status()
                if download is not None:
                    Path(download, f"{out['name']}.{out['format']}").write_bytes(r.content)
    return task


# -- 1. requests per model -----------------------------------------------------------------------
def requests_per_model(work: Path) -> dict:
    from shakelab.client import Client
    from shakelab.ledger import Ledger
    from shakelab.server import LocalServer
    from shakelab.tasks import TasksClient

    src = make_files(work / "one", 1, 20.0, seed=7)[0]
    with LocalServer(work / "server-requests", token=TOKEN, workers=4) as srv:
        client = Client(token=TOKEN, base_url=srv.base_url, ledger=Ledger(work / "ledger-requests.sqlite"))
        # warm-up outside the counts: every model process loads its libraries and models once
        warm = make_files(work / "warm", 2, 2.0, seed=99)
        client.submit(warm[0], FIVE, format={m: fmt(m) for m in FIVE}, progress=False)
        run_task(tasks_session(), srv.base_url, warm[1], FIVE, download=None)
        tclient = TasksClient(TOKEN, base_url=srv.base_url, ledger=Ledger(work / "ledger-requests-tasks.sqlite"))
        out: dict = {}

        def measured(name, fn):
            before = srv.stats()
            t0 = time.perf_counter()
            fn()
            out[name + "_wall"] = time.perf_counter() - t0
            out[name] = diff(srv.stats(), before)

        def legacy():
            for job in client.submit(src, FIVE, format={m: fmt(m) for m in FIVE}, progress=False):
                client.download(job, work / "legacy-out", progress=False)

        def tasks():
            task = tclient.submit(src, FIVE, formats={m: fmt(m) for m in FIVE}, progress=False)
            tclient.download(task, work / "tasks-out", progress=False)

        def plain():
            (work / "plain-out").mkdir()
            run_task(tasks_session(), srv.base_url, src, FIVE, download=str(work / "plain-out"))

        measured("legacy", legacy)
        measured("tasks", tasks)
        measured("plain", plain)
    return out


# -- 2. batch wall time --------------------------------------------------------------------------
def batch_wall(api: str, files: Path, work: Path) -> dict:
    """Wall time and requests of ``batch.run`` over ``files`` x :data:`THREE` on ``api`` ("jobs" or "tasks")."""
    from shakelab import batch
    from shakelab.client import Client
    from shakelab.ledger import Ledger
    from shakelab.server import LocalServer
    from shakelab.tasks import TasksClient

    make = {"jobs": Client, "tasks": TasksClient}[api]
    with LocalServer(work / f"server-batch-{api}", token=TOKEN, workers=4) as srv:
        client = make(TOKEN, base_url=srv.base_url, ledger=Ledger(work / f"ledger-batch-{api}.sqlite"))
        batch.run(make_files(work / f"warm-{api}", 4, 1.0, seed=50), ["music_detection"], client=client,
                  concurrency=4, progress=False)  # model processes loaded outside the timing
        before = srv.stats()
        t0 = time.perf_counter()
        result = batch.run(files, THREE, client=client, concurrency=8, progress=False)
        wall = time.perf_counter() - t0
        reqs = diff(srv.stats(), before)
    return {"wall": wall, "completed": result.stats["completed"], "failed": result.stats["failed"],
            "requests": sum(reqs.values())}


# -- 3. what a rerun costs ----------------------------------------------------------------------
def batch_rerun(work: Path) -> dict:
    """Requests of a first ``batch.run`` and of its rerun, per API, without and with ``download_to``."""
    from shakelab import batch
    from shakelab.client import Client
    from shakelab.ledger import Ledger
    from shakelab.server import LocalServer
    from shakelab.tasks import TasksClient

    files = make_files(work / "rerun", 3, 2.0, seed=3)
    out: dict = {}
    with LocalServer(work / "server-rerun", token=TOKEN, workers=2) as srv:
        for api, make in (("jobs", Client), ("tasks", TasksClient)):
            for download in (False, True):
                name = f"{api}{'+download' if download else ''}"
                client = make(TOKEN, base_url=srv.base_url, ledger=Ledger(work / f"ledger-rerun-{name}.sqlite"))
                to = work / f"rerun-out-{name}" if download else None
                counts = []
                for _ in range(2):
                    before = srv.stats()
                    result = batch.run(files, ["music_detection", "bass"], client=client, download_to=to,
                                       progress=False)
                    counts.append(sum(diff(srv.stats(), before).values()))
                    assert result.ok, result.failed
                out[name] = counts
    return out


# -- 4. a target of several formats -------------------------------------------------------------
def target_formats(work: Path) -> dict:
    """Model runs and wall time of a one-target task, in one format and in three."""
    from shakelab.server import LocalServer

    src = make_files(work / "formats", 1, 20.0, seed=11)[0]
    out: dict = {}
    with LocalServer(work / "server-formats", token=TOKEN, workers=1) as srv:
        session = tasks_session()
        with src.open("rb") as fh:
            asset = session.post(f"{srv.base_url}/assets", files={"file": (src.name, fh, "audio/wav")},
                                 timeout=120).json()
        for label, formats in (("warm-up", ["wav"]), ("wav", ["wav"]), ("wav+flac+mp3", ["wav", "flac", "mp3"])):
            before = srv.stats()["model_runs"]
            t0 = time.perf_counter()
            task = session.post(f"{srv.base_url}/tasks", json={"assetId": asset["id"], "targets": [
                {"model": "bass", "formats": formats}]}, timeout=60).json()
            while "completedAt" not in task:
                time.sleep(0.05)
                task = session.get(f"{srv.base_url}/tasks/{task['id']}", timeout=60).json()
            out[label] = (srv.stats()["model_runs"] - before, time.perf_counter() - t0)
    del out["warm-up"]
    return out


def _print_rerun(work: Path) -> None:
    print("3. batch.run of 3 files x 2 models (music_detection, bass), then a rerun: requests")
    for name, (first, rerun) in batch_rerun(work).items():
        print(f"  {name:<15}: first run {first}, rerun {rerun}")


def _print_formats(work: Path) -> None:
    print("4. one 20-s file, a bass target (1 worker): model runs and wall time per task")
    for name, (runs, wall) in target_formats(work).items():
        print(f"  {name:<13}: {runs} model run(s), {wall:.2f} s")


def main() -> int:
    sections = {"rerun": _print_rerun, "formats": _print_formats}
    if len(sys.argv) == 2 and sys.argv[1] in sections:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["SHAKELAB_LEDGER"] = str(Path(tmp) / "unused-default-ledger.sqlite")
            sections[sys.argv[1]](Path(tmp))
        return 0
    n = int(os.environ.get("BENCH_TASKS_FILES", "100"))
    seconds = float(os.environ.get("BENCH_TASKS_SECONDS", "1.5"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SHAKELAB_LEDGER"] = str(work / "unused-default-ledger.sqlite")
        print(f"1. one 20-s file x {len(FIVE)} models ({', '.join(FIVE)}), both APIs on one server (4 workers)")
        r = requests_per_model(work)
        rows = {}
        labels = {"legacy": "Jobs API  (Client)          ", "tasks": "Tasks API (TasksClient)     ",
                  "plain": "Tasks API (plain requests)  "}
        for api, label in labels.items():
            routes = r[api]
            total = sum(routes.values())
            polls = sum(v for k, v in routes.items() if k in ("GET /job/{id}", "GET /tasks/{id}"))
            rows[api] = (total, total - polls, polls)
            print(f"  {label}: {total} requests = {total / len(FIVE):.2f} per model "
                  f"({(total - polls) / len(FIVE):.2f} without polls), wall {r[api + '_wall']:.1f} s; "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(routes.items())))
        lt, lf, lp = rows["legacy"]
        for api in ("tasks", "plain"):
            tt, tf, tp = rows[api]
            print(f"  {labels[api].strip()} / Jobs API requests: {tt / lt:.2f} in all, {tf / lf:.2f} without "
                  f"polls" + (f", {tp / lp:.2f} of the polls" if lp else ""))

        print(f"\n2. batch: {n} files of {seconds:g} s x {len(THREE)} models ({', '.join(THREE)}), "
              "concurrency 8, a fresh server with 4 workers per API")
        files = work / "batch"
        make_files(files, n, seconds)
        legacy = batch_wall("jobs", files, work)
        tasks = batch_wall("tasks", files, work)
        for name, b in (("Jobs API ", legacy), ("Tasks API", tasks)):
            print(f"  {name}: wall {b['wall']:.1f} s, {b['completed']} targets completed, {b['failed']} failed, "
                  f"{b['requests']} requests ({b['requests'] / (n * len(THREE)):.2f} per file x model)")
        print(f"  Tasks / Jobs: wall {tasks['wall'] / legacy['wall']:.2f}, "
              f"requests {tasks['requests'] / max(1, legacy['requests']):.2f}")

        print()
        _print_rerun(work)
        print()
        _print_formats(work)
    return 0 if not (legacy["failed"] or tasks["failed"]) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
