"""Fit the coefficients of the feature-based music detector (``shakelab/server/music_features.json``).

Offline and deterministic. Builds a labelled training set only from sources licensed for this
use (listed in data/README.md), computes the features of :mod:`shakelab.server.detectors`
every 0.5 s, fits a small MLP ensemble (scikit-learn), writes the JSON and prints
accuracy per condition on the training set and on held-out real recordings.

Training set (generated into a temp dir, never committed):

- speech: ``flite`` voices (kal16, awb, rms, slt) and ``espeak-ng`` sentences (English, French,
  German, Spanish, Italian voices, male and female variants, random speed and pitch), Debian
  ``alsa-utils`` voice prompts when installed;
- music: random MIDI pieces composed by this script (random tempo, key, progression,
  instruments, with or without drums, block chords or arpeggios) rendered by ``fluidsynth``
  with ``FluidR3_GM.sf2`` and ``TimGM6mb.sf2``; the ``pygame`` wheel's ``house_lo`` loop;
- speech over music: the two mixed, music 0 to 12 dB under the speech (label: music);
- every speech and music clip gets background noise 15-45 dB under it, and every other
  speech clip a synthetic room reverb (RT60 0.2-0.7 s), so that synthetic speech is not told
  apart by its digital silence;
- noise: white, pink, brown, hum + hiss, random bursts; and silence (label: not music).

Held out (never fitted): ``data/demo.flac`` (its own labels), the ``pyannote.audio`` sample
(real conversational speech), the ``arcade`` wheel's ``1918.mp3`` and ``funkyrobot.mp3``
(real music recordings).

Build-time needs: ``apt-get install flite alsa-utils espeak-ng fluidsynth fluid-soundfont-gm timgm6mb-soundfont``,
pip access for ``pip download --no-deps`` of the wheels above.

Usage::

    .venv/bin/python tools/fit_detector.py [--wheels DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
sys.path.insert(0, str(ROOT / "tools"))  # make_demo (the demo's MIDI score)
sys.path.insert(0, str(ROOT))

from make_demo import Score, write_midi  # noqa: E402

from shakelab.server import detectors  # noqa: E402

SR = 16000
SOUNDFONTS = [Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/TimGM6mb.sf2")]
WHEELS = {"pyannote": "pyannote.audio==3.3.2", "pygame": "pygame==2.6.1", "arcade": "arcade==3.3.3"}

SENTENCES = {
    "en": ["The weather report says it will rain in the north this afternoon.",
           "Could you send me the figures from last quarter before the meeting?",
           "We walked along the river until the lights of the town came on.",
           "Researchers measured the response of the network to every input.",
           "I think the second option is cheaper, but the first one is faster.",
           "Please remember to close the windows before you leave the office.",
           "Her brother moved to a small village near the coast last year.",
           "The committee will publish its findings at the end of the month."],
    "fr": ["Nous avons pris le train de sept heures pour arriver avant midi.",
           "La bibliotheque ferme plus tot le samedi pendant les vacances."],
    "de": ["Die Kinder spielen im Garten, waehrend die Eltern das Essen kochen.",
           "Morgen frueh beginnt die Konferenz im grossen Saal des Rathauses."],
    "es": ["El mercado abre todos los dias a las ocho de la manana.",
           "Mi hermana trabaja en un hospital en el centro de la ciudad."],
    "it": ["Abbiamo visitato il museo e poi siamo andati a cena in centro.",
           "Il treno per Milano parte dal binario tre tra dieci minuti."],
}
FLITE_VOICES = ["kal16", "awb", "rms", "slt"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4"]


def _load(path: Path) -> np.ndarray:
    import librosa

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    return librosa.resample(y, orig_sr=sr, target_sr=SR, res_type="soxr_hq") if sr != SR else y


def at_db(x: np.ndarray, db: float) -> np.ndarray:
    """Scale ``x`` to an RMS of ``db`` dBFS."""
    r = np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12
    return (x * (10 ** (db / 20) / r)).astype(np.float32)


def speech_clips(rng: np.random.Generator, work: Path, n: int) -> list[np.ndarray]:
    """Synthesise ``n`` speech clips (flite, espeak-ng, voice prompts when installed)."""
    out = []
    langs = list(SENTENCES)
    for i in range(n):
        lang = langs[i % len(langs)] if i % 3 else "en"
        text = " ".join(rng.choice(SENTENCES[lang], size=2, replace=False))
        voice = f"{lang}+{VARIANTS[rng.integers(len(VARIANTS))]}"
        wav = work / f"speech{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(rng.integers(130, 200))),
                        "-p", str(int(rng.integers(25, 75))), "-g", str(int(rng.integers(0, 8))),
                        "-w", str(wav), text], check=True, capture_output=True)
        out.append(_load(wav))
    for i, voice in enumerate(FLITE_VOICES * 2):  # diphone/clustergen voices built from real recordings
        text = " ".join(rng.choice(SENTENCES["en"], size=3, replace=False))
        wav = work / f"flite{i}.wav"
        subprocess.run(["flite", "-voice", voice, "--setf", f"duration_stretch={rng.uniform(0.8, 1.25):.2f}",
                        "--setf", f"int_f0_target_mean={rng.uniform(90, 200):.0f}", "-t", text, "-o", str(wav)],
                       check=True, capture_output=True)
        out.append(_load(wav))
    alsa = Path("/usr/share/sounds/alsa")
    if alsa.is_dir():
        prompts = [_load(p) for p in sorted(alsa.glob("*.wav")) if p.stem != "Noise"]
        if prompts:
            gap = np.zeros(int(0.3 * SR), np.float32)
            out.append(np.concatenate([np.concatenate([p, gap]) for p in prompts]))
    return out


SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
PROGRESSIONS = [[0, 5, 3, 4], [0, 3, 4, 0], [5, 3, 0, 4], [0, 4, 5, 3], [1, 4, 0, 0], [0, 6, 5, 4]]
MELODIC = [0, 4, 6, 11, 19, 24, 25, 40, 41, 42, 56, 57, 60, 64, 65, 68, 71, 73, 80, 81, 82]
HARMONIC = [0, 1, 2, 4, 5, 16, 19, 24, 25, 27, 46, 48, 49, 50, 52, 61, 88, 89, 90, 91]
BASSES = [32, 33, 34, 35, 38, 39, 42, 43]


def compose(rng: np.random.Generator, seconds: float) -> tuple[Score, float]:
    """Compose a random MIDI piece of about ``seconds``; returns the score and its tempo."""
    bpm = float(rng.integers(66, 160))
    bars = int(np.ceil(seconds / (4 * 60 / bpm)))
    root = 48 + int(rng.integers(0, 12))
    scale = SCALES["major" if rng.random() < 0.5 else "minor"]
    prog = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    s = Score()
    harm, mel, bass = (int(rng.choice(HARMONIC)), int(rng.choice(MELODIC)), int(rng.choice(BASSES)))
    s.program(0, harm)
    s.program(1, mel)
    s.program(2, bass)
    drums = rng.random() < 0.65
    arpeggio = rng.random() < 0.4
    has_melody = rng.random() < 0.8
    has_bass = rng.random() < 0.8
    deg = 7
    for b in range(bars):
        t = 4.0 * b
        d = prog[b % len(prog)]
        chord = [root + scale[(d + k) % 7] + 12 * ((d + k) // 7) for k in (0, 2, 4)]
        if arpeggio:
            seq = [*chord, chord[1] + 12, chord[2] + 12, chord[1] + 12, chord[2], chord[1]]
            for k, p in enumerate(seq):
                s.note(0, p, t + 0.5 * k, 0.5, int(rng.integers(60, 90)))
        else:
            pattern = [(0, 2.0), (2, 2.0)] if rng.random() < 0.5 else [(0, 1.0), (1.5, 0.5), (2, 1.0), (3, 1.0)]
            for beat, dur in pattern:
                for p in chord:
                    s.note(0, p, t + beat, dur * 0.95, int(rng.integers(60, 90)))
        if has_bass:
            for beat in (0, 2) if rng.random() < 0.5 else (0, 1, 2, 3):
                s.note(2, chord[0] - 12, t + beat, 0.9, 95)
        if has_melody:
            beat = 0.0
            while beat < 4:
                dur = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
                deg = int(np.clip(deg + rng.integers(-2, 3), 0, 13))
                p = root + 12 + scale[deg % 7] + 12 * (deg // 7)
                s.note(1, p, t + beat, min(dur, 4 - beat) * 0.95, int(rng.integers(70, 105)))
                beat += dur
        if drums:
            hat = int(rng.choice([42, 44, 51]))
            for k in range(8):
                s.note(9, hat, t + 0.5 * k, 0.1, 60 + 20 * (k % 2 == 0))
            for beat in (0, 2) if rng.random() < 0.6 else (0, 1.5, 2.5):
                s.note(9, 36, t + beat, 0.2, 105)
            for beat in (1, 3):
                s.note(9, 38 if rng.random() < 0.8 else 39, t + beat, 0.2, 95)
    return s, bpm


def music_clips(rng: np.random.Generator, work: Path, n: int, seconds: float,
                extra: list[np.ndarray]) -> list[np.ndarray]:
    """Render ``n`` composed pieces with fluidsynth, plus the ``extra`` recordings."""
    out = []
    for i in range(n):
        score, bpm = compose(rng, seconds)
        mid, wav = work / f"m{i}.mid", work / f"m{i}.wav"
        write_midi(mid, score.events, bpm=bpm)
        sf2 = SOUNDFONTS[i % len(SOUNDFONTS)]
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SR), "-F", str(wav), "-T", "wav",
                        str(sf2), str(mid)], check=True, capture_output=True)
        out.append(_load(wav)[: int(seconds * SR)])
    return out + extra


def noise_clips(rng: np.random.Generator, n: int, seconds: float) -> list[np.ndarray]:
    """Generate ``n`` coloured or modulated noise clips."""
    out = []
    N = int(seconds * SR)
    f = np.fft.rfftfreq(N, 1 / SR)
    for i in range(n):
        kind = i % 5
        w = rng.standard_normal(N)
        if kind == 0:
            x = w
        elif kind in (1, 2):
            spec = np.fft.rfft(w)
            spec[1:] /= f[1:] ** (0.5 if kind == 1 else 1.0)
            spec[0] = 0
            x = np.fft.irfft(spec, N)
        elif kind == 3:  # mains hum with harmonics + hiss
            t = np.arange(N) / SR
            f0 = 50 if rng.random() < 0.5 else 60
            x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) + 0.3 * w
        else:  # random bursts (traffic, handling noise)
            env = np.repeat(rng.random(N // 1600 + 1) ** 4, 1600)[:N]
            x = w * env
        out.append(at_db(x.astype(np.float32), float(rng.uniform(-45, -20))))
    return out


def room(x: np.ndarray, rng: np.random.Generator, *, reverb: bool) -> np.ndarray:
    """Make a clean clip sound recorded: optional synthetic room reverb, then background noise.

    The noise is 15-45 dB under the clip (synthetic speech has digital silence between words;
    real recordings never do).
    """
    x = x.astype(np.float32)
    if reverb:
        rt60 = float(rng.uniform(0.2, 0.7))
        n = int(rt60 * SR)
        rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
        rir[0] = 1.0 / float(rng.uniform(0.3, 1.0))
        y = np.convolve(x, rir.astype(np.float32))[: len(x)]
        x = (y * (np.sqrt(np.mean(x ** 2)) / (np.sqrt(np.mean(y ** 2)) + 1e-12))).astype(np.float32)
    N = len(x)
    spec = np.fft.rfft(rng.standard_normal(N))
    f = np.fft.rfftfreq(N, 1 / SR)
    spec[1:] /= f[1:] ** float(rng.uniform(0.0, 1.0))
    spec[0] = 0
    bg = np.fft.irfft(spec, N).astype(np.float32)
    lvl = 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)
    return x + at_db(bg, lvl - float(rng.uniform(15, 45)))


def labelled_steps(y: np.ndarray, label: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature matrix, level and label of each step of ``y``."""
    X, level = detectors.feature_matrix(y, SR)
    lab = np.full(len(X), label, np.int8) if np.isscalar(label) else np.asarray(label)[: len(X)]
    return X, level, lab


def fit_ensemble(X: np.ndarray, y: np.ndarray, sw: np.ndarray, *, members: int = 5, hidden: int = 16,
                 alpha: float = 0.1) -> list[dict]:
    """Small MLPs (scikit-learn, a dependency of librosa), each on a weighted resample."""
    from sklearn.neural_network import MLPClassifier

    out = []
    for k in range(members):
        rng = np.random.default_rng(100 + k)
        idx = rng.choice(len(X), size=20000, p=sw / sw.sum())
        clf = MLPClassifier((hidden,), activation="relu", alpha=alpha, max_iter=2000, random_state=k)
        clf.fit(X[idx], y[idx])
        out.append({"W1": clf.coefs_[0].round(6).tolist(), "b1": clf.intercepts_[0].round(6).tolist(),
                    "W2": clf.coefs_[1][:, 0].round(6).tolist(), "b2": round(float(clf.intercepts_[1][0]), 6)})
    return out


def wheel_member(key: str, member: str, wheels: Path) -> bytes:
    """Read ``member`` from the wheel ``WHEELS[key]`` in ``wheels`` (``pip download --no-deps`` if absent)."""
    req = WHEELS[key]
    dist, version = req.split("==")
    pattern = f"{dist.replace('.', '_').replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), req],
                       check=True)
        found = sorted(wheels.glob(pattern))
    with zipfile.ZipFile(found[0]) as z:
        return z.read(member)


def build_tables(wheels: Path | None):
    """Feature tables ``{condition: (X, level_db, label)}`` for training and held-out sets."""
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheels = wheels or work
        (work / "house_lo.ogg").write_bytes(wheel_member("pygame", "pygame/examples/data/house_lo.ogg", wheels))
        house = _load(work / "house_lo.ogg")
        house = np.tile(house, 3)

        speech = speech_clips(rng, work, 40)
        music = music_clips(rng, work, 36, 20.0, [house])
        noise = noise_clips(rng, 15, 8.0)
        conds: dict[str, list[tuple[np.ndarray, int]]] = {"speech": [], "music": [], "speech+music": [],
                                                            "noise": [], "silence": []}
        speech = [room(x, rng, reverb=bool(i % 2)) for i, x in enumerate(speech)]
        music = [room(x, rng, reverb=False) for x in music]
        for x in speech:
            conds["speech"].append((at_db(x, float(rng.uniform(-35, -15))), 0))
        for x in music:
            conds["music"].append((at_db(x, float(rng.uniform(-35, -12))), 1))
        for i, x in enumerate(speech[:24]):
            m = music[i % len(music)]
            m = np.tile(m, int(np.ceil(len(x) / len(m))))[: len(x)]
            lvl = float(rng.uniform(-30, -15))
            conds["speech+music"].append((at_db(x, lvl) + at_db(m, lvl - float(rng.uniform(0, 12))), 1))
        for x in noise:
            conds["noise"].append((x, 0))
        for _ in range(3):
            conds["silence"].append((at_db(rng.standard_normal(SR * 6).astype(np.float32), -75), 0))

        feats = {}
        for name, items in conds.items():
            rows = [labelled_steps(x, lab) for x, lab in items]
            feats[name] = tuple(np.concatenate(c) for c in zip(*rows, strict=True))
            print(f"{name:13s} {sum(len(x) for x, _ in items) / SR / 60:5.1f} min, {len(feats[name][0])} steps")

        # held-out real recordings
        held: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        (work / "sample.wav").write_bytes(wheel_member("pyannote", "pyannote/audio/sample/sample.wav", wheels))
        sample = _load(work / "sample.wav")[int(6.6 * SR):]
        held["pyannote speech"] = labelled_steps(sample, 0)
        for song in ("1918", "funkyrobot"):
            member = f"arcade/resources/assets/music/{song}.mp3"
            (work / f"{song}.mp3").write_bytes(wheel_member("arcade", member, wheels))
            held[f"arcade {song}"] = labelled_steps(_load(work / f"{song}.mp3")[SR * 30: SR * 90], 1)
        demo = _load(DATA / "demo.flac")
        centres = (np.arange(int(np.ceil(len(demo) / SR / detectors.STEP))) + 0.5) * detectors.STEP
        lab = np.zeros(len(centres), np.int8)
        for line in (DATA / "demo_labels.txt").read_text().splitlines():
            a, b, _ = line.split("\t")
            lab[(centres >= float(a)) & (centres < float(b))] = 1
        held["demo.flac"] = labelled_steps(demo, lab)
    minutes = sum(len(x) for items in conds.values() for x, _ in items) / SR / 60
    return feats, held, minutes


def main(argv: list[str] | None = None) -> int:
    """Generate the training audio, fit, report held-out accuracy and write the coefficients."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, default=None, help="folder holding (or receiving) the wheels")
    ap.add_argument("--out", type=Path, default=detectors.COEF_PATH)
    args = ap.parse_args(argv)
    feats, held, minutes = build_tables(args.wheels)

    X = np.concatenate([feats[k][0] for k in feats])
    L = np.concatenate([feats[k][1] for k in feats])
    Y = np.concatenate([feats[k][2] for k in feats]).astype(np.int64)
    keep = L >= detectors.SILENCE_DB  # the gate decides silence; the model learns the rest
    # each condition weighs the same, whatever its length
    wts = np.concatenate([np.full(len(feats[k][0]), 1.0 / len(feats[k][0])) for k in feats])[keep]
    Xk, Yk = X[keep].astype(np.float64), Y[keep]
    mean, scale = Xk.mean(axis=0), Xk.std(axis=0) + 1e-9
    members = fit_ensemble((Xk - mean) / scale, Yk, wts)
    coef = {"features": list(detectors.FEATURE_NAMES), "mean": mean.round(6).tolist(),
            "scale": scale.round(6).tolist(), "members": members,
            "fitted_by": "tools/fit_detector.py", "training_minutes": round(float(minutes), 1)}
    args.out.write_text(json.dumps(coef) + "\n")
    det = detectors.FeatureDetector(coef)
    print("\naccuracy per 0.5-s step (threshold 0.5)")
    for tag, table in (("train", feats), ("held out", held)):
        for name, (Xc, Lc, Yc) in table.items():
            p = det.probabilities_from_features(Xc, Lc)
            acc = float(np.mean((p >= 0.5) == (Yc == 1)))
            print(f"  {tag:9s} {name:17s} acc {acc:.3f}  mean P(music) {p.mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
