"""The speech/music/noise CNN of inaSpeechSegmenter, run with numpy only.

Same features the network was trained on (inaSpeechSegmenter 0.6.8 / SIDEKIT front end):
16 kHz mono float signal, 25 ms frames (400 samples) every 10 ms (160), per-frame
pre-emphasis 0.97, Hann window, 512-point power spectrum, 24 triangular HTK-mel filters on
100-8000 Hz, natural log; the network reads the first 21 bands in patches of 68 frames
(0.68 s) every 2 frames (20 ms), each patch standardised by its own mean and standard deviation.
Same layers: Conv(7x4,64)-BN-ReLU-MaxPool(4x2, same) - Conv(3x3,128)-BN-ReLU -
Conv(3x3,128)-BN-ReLU-MaxPool(2x2, same) - Conv(3x3,256)-BN-ReLU-MaxPool(4x1) - 4 x
[Dense(256)-BN-ReLU] - Dense(3, softmax) -> (speech, music, noise) per 20 ms.

Speed: the first convolution is linear in the patch, and its batch norm, ReLU and max-pool
are monotone per channel, so they are computed once over the whole spectrogram and each
patch only rescales and gathers the pooled maps (exact, not an approximation). The other
layers are im2col + one float32 GEMM each, batch norms folded into the weights.

:func:`music_probability` (and :class:`CNNDetector`, the ``detectors.Detector`` interface)
gives one music probability per 20 ms: the fused decision of :mod:`shakelab.server.bgm` (CNN
probabilities and embedding + sustained-spectrum cue) where the energy is active, 0 elsewhere,
smoothed by a two-state HMM (:func:`hmm_smooth`). By default every 4th patch is evaluated
(80 ms, ``hop=4``, :data:`PATCH_HOP`: four times as fast; the values at computed patches are the
reference's, held in between; the fused decision reads them through 2-s means, so its output
barely moves); ``hop=1`` evaluates all. Music detection runs it through the server's one
pipeline, :func:`shakelab.server.processing.detect_music` (``detector="cnn"``, or a
:class:`CNNDetector` with other settings), which turns the track into segments by
:mod:`shakelab.server.decision`. Without the weights (``shakelab models fetch``)
:func:`shakelab.server.detectors.get_detector` falls back to the feature-based detector and this
module logs one warning per process.

Examples
--------
>>> import numpy as np
>>> from shakelab.server import cnn, processing
>>> y = np.zeros(16000 * 3, dtype=np.float32)   # silence is not music
>>> processing.detect_music(y, 16000, all_windows=True, detector="cnn")
[{'start_time': 0.0, 'end_time': 3.0, 'confidence': 0.0}]
>>> import soundfile as sf
>>> y, sr = sf.read("song.wav", dtype="float32")   # 3 s of the demo's music
>>> [round(w["confidence"], 1) for w in processing.detect_music(y, sr, all_windows=True, detector="cnn")]
[1.0]
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("shakelab.server.cnn")

SR = 16000
WIN = 400           # 25 ms
HOP = 160           # 10 ms
NFFT = 512
NMEL = 24
NMEL_USED = 21
PATCH = 68          # frames per patch
STEP = 2            # frames between patches
FRAME_S = HOP / SR  # 0.01
PRED_S = STEP * FRAME_S  # 0.02
LABELS = ("speech", "music", "noise")
PATCH_HOP = 4       # patches between evaluated patches by default (80 ms): the CNN is ~90 % of the time

__all__ = [
    "CNN",
    "LABELS",
    "PATCH_HOP",
    "SR",
    "CNNDetector",
    "FrameOutput",
    "available",
    "energy_activity",
    "frame_outputs",
    "hmm_smooth",
    "load_model",
    "melspec",
    "music_probability",
    "resample_16k",
    "warn_missing",
]


# ----------------------------------------------------------------------------- features
def _hz2mel(f):
    return 2595 * np.log10(1 + f / 700.)


def _mel2hz(z):
    return 700. * (10 ** (z / 2595.) - 1)


def _filterbank(fs=SR, nfft=NFFT, lowfreq=100, maxfreq=8000, nfilt=NMEL) -> np.ndarray:
    # SIDEKIT's trfbank with nlinfilt=0, nlogfilt=24 (mel-spaced triangles, area-normalised)
    low_mel, max_mel = _hz2mel(lowfreq), _hz2mel(maxfreq)
    melsc = (max_mel - low_mel) / (nfilt + 1)
    freqs = _mel2hz(low_mel + np.arange(nfilt + 2) * melsc)
    heights = 2. / (freqs[2:] - freqs[0:-2])
    fbank = np.zeros((nfilt, nfft // 2 + 1), dtype=np.float32)
    nfreqs = np.arange(nfft) / (1. * nfft) * fs
    for i in range(nfilt):
        low, cen, hi = freqs[i], freqs[i + 1], freqs[i + 2]
        lid = np.arange(np.floor(low * nfft / fs) + 1, np.floor(cen * nfft / fs) + 1, dtype=int)
        rid = np.arange(np.floor(cen * nfft / fs) + 1, min(np.floor(hi * nfft / fs) + 1, nfft), dtype=int)
        fbank[i][lid] = heights[i] / (cen - low) * (nfreqs[lid] - low)
        fbank[i][rid[:-1]] = heights[i] / (hi - cen) * (hi - nfreqs[rid[:-1]])
    return fbank


_FBANK = _filterbank()
_HANN = np.hanning(WIN)


def resample_16k(y: np.ndarray, sr: int) -> np.ndarray:
    """Mono float32 signal at 16 kHz (soxr, high quality), from any rate and channel layout.

    A 2-D input is averaged over its channel axis (the shorter one).

    Examples
    --------
    >>> resample_16k(np.zeros(44100, dtype=np.float32), 44100).shape
    (16000,)
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0 if y.shape[0] < y.shape[1] else 1)
    if y.ndim != 1:
        raise ValueError(f"`y` must be a 1-D (mono) or 2-D (multichannel) signal, not shape {y.shape}")
    if int(sr) <= 0:
        raise ValueError(f"`sr` must be a positive sample rate, not {sr!r}")
    if int(sr) == SR:
        return np.ascontiguousarray(y)
    try:
        import soxr

        return soxr.resample(y, int(sr), SR, quality="HQ").astype(np.float32, copy=False)
    except ImportError:  # pragma: no cover - soxr comes with librosa
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sr), SR)
        return resample_poly(y, SR // g, int(sr) // g).astype(np.float32)


def melspec(y16k: np.ndarray, *, spec: bool = False):
    """Log-mel spectrogram (24 bands, float32) and log energy per 10 ms frame of a 16 kHz signal.

    Frames are 25 ms without padding: ``(len(y) - 400) // 160 + 1`` of them (0 when shorter).
    Digital silence gives ``-inf`` values, as in the reference. With ``spec``, also returns
    the power spectrum of every other frame (20 ms steps), FFT bins 3..199, for the
    background-music cue (:func:`shakelab.server.bgm.features`).

    Examples
    --------
    >>> m, e = melspec(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1)
    >>> m.shape, e.shape
    ((98, 24), (98,))
    """
    from shakelab.server.bgm import BINS

    y = np.ascontiguousarray(y16k, dtype=np.float32)
    n = (len(y) - WIN) // HOP + 1 if len(y) >= WIN else 0
    mspec = np.empty((n, NMEL), dtype=np.float32)
    loge = np.empty(n, dtype=np.float32)
    spec20 = np.empty(((n + 1) // 2, BINS[1] - BINS[0]), dtype=np.float32) if spec else None
    if n > 0:
        frames = np.lib.stride_tricks.as_strided(y, shape=(n, WIN), strides=(HOP * 4, 4))
        chunk = 20000   # even, so that chunks keep the 20 ms grid
        with np.errstate(divide="ignore"):
            for s in range(0, n, chunk):
                fr = frames[s:s + chunk]
                pre = fr - np.concatenate([fr[:, :1], fr[:, :-1]], axis=1) * np.float32(0.97)
                loge[s:s + chunk] = np.log((pre ** 2).sum(axis=1))
                mag = np.fft.rfft(pre * _HANN, NFFT, axis=-1)
                pw = (mag.real ** 2 + mag.imag ** 2).astype(np.float32)
                mspec[s:s + chunk] = np.log(pw @ _FBANK.T)
                if spec20 is not None:
                    spec20[s // 2:s // 2 + (len(pw) + 1) // 2] = pw[0::2, BINS[0]:BINS[1]]
    if spec:
        return mspec, loge, spec20
    return mspec, loge


# ----------------------------------------------------------------------------- network
def _bn(w: dict, name: str, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    a = w[f"{name}/gamma"] / np.sqrt(w[f"{name}/moving_variance"].astype(np.float64) + eps)
    b = w[f"{name}/beta"] - a * w[f"{name}/moving_mean"]
    return a.astype(np.float64), b.astype(np.float64)


def _expected_layers() -> list[str]:
    return (["Reshape", "Conv2D", "BatchNormalization", "Activation", "MaxPooling2D"]
            + ["Conv2D", "BatchNormalization", "Activation"] * 2 + ["MaxPooling2D"]
            + ["Conv2D", "BatchNormalization", "Activation", "MaxPooling2D", "Flatten"]
            + ["Dense", "BatchNormalization", "Activation", "Dropout"] * 4 + ["Dense"])


class CNN:
    """The network with batch norms folded, ready for :meth:`predict`.

    Build it with :func:`load_model` (cached per process) or ``CNN(dict_of_arrays)`` where the
    arrays are those of the ``.npz`` written by :func:`shakelab.weights.convert`.

    Examples
    --------
    >>> import soundfile as sf
    >>> y, sr = sf.read("song.wav", dtype="float32")   # 3 s of music
    >>> model = load_model()
    >>> probs, finite = model.predict(melspec(resample_16k(y, sr))[0])
    >>> probs.shape, bool(finite.all())   # 20-ms rows of (speech, music, noise)
    ((149, 3), True)
    """

    def __init__(self, arrays: dict):
        config = json.loads(str(arrays["model_config"]))
        layers = config["config"]["layers"] if isinstance(config["config"], dict) else config["config"]
        kinds = [layer["class_name"] for layer in layers]
        if kinds != _expected_layers():
            raise ValueError(f"weights hold an unexpected architecture: {kinds}")
        names = [layer["config"]["name"] for layer in layers]
        conv = [n for n, k in zip(names, kinds, strict=True) if k == "Conv2D"]
        bns = [n for n, k in zip(names, kinds, strict=True) if k == "BatchNormalization"]
        dense = [n for n, k in zip(names, kinds, strict=True) if k == "Dense"]
        w = {k: np.asarray(v) for k, v in arrays.items() if k != "model_config"}
        eps = [layer["config"].get("epsilon", 1e-3) for layer in layers if layer["class_name"] == "BatchNormalization"]

        # conv1 stays unfolded: applied to the raw spectrogram, then per-patch affine (see predict)
        k1 = w[f"{conv[0]}/kernel"].astype(np.float64)           # (7, 4, 1, 64)
        self.k1 = k1[:, :, 0, :].reshape(28, 64).astype(np.float32)
        self.k1_sum = k1.sum(axis=(0, 1, 2))                      # (64,)
        self.b1 = w[f"{conv[0]}/bias"].astype(np.float64)
        self.a1, self.c1 = _bn(w, bns[0], eps[0])
        sign = np.where(self.a1 >= 0, 1.0, -1.0)
        self.k1s = (self.k1 * sign).astype(np.float32)
        self.abs_a1 = np.abs(self.a1)

        def fold(kname, bn_i, reshape=None):
            k = w[f"{kname}/kernel"].astype(np.float64)
            a, c = _bn(w, bns[bn_i], eps[bn_i])
            kf = k * a
            if reshape:
                kf = kf.reshape(-1, k.shape[-1])
            return kf.astype(np.float32), (w[f"{kname}/bias"] * a + c).astype(np.float32)

        self.k2, self.b2 = fold(conv[1], 1, reshape=True)   # (576, 128), rows (dy, dx, cin)
        self.k3, self.b3 = fold(conv[2], 2, reshape=True)   # (1152, 128)
        self.k4, self.b4 = fold(conv[3], 3, reshape=True)   # (1152, 256)
        self.dense = [fold(dense[i], 4 + i) for i in range(4)]
        self.out_w = w[f"{dense[4]}/kernel"].astype(np.float32)
        self.out_b = w[f"{dense[4]}/bias"].astype(np.float32)

    # -- helpers
    @staticmethod
    def _im2col3(x: np.ndarray) -> np.ndarray:
        b, h, wd, c = x.shape
        cols = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))   # (b, h-2, w-2, c, 3, 3)
        return np.ascontiguousarray(cols.transpose(0, 1, 2, 4, 5, 3)).reshape(b * (h - 2) * (wd - 2), 9 * c)

    def _stage1(self, m: np.ndarray) -> np.ndarray:
        """Apply the raw conv1 over the whole spectrogram, max-pooled over frequency (2).

        Sign-flipped per channel so that BN+ReLU are increasing in it: shape (frames - 6, 9, 64).
        """
        n = m.shape[0]
        cols = np.lib.stride_tricks.sliding_window_view(m, (7, 4))       # (n-6, 18, 7, 4)
        r = (cols.reshape(-1, 28) @ self.k1s).reshape(n - 6, 18, 64)     # sign(a) * conv, no bias
        return np.maximum(r[:, 0::2], r[:, 1::2])

    def predict(self, mspec: np.ndarray, *, hop: int = 1, embed: bool = False, batch: int = 128):
        """Per-patch (speech, music, noise) probabilities for the reference's patch grid.

        Returns ``probs`` of shape ``(P, 3)`` float32, one row per 20 ms: ``P = ceil(N / 2)``
        for ``N >= 68`` frames (edge rows repeat the first/last patch, as in the reference),
        and ``finite`` (P,) bool (False where the patch touches digital silence; probabilities
        are NaN there). ``hop`` > 1 evaluates every ``hop``-th patch and holds the value in
        between (hop=2: 40 ms resolution, twice as fast). With ``embed``, also the last hidden
        layer (P, 256) used by the background-music cue.

        Examples
        --------
        >>> import soundfile as sf
        >>> y, sr = sf.read("song.wav", dtype="float32")   # 3 s of music
        >>> probs, finite = load_model().predict(melspec(resample_16k(y, sr))[0], hop=2)
        >>> probs.dtype, bool(np.allclose(probs.sum(axis=1), 1, atol=1e-3)), bool(probs[:, 1].mean() > 0.5)
        (dtype('float32'), True, True)
        """
        if hop < 1:
            raise ValueError(f"`hop` must be >= 1, not {hop!r}")
        full = np.asarray(mspec, dtype=np.float32)
        m = full[:, :NMEL_USED]
        n_orig = m.shape[0]
        if n_orig == 0:
            raise ValueError("`mspec` holds no frames (audio shorter than 25 ms)")
        difflen = 0
        if n_orig < PATCH:   # as the reference: pad with the minimum of all 24 bands
            difflen = PATCH - n_orig
            m = np.concatenate([m, np.full((difflen, m.shape[1]), np.min(full), dtype=np.float32)])
        n = m.shape[0]
        bad_row = ~np.all(np.isfinite(m), axis=1)
        m = np.where(np.isfinite(m), m, np.float32(0))
        nwin = (n - PATCH) // STEP + 1
        starts = np.arange(nwin) * STEP

        # per-patch mean/std (population) from running sums, float64
        rs = m.astype(np.float64).sum(axis=1)
        rq = (m.astype(np.float64) ** 2).sum(axis=1)
        cs = np.concatenate([[0.0], np.cumsum(rs)])
        cq = np.concatenate([[0.0], np.cumsum(rq)])
        cb = np.concatenate([[0], np.cumsum(bad_row)])
        cnt = PATCH * m.shape[1]
        mean = (cs[starts + PATCH] - cs[starts]) / cnt
        var = np.maximum((cq[starts + PATCH] - cq[starts]) / cnt - mean ** 2, 0.0)
        std = np.sqrt(var)
        finite_win = ((cb[starts + PATCH] - cb[starts]) == 0) & (std > 0)
        std = np.where(std > 0, std, 1.0)

        # reference grid: 17 copies of patch 0 before, 16 + n%2 copies of the last after
        lfill = PATCH // (2 * STEP)
        rfill = PATCH // (2 * STEP) - 1 + n % 2
        idx = np.concatenate([np.zeros(lfill, int), np.arange(nwin), np.full(rfill, nwin - 1)])
        if difflen > 0:
            idx = idx[:len(idx) - difflen // 2]
        needed = np.unique(idx[::hop]) if hop > 1 else np.arange(nwin)
        if hop > 1:
            needed = np.unique(np.concatenate([needed, idx[-1:]]))

        # conv1 + BN + ReLU + max-pool: per patch, BN(conv(x - mean) / std) = |a|/std * sign(a) conv(x)
        # + offset, increasing in sign(a) conv(x); so pool that once (4x2 'same': 62 rows -> windows
        # of 3 rows at both edges, 4 inside) and rescale per patch.
        r = self._stage1(m)
        m3 = np.maximum(np.maximum(r[:-2], r[1:-1]), r[2:])
        m4 = np.maximum(m3[:-1], r[3:])

        out_p = np.empty((len(needed), 3), dtype=np.float32)
        out_e = np.empty((len(needed), 256), dtype=np.float32) if embed else None
        inner = np.arange(1, 15) * 4 - 1   # patch rows starting the 14 full pooling windows
        for s in range(0, len(needed), batch):
            pidx = needed[s:s + batch]
            st = starts[pidx]
            pooled = np.concatenate([m3[st][:, None], m4[st[:, None] + inner], m3[st + 59][:, None]], axis=1)
            sc = (self.abs_a1[None, :] / std[pidx, None])                # (B, 64)
            off = (self.a1[None, :] * (self.b1[None, :] - mean[pidx, None] * self.k1_sum[None, :] / std[pidx, None])
                   + self.c1[None, :])
            x = pooled * sc[:, None, None, :].astype(np.float32) + off[:, None, None, :].astype(np.float32)
            np.maximum(x, 0, out=x)
            bsz = x.shape[0]
            x = self._im2col3(x) @ self.k2 + self.b2                    # (B*14*7, 128)
            np.maximum(x, 0, out=x)
            x = self._im2col3(x.reshape(bsz, 14, 7, 128)) @ self.k3 + self.b3   # (B*12*5, 128)
            np.maximum(x, 0, out=x)
            x = x.reshape(bsz, 12, 5, 128)
            x = np.concatenate([x, np.full((bsz, 12, 1, 128), -np.inf, np.float32)], axis=2)  # same pad
            x = x.reshape(bsz, 6, 2, 3, 2, 128).max(axis=(2, 4))        # (B, 6, 3, 128)
            x = self._im2col3(x) @ self.k4 + self.b4                    # (B*4*1, 256)
            np.maximum(x, 0, out=x)
            x = x.reshape(bsz, 4, 256).max(axis=1)                      # (B, 256)
            for k, b in self.dense:
                x = x @ k + b
                np.maximum(x, 0, out=x)
            if out_e is not None:
                out_e[s:s + batch] = x
            z = x @ self.out_w + self.out_b
            z -= z.max(axis=1, keepdims=True)
            ez = np.exp(z)
            out_p[s:s + batch] = ez / ez.sum(axis=1, keepdims=True)

        # scatter computed patches back to the reference grid (hold between hops)
        where = np.searchsorted(needed, idx, side="right") - 1
        where = np.clip(where, 0, len(needed) - 1)
        probs = out_p[where]
        finite = finite_win[needed][where]
        probs[~finite] = np.nan
        if out_e is not None:
            return probs, finite, out_e[where]
        return probs, finite


_MODEL: CNN | None = None
_MODEL_PATH: Path | None = None
_LOCK = threading.Lock()
_WARNED = False


def load_model(path: str | os.PathLike | None = None) -> CNN | None:
    """Load the CNN from the fetched ``.npz`` (cached per process); None when it is not there.

    Examples
    --------
    >>> model = load_model()
    >>> type(model).__name__, model is load_model()   # cached
    ('CNN', True)
    >>> load_model("no-such-weights.npz") is None
    True
    """
    global _MODEL, _MODEL_PATH
    from shakelab import weights

    p = Path(path) if path is not None else weights.path()
    with _LOCK:
        if _MODEL is not None and p == _MODEL_PATH:
            return _MODEL
        if not p.is_file():
            return None
        with np.load(p, allow_pickle=False) as z:
            model = CNN({k: z[k] for k in z.files})
        _MODEL, _MODEL_PATH = model, p
        return model


def available() -> bool:
    """Tell whether the CNN weights are installed (``shakelab models fetch``).

    Examples
    --------
    >>> isinstance(available(), bool)
    True
    """
    from shakelab import weights

    return weights.available()


def warn_missing() -> None:
    """Log, once per process, that the CNN weights are missing and the feature detector is used.

    Examples
    --------
    >>> import sys
    >>> getfixture("monkeypatch").setattr(sys.modules[__name__], "_WARNED", False)  # restored after
    >>> caplog = getfixture("caplog")
    >>> warn_missing(); warn_missing()
    >>> [r.getMessage()[:40] for r in caplog.records]
    ['music detection: CNN weights not found a']
    """
    global _WARNED
    if not _WARNED:
        _WARNED = True
        from shakelab import weights

        log.warning("music detection: CNN weights not found at %s; falling back to the feature-based "
                    "detector (run `shakelab models fetch` once to install them)", weights.path())


# ----------------------------------------------------------------------------- decisions
def energy_activity(loge: np.ndarray, ratio: float = 0.03, *, floor: float = -9.0) -> np.ndarray:
    """Energy activity per 10 ms frame, as the reference.

    Threshold ``mean(loge) + log(ratio)``, then a 2-state Viterbi (switch cost 10**-150, staying
    inactive costs e**-5 per frame).

    Beyond the reference, frames whose log energy (pre-emphasised, 400 samples) is below
    ``floor`` (about -70 dBFS) are inactive whatever the file mean, so near-silent files are
    not sent to the network.

    Examples
    --------
    >>> int(energy_activity(np.r_[np.full(50, -20.0), np.full(50, 2.0)]).sum())
    50
    """
    loge = np.asarray(loge, dtype=np.float64)
    fin = np.isfinite(loge)
    if not fin.any():
        return np.zeros(len(loge), dtype=bool)
    raw = (loge > np.mean(loge[fin]) + np.log(ratio)) & (loge > floor)
    # Viterbi with hard emissions: log(1-1e-10) vs log(1e-10)
    e_hit, e_miss = np.log1p(-1e-10), np.log(1e-10)
    stay0, stay1, switch = -5.0, 0.0, -150 * np.log(10)
    n = len(raw)
    back = np.zeros((n, 2), dtype=np.int8)
    s0 = e_hit if not raw[0] else e_miss
    s1 = e_hit if raw[0] else e_miss
    rl = raw.tolist()
    bl: list[tuple[int, int]] = [(0, 0)] * n
    for t in range(1, n):
        a0, b0 = s0 + stay0, s1 + switch
        a1, b1 = s0 + switch, s1 + stay1
        r = rl[t]
        e0, e1 = (e_miss, e_hit) if r else (e_hit, e_miss)
        if a0 >= b0:
            n0, p0 = a0 + e0, 0
        else:
            n0, p0 = b0 + e0, 1
        if a1 >= b1:
            n1, p1 = a1 + e1, 0
        else:
            n1, p1 = b1 + e1, 1
        bl[t] = (p0, p1)
        s0, s1 = n0, n1
    out = np.zeros(n, dtype=bool)
    state = 1 if s1 >= s0 else 0
    for t in range(n - 1, -1, -1):
        out[t] = bool(state)
        if t > 0:
            state = bl[t][state]
    del back
    return out


@dataclass
class FrameOutput:
    """Per-20 ms outputs of the detector on one signal.

    Attributes: ``probs`` (P, 3) speech/music/noise (NaN where not finite), ``active`` (P,)
    energy activity, ``cue`` (P, 9) background-music features (:func:`bgm.features`),
    ``duration`` (s), ``embed`` (P, 256) the CNN's last hidden layer (None unless asked for).
    """

    probs: np.ndarray
    active: np.ndarray
    cue: np.ndarray
    duration: float
    embed: np.ndarray | None = None

    @property
    def times(self) -> np.ndarray:
        """Start time (s) of each 20 ms step."""
        return np.arange(len(self.probs)) * PRED_S


BLOCK = 6000    # 10 ms frames per analysis block (60 s); a multiple of 2 * PATCH_HOP
MARGIN = 104    # frames of context on each side of a block (> 34, the patch half-width); a multiple of
#                 2 * PATCH_HOP (8), so that every block evaluates the same patches as one pass


def _fit_rows(a: np.ndarray, n: int) -> np.ndarray:
    if len(a) >= n:
        return a[:n]
    return np.concatenate([a, np.repeat(a[-1:], n - len(a), axis=0)])


def frame_outputs(y: np.ndarray, sr: int, *, model: CNN | None = None, hop: int = PATCH_HOP,
                  embed: bool = False) -> FrameOutput | None:
    """Run features, energy activity, the CNN and the cue features; None when weights are missing.

    Long signals are analysed in blocks of 60 s with 1 s of context on each side, so memory
    stays flat (about 100 MB whatever the length); the result is the same as one pass (the
    patch grid and every receptive field are unchanged; energy activity uses the whole file).
    ``embed`` also returns the CNN's last hidden layer per step (the fused detector's input).

    Examples
    --------
    >>> import soundfile as sf
    >>> y, sr = sf.read("song.wav", dtype="float32")   # 3 s of music
    >>> out = frame_outputs(y, sr)
    >>> out.probs.shape, out.duration
    ((149, 3), 3.0)
    """
    model = model if model is not None else load_model()
    if model is None:
        return None
    from shakelab.server import bgm

    y16 = resample_16k(y, sr)
    duration = len(y16) / SR
    n = (len(y16) - WIN) // HOP + 1 if len(y16) >= WIN else 0
    if n == 0:
        return FrameOutput(np.zeros((0, 3), np.float32), np.zeros(0, bool), np.zeros((0, 9), np.float32), duration,
                           np.zeros((0, 256), np.float32) if embed else None)
    probs_l: list[np.ndarray] = []
    finite_l: list[np.ndarray] = []
    cues: list[np.ndarray] = []
    loges: list[np.ndarray] = []
    embeds: list[np.ndarray] = []
    for b0 in range(0, n, BLOCK):
        b1 = min(n, b0 + BLOCK)
        f0, f1 = max(0, b0 - MARGIN), min(n, b1 + MARGIN)
        mspec, loge, spec20 = melspec(y16[f0 * HOP:(f1 - 1) * HOP + WIN], spec=True)
        p, fin, *e = model.predict(mspec, hop=hop, embed=embed)
        cue = _fit_rows(bgm.features(spec20), len(p))
        r0, r1 = (b0 - f0) // 2, (b1 - f0 + 1) // 2
        if b1 == n:         # not f1: a block's margin can reach the end before the last block
            r1 = len(p)     # the file's last rows (also when shorter than a patch)
        probs_l.append(p[r0:r1])
        finite_l.append(fin[r0:r1])
        cues.append(cue[r0:r1])
        if embed:
            embeds.append(e[0][r0:r1])
        loges.append(loge[b0 - f0:b1 - f0])
    probs, finite, cue = np.concatenate(probs_l), np.concatenate(finite_l), np.concatenate(cues)
    active = energy_activity(np.concatenate(loges))[::2]
    k = min(len(active), len(probs))
    active = np.concatenate([active[:k], np.zeros(len(probs) - k, bool)])
    active &= finite
    return FrameOutput(probs, active, cue, duration, np.concatenate(embeds) if embed else None)


STAY = 0.999   # probability of staying in the music / no-music state from one 20 ms step to the next
EVIDENCE = 0.01   # weight of one 20 ms step's log-odds: the fused decision reads 2-s means (100 steps)


def hmm_smooth(p: np.ndarray, stay: float = STAY, evidence: float = EVIDENCE) -> np.ndarray:
    """Posterior of a two-state (music / no music) hidden Markov model over a probability track.

    Each step's ``p`` is read as the posterior under an even prior, its log-odds weighted by
    ``evidence`` (0.01: the fused decision is a 2-s mean, so 100 consecutive steps share one
    observation and count once together, not 100 times); the states persist with probability
    ``stay`` per step (0.999: a mean stay of 20 s at 20 ms), and the forward-backward posterior
    of "music" is returned. Isolated flickers inside a block are voted down by their
    neighbours (a Viterbi decision would give the same blocks, but no probability for the
    window rule to read).

    Examples
    --------
    >>> p = np.r_[np.full(200, 0.1), 0.9, np.full(200, 0.1)]
    >>> float(hmm_smooth(p)[200]) < 0.5
    True
    """
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    if evidence != 1.0:
        p = 1.0 / (1.0 + ((1 - p) / p) ** evidence)
    n = len(p)
    if n == 0:
        return p
    sw = 1.0 - stay
    fwd = np.empty(n)
    a1 = p[0]
    fwd[0] = a1
    pl = p.tolist()
    for i in range(1, n):          # scalar recursion: two states, faster in floats than in arrays
        prior = a1 * stay + (1 - a1) * sw
        m = prior * pl[i]
        a1 = m / (m + (1 - prior) * (1 - pl[i]))
        fwd[i] = a1
    out = np.empty(n)
    b1 = b0 = 0.5
    fl = fwd.tolist()
    for i in range(n - 1, -1, -1):
        q1, q0 = fl[i] * b1, (1 - fl[i]) * b0
        out[i] = q1 / (q1 + q0)
        e1, e0 = pl[i] * b1, (1 - pl[i]) * b0
        b1, b0 = stay * e1 + sw * e0, sw * e1 + stay * e0
        t = b1 + b0
        b1, b0 = b1 / t, b0 / t
    return out


def music_probability(y: np.ndarray, sr: int, *, hop: int = PATCH_HOP, cue: bool = True, smooth: float = 1.0,
                      hmm: bool | None = None, model: CNN | None = None,
                      frames: FrameOutput | None = None) -> tuple[float, np.ndarray] | None:
    """Music probability every 20 ms: ``(0.02, probs)``, or None when the weights are missing.

    With ``cue`` (the default): per 20 ms step, the fused decision of :mod:`shakelab.server.bgm`
    (a small network over the CNN's probabilities and embedding and the
    sustained-spectrum features, 2-s context), 0 where the energy is inactive (silence is not
    music), then :func:`hmm_smooth` (``hmm``, default on with the cue). Without: the CNN's
    music probability, gated the same way and averaged over ``smooth`` seconds (the smoothing
    used whenever ``hmm`` is off). Step ``i`` is centred on ``(i + 0.5) * 0.02`` s.
    ``frames``, the :func:`frame_outputs` of ``y`` already computed (with ``embed=True`` when
    ``cue``), saves running the CNN again.

    Examples
    --------
    >>> import soundfile as sf
    >>> y, sr = sf.read("song.wav", dtype="float32")   # 3 s of music
    >>> step, p = music_probability(y, sr)
    >>> step, len(p), bool(p.mean() > 0.5)
    (0.02, 150, True)
    """
    hmm = cue if hmm is None else hmm
    reusable = frames is not None and (not cue or frames.embed is not None)
    out = frames if reusable else frame_outputs(y, sr, model=model, hop=hop, embed=cue)
    if out is None:
        return None
    p = np.nan_to_num(out.probs[:, 1], nan=0.0).astype(np.float64)
    if cue and len(p):
        from shakelab.server import bgm

        pb = bgm.probability(out.cue, out.probs, out.embed)
        if pb is not None:
            p = pb
    p = np.where(out.active, p, 0.0)
    k = max(1, round(smooth / PRED_S))
    if hmm and len(p):
        p = np.where(out.active, hmm_smooth(p), 0.0)
    elif k > 1 and len(p) > 1:
        from scipy.ndimage import uniform_filter1d

        p = uniform_filter1d(p, size=k, mode="nearest")
    n = math.ceil(out.duration / PRED_S - 1e-9)
    p = p[:n] if len(p) >= n else np.r_[p, np.zeros(n - len(p))]
    return PRED_S, np.clip(p, 0.0, 1.0)


class CNNDetector:
    """The CNN + background-music cue behind the ``shakelab.server.detectors.Detector`` interface.

    ``music_probability(y, sr) -> (0.02, probs)``; raises ``RuntimeError`` when the weights
    are not installed (check :func:`shakelab.weights.available` first).

    Examples
    --------
    >>> import soundfile as sf
    >>> y, sr = sf.read("song.wav", dtype="float32")   # 3 s of music
    >>> step, p = CNNDetector(hop=1).music_probability(y, sr)
    >>> step, len(p)
    (0.02, 150)
    """

    name = "cnn"
    sample_rate = SR

    def __init__(self, *, hop: int = PATCH_HOP, cue: bool = True, smooth: float = 1.0, hmm: bool | None = None):
        self.hop, self.cue, self.smooth, self.hmm = hop, cue, smooth, hmm

    def music_probability(self, y: np.ndarray, sr: int) -> tuple[float, np.ndarray]:
        """Music probability every 20 ms of mono ``y``: ``(0.02, probs)`` (see :func:`music_probability`)."""
        res = music_probability(y, sr, hop=self.hop, cue=self.cue, smooth=self.smooth, hmm=self.hmm)
        if res is None:
            from shakelab import weights

            raise RuntimeError(f"CNN weights not found at {weights.path()}: run `shakelab models fetch`")
        return res
