"""Speed and memory of each local model on a 10-minute recording (``make bench``).

Generates a 10-minute stereo 44.1 kHz FLAC (speech-like passages, a chord loop with bass and
drums, speech over music, silence; numpy only), then runs every local model through
``shakelab.server.processing.run_model`` in a fresh subprocess each, and prints, per model:
wall time, **x real time** (audio seconds per processing second, higher is faster) and the
subprocess's peak RSS. Side by side, in the same run, the baselines a user would otherwise
reach for:

- decoding the file once with soundfile (the floor any model pays);
- REPET-SIM vocals as in the librosa documentation recipe (``nn_filter`` over the whole
  file, mono) on the first 60 s only (it holds the whole-file similarity in memory), as
  x real time, next to our block version on the same 60 s.

Figures only, never pass/fail. ``--minutes`` and ``--models`` shorten a run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("music_detection", "vocals", "instrumental", "drums", "bass", "other")
SR = 44100

CHILD = r"""
import json, resource, sys, time
model, src, out, fmt, detector = sys.argv[1:6]
import os
if detector:
    os.environ["SHAKELAB_DETECTOR"] = detector
from shakelab.server import processing
import numpy as np, soundfile as sf
# warm up (imports, numba JIT) on 3 s so the figure is the steady-state cost
warm = os.path.join(out, "warm.wav")
sf.write(warm, np.random.default_rng(0).standard_normal((3 * 44100, 2)).astype("float32") * 0.1, 44100)
processing.run_model(model, warm, os.path.join(out, "warm"), fmt)
t = time.perf_counter()
paths = processing.run_model(model, src, out, fmt)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": dt, "rss_mb": rss, "outputs": [str(p) for p in paths]}))
"""

BASELINE = r"""
import json, resource, sys, time
import numpy as np, librosa, soundfile as sf
src, seconds = sys.argv[1], float(sys.argv[2])
y, sr = sf.read(src, dtype="float32", frames=int(seconds * 44100))
y = y.mean(axis=1)
librosa.decompose.nn_filter(np.abs(librosa.stft(y[: sr * 3])), aggregate=np.median, metric="cosine")  # warm up
t = time.perf_counter()
S, phase = librosa.magphase(librosa.stft(y))
S_filter = librosa.decompose.nn_filter(S, aggregate=np.median, metric="cosine",
                                       width=int(librosa.time_to_frames(2, sr=sr)))
S_filter = np.minimum(S, S_filter)
mask_v = librosa.util.softmask(S - S_filter, 10 * S_filter, power=2)
v = librosa.istft(mask_v * S * phase, length=len(y))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_recording(path: Path, minutes: float) -> float:
    """Write the test recording; returns its duration in seconds."""
    import soundfile as sf

    sys.path.insert(0, str(ROOT / "tests"))
    from test_processing import music_like, speech_like

    seg = 30
    speech = speech_like(seg, SR, seed=1)
    music = music_like(seg, SR, seed=2)
    parts = [speech * 0.8, music, 0.5 * music + 0.6 * speech_like(seg, SR, seed=3), np.zeros(seg * SR, np.float32)]
    n_total = int(minutes * 60 * SR)
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=2, format="FLAC", subtype="PCM_16") as f:
        written, k = 0, 0
        while written < n_total:
            block = parts[k % len(parts)][: n_total - written]
            pan = 0.8 if k % 2 else 1.0
            f.write(np.stack([block, block * pan], axis=1) * 0.9)
            written += len(block)
            k += 1
    return n_total / SR


def run_child(code: str, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--baseline-seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "ten_minutes.flac"
        duration = make_recording(src, args.minutes)
        print(f"recording: {duration / 60:.1f} min, stereo, {SR} Hz FLAC ({src.stat().st_size / 1e6:.0f} MB)")
        t = time.perf_counter()
        with sf.SoundFile(str(src)) as f:
            for _ in f.blocks(1 << 18, dtype="float32"):
                pass
        decode = time.perf_counter() - t
        rows = [("decode only (soundfile, baseline)", decode, None)]
        jobs = [(m, "json" if m == "music_detection" else "wav", "") for m in args.models]
        if "music_detection" in args.models:
            jobs.insert(1, ("music_detection", "json", "features"))
            jobs[0] = ("music_detection", "json", "auto")
        for model, fmt, det in jobs:
            out = tmp / f"out_{model}_{det}"
            out.mkdir()
            r = run_child(CHILD, model, str(src), str(out), fmt, det)
            label = f"{model} ({fmt})" + (f" [{det} detector]" if det else "")
            if det == "auto":
                from shakelab.server import detectors

                label = f"{model} ({fmt}) [{detectors.get_detector().name} detector]"
            rows.append((label, r["seconds"], r["rss_mb"]))
        # baseline: the librosa documentation's REPET-SIM on the first N seconds vs ours on the same
        short = tmp / "short.flac"
        y, _ = sf.read(str(src), frames=int(args.baseline_seconds * SR), dtype="float32")
        sf.write(str(short), y, SR)
        base = run_child(BASELINE, str(short), str(args.baseline_seconds))
        ours = run_child(CHILD, "vocals", str(short), str(tmp), "wav", "")
        print(f"\n{'model':48s} {'wall s':>8s} {'x real time':>12s} {'peak RSS MB':>12s}")
        for label, secs, rss in rows:
            print(f"{label:48s} {secs:8.1f} {duration / secs:12.1f} {'' if rss is None else f'{rss:12.0f}'}")
        b = args.baseline_seconds
        print(f"\nvocals on the first {b:.0f} s (mono baseline vs ours, stereo):")
        print(f"{'librosa docs REPET-SIM (whole-file nn_filter)':48s} {base['seconds']:8.1f} "
              f"{b / base['seconds']:12.1f} {base['rss_mb']:12.0f}")
        print(f"{'shakelab vocals (blocks, stereo)':48s} {ours['seconds']:8.1f} {b / ours['seconds']:12.1f} "
              f"{ours['rss_mb']:12.0f}")
        print(f"ratio: shakelab is {base['seconds'] / ours['seconds']:.1f}x the speed of the librosa recipe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
