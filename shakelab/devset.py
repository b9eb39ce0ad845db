"""A deterministic, labelled development set for music detection, from allowed offline sources.

Conditions (one condition per clip): ``music`` (music alone), ``speech`` (speech alone),
``speech_music_-6`` / ``speech_music_-12`` / ``speech_music_-20`` (speech with background
music whose RMS is 6/12/20 dB under the speech's), ``noise`` (white/pink/brown and modulated
noise) and ``silence`` (digital zero or a -70 dBFS noise floor). The ``dev`` split is about
16.5 minutes; the ``train`` split (used by ``benchmarks/train_bgm.py`` for the background-music
cue) draws on other voices, sentences, synthetic songs and song excerpts, and more SNRs.

Sources (DESIGN.md, "Offline data we may use"), taken from package wheels with
``pip download --no-deps`` into a cache directory (a setup/dev step, never at run time):
real speech ``pyannote/audio/sample/sample.wav`` (pyannote.audio wheel, MIT), music
``arcade/resources/assets/music/1918.mp3`` and ``funkyrobot.mp3`` (arcade wheel),
``pygame/examples/data/house_lo.ogg`` (pygame wheel); synthetic speech from Debian
``espeak-ng``; synthetic songs that this module composes (MIDI) and renders with Debian
``fluidsynth`` and the ``timgm6mb-soundfont``; noise from numpy. The audio is written to the
directory you give and is not to be committed (the song files' licences are those of their
wheels).

Output: ``<clip>.wav`` (16 kHz mono PCM16), ``<clip>.txt`` (Audacity labels,
``start<TAB>end<TAB>music`` for music presence, empty when none) and ``manifest.csv``
(``name, condition, duration, speech, music, snr_db``).

Examples
--------
>>> from shakelab import devset
>>> devset.build("out/devset")            # doctest: +SKIP
PosixPath('out/devset/manifest.csv')

$ python -m shakelab.devset out/devset [--split train]
"""

from __future__ import annotations

import csv
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SR = 16000
WHEELS = {
    "pyannote.audio==4.0.7": ["pyannote/audio/sample/sample.wav"],
    "arcade==3.3.3": ["arcade/resources/assets/music/1918.mp3", "arcade/resources/assets/music/funkyrobot.mp3"],
    "pygame==2.6.1": ["pygame/examples/data/house_lo.ogg"],
}
SOUNDFONTS = ["/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2"]
CONDITIONS = ("music", "speech", "speech_music_-6", "speech_music_-12", "speech_music_-20", "noise", "silence")

SENTENCES = [
    "The committee will meet again on Thursday to review the budget for the coming year.",
    "Please remember to bring your identification card when you visit the office.",
    "Scientists have observed a small change in the temperature of the deep ocean.",
    "The train to the northern coast leaves every hour from platform number seven.",
    "In the afternoon the market square fills with people selling fruit and bread.",
    "Our guest today has written three books about the history of the river towns.",
    "If the weather stays dry, the harvest should be finished by the end of the month.",
    "The new library opens at nine and closes at six, except on public holidays.",
    "She explained that the results were not final and that more tests were needed.",
    "A small group of volunteers repaired the old bridge over the weekend.",
    "The price of electricity has risen sharply since the beginning of winter.",
    "He said the recording would be available online later this evening.",
    "Children from the village school planted two hundred trees along the road.",
    "The interview was recorded in a quiet room at the back of the building.",
    "Traffic on the main road was slow this morning because of the heavy rain.",
    "The museum has received a collection of letters written more than a century ago.",
    "We asked the listeners to send their questions before the programme began.",
    "The engineers checked every cable twice before they switched the system on.",
    "Local farmers say the spring was the wettest they can remember.",
    "The report will be published next week together with the full data.",
    "Good evening, and welcome to the news at ten from our studio in the city.",
    "The minister answered questions from journalists for almost an hour.",
    "Tickets for the concert sold out within a few minutes of going on sale.",
    "Many of the old houses near the harbour were built from local stone.",
]
FOREIGN = {
    "fr-fr": ["Le conseil municipal se réunira demain matin pour discuter du nouveau projet.",
              "Il fait beau aujourd'hui et les enfants jouent dans le jardin public."],
    "de": ["Die Sitzung beginnt morgen um neun Uhr im großen Saal des Rathauses.",
           "Der Zug nach Hamburg hat heute leider eine Verspätung von zehn Minuten."],
    "es": ["La reunión de esta tarde se ha aplazado hasta el próximo lunes.",
           "El museo de la ciudad abre sus puertas todos los días a las diez."],
    "it": ["Il treno per Milano parte dal binario tre alle otto e un quarto."],
    "nl": ["De vergadering van vanavond begint om half acht in de grote zaal."],
}
VOICES = {
    "dev": [("en-us", "+m3"), ("en-gb", "+f2"), ("en-gb-scotland", "+m1"), ("en-us", "+f4"), ("de", "+m2"),
            ("fr-fr", "+f1"), ("en-029", "+m6")],
    "train": [("en-us", "+m1"), ("en-gb", "+m2"), ("en-us", "+f1"), ("en-gb-x-rp", "+f3"), ("en-us-nyc", "+m4"),
              ("es", "+m3"), ("it", "+f2"), ("nl", "+m5"), ("en-gb", "+f5"), ("en-us", "+m7"),
              ("en-us", "+Alex"), ("en-gb", "+Annie"), ("en-us", "+klatt3"), ("en-gb", "+edward"),
              ("en-us", "+linda"), ("en-gb-x-gbcwmd", "+m8"), ("es-419", "+f3"), ("en-us", "+john"),
              ("en-gb", "+belinda"), ("en-us", "+steph"), ("pt-br", "+Mike"), ("en-gb", "+norbert")],
}

__all__ = ["build", "CONDITIONS", "sources", "main"]


# ----------------------------------------------------------------------------- sources
def _cache_dir() -> Path:
    env = os.environ.get("SHAKELAB_SOURCES")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("shakelab")) / "sources"


def sources(cache: str | os.PathLike | None = None) -> dict[str, Path]:
    """Extract the source files from their wheels (``pip download --no-deps`` once) into ``cache``.

    Returns ``{basename: path}``, e.g. ``{"sample.wav": ..., "1918.mp3": ...}``.

    Examples
    --------
    >>> sorted(sources())                # doctest: +SKIP
    ['1918.mp3', 'funkyrobot.mp3', 'house_lo.ogg', 'sample.wav']
    """
    cache = Path(cache) if cache is not None else _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for req, members in WHEELS.items():
        want = {m: cache / Path(m).name for m in members}
        if all(p.is_file() for p in want.values()):
            out.update({p.name: p for p in want.values()})
            continue
        with tempfile.TemporaryDirectory(prefix="shakelab-src-") as tmp:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                                   "--disable-pip-version-check", req, "-d", tmp], capture_output=True, text=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise RuntimeError(f"`pip download --no-deps {req}` failed: {proc.stderr.strip()[-300:]}")
            with zipfile.ZipFile(wheels[0]) as zf:
                for member, dest in want.items():
                    with zf.open(member) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        out.update({p.name: p for p in want.values()})
    return out


def _need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(f"`{program}` not found: install the Debian package {package} "
                           f"(apt-get install {package})")
    return path


def _load(path: Path) -> np.ndarray:
    from shakelab.server.cnn import resample_16k
    import soundfile as sf

    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample_16k(y.mean(axis=1), sr)


def _espeak(text: str, voice: str, variant: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    exe = _need("espeak-ng", "espeak-ng")
    wav = tmp / "tts.wav"
    subprocess.run([exe, "-v", voice + variant, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                   check=True, capture_output=True)
    y = _load(wav)
    nz = np.flatnonzero(np.abs(y) > 1e-4)
    return y[nz[0]:nz[-1] + 1] if len(nz) else y


# ----------------------------------------------------------------------------- synthetic songs
def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def _midi(events: list[tuple[float, bytes]], tempo_bpm: float) -> bytes:
    """A format-0 MIDI file from (time in beats, message) events, 480 ticks per beat."""
    tpb = 480
    data = bytearray(b"\x00\xff\x51\x03" + int(60e6 / tempo_bpm).to_bytes(3, "big"))
    last = 0
    for t, msg in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90)):
        tick = int(round(t * tpb))
        data += _vlq(tick - last) + msg
        last = tick
    data += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpb) + b"MTrk" + struct.pack(">I", len(data)) + bytes(data)


SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
PROGRESSIONS = [[0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 4], [0, 5, 1, 4], [1, 4, 0, 0]]
LEADS = [0, 4, 11, 24, 25, 40, 56, 65, 71, 73, 80, 81]      # piano, e-piano, vibraphone, guitars, violin, ...
PADS = [48, 49, 16, 19, 88, 89, 52, 0, 46]
BASSES = [32, 33, 34, 38, 43]


def _song(seed: int, seconds: float) -> tuple[bytes, float]:
    rng = np.random.default_rng(seed)
    tempo = float(rng.integers(72, 150))
    beats = int(seconds * tempo / 60) + 4
    root = 48 + int(rng.integers(0, 12))
    scale = SCALES["major" if rng.random() < 0.6 else "minor"]
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    lead, pad, bass = (int(rng.choice(LEADS)), int(rng.choice(PADS)), int(rng.choice(BASSES)))
    drums = rng.random() < 0.7
    ev: list[tuple[float, bytes]] = [(0, bytes([0xC0, lead])), (0, bytes([0xC1, pad])), (0, bytes([0xC2, bass]))]

    def note(ch, t, dur, pitch, vel):
        pitch = int(np.clip(pitch, 0, 127))
        ev.append((t, bytes([0x90 | ch, pitch, int(vel)])))
        ev.append((t + dur, bytes([0x80 | ch, pitch, 0])))

    def degree(d, octave=0):
        return root + scale[d % 7] + 12 * (d // 7 + octave)

    deg = 7
    for bar in range(0, beats, 4):
        chord = prog[(bar // 4) % len(prog)]
        for k in (0, 2, 4):
            note(1, bar, 4, degree(chord + k), 60)
        for b in range(4):
            note(2, bar + b, 0.9, degree(chord, -1), 85)
        t = float(bar)
        while t < bar + 4:
            dur = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
            deg = int(np.clip(deg + rng.integers(-2, 3), 3, 14))
            if rng.random() < 0.85:
                note(0, t, dur * 0.95, degree(deg, 1), int(rng.integers(70, 105)))
            t += dur
        if drums:
            for b in range(4):
                note(9, bar + b, 0.1, 36 if b % 2 == 0 else 38, 90)
                note(9, bar + b + 0.5, 0.1, 42, 60)
                note(9, bar + b, 0.1, 42, 70)
    return _midi(ev, tempo), tempo


def _render(midi: bytes, tmp: Path, soundfont: str) -> np.ndarray:
    exe = _need("fluidsynth", "fluidsynth")
    mid, wav = tmp / "song.mid", tmp / "song.wav"
    mid.write_bytes(midi)
    subprocess.run([exe, "-ni", "-q", "-g", "0.6", "-r", str(SR), "-F", str(wav), soundfont, str(mid)],
                   check=True, capture_output=True)
    return _load(wav)


# ----------------------------------------------------------------------------- mixing
def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)) + 1e-20))


def _active_rms(y: np.ndarray) -> float:
    """RMS over the 50 ms blocks louder than -40 dB re the loudest (speech level without pauses)."""
    n = len(y) // 800 * 800
    if n == 0:
        return _rms(y)
    b = np.sqrt(np.mean(y[:n].reshape(-1, 800).astype(np.float64) ** 2, axis=1))
    keep = b > b.max() * 0.01
    return float(np.sqrt(np.mean(b[keep] ** 2)))


def _level(y: np.ndarray, dbfs: float) -> np.ndarray:
    return (y * (10 ** (dbfs / 20) / max(_active_rms(y), 1e-9))).astype(np.float32)


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(n)
    if kind == "white":
        y = w
    else:
        f = np.fft.rfftfreq(n, 1 / SR)
        f[0] = f[1]
        spec = np.fft.rfft(w) / (np.sqrt(f) if kind == "pink" else f)
        y = np.fft.irfft(spec, n)
        if kind == "modulated":   # pink noise with slow random level changes (wind, traffic)
            env = np.interp(np.arange(n), np.linspace(0, n, 20), rng.uniform(0.2, 1.0, 20))
            y = y / _rms(y) * env
    return (y / _rms(y)).astype(np.float32)


def _floor(n: int, rng: np.random.Generator, dbfs: float = -65.0) -> np.ndarray:
    return _noise("pink", n, rng) * np.float32(10 ** (dbfs / 20))


def _reverb(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Room-like reverberation: convolution with exponentially decaying noise (RT60 0.2-0.8 s)."""
    rt60 = float(rng.uniform(0.2, 0.8))
    n = int(rt60 * SR)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    ir[0] = 1.0 / float(rng.uniform(0.3, 1.0))
    from scipy.signal import fftconvolve

    wet = fftconvolve(y, ir)[:len(y)]
    return (wet / max(_rms(wet), 1e-9) * _rms(y)).astype(np.float32)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) >= n:
        return y[:n]
    return np.tile(y, int(np.ceil(n / len(y))))[:n]


class _Speech:
    """Deterministic stream of speech: espeak sentences (and real speech) with pauses."""

    def __init__(self, split: str, rng: np.random.Generator, tmp: Path, real: np.ndarray | None):
        self.split, self.rng, self.tmp, self.real = split, rng, tmp, real
        self.i = 0
        texts = SENTENCES[0::2] if split == "dev" else SENTENCES[1::2]
        self.items = []
        for vi, (voice, variant) in enumerate(VOICES[split]):
            lang = voice.split("-")[0] if voice.split("-")[0] in ("fr", "de", "es", "it", "nl") else None
            pool = [t for k, v in FOREIGN.items() if k.startswith(lang) for t in v] if lang else texts
            self.items.append((voice, variant, pool))

    def take(self, seconds: float) -> tuple[np.ndarray, str]:
        voice, variant, pool = self.items[self.i % len(self.items)]
        self.i += 1
        parts, total = [], 0
        k = int(self.rng.integers(len(pool)))
        speed, pitch = int(self.rng.integers(135, 185)), int(self.rng.integers(30, 70))
        while total < seconds * SR:
            s = _espeak(pool[k % len(pool)], voice, variant, speed, pitch, self.tmp)
            pause = np.zeros(int(self.rng.uniform(0.25, 0.8) * SR), np.float32)
            parts += [s, pause]
            total += len(s) + len(pause)
            k += 1
        return np.concatenate(parts)[:int(seconds * SR)], f"espeak-ng {voice}{variant}"


def _plan(split: str) -> list[tuple[str, float, dict]]:
    """(condition, seconds, options) per clip."""
    if split == "dev":
        plan = [("music", 30.0, {}) for _ in range(8)] + [("speech", 30.0, {}) for _ in range(8)]
        for snr in (-6, -12, -20):
            plan += [(f"speech_music_{snr}", 24.0, {"snr": snr, "real": k == 0}) for k in range(5)]
        plan += [("noise", 24.0, {"kind": k}) for k in ("white", "pink", "brown", "modulated")]
        plan += [("silence", 20.0, {"kind": k}) for k in ("zero", "floor", "floor")]
        return plan
    plan = [("music", 20.0, {}) for _ in range(14)] + [("speech", 20.0, {}) for _ in range(28)]
    for snr in (-3, -6, -9, -12, -15, -18, -21, -25):
        plan += [(f"speech_music_{snr}", 20.0, {"snr": snr}) for _ in range(5)]
    plan += [("noise", 20.0, {"kind": k}) for k in ("white", "pink", "brown", "modulated") * 2]
    plan += [("speech_noise", 20.0, {"kind": k, "snr": snr}) for k in ("pink", "brown", "modulated", "white")
             for snr in (-6, -15)]
    plan += [("silence", 10.0, {"kind": k}) for k in ("zero", "floor")]
    return plan


def build(out_dir: str | os.PathLike, *, split: str = "dev", cache: str | os.PathLike | None = None) -> Path:
    """Write the ``split`` set (``"dev"`` or ``"train"``) to ``out_dir``; return the manifest path.

    Deterministic: the same call writes the same samples. Needs ``espeak-ng``, ``fluidsynth``
    and a General MIDI soundfont (Debian ``timgm6mb-soundfont``), and the source wheels (see
    :func:`sources`).

    Examples
    --------
    >>> build("out/devset")                 # doctest: +SKIP
    PosixPath('out/devset/manifest.csv')
    """
    if split not in ("dev", "train"):
        raise ValueError(f"`split` must be 'dev' or 'train', not {split!r}")
    import soundfile as sf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = sources(cache)
    soundfont = next((s for s in SOUNDFONTS if Path(s).is_file()), None)
    if soundfont is None:
        raise RuntimeError("no General MIDI soundfont: apt-get install timgm6mb-soundfont")
    rng = np.random.default_rng(7 if split == "dev" else 1234)
    real = _load(src["sample.wav"])
    funky = _load(src["funkyrobot.mp3"])
    half = len(funky) // 2
    if split == "dev":
        songs = [_load(src["1918.mp3"]), funky[half:], _fit(_load(src["house_lo.ogg"]), 60 * SR)]
        song_seeds = list(range(100, 140))
    else:
        songs = [funky[:half]]
        song_seeds = list(range(1000, 1080))
    rows = []
    with tempfile.TemporaryDirectory(prefix="shakelab-devset-") as tmpd:
        tmp = Path(tmpd)
        speech = _Speech(split, rng, tmp, real)
        state = {"song": 0, "real": 0}

        def music(seconds: float) -> tuple[np.ndarray, str]:
            n = int(seconds * SR)
            k = state["song"]
            state["song"] += 1
            if k % 2 == 0 and songs:       # a song excerpt, alternating with synthetic songs
                y = songs[(k // 2) % len(songs)]
                start = int(rng.integers(0, max(1, len(y) - n)))
                name = ["1918.mp3", "funkyrobot.mp3", "house_lo.ogg"][(k // 2) % len(songs)] if split == "dev" \
                    else "funkyrobot.mp3 (first half)"
                return _fit(y[start:], n), name
            seed = song_seeds[k % len(song_seeds)]
            y, _ = _song(seed, seconds + 2)
            return _fit(_render(y, tmp, soundfont), n), f"synthetic song {seed}"

        def talk(seconds: float, use_real: bool = False) -> tuple[np.ndarray, str]:
            if split == "dev" and (use_real or state["real"] < 3):   # real speech: 30 s, reused
                k = state["real"]
                state["real"] += 1
                n = int(seconds * SR)
                if k == 0:
                    return _fit(real, n), "pyannote sample.wav"
                a = int(rng.integers(0, len(real) - n)) if len(real) > n else 0
                return _fit(real[a:], n), "pyannote sample.wav"
            y, name = speech.take(seconds)
            if split == "train" and rng.random() < 0.5:
                y, name = _reverb(y, rng), name + " (reverb)"
            return y, name

        for i, (cond, secs, opt) in enumerate(_plan(split)):
            n = int(secs * SR)
            sp_name = mu_name = ""
            snr = ""
            if cond == "music":
                y, mu_name = music(secs)
                y = _level(y, float(rng.uniform(-26, -14)))
                labels = [(0.0, secs)]
            elif cond == "speech":
                y, sp_name = talk(secs)
                y = _level(y, float(rng.uniform(-26, -16)))
                labels = []
            elif cond.startswith("speech_music"):
                s, sp_name = talk(secs, use_real=opt.get("real", False))
                m, mu_name = music(secs)
                lvl = float(rng.uniform(-24, -16))
                y = _level(s, lvl) + _level(m, lvl + opt["snr"])
                snr = opt["snr"]
                labels = [(0.0, secs)]
            elif cond == "speech_noise":        # train only: background that is not music
                s, sp_name = talk(secs)
                lvl = float(rng.uniform(-24, -16))
                y = _level(s, lvl) + _noise(opt["kind"], n, rng) * np.float32(10 ** ((lvl + opt["snr"]) / 20))
                snr = opt["snr"]
                labels = []
            elif cond == "noise":
                y = _noise(opt["kind"], n, rng) * np.float32(10 ** (float(rng.uniform(-35, -20)) / 20))
                labels = []
                mu_name = ""
            else:
                y = np.zeros(n, np.float32) if opt["kind"] == "zero" else _floor(n, rng, -70.0)
                labels = []
            if cond != "silence":
                y = y + _floor(len(y), rng)
            y = np.clip(y, -1, 1)
            name = f"{i:03d}_{cond}"
            sf.write(str(out / f"{name}.wav"), y, SR, subtype="PCM_16")
            (out / f"{name}.txt").write_text("".join(f"{a}\t{b}\tmusic\n" for a, b in labels))
            rows.append({"name": name, "condition": cond, "duration": secs, "speech": sp_name,
                         "music": mu_name, "snr_db": snr})
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m shakelab.devset OUT_DIR [--split dev|train]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m shakelab.devset", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--split", default="dev", choices=["dev", "train"])
    args = p.parse_args(argv)
    manifest = build(args.out_dir, split=args.split)
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
