"""Batch throughput and polling efficiency against the embedded server.

100 short files x music_detection, each job held at least ``processing_delay`` seconds by the
server (as a real service would take), run with ``shakelab.batch.run`` at concurrency 8 and at
concurrency 1 (a plain loop over files, what a user would otherwise write) in the same run,
on two fresh servers with 8 workers each. Prints wall times and their ratio (target <= 1/5),
HTTP requests per job from ``server.stats()``, duplicate jobs (target 0), and what a rerun
of the finished batch costs (target: no request).

Knobs: BENCH_BATCH_FILES (default 100), BENCH_BATCH_DELAY (seconds, default 0.5).
Prints figures only; never passes or fails on time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_files(folder: Path, n: int, *, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sr = 8000
    paths = []
    for i in range(n):
        t = np.arange(int(sr * (1.0 + (i % 3) * 0.5))) / sr
        y = 0.3 * np.sin(2 * np.pi * (200 + 7 * i + seed) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
        paths.append(path)
    return paths


def _minus(stats: dict, base: dict) -> dict:
    requests = {k: v - base["requests"].get(k, 0) for k, v in stats["requests"].items()}
    return {"uploads": stats["uploads"] - base["uploads"], "jobs": stats["jobs"] - base["jobs"],
            "requests": {k: v for k, v in requests.items() if v}}


def one_run(files_dir: Path, work: Path, concurrency: int, delay: float, n: int) -> dict:
    from shakelab import batch
    from shakelab.client import Client
    from shakelab.ledger import Ledger
    from shakelab.server import LocalServer

    with LocalServer(data_dir=work / f"server-c{concurrency}", token="bench-token-0123456789", workers=8) as srv:
        client = Client(token=srv.token, base_url=srv.base_url, ledger=Ledger(work / f"ledger-c{concurrency}.sqlite"))
        # warm-up outside the timing: the server runs models in a pool of 8 processes, each of
        # which loads the detector on its first job (seconds on a cold process)
        warm = make_files(work / f"warm-c{concurrency}", 8, seed=concurrency + 1000)
        batch.run(warm, ["music_detection"], client=client, concurrency=8, progress=False)
        base = srv.stats()
        srv.faults.processing_delay = delay
        started = time.perf_counter()
        result = batch.run(files_dir, ["music_detection"], client=client, concurrency=concurrency, progress=False)
        wall = time.perf_counter() - started
        stats = _minus(srv.stats(), base)
        requests = sum(stats["requests"].values())
        rerun_started = time.perf_counter()
        again = batch.run(files_dir, ["music_detection"], client=client, concurrency=concurrency, progress=False)
        rerun_wall = time.perf_counter() - rerun_started
        after = _minus(srv.stats(), base)
    return {
        "concurrency": concurrency, "wall": wall, "completed": result.stats["completed"],
        "failed": result.stats["failed"], "jobs": stats["jobs"], "uploads": stats["uploads"],
        "duplicates": stats["jobs"] - n, "requests": requests, "per_job": requests / n,
        "by_route": stats["requests"], "rerun_wall": rerun_wall,
        "rerun_requests": sum(after["requests"].values()) - requests, "rerun_ok": again.ok,
    }


def main() -> int:
    n = int(os.environ.get("BENCH_BATCH_FILES", "100"))
    delay = float(os.environ.get("BENCH_BATCH_DELAY", "0.5"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SHAKELAB_LEDGER"] = str(work / "unused-default-ledger.sqlite")
        make_files(work / "clips", n)
        print(f"{n} files x music_detection, processing_delay={delay:g} s per job, server workers=8")
        runs = [one_run(work / "clips", work, c, delay, n) for c in (8, 1)]
    print(f"{'concurrency':>11} {'wall s':>8} {'done':>5} {'failed':>6} {'jobs':>5} {'dup':>4} "
          f"{'uploads':>7} {'req/job':>8} {'rerun s':>8} {'rerun req':>9}")
    for r in runs:
        print(f"{r['concurrency']:>11} {r['wall']:>8.2f} {r['completed']:>5} {r['failed']:>6} {r['jobs']:>5} "
              f"{r['duplicates']:>4} {r['uploads']:>7} {r['per_job']:>8.2f} {r['rerun_wall']:>8.2f} "
              f"{r['rerun_requests']:>9}")
    for r in runs:
        routes = ", ".join(f"{k}: {v / n:.2f}" for k, v in sorted(r["by_route"].items()))
        print(f"  requests per job at concurrency {r['concurrency']}: {routes}")
    c8, c1 = runs
    ratio = c8["wall"] / c1["wall"]
    print(f"wall time concurrency 8 / concurrency 1 = {ratio:.3f} (target <= 0.200; "
          f"speed-up x{c1['wall'] / c8['wall']:.1f}; ideal with the delay alone x8)")
    print(f"duplicate jobs: {c8['duplicates'] + c1['duplicates']} (target 0); "
          f"requests of a rerun of the finished batch: {c8['rerun_requests'] + c1['rerun_requests']} (target 0)")
    return 0 if not (c8["failed"] or c1["failed"]) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
