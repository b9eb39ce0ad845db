"""A deterministic, labelled development set for music detection, from allowed offline sources.

Conditions (one condition per clip): ``music`` (music alone), ``speech`` (speech alone),
``speech_music_-6`` / ``speech_music_-12`` / ``speech_music_-20`` (speech with background
music whose RMS is 6/12/20 dB under the speech's), ``noise`` (white/pink/brown and modulated
noise) and ``silence`` (digital zero or a -70 dBFS noise floor). The ``dev`` split is about
16.5 minutes; the ``train`` split (used by ``tools/train_bgm.py`` for the background-music
cue) draws on other voices, sentences, synthetic songs and song excerpts, and more SNRs.

Sources (only audio licensed for this use), taken from package wheels with
``pip download --no-deps`` into a cache directory (a setup/dev step, never at run time):
real speech ``pyannote/audio/sample/sample.wav`` (pyannote.audio wheel, MIT), music
``arcade/resources/assets/music/1918.mp3`` and ``funkyrobot.mp3`` (arcade wheel),
``pygame/examples/data/house_lo.ogg`` (pygame wheel); synthetic speech from Debian
``espeak-ng``; synthetic songs that this module composes (MIDI) and renders with Debian
``fluidsynth`` and the ``timgm6mb-soundfont``; noise from numpy. The audio is written to the
directory you give and is not to be committed (the song files' licences are those of their
wheels).

The ``broadcast`` split (88 min, 263 clips of 20 s) tags every clip with its speech source
(:data:`SPEECH_SOURCES`: real voices from the pyannote sample and Debian voice prompts, espeak-ng
and flite), music source (:data:`MUSIC_SOURCES`, GM songs in six :data:`GENRES` among them),
recording chain (:data:`CHAINS`, :func:`chain`) and noise bed (:data:`BEDS`, :func:`bed`), for
leave-one-source-out scoring (``tools/train_bgm.py``); its manifest adds ``chain`` and ``bed``.
Debian packages it reads: :data:`BROADCAST_DEBS`.

Output: ``<clip>.wav`` (16 kHz mono PCM16), ``<clip>.txt`` (Audacity labels,
``start<TAB>end<TAB>music`` for music presence, empty when none) and ``manifest.csv``
(``name, condition, duration, speech, music, snr_db``).

Examples
--------
>>> from tools import devset
>>> devset.build("out/devset")            # doctest: +SKIP
PosixPath('out/devset/manifest.csv')

$ python -m tools.devset out/devset [--split train|broadcast]
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from tools.make_demo import varlen  # one MIDI encoder for the demo and the dev sets

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

__all__ = ["BEDS", "BROADCAST_CONDITIONS", "CHAINS", "CONDITIONS", "MUSIC_SOURCES", "NOISE_KINDS", "SPEECH_SOURCES",
           "bed", "build", "chain", "fingerprint", "input_fingerprint", "main", "sources"]


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
def _midi(events: list[tuple[float, bytes]], tempo_bpm: float) -> bytes:
    """Write a format-0 MIDI file from (time in beats, message) events, 480 ticks per beat."""
    tpb = 480
    data = bytearray(b"\x00\xff\x51\x03" + int(60e6 / tempo_bpm).to_bytes(3, "big"))
    last = 0
    for t, msg in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90)):
        tick = round(t * tpb)
        data += varlen(tick - last) + msg
        last = tick
    data += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpb) + b"MTrk" + struct.pack(">I", len(data)) + bytes(data)


SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
PROGRESSIONS = [[0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 4], [0, 5, 1, 4], [1, 4, 0, 0]]
LEADS = [0, 4, 11, 24, 25, 40, 56, 65, 71, 73, 80, 81]      # piano, e-piano, vibraphone, guitars, violin, ...
PADS = [48, 49, 16, 19, 88, 89, 52, 0, 46]
BASSES = [32, 33, 34, 38, 43]


class _Score:
    """The MIDI events of one generated song: lead, pad and bass programs, then notes on a scale."""

    def __init__(self, root: int, scale, lead: int, pad: int, bass: int):
        self.root, self.scale = root, scale
        self.events: list[tuple[float, bytes]] = [(0, bytes([0xC0, lead])), (0, bytes([0xC1, pad])),
                                                  (0, bytes([0xC2, bass]))]

    def note(self, ch: int, t: float, dur: float, pitch: int, vel: int) -> None:
        pitch = int(np.clip(pitch, 0, 127))
        self.events.append((t, bytes([0x90 | ch, pitch, int(vel)])))
        self.events.append((t + dur, bytes([0x80 | ch, pitch, 0])))

    def degree(self, d: int, octave: int = 0) -> int:
        return self.root + self.scale[d % 7] + 12 * (d // 7 + octave)

    def melody(self, rng: np.random.Generator, bar: int, deg: int, durations: list[float]) -> int:
        """One bar of a random-walk lead line (channel 0); returns the scale degree it ends on."""
        t = float(bar)
        while t < bar + 4:
            dur = float(rng.choice(durations))
            deg = int(np.clip(deg + rng.integers(-2, 3), 3, 14))
            if rng.random() < 0.85:
                self.note(0, t, dur * 0.95, self.degree(deg, 1), int(rng.integers(70, 105)))
            t += dur
        return deg

def _song(seed: int, seconds: float) -> tuple[bytes, float]:
    rng = np.random.default_rng(seed)
    tempo = float(rng.integers(72, 150))
    beats = int(seconds * tempo / 60) + 4
    root = 48 + int(rng.integers(0, 12))
    scale = SCALES["major" if rng.random() < 0.6 else "minor"]
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    lead, pad, bass = (int(rng.choice(LEADS)), int(rng.choice(PADS)), int(rng.choice(BASSES)))
    drums = rng.random() < 0.7
    score = _Score(root, scale, lead, pad, bass)
    note, degree, ev = score.note, score.degree, score.events

    deg = 7
    for bar in range(0, beats, 4):
        chord = prog[(bar // 4) % len(prog)]
        for k in (0, 2, 4):
            note(1, bar, 4, degree(chord + k), 60)
        for b in range(4):
            note(2, bar + b, 0.9, degree(chord, -1), 85)
        deg = score.melody(rng, bar, deg, [0.5, 0.5, 1.0, 1.0, 1.5, 2.0])
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
        for voice, variant in VOICES[split]:
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
    if split not in ("dev", "train", "broadcast"):
        raise ValueError(f"`split` must be 'dev', 'train' or 'broadcast', not {split!r}")
    if split == "broadcast":
        return _build_broadcast(Path(out_dir), cache)
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


# ----------------------------------------------------------------------------- broadcast split
# Held-out style material: every allowed source tagged, so that an evaluation can leave a
# source out (fit on the others). Real speech from Debian packages (asterisk prompts: Allison
# Smith en/es, June Wallack fr, CC-BY-SA-3.0; alsa-utils and sound-theme-freedesktop voice
# prompts, GPL-2+), the pyannote sample, espeak-ng and flite voices; music from the arcade and
# pygame wheels, asterisk-moh-opsound (CC-BY-SA-3.0), asc-music (GPL-2+) and GM songs in six
# genres rendered by fluidsynth.
BROADCAST_CONDITIONS = ("music", "speech", "speech_bed", "speech_music_-6", "speech_music_-12",
                        "speech_music_-20", "noise", "silence")
SPEECH_SOURCES = ("pyannote", "asterisk-en", "asterisk-fr", "asterisk-es", "prompts", "espeak-ng", "flite")
MUSIC_SOURCES = ("arcade", "pygame", "moh-opsound", "asc-music", "synth-gm")
CHAINS = ("clean", "telephone", "am", "mp3", "reverb", "mic", "hum")
BEDS = ("wind", "rain", "traffic", "crowd", "room")
GENRES = ("pop", "piano", "ambient", "rock", "jazz", "orchestral")
ASTERISK = {"asterisk-en": "en_US_f_Allison", "asterisk-fr": "fr_CA_f_June", "asterisk-es": "es_MX_f_Allison"}
ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
MOH_DIR = Path("/usr/share/asterisk/moh")
ASC_DIR = Path("/usr/share/games/asc/music")
PROMPT_FILES = sorted(Path("/usr/share/sounds/alsa").glob("[FRS]*_*.wav")) + sorted(
    Path("/usr/share/sounds/freedesktop/stereo").glob("audio-channel-*.oga"))
FLITE_VOICES = ("kal16", "awb", "rms", "slt", "kal")
ESPEAK_VOICES = [("en-us", "+m3"), ("en-gb", "+f2"), ("en-gb-scotland", "+m1"), ("en-us", "+f4"), ("de", "+m2"),
                 ("fr-fr", "+f1"), ("en-029", "+m6"), ("es", "+m3"), ("en-us", "+klatt3"), ("en-gb", "+Annie")]
#: Debian packages the broadcast split reads (besides espeak-ng, fluidsynth, timgm6mb-soundfont)
BROADCAST_DEBS = ("flite", "alsa-utils", "sound-theme-freedesktop", "asterisk-core-sounds-en-wav",
                  "asterisk-core-sounds-fr-wav", "asterisk-core-sounds-es-wav", "asterisk-moh-opsound-wav", "asc-music")
BROADCAST_CLIP = 20.0
#: noise alone in the broadcast split: the beds and four synthetic noises
NOISE_KINDS = (*BEDS, "white", "pink", "brown", "hum")


def _butter(y: np.ndarray, lo: float | None, hi: float | None, order: int = 4) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    if lo and hi:
        sos = butter(order, [lo, hi], btype="bandpass", fs=SR, output="sos")
    elif lo:
        sos = butter(order, lo, btype="highpass", fs=SR, output="sos")
    else:
        sos = butter(order, hi, btype="lowpass", fs=SR, output="sos")
    return sosfilt(sos, y).astype(np.float32)


def _resample(y: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    import soxr

    return soxr.resample(np.asarray(y, np.float32), sr_from, sr_to, quality="HQ").astype(np.float32)


def chain(y: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Pass 16 kHz audio through a recording/transmission chain (level kept).

    ``kind`` is one of :data:`CHAINS`: ``telephone`` (300-3400 Hz, through 8 kHz), ``am``
    (100-4500 Hz, soft clipping, hiss), ``mp3`` (round trip at about 24-40 kbit/s), ``reverb``
    (RT60 0.2-0.8 s), ``mic`` (80 Hz high-pass, 7 kHz low-pass, self-noise 35-45 dB down),
    ``hum`` (50/60 Hz and harmonics 30-40 dB down) or ``clean``.

    Examples
    --------
    >>> y = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    >>> chain(y, "telephone", np.random.default_rng(1)).shape
    (16000,)
    """
    if kind not in CHAINS:
        raise ValueError(f"`kind` must be one of {CHAINS}, not {kind!r}")
    y = np.asarray(y, np.float32)
    lvl = _rms(y)
    if kind == "telephone":
        y = _fit(_resample(_resample(_butter(y, 300, 3400), SR, 8000), 8000, SR), len(y))
    elif kind == "am":
        y = _butter(y, 100, 4500, order=6)
        y = np.tanh(2.5 * y / (4 * lvl + 1e-9)) * (4 * lvl) / 2.5
        y = y + _butter(rng.standard_normal(len(y)).astype(np.float32), 100, 4500) * np.float32(lvl * 0.02)
    elif kind == "mp3":
        import io

        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, np.clip(y, -1, 1), SR, format="MP3", compression_level=float(rng.uniform(0.85, 1.0)),
                 bitrate_mode="CONSTANT")
        buf.seek(0)
        z, _ = sf.read(buf, dtype="float32")
        y = _fit(z if z.ndim == 1 else z.mean(axis=1), len(y))
    elif kind == "reverb":
        y = _reverb(y, rng)
    elif kind == "mic":
        y = _butter(_butter(y, 80, None, 2), None, 7000, 2)
        y = y + _noise("pink", len(y), rng) * np.float32(lvl * 10 ** (-float(rng.uniform(35, 45)) / 20))
    elif kind == "hum":
        f0 = 50.0 if rng.random() < 0.5 else 60.0
        t = np.arange(len(y)) / SR
        h = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 6)).astype(np.float32)
        y = y + h / _rms(h) * np.float32(lvl * 10 ** (-float(rng.uniform(30, 40)) / 20))
    return (y / max(_rms(y), 1e-12) * lvl).astype(np.float32)


def bed(kind: str, n: int, rng: np.random.Generator, babble: np.ndarray | None = None) -> np.ndarray:
    """Make a background bed of ``n`` samples at unit RMS: one of :data:`BEDS`.

    ``crowd`` needs ``babble`` (several voices summed; see the broadcast builder).

    Examples
    --------
    >>> y = bed("rain", 16000, np.random.default_rng(0))
    >>> round(float(np.sqrt(np.mean(y ** 2))), 3)
    1.0
    """
    if kind not in BEDS:
        raise ValueError(f"`kind` must be one of {BEDS}, not {kind!r}")
    if kind == "wind":        # low rumble with gusts
        env = np.interp(np.arange(n), np.linspace(0, n, max(2, n // 4000)), rng.uniform(0.1, 1.0, max(2, n // 4000)))
        y = _butter(_noise("pink", n, rng), None, float(rng.uniform(300, 800)), 2) * env
    elif kind == "rain":      # hiss and droplets
        y = _butter(_noise("white", n, rng), 1000, None, 2) * 0.5
        drops = np.zeros(n, np.float32)
        at = rng.integers(0, n, size=max(1, int(n / SR * rng.uniform(40, 120))))
        drops[at] = rng.uniform(0.5, 3.0, len(at))
        ir = rng.standard_normal(160) * np.exp(-np.arange(160) / 25.0)
        y = y + _butter(np.convolve(drops, ir)[:n].astype(np.float32), 800, None, 2)
    elif kind == "traffic":   # rumble and passing vehicles
        y = _noise("brown", n, rng)
        t = np.arange(n) / SR
        for c in rng.uniform(0, n / SR, size=max(1, int(n / SR / 4))):
            y = y + 3 * np.exp(-((t - c) / rng.uniform(0.8, 2.0)) ** 2) * _butter(
                _noise("pink", n, rng), 60, 2000, 2)
    elif kind == "crowd":
        if babble is None:
            raise ValueError("`babble` is needed for the 'crowd' bed")
        y = _fit(babble, n) + 0.3 * _noise("pink", n, rng)
    else:                     # room tone: ventilation
        y = _butter(_noise("pink", n, rng), 40, 2500, 2)
    y = np.asarray(y, np.float32)
    return (y / max(_rms(y), 1e-12)).astype(np.float32)


def _flite(text: str, voice: str, stretch: float, f0: float, tmp: Path) -> np.ndarray:
    exe = _need("flite", "flite")
    wav = tmp / "flite.wav"
    subprocess.run([exe, "-voice", voice, "--setf", f"duration_stretch={stretch:.2f}",
                    "--setf", f"int_f0_target_mean={f0:.0f}", "-t", text, "-o", str(wav)],
                   check=True, capture_output=True)
    y = _load(wav)
    nz = np.flatnonzero(np.abs(y) > 1e-4)
    return y[nz[0]:nz[-1] + 1] if len(nz) else y


def _varispeed(y: np.ndarray, factor: float) -> np.ndarray:
    """Pitch and tempo together (a tape running ``factor`` times faster)."""
    return _resample(y, round(SR * factor), SR) if abs(factor - 1) > 1e-3 else y


def _genre_song(seed: int, seconds: float, genre: str) -> bytes:
    """Compose a MIDI song in one of :data:`GENRES` (instrumentation, tempo and drums by genre)."""
    rng = np.random.default_rng(seed)
    lead, pad, bass, drums, tempo, arp = {
        "pop": (int(rng.choice([0, 4, 80, 81])), 89, 33, True, rng.integers(95, 130), False),
        "piano": (0, 0, 0, False, rng.integers(66, 100), True),
        "ambient": (int(rng.choice([88, 91, 95])), int(rng.choice([89, 90, 92])), 38, False, rng.integers(60, 80),
                    False),
        "rock": (30, 29, 34, True, rng.integers(110, 150), False),
        "jazz": (int(rng.choice([4, 11, 65, 66])), 4, 32, True, rng.integers(90, 140), False),
        "orchestral": (int(rng.choice([40, 56, 73, 71])), 48, 42, False, rng.integers(70, 110), True),
    }[genre]
    tempo = float(tempo)
    beats = int(seconds * tempo / 60) + 4
    root = 45 + int(rng.integers(0, 12))
    scale = SCALES["major" if rng.random() < 0.6 else "minor"]
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    score = _Score(root, scale, lead, pad, bass)
    note, degree, ev = score.note, score.degree, score.events

    deg = 7
    for bar in range(0, beats, 4):
        chord = prog[(bar // 4) % len(prog)]
        if arp:
            for k in range(8):
                note(1, bar + 0.5 * k, 0.5, degree(chord + (0, 2, 4, 7)[k % 4]), 55)
        else:
            for k in (0, 2, 4):
                note(1, bar, 4, degree(chord + k), 50 if genre == "ambient" else 60)
        if genre != "ambient":
            for b in range(4):
                note(2, bar + b, 0.9, degree(chord + (b if genre == "jazz" else 0), -1), 85)
        deg = score.melody(rng, bar, deg, [2.0, 4.0] if genre == "ambient" else [0.5, 0.5, 1.0, 1.0, 1.5, 2.0])
        if drums:
            for b in range(4):
                if genre == "jazz":
                    note(9, bar + b, 0.1, 51, 70)
                    note(9, bar + b + 0.66, 0.1, 51, 55)
                    if b % 2:
                        note(9, bar + b, 0.1, 44, 60)
                else:
                    note(9, bar + b, 0.1, 36 if b % 2 == 0 else 38, 95)
                    note(9, bar + b, 0.1, 42, 70)
                    note(9, bar + b + 0.5, 0.1, 42, 60)
    return _midi(ev, tempo)


def _broadcast_plan() -> list[dict]:
    """One dict per clip: condition, speech source, music source, chain, bed, snr_db."""
    nc = len(CHAINS)
    plan = []
    for i, s in enumerate(SPEECH_SOURCES):
        for c in CHAINS:
            plan.append({"condition": "speech", "speech": s, "chain": c})
        for j, b in enumerate(BEDS):
            plan.append({"condition": "speech_bed", "speech": s, "bed": b, "snr_db": -(10 + 10 * ((i + j) % 3)),
                         "chain": CHAINS[(i + j) % nc]})
    music_clips = {"arcade": 4, "pygame": 2, "moh-opsound": 5, "asc-music": 3, "synth-gm": 6}
    k = 0
    for m in MUSIC_SOURCES:
        for _ in range(music_clips[m]):
            plan.append({"condition": "music", "music": m, "chain": CHAINS[k % nc]})
            k += 1
    for i, s in enumerate(SPEECH_SOURCES):
        for j, m in enumerate(MUSIC_SOURCES):
            for snr in (-12, -20):
                plan.append({"condition": f"speech_music_{snr}", "speech": s, "music": m, "snr_db": snr,
                             "chain": CHAINS[(i + j + snr) % nc]})
            if (i + j) % 5 < 2:
                plan.append({"condition": "speech_music_-6", "speech": s, "music": m, "snr_db": -6,
                             "chain": CHAINS[(i + 2 * j) % nc]})
    for j, b in enumerate(NOISE_KINDS):
        plan.append({"condition": "noise", "bed": b, "chain": CHAINS[j % nc]})
    for kind in ("zero", "floor", "floor"):
        plan.append({"condition": "silence", "bed": kind, "chain": "clean"})
    # appended after the clips above, each from its own random stream (_build_broadcast), so
    # that those stay byte-identical: every noise kind alone through every chain
    for b in NOISE_KINDS:
        for c in CHAINS:
            plan.append({"condition": "noise", "bed": b, "chain": c, "own_stream": True})
    for p in plan:
        for key in ("speech", "music", "bed", "snr_db"):
            p.setdefault(key, "")
    return plan


class _BroadcastSources:
    """Deterministic supply of speech and music per source name."""

    def __init__(self, src: dict[str, Path], soundfont: str, tmp: Path, rng: np.random.Generator):
        self.rng, self.tmp, self.soundfont = rng, tmp, soundfont
        self.pyannote = _load(src["sample.wav"])
        self.arcade = [_load(src["1918.mp3"]), _load(src["funkyrobot.mp3"])]
        self.pygame = _fit(_load(src["house_lo.ogg"]), 40 * SR)
        for d, pkg in ((MOH_DIR, "asterisk-moh-opsound-wav"), (ASC_DIR, "asc-music")):
            if not d.is_dir():
                raise RuntimeError(f"{d} not found: apt-get install {pkg}")
        self.moh = sorted(MOH_DIR.glob("*.wav"))
        self.asc = sorted(ASC_DIR.glob("*.mp3"))
        self.prompts = [_load(p) for p in PROMPT_FILES]
        if not self.prompts:
            raise RuntimeError("no voice prompts: apt-get install alsa-utils sound-theme-freedesktop")
        self.count: dict[str, int] = {}

    def _next(self, name: str) -> int:
        self.count[name] = self.count.get(name, 0) + 1
        return self.count[name] - 1

    def speech(self, name: str, seconds: float) -> np.ndarray:
        n, rng, k = int(seconds * SR), self.rng, self._next(name)
        parts, total = [], 0
        if name == "pyannote":
            a = int(rng.integers(0, max(1, len(self.pyannote) - n)))
            y = _fit(self.pyannote[a:], n)
        else:
            if name in ASTERISK:
                d = ASTERISK_DIR / ASTERISK[name]
                if not d.is_dir():
                    raise RuntimeError(f"{d} not found: apt-get install asterisk-core-sounds-{name[9:]}-wav")
                files = sorted(d.rglob("*.wav"))
            while total < n:
                if name in ASTERISK:
                    s = _load(files[int(rng.integers(len(files)))])
                elif name == "prompts":
                    s = self.prompts[int(rng.integers(len(self.prompts)))]
                elif name == "espeak-ng":
                    voice, variant = ESPEAK_VOICES[(k + len(parts)) % len(ESPEAK_VOICES)]
                    lang = voice.split("-")[0]
                    pool = [t for key, v in FOREIGN.items() if key.startswith(lang) for t in v] or SENTENCES
                    s = _espeak(pool[int(rng.integers(len(pool)))], voice, variant, int(rng.integers(125, 200)),
                                int(rng.integers(20, 80)), self.tmp)
                else:
                    s = _flite(SENTENCES[int(rng.integers(len(SENTENCES)))], FLITE_VOICES[k % len(FLITE_VOICES)],
                               float(rng.uniform(0.8, 1.25)), float(rng.uniform(90, 220)), self.tmp)
                nz = np.flatnonzero(np.abs(s) > 1e-3)
                s = s[nz[0]:nz[-1] + 1] if len(nz) else s
                pause = np.zeros(int(rng.uniform(0.15, 0.7) * SR), np.float32)
                parts += [s, pause]
                total += len(s) + len(pause)
            y = np.concatenate(parts)[:n]
        if name in ("pyannote", "prompts") or name in ASTERISK:   # real voices: pitch/tempo variation
            y = _fit(_varispeed(y, float(rng.uniform(0.9, 1.1))), n)
        return y

    def music(self, name: str, seconds: float) -> np.ndarray:
        n, rng, k = int(seconds * SR), self.rng, self._next(name)
        if name == "synth-gm":
            genre = GENRES[k % len(GENRES)]
            y = _render(_genre_song(500 + k, seconds + 2, genre), self.tmp, self.soundfont)
            return _fit(y[int(0.5 * SR):], n)
        if name == "arcade":
            y = self.arcade[k % 2]
        elif name == "pygame":
            y = self.pygame
        else:
            files = self.moh if name == "moh-opsound" else self.asc
            y = _load(files[k % len(files)])
        a = int(rng.integers(0, max(1, len(y) - n)))
        return _fit(y[a:], n)

    def babble(self, seconds: float) -> np.ndarray:
        """Crowd: six espeak voices talking at once (never a source under test as foreground)."""
        n = int(seconds * SR)
        voices = [_fit(np.roll(self.speech("espeak-ng", seconds), int(self.rng.integers(n))), n) for _ in range(6)]
        self.count["espeak-ng"] -= 6      # keep the foreground espeak stream where it was
        return np.sum([_level(v, 0.0) for v in voices], axis=0).astype(np.float32)


def _build_broadcast(out: Path, cache) -> Path:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    src = sources(cache)
    soundfont = next((s for s in SOUNDFONTS if Path(s).is_file()), None)
    if soundfont is None:
        raise RuntimeError("no General MIDI soundfont: apt-get install timgm6mb-soundfont")
    rng = np.random.default_rng(2026)
    secs = BROADCAST_CLIP
    n = int(secs * SR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="shakelab-broadcast-") as tmpd:
        tmp = Path(tmpd)
        supply = _BroadcastSources(src, soundfont, tmp, rng)
        for i, p in enumerate(_broadcast_plan()):
            if p.get("own_stream"):
                # a clip appended to the split draws from its own stream: the clips before it
                # stay what they were, and an input that differs on another machine changes
                # only the appended clips that use it
                rng = supply.rng = np.random.default_rng([2026, i])
            cond = p["condition"]
            lvl = float(rng.uniform(-26, -16))
            labels: list[tuple[float, float]] = []
            if cond == "music":
                y = _level(supply.music(p["music"], secs), lvl)
                labels = [(0.0, secs)]
            elif cond == "speech":
                y = _level(supply.speech(p["speech"], secs), lvl)
            elif cond == "speech_bed":
                b = bed(p["bed"], n, rng, supply.babble(secs) if p["bed"] == "crowd" else None)
                y = _level(supply.speech(p["speech"], secs), lvl) + b * np.float32(10 ** ((lvl + p["snr_db"]) / 20))
            elif cond.startswith("speech_music"):
                y = (_level(supply.speech(p["speech"], secs), lvl)
                     + _level(supply.music(p["music"], secs), lvl + p["snr_db"]))
                labels = [(0.0, secs)]
            elif cond == "noise":
                if p["bed"] in BEDS:
                    y = bed(p["bed"], n, rng, supply.babble(secs) if p["bed"] == "crowd" else None)
                elif p["bed"] == "hum":
                    t = np.arange(n) / SR
                    y = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in range(1, 8)).astype(np.float32)
                    y = y / _rms(y) + 0.2 * _noise("pink", n, rng)
                else:
                    y = _noise(p["bed"], n, rng)
                y = (y * np.float32(10 ** (float(rng.uniform(-40, -20)) / 20) / _rms(y))).astype(np.float32)
            else:
                y = np.zeros(n, np.float32) if p["bed"] == "zero" else _floor(n, rng, -70.0)
            if cond != "silence":
                y = chain(y, p["chain"], rng) + _floor(n, rng)
            y = np.clip(y, -1, 1)
            name = f"{i:03d}_{cond}"
            sf.write(str(out / f"{name}.wav"), y, SR, subtype="PCM_16")
            (out / f"{name}.txt").write_text("".join(f"{a}\t{b}\tmusic\n" for a, b in labels))
            rows.append({"name": name, "condition": cond, "duration": secs, "speech": p["speech"],
                         "music": p["music"], "snr_db": p["snr_db"], "chain": p["chain"], "bed": p["bed"]})
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


# ----------------------------------------------------------------------------- fingerprints
def _sha(*parts) -> str:
    h = hashlib.sha256()
    for x in parts:
        h.update(x.encode() if isinstance(x, str) else np.ascontiguousarray(x).tobytes()
                 if isinstance(x, np.ndarray) else bytes(x))
    return h.hexdigest()


def fingerprint(out_dir: str | os.PathLike) -> dict[str, str]:
    r"""Compute the sha256 of every clip of a built set: its samples, its labels and its manifest row.

    The samples are hashed as the 16-bit integers the WAV holds (not the file's header), so two
    builds agree exactly when every clip would give a fit the same numbers.

    Examples
    --------
    >>> import soundfile as sf, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> sf.write(d / "000_silence.wav", np.zeros(1600, np.float32), SR, subtype="PCM_16")
    >>> _ = (d / "000_silence.txt").write_text("")
    >>> _ = (d / "manifest.csv").write_text("name,condition\n000_silence,silence\n")
    >>> fp = fingerprint(d)
    >>> list(fp), len(fp["000_silence"])
    (['000_silence'], 64)
    """
    import soundfile as sf

    d = Path(out_dir)
    with open(d / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for r in rows:
        y, _ = sf.read(str(d / f"{r['name']}.wav"), dtype="int16")
        out[r["name"]] = _sha(repr(sorted(r.items())), (d / f"{r['name']}.txt").read_bytes(), y)
    return out


def input_fingerprint(cache: str | os.PathLike | None = None) -> dict[str, str]:
    """Compute the sha256 of every input of the broadcast split that this machine supplies.

    One entry per input: the wheel members and the Debian data (as decoded at 16 kHz, so the
    decoders and the resampler count), the soundfont, one fixed sentence through ``espeak-ng``
    and ``flite``, one fixed song through ``fluidsynth``, one fixed noise through every
    :data:`CHAINS` (the MP3 codec of libsndfile, soxr, scipy's filters). When two machines build
    different broadcast splits, the entries that differ name the cause.

    Examples
    --------
    >>> fp = input_fingerprint()          # doctest: +SKIP
    >>> sorted(fp)[:3]                    # doctest: +SKIP
    ['asc-music', 'asterisk-en', 'asterisk-es']
    """
    src = sources(cache)
    soundfont = next((s for s in SOUNDFONTS if Path(s).is_file()), None)
    if soundfont is None:
        raise RuntimeError("no General MIDI soundfont: apt-get install timgm6mb-soundfont")
    out = {f"wheel {name}": _sha(_load(path)) for name, path in sorted(src.items())}
    for name, voice in ASTERISK.items():
        files = sorted((ASTERISK_DIR / voice).rglob("*.wav"))
        out[name] = _sha(*(x for f in files for x in (str(f.relative_to(ASTERISK_DIR)), f.read_bytes())))
    out["moh-opsound"] = _sha(*(x for f in sorted(MOH_DIR.glob("*.wav")) for x in (f.name, _load(f))))
    out["asc-music"] = _sha(*(x for f in sorted(ASC_DIR.glob("*.mp3")) for x in (f.name, _load(f))))
    out["prompts"] = _sha(*(x for f in PROMPT_FILES for x in (f.name, _load(f))))
    out["soundfont"] = _sha(Path(soundfont).name, Path(soundfont).read_bytes())
    with tempfile.TemporaryDirectory(prefix="shakelab-probe-") as tmpd:
        tmp = Path(tmpd)
        out["espeak-ng"] = _sha(_espeak(SENTENCES[0], "en-us", "+m3", 160, 50, tmp))
        out["flite"] = _sha(_flite(SENTENCES[0], "kal16", 1.0, 120.0, tmp))
        out["fluidsynth"] = _sha(_render(_genre_song(500, 4.0, "pop"), tmp, soundfont))
    probe = (_noise("pink", 2 * SR, np.random.default_rng(0)) * np.float32(0.1)).astype(np.float32)
    out.update({f"chain {c}": _sha(chain(probe, c, np.random.default_rng(1))) for c in CHAINS})
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.devset OUT_DIR [--split dev|train|broadcast]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tools.devset", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--split", default="dev", choices=["dev", "train", "broadcast"])
    args = p.parse_args(argv)
    manifest = build(args.out_dir, split=args.split)
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
