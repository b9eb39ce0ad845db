"""Music detector benchmark: speed (x real time, one core) and quality per condition.

Prints figures, never passes or fails on them. Side by side in the same run: the CNN with the
background-music cue (the local server's detector when the weights are installed), the CNN
alone, and the feature-based detector (``shakelab.server.detectors.FeatureDetector``, the
fallback) when that module is present.

Speed: ``data/demo.flac`` tiled to ``--minutes`` of audio, decoded once; "load included"
times a cold model load (``.npz`` read + batch-norm folding) plus detection, "load excluded"
the detection alone with the model already in memory. BLAS is pinned to one thread.

Quality: the development set of :mod:`shakelab.devset` (built into ``--devset`` when missing;
needs espeak-ng, fluidsynth and timgm6mb-soundfont), each detector writing its native step
(20 ms for the CNN, 0.5 s for the feature detector) as windows, scored by
:func:`shakelab.evaluation.evaluate_dirs`: frame (10 ms) and 10-s window precision, recall,
F1 and false-positive rate per condition.

    python benchmarks/bench_detector.py [--minutes 5] [--devset out/devset] [--no-quality]

Targets (issue 7): 10 ms music F1 >= 0.90 on the dev set, recall >= 0.7 on speech over music at
-12 dB, false-positive rate <= 0.05 on speech alone, >= 50x real time on one core.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shakelab import audio, weights  # noqa: E402
from shakelab.server import cnn  # noqa: E402


def feature_detector():
    try:
        from shakelab.server.detectors import FeatureDetector

        return FeatureDetector()
    except Exception as exc:  # the fallback detector may not exist in this checkout
        print(f"(feature-based detector unavailable: {exc})")
        return None


def speed(minutes: float) -> None:
    y, sr = audio.load(ROOT / "data" / "demo.flac", sr=16000)
    y = np.tile(y, int(np.ceil(minutes * 60 * sr / len(y))))[:int(minutes * 60 * sr)]
    secs = len(y) / sr
    print(f"speed on {secs / 60:.1f} min of audio (16 kHz mono, decoded beforehand), one BLAS thread")
    cnn.detect_music_cnn(y[:sr * 5], sr)           # warm imports (scipy, soxr)
    rows = []

    def timed(fn):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0

    for label, kw in (("CNN + cue (hop 40 ms, server default)", {}), ("CNN + cue, every patch (hop 20 ms)", {"hop": 1}),
                      ("CNN alone (hop 40 ms)", {"cue": False})):
        def cold(kw=kw):
            cnn._MODEL = None                       # cold load: .npz read + folding
            cnn.detect_music_cnn(y, sr, **kw)
        incl = timed(cold)
        excl = timed(lambda kw=kw: cnn.detect_music_cnn(y, sr, **kw))
        rows.append((label, incl, excl))

    def load():
        cnn._MODEL = None
        cnn.load_model()
    load_t = timed(load)
    det = feature_detector()
    if det is not None:
        t = timed(lambda: det.music_probability(y, sr))
        rows.append(("feature-based detector", t, t))
    print("  x real time = audio seconds / CPU seconds of this process (one thread: one core);"
          " wall-clock figure in brackets (the machine is shared)")
    print(f"  {'detector':40s} {'load included':>20s} {'load excluded':>20s}")
    for label, (wi, ci), (we, ce) in rows:
        print(f"  {label:40s} {secs / ci:9.1f} [{secs / wi:6.1f}]  {secs / ce:9.1f} [{secs / we:6.1f}]")
    print(f"  model load alone: {load_t[1] * 1000:.0f} ms CPU [{load_t[0] * 1000:.0f} ms wall]")


def write_estimates(devset: Path, out: Path, how: str) -> float:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    det = feature_detector() if how == "features" else None
    total = busy = 0.0
    for wav in sorted(devset.glob("*.wav")):
        y, sr = sf.read(str(wav), dtype="float32")
        dur = len(y) / sr
        t0 = time.process_time()
        if how == "features":
            from shakelab.server.detectors import windows

            hop, p = det.music_probability(y, sr)
            w = windows(hop, p, dur, window=hop)
        else:
            step, p = cnn.music_probability(y, sr, cue=(how == "cnn+cue"))
            w = cnn.windows(step, p, dur, window=step)
        busy += time.process_time() - t0
        total += dur
        (out / f"{wav.stem}.json").write_text(json.dumps(w))
    return total / busy


def quality(devset: Path) -> None:
    from shakelab import devset as ds
    from shakelab.evaluation import evaluate_dirs

    if not (devset / "manifest.csv").is_file():
        print(f"building the development set into {devset} ...")
        ds.build(devset)
    hows = ["cnn+cue", "cnn"] + (["features"] if feature_detector() is not None else [])
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for how in hows:
            xrt = write_estimates(devset, Path(tmp) / how, how)
            tables[how] = evaluate_dirs(devset, Path(tmp) / how, threshold=0.5)  # every frame, with its probability
            print(f"  {how}: {xrt:.0f}x real time (CPU) over the dev set")
    first = tables[hows[0]]
    print(f"\nquality on {devset} ({first.loc['all', 'seconds'] / 60:.1f} min); "
          "music conditions: recall (F1), others: false-positive rate; frame = 10 ms, window = 10 s")
    head = f"  {'condition':18s}" + "".join(f" {h + ' frame':>17s} {h + ' window':>17s}" for h in hows)
    print(head)
    for cond in first.index:
        line = f"  {cond:18s}"
        for h in hows:
            r = tables[h].loc[cond]
            for lvl in ("frame", "window"):
                if cond == "all":
                    cell = f"F1 {r[lvl + '_f1']:.3f}"
                elif np.isnan(r[lvl + "_recall"]):
                    cell = f"FPR {r[lvl + '_fpr']:.3f}"
                else:
                    cell = f"R {r[lvl + '_recall']:.3f} (F1 {r[lvl + '_f1']:.2f})"
                line += f" {cell:>17s}"
        print(line)
    t = tables[hows[0]]
    print("\ntargets, CNN + cue:"
          f" frame F1 {t.loc['all', 'frame_f1']:.3f} (>= 0.90),"
          f" recall -12 dB {t.loc['speech_music_-12', 'frame_recall']:.3f} (>= 0.7),"
          f" FPR speech {t.loc['speech', 'frame_fpr']:.3f} (<= 0.05)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--devset", type=Path, default=ROOT / "out" / "devset")
    p.add_argument("--no-quality", action="store_true")
    args = p.parse_args(argv)
    if not weights.available():
        print("CNN weights not installed: run `shakelab models fetch` (make setup); nothing to benchmark")
        return 0
    speed(args.minutes)
    if not args.no_quality:
        try:
            quality(args.devset)
        except RuntimeError as exc:       # espeak-ng / fluidsynth / soundfont missing
            print(f"quality skipped: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
