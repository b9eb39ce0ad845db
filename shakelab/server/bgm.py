"""Background-music cue: music *under speech*, which the speech/music/noise CNN calls speech.

Idea: background music holds notes. In each frequency bin, the minimum of the power over
about 0.3 s (the *sustained* spectrum) stays high and peaky (tonal) under music, while speech
harmonics glide and stop between syllables, so under clean or noisy speech the sustained
spectrum falls to a flat noise floor. Nine features per 20 ms step, in three bands
(94-406 Hz, 406-1906 Hz, 1906-6156 Hz):

- ``sustained``: log of sustained energy over total energy in the band;
- ``tonal_sustained``: mean positive excess of the log sustained spectrum over its local
  (9-bin) average (peaks of held notes);
- ``tonal``: the same on the instantaneous log spectrum (voiced speech is tonal too: the
  contrast between the two is what matters);

plus the CNN's log probabilities (speech, music, noise) and its last hidden layer (256
units, :func:`shakelab.server.cnn.frame_outputs` with ``embed=True``). Features are averaged
over 2 s, standardised and fed to a small network (one hidden layer of 80 tanh units, then a
logistic: five networks of 16 fitted from seeds 0-4, their logits averaged, which is one
network with their units side by side, and reproduces across CPUs' BLAS kernels), whose
probability is the fused music decision (it reads the CNN's own music probability, so it
replaces rather than adds to it). A linear decision over the same inputs
could not separate reverberant speech from speech over music even on its own training clips;
the hidden layer can. The weights (``bgm_cue.npz`` beside this module: a 48-dimensional
principal-component projection of the embedding folded into the first layer; ours, MIT like
the project) are fitted by ``tools/train_bgm.py`` on the ``broadcast`` split of
``tools/devset.py``, which also scores them leave-one-source-out.

Examples
--------
>>> import numpy as np
>>> from shakelab.server import bgm
>>> spec = np.ones((100, 197), np.float32)      # flat, steady: noise-like
>>> bgm.features(spec).shape
(100, 9)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

BINS = (3, 200)            # of a 512-point FFT at 16 kHz: 94 Hz .. 6.2 kHz
GROUPS = ((0, 13), (13, 61), (61, 197))
SUSTAIN_STEPS = 16         # 20 ms steps in the minimum filter (0.32 s)
CONTEXT_STEPS = 100        # 20 ms steps averaged (2 s)
PARAMS_PATH = Path(__file__).with_name("bgm_cue.npz")
EMBED_DIM = 256
FEATURE_NAMES = (*(f"{kind}_{band}" for band in ("low", "mid", "high")
                   for kind in ("sustained", "tonal_sustained", "tonal")),
                 "log_p_speech", "log_p_music", "log_p_noise")
FUSED_NAMES = FEATURE_NAMES + tuple(f"embed_{i}" for i in range(EMBED_DIM))

__all__ = ["EMBED_DIM", "FEATURE_NAMES", "FUSED_NAMES", "PARAMS_PATH", "context", "decide", "design", "features",
           "params", "probability"]


def features(spec: np.ndarray) -> np.ndarray:
    """Compute the nine sustained-spectrum features per step of a power spectrogram ``(steps, 197)``.

    ``spec`` is the pre-emphasised power spectrum of bins 3..199 (512-point FFT, 16 kHz), one
    row per 20 ms (:func:`shakelab.server.cnn.melspec` with ``spec=True`` gives it).

    Examples
    --------
    >>> features(np.ones((10, 197), np.float32))[0].round(3).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    s = np.asarray(spec, dtype=np.float32) + np.float32(1e-10)
    smin = minimum_filter1d(s, size=SUSTAIN_STEPS, axis=0, mode="nearest")
    ls, lm = np.log(s), np.log(smin)
    tonal = np.maximum(ls - uniform_filter1d(ls, size=9, axis=1, mode="nearest"), 0)
    tonal_s = np.maximum(lm - uniform_filter1d(lm, size=9, axis=1, mode="nearest"), 0)
    out = np.empty((len(s), 9), np.float32)
    for g, (a, b) in enumerate(GROUPS):
        out[:, 3 * g] = np.log(smin[:, a:b].sum(axis=1)) - np.log(s[:, a:b].sum(axis=1))
        out[:, 3 * g + 1] = tonal_s[:, a:b].mean(axis=1)
        out[:, 3 * g + 2] = tonal[:, a:b].mean(axis=1)
    return out


def design(feats: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Design matrix of the cue: features and CNN log probabilities, averaged over 2 s.

    Examples
    --------
    >>> design(np.zeros((5, 9)), np.full((5, 3), 1 / 3)).shape
    (5, 12)
    """
    from scipy.ndimage import uniform_filter1d

    p = np.nan_to_num(np.asarray(probs, np.float64), nan=1 / 3)
    x = np.concatenate([np.asarray(feats, np.float64), np.log(p + 1e-6)], axis=1)
    if len(x) > 1:
        x = uniform_filter1d(x, size=CONTEXT_STEPS, axis=0, mode="nearest")
    return x


def context(x: np.ndarray) -> np.ndarray:
    """Mean over the 2-s context (``CONTEXT_STEPS``) of each column, per 20 ms step.

    Examples
    --------
    >>> context(np.r_[np.zeros(100), np.ones(100)][:, None])[[0, 199], 0].tolist()
    [0.0, 1.0]
    """
    from scipy.ndimage import uniform_filter1d

    x = np.asarray(x, np.float64)
    return uniform_filter1d(x, size=CONTEXT_STEPS, axis=0, mode="nearest") if len(x) > 1 else x


@lru_cache(maxsize=1)
def params() -> dict | None:
    """Load the fitted decision (``mean``, ``scale``, ``W1``, ``b1``, ``W2``, ``b2``); None if not trained yet.

    Examples
    --------
    >>> sorted(params()) if params() else None
    ['W1', 'W2', 'b1', 'b2', 'mean', 'scale']
    """
    if not PARAMS_PATH.is_file():
        return None
    with np.load(PARAMS_PATH) as z:
        return {k: np.asarray(z[k], np.float64) for k in ("mean", "scale", "W1", "b1", "W2", "b2")}


def decide(x: np.ndarray, prm: dict) -> np.ndarray:
    """Music probability of each row of the 2-s design ``x`` ``(steps, 268)`` under ``prm``.

    Standardise, one hidden layer (tanh), logistic output.

    Examples
    --------
    >>> prm = {"mean": np.zeros(2), "scale": np.ones(2), "W1": np.eye(2), "b1": np.zeros(2),
    ...        "W2": np.array([1.0, -1.0]), "b2": np.array(0.0)}
    >>> decide(np.array([[0.0, 0.0], [3.0, 0.0]]), prm).round(2).tolist()
    [0.5, 0.73]
    """
    z = (np.asarray(x, np.float64) - prm["mean"]) / prm["scale"]
    s = np.tanh(z @ prm["W1"] + prm["b1"]) @ prm["W2"] + float(prm["b2"])
    return 1.0 / (1.0 + np.exp(-np.clip(s, -50, 50)))


def probability(feats: np.ndarray, probs: np.ndarray, embed: np.ndarray | None = None, *,
                prm: dict | None = None) -> np.ndarray | None:
    """Probability that music is present, per 20 ms step (None when no weights).

    ``embed`` (steps, 256), the CNN's last hidden layer, is needed. Each column (the nine
    features, the three log probabilities, the embedding) is averaged over 2 s
    (:func:`context`), then :func:`decide`.

    Examples
    --------
    >>> p = probability(np.zeros((5, 9)), np.full((5, 3), 1 / 3), np.zeros((5, 256)))
    >>> p is None or p.shape == (5,)
    True
    """
    prm = prm if prm is not None else params()
    if prm is None or len(feats) == 0:
        return None
    if embed is None:
        raise ValueError("`embed` (the CNN's last hidden layer, frame_outputs(..., embed=True)) is needed "
                         "by the fused decision")
    return decide(np.concatenate([design(feats, probs), context(embed)], axis=1), prm)
