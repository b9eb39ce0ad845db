"""Run every benchmark script in this folder (``make bench``) and print their figures.

Each ``bench_*.py`` prints its own table, side by side with the baseline a user would
otherwise reach for, as ratios from the same run. Nothing here passes or fails on time.
Pass names to run a subset: ``python benchmarks/run_all.py plot client``; ``removal`` is the
quality table of ``music_removal``/``dialogue`` beside doing nothing, REPET-SIM and the oracle
mask (``bench_removal.py``; it builds its development set first, about 10 minutes in all);
``tasks`` compares the legacy Jobs API with the Tasks API on the local server (requests per
model, batch wall time; ``bench_tasks.py``, about 2 minutes).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(name in s.stem for name in argv)]
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=here.parent)
        print(f"--- {script.name}: exit {code}, {time.perf_counter() - started:.1f} s", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nbenchmarks that did not finish: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
