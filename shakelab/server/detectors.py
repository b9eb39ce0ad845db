"""Music detectors of the local server, behind one small interface.

A detector turns mono samples into a **music probability track**: one probability per
``hop`` seconds, frame ``i`` centred on ``(i + 0.5) * hop``. :func:`windows` then averages
that track into the page's windows ``[{start_time, end_time, confidence}]``, so the
confidence of a window is the *mean music probability* over the frames whose centres fall
inside it (the last window is shorter when the duration is not a multiple of ``window``).

`FeatureDetector` is the classical detector (librosa features + a tiny MLP ensemble,
coefficients in ``music_features.json``, fitted offline by ``data/fit_detector.py``).
A neural detector plugs in by implementing :class:`Detector` and being returned by
:func:`get_detector`.

The features (computed on audio resampled to 8 kHz, so the band above 4 kHz, which
telephone speech and old recordings lack, never decides anything), over a 3-s context
every 0.5 s:

``low_energy``
    share of 32-ms frames whose RMS is under half the context's mean RMS (speech has
    pauses between syllables: high; music is sustained: low).
``flux_cv``
    coefficient of variation of the log-mel spectral flux (speech alternates bursts and
    pauses: high).
``chroma_lag``
    mean cosine similarity of mean-removed chroma vectors 0.25 s apart (notes and chords
    persist; speech pitch glides; flat noise chroma gives no similarity).
``chroma_peak``
    peakiness of the context's mean chroma (1 - normalised entropy): a key/chord
    concentrates pitch classes, speech and noise spread them.
``stable_peaks``
    share of the energy held by spectral peaks that stay on the same bin for three frames
    (steady tones; speech harmonics and noise peaks move).
``beat``
    strength of the best periodicity of the onset envelope between 0.3 and 1.0 s over a 6-s
    context (a beat).
``hzcrr``
    share of frames whose zero-crossing rate is over 1.5 times the context mean (unvoiced
    consonants).
``centroid_cv``
    coefficient of variation of the spectral centroid (voiced/unvoiced alternation).

``floor``
    log10 ratio of the 10th percentile to the median frame RMS (pauses make it very negative).
``mod4``
    share of the mel-band envelope modulation energy between 2.5 and 6 Hz (syllable rate).
``low_stable``
    ``stable_peaks`` restricted to the band under 500 Hz (bass lines and held notes).

Steps whose surrounding 0.5 s is quieter than ``SILENCE_DB`` (-60 dBFS RMS) get probability 0:
silence is not music.

Examples
--------
>>> import numpy as np
>>> from shakelab.server.detectors import get_detector, windows
>>> det = get_detector("features")
>>> y = np.zeros(22050 * 12, dtype=np.float32)
>>> hop, p = det.music_probability(y, 22050)
>>> [w["confidence"] for w in windows(hop, p, 12.0, window=10.0)]
[0.0, 0.0]
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from shakelab.errors import ValidationError

__all__ = [
    "FEATURE_NAMES",
    "SILENCE_DB",
    "Detector",
    "FeatureDetector",
    "feature_matrix",
    "get_detector",
    "windows",
]

FEATURE_SR = 8000
N_FFT = 1024          # 128 ms at 8 kHz
HOP = 256             # 32 ms
CONTEXT = 3.0         # seconds of context per decision
RHYTHM_CONTEXT = 6.0  # seconds for the beat feature
STEP = 0.5            # seconds between decisions
SILENCE_DB = -60.0
FEATURE_NAMES = ("low_energy", "flux_cv", "chroma_lag", "chroma_peak", "stable_peaks", "beat", "hzcrr",
                 "centroid_cv", "floor", "mod4", "low_stable")
COEF_PATH = Path(__file__).with_name("music_features.json")


class Detector(Protocol):
    """What a music detector provides.

    ``music_probability(y, sr)`` takes mono float samples and returns ``(hop, probs)``:
    ``probs[i]`` in [0, 1] is the probability that music is present around
    ``(i + 0.5) * hop`` seconds, for ``i`` in ``range(ceil(duration / hop))``.
    """

    name: str

    @property
    def sample_rate(self) -> int | None:
        """Preferred input sample rate (the server decodes to it); None means any."""

    def music_probability(self, y: np.ndarray, sr: int) -> tuple[float, np.ndarray]:
        """Return ``(hop, probs)`` for mono ``y`` at ``sr``."""


def _resample(y: np.ndarray, sr: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValidationError(f"`y` must be mono (1-D), not of shape {y.shape}")
    if sr != FEATURE_SR:
        import librosa

        y = librosa.resample(y, orig_sr=sr, target_sr=FEATURE_SR, res_type="soxr_hq")
    return np.nan_to_num(y.astype(np.float32, copy=False))


def _frame_tracks(y8: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame (32 ms) tracks the context features are computed from."""
    import librosa

    S = np.abs(librosa.stft(y8, n_fft=N_FFT, hop_length=HOP, center=True)).astype(np.float32)
    power = S ** 2
    n = S.shape[1]
    rms = np.sqrt(power.mean(axis=0) * 2 / N_FFT)  # ~ RMS of the windowed signal
    mel = librosa.feature.melspectrogram(S=power, sr=FEATURE_SR, n_mels=40, fmax=FEATURE_SR / 2)
    logmel = np.log(mel + 1e-8)
    flux = np.zeros(n, np.float32)
    flux[1:] = np.maximum(logmel[:, 1:] - logmel[:, :-1], 0).mean(axis=0)
    chroma = librosa.feature.chroma_stft(S=power, sr=FEATURE_SR, n_fft=N_FFT, tuning=0.0)
    chroma_raw = chroma / (chroma.sum(axis=0, keepdims=True) + 1e-9)
    chroma = chroma - chroma.mean(axis=0, keepdims=True)  # flat (noise) chroma -> no similarity
    chroma = chroma / (np.linalg.norm(chroma, axis=0, keepdims=True) + 1e-9)
    # steady spectral peaks: local maxima over frequency, within 40 dB of the frame's max,
    # on the same bin in the previous and next frame
    logS = 20 * np.log10(S + 1e-9)
    peak = np.zeros_like(S, dtype=bool)
    peak[1:-1] = (logS[1:-1] > logS[:-2]) & (logS[1:-1] >= logS[2:]) & (logS[1:-1] > logS.max(axis=0) - 40)
    steady = np.zeros_like(peak)
    steady[:, 1:-1] = peak[:, 1:-1] & peak[:, :-2] & peak[:, 2:]
    stable_e = (power * steady).sum(axis=0)
    low = slice(0, int(500 / (FEATURE_SR / N_FFT)))
    low_stable_e = (power[low] * steady[low]).sum(axis=0)
    low_e = power[low].sum(axis=0) + 1e-12
    total_e = power.sum(axis=0) + 1e-12
    zcr = librosa.feature.zero_crossing_rate(y8, frame_length=N_FFT, hop_length=HOP, center=True)[0][:n]
    freqs = np.linspace(0, FEATURE_SR / 2, S.shape[0], dtype=np.float32)
    centroid = (freqs[:, None] * power).sum(axis=0) / total_e
    return dict(low_stable_e=low_stable_e, low_e=low_e, logmel=logmel,
                rms=rms, flux=flux, chroma=chroma, chroma_raw=chroma_raw, stable_e=stable_e, total_e=total_e, zcr=zcr,
                centroid=centroid, n=np.array(n))


def _autocorr_strength(env: np.ndarray, lo: int, hi: int) -> float:
    env = env - env.mean()
    denom = float(np.dot(env, env))
    if denom <= 1e-12 or len(env) <= hi:
        return 0.0
    spec = np.fft.rfft(env, 2 * len(env))
    ac = np.fft.irfft(np.abs(spec) ** 2)[: hi + 1] / denom
    # unbiased: divide by overlap length share
    ac = ac / (1 - np.arange(hi + 1) / len(env))
    return float(np.clip(ac[lo:hi + 1].max(), 0.0, 1.0))


def feature_matrix(y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Compute the context features of :data:`FEATURE_NAMES` every ``STEP`` seconds.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``X`` of shape ``(n_steps, len(FEATURE_NAMES))`` and ``level_db`` of shape
        ``(n_steps,)`` (RMS of the 0.5 s around each step in dBFS, for the silence gate).

    Examples
    --------
    >>> import numpy as np
    >>> X, level = feature_matrix(np.zeros(8000 * 4, np.float32), 8000)
    >>> X.shape
    (8, 11)
    """
    y8 = _resample(y, sr)
    duration = len(y8) / FEATURE_SR
    n_steps = max(1, math.ceil(duration / STEP - 1e-9))
    if len(y8) < N_FFT:
        y8 = np.pad(y8, (0, N_FFT - len(y8)))
    t = _frame_tracks(y8)
    n = int(t["n"])
    fps = FEATURE_SR / HOP
    half = round(CONTEXT / 2 * fps)
    rhalf = round(RHYTHM_CONTEXT / 2 * fps)
    lag = round(0.25 * fps)
    gate_half = round(0.25 * fps)
    lo, hi = round(0.3 * fps), round(1.0 * fps)
    X = np.zeros((n_steps, len(FEATURE_NAMES)), np.float32)
    level = np.full(n_steps, -120.0, np.float32)
    rms, flux, chroma, zcr, centroid = t["rms"], t["flux"], t["chroma"], t["zcr"], t["centroid"]
    for i in range(n_steps):
        c = round((i + 0.5) * STEP * fps)
        a, b = max(0, c - half), min(n, c + half + 1)
        if b - a < 4:
            a, b = max(0, n - 2 * half - 1), n
        r = rms[a:b]
        m = float(r.mean())
        la, lb = max(0, c - gate_half), min(n, c + gate_half + 1)
        level[i] = 20 * math.log10(float(rms[la:lb].mean()) + 1e-9) if lb > la else -120.0
        low_energy = float(np.mean(r < 0.5 * m)) if m > 0 else 1.0
        f = flux[a:b]
        flux_cv = float(f.std() / (f.mean() + 1e-9))
        ch = chroma[:, a:b]
        chroma_lag = float((ch[:, lag:] * ch[:, :-lag]).sum(axis=0).mean()) if ch.shape[1] > lag else 0.0
        mc = t["chroma_raw"][:, a:b].mean(axis=1)
        p = mc / (mc.sum() + 1e-12)
        chroma_peak = float(1 + (p * np.log(p + 1e-12)).sum() / math.log(12))
        stable = float(t["stable_e"][a:b].sum() / t["total_e"][a:b].sum())
        ra, rb = max(0, c - rhalf), min(n, c + rhalf + 1)
        beat = _autocorr_strength(flux[ra:rb], lo, hi)
        z = zcr[a:b]
        hzcrr = float(np.mean(z > 1.5 * z.mean())) if z.mean() > 0 else 0.0
        ce = centroid[a:b]
        centroid_cv = float(ce.std() / (ce.mean() + 1e-9))
        floor = float(np.log10((np.percentile(r, 10) + 1e-9) / (np.median(r) + 1e-9)))
        env = np.exp(t["logmel"][:, a:b] / 2)  # band amplitude envelopes
        env = env - env.mean(axis=1, keepdims=True)
        ms = np.abs(np.fft.rfft(env * np.hanning(env.shape[1]), axis=1)) ** 2
        mf = np.fft.rfftfreq(env.shape[1], 1 / fps)
        mod4 = float(ms[:, (mf >= 2.5) & (mf <= 6.0)].sum() / (ms[:, mf > 0.5].sum() + 1e-12))
        low_stable = float(t["low_stable_e"][a:b].sum() / t["low_e"][a:b].sum())
        X[i] = (low_energy, flux_cv, chroma_lag, chroma_peak, stable, beat, hzcrr, centroid_cv, floor, mod4,
                low_stable)
    return X, level


@lru_cache(maxsize=1)
def _coefficients() -> dict:
    return json.loads(COEF_PATH.read_text())


class FeatureDetector:
    """Classical speech/music discrimination: librosa features and a tiny neural classifier.

    Every 0.5 s the 11 features of :data:`FEATURE_NAMES` (3-s context) are standardised and
    fed to an ensemble of small multilayer perceptrons (11 inputs, 16 ReLU units, one
    logistic output; 5 members, probabilities averaged), then a 3-step median smooths the
    track, and steps whose surrounding 0.5 s is under -60 dBFS get 0. The weights (about 1000 numbers) are in
    ``music_features.json``, fitted offline by ``data/fit_detector.py`` on generated,
    labelled audio (synthetic speech with room noise and reverb, MIDI music, speech over
    music, noise, silence).

    Examples
    --------
    >>> import numpy as np
    >>> hop, p = FeatureDetector().music_probability(np.zeros(16000, np.float32), 16000)
    >>> hop, p.tolist()
    (0.5, [0.0, 0.0])
    """

    name = "features"
    sample_rate = FEATURE_SR

    def __init__(self, coefficients: dict | None = None):
        c = coefficients or _coefficients()
        if tuple(c["features"]) != FEATURE_NAMES:
            raise ValidationError(f"coefficients are for features {c['features']!r}, not {FEATURE_NAMES!r}")
        self.mean = np.asarray(c["mean"], np.float64)
        self.scale = np.asarray(c["scale"], np.float64)
        self.members = [(np.asarray(m["W1"], np.float64), np.asarray(m["b1"], np.float64),
                         np.asarray(m["W2"], np.float64), float(m["b2"])) for m in c["members"]]

    def raw_probabilities(self, X: np.ndarray) -> np.ndarray:
        """Ensemble probability of music for each feature row (no smoothing, no gate)."""
        Z = (np.asarray(X, np.float64) - self.mean) / self.scale
        out = np.zeros(len(Z))
        for W1, b1, W2, b2 in self.members:
            h = np.maximum(Z @ W1 + b1, 0.0)
            out += 1.0 / (1.0 + np.exp(-np.clip(h @ W2 + b2, -50, 50)))
        return out / len(self.members)

    def probabilities_from_features(self, X: np.ndarray, level_db: np.ndarray) -> np.ndarray:
        """Classifier, 3-step median smoothing and silence gate on a feature matrix."""
        p = self.raw_probabilities(X)
        if len(p) >= 3:
            padded = np.pad(p, 1, mode="edge")
            p = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
        p[np.asarray(level_db) < SILENCE_DB] = 0.0
        return p

    def music_probability(self, y: np.ndarray, sr: int) -> tuple[float, np.ndarray]:
        """Music probability every 0.5 s (see :class:`Detector`)."""
        X, level = feature_matrix(y, sr)
        return STEP, self.probabilities_from_features(X, level)


def get_detector(name: str | None = None) -> Detector:
    """Return the detector the server uses.

    Parameters
    ----------
    name : {"auto", "cnn", "features"}, optional
        ``None`` reads ``$SHAKELAB_DETECTOR`` (default ``"auto"``). ``"auto"`` is the neural
        detector of :mod:`shakelab.server.cnn` when its weights are installed
        (``shakelab models fetch``), else :class:`FeatureDetector` (the CNN module logs one
        warning). ``"features"`` forces the feature-based detector.

    Examples
    --------
    >>> get_detector("features").name
    'features'
    """
    import os

    choice = (name or os.environ.get("SHAKELAB_DETECTOR") or "auto").lower()
    if choice not in ("auto", "cnn", "features"):
        raise ValidationError(f"`name` (or SHAKELAB_DETECTOR) must be 'auto', 'cnn' or 'features', not {choice!r}")
    if choice == "features":
        return FeatureDetector()
    from shakelab.server import cnn

    if cnn.available():
        return cnn.CNNDetector()
    if choice == "cnn":
        raise ValidationError("the CNN detector was asked for but its weights are not installed: "
                         "run `shakelab models fetch`")
    cnn.warn_missing()
    return FeatureDetector()


def windows(hop: float, probs: np.ndarray, duration: float, *, window: float = 10.0) -> list[dict]:
    """Average a probability track into windows covering ``[0, duration]``.

    Parameters
    ----------
    hop : float
        Seconds between probability frames (frame ``i`` centred on ``(i + 0.5) * hop``).
    probs : numpy.ndarray
        Music probability per frame, in [0, 1].
    duration : float
        Length of the audio in seconds; the last window ends there (and may be shorter).
    window : float
        Window length in seconds.

    Returns
    -------
    list of dict
        ``{"start_time", "end_time", "confidence"}`` per window, seconds and 0-1, rounded to
        1 ms and 1e-4.

    Examples
    --------
    >>> windows(0.5, np.array([1, 1, 0, 0, 0.5]), 2.5, window=1.0)  # doctest: +NORMALIZE_WHITESPACE
    [{'start_time': 0.0, 'end_time': 1.0, 'confidence': 1.0}, {'start_time': 1.0, 'end_time': 2.0, 'confidence': 0.0},
     {'start_time': 2.0, 'end_time': 2.5, 'confidence': 0.5}]
    """
    if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
        raise ValidationError(f"`window` must be a positive number of seconds, not {window!r}")
    probs = np.asarray(probs, np.float64)
    centres = (np.arange(len(probs)) + 0.5) * hop
    n = max(1, math.ceil(duration / window - 1e-9))
    # one pass over the frames (not one mask per window): hour-long files at fine windows stay fast
    idx = np.minimum((centres / window + 1e-9).astype(np.int64), n - 1)
    sums = np.bincount(idx, weights=probs, minlength=n)
    counts = np.bincount(idx, minlength=n)
    out = []
    for k in range(n):
        start, end = k * window, min((k + 1) * window, duration)
        if counts[k]:
            conf = sums[k] / counts[k]
        else:  # window shorter than a hop: nearest frame
            conf = probs[min(len(probs) - 1, int((start + end) / 2 / hop))] if len(probs) else 0.0
        out.append({"start_time": round(float(start), 3), "end_time": round(float(end), 3),
                    "confidence": round(float(np.clip(conf, 0, 1)), 4)})
    return out
