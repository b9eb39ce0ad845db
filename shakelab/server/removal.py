"""``music_removal`` and ``dialogue`` for the local server: classical DSP steered by the music detector.

Both models are a soft time-frequency gain on the input's STFT, computed on one block of
audio (:func:`separate` streams 30-s blocks through :func:`removal_block` with the stems' writer):

1. **Where** music is: the detector's frame tracks (the CNN of :mod:`shakelab.server.cnn`
   every 20 ms: speech, music and noise probabilities, the music one with the
   background-music cue), put on the STFT frames. Speech over a loud bed can read as music
   alone (the CNN's speech probability 0.0-0.2 there), and the music-alone gate would cut
   it: where music is found and speech is not, the detector hears the block a second time
   with the music estimate of step 2 subtracted (its level the larger of the centred and the forward one, so
   that a music onset after quiet is not heard as speech), guarded by the syllabic (2-8 Hz) modulation of
   the speech-band foreground, since a bed the detector mistakes for speech once thinned
   out rarely pulses like syllables (:func:`second_look`, :func:`syllabic`); the higher
   speech probability is kept.
2. **What** is music there: a background level per bin by minimum statistics (the 10th
   percentile over 2.5 s, times 5: :func:`background`), since speech comes and goes in every
   bin while a music bed stays. Speech is what exceeds it: a Wiener-like mask
   ``(S - M)+^2 / ((S - M)+^2 + M^2)``. Where the block also holds music without speech, the
   bed's spectrum is known there: ``M`` is the geometric mean of that level and the median of
   the music-alone frames most like each frame below 150 Hz (:func:`bed`), which follows the
   notes and the beat. (A running median along time, for held notes, and REPET-SIM's
   repeating background over the whole block were tried as well: both take too much speech.)
3. ``music_removal`` applies that mask as far as music is detected, and gates stretches of
   music without speech down by 30 dB. Speech and effects where no music is found pass
   untouched (gain 1).
4. ``dialogue`` also removes effects and noise: the same mask wherever speech is (the
   background estimate holds stationary noise too), and stretches without speech gated down
   by 30 dB. Where music is sure, speech counts as music_removal's gate counts it, over the
   2-s median: a sub-second speech blip (the CNN gives 0.1-0.36 on music alone) opens the
   gate only within 1 s of such held speech (:data:`SPEECH_NEAR_S`).

Without the CNN weights the feature detector's music track (every 0.5 s) is used and speech
is taken as present wherever music is not certain, so the gates are gentler.

The output has the input's channels (the gain is computed on the channels' mean magnitude and
applied to each), rate and length. This is not the service's neural separation: expect
residual music under speech and some speech colouring (README, "What the local models are").

Examples
--------
>>> import numpy as np
>>> from shakelab.server.removal import removal_block
>>> y = np.zeros((2, 22050), np.float32)
>>> removal_block(y, 22050, "music_removal").shape
(2, 22050)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shakelab.errors import ValidationError

__all__ = ["MODELS", "background", "bed", "gains", "removal_block", "second_look", "separate", "separate_to",
           "syllabic", "tracks"]

MODELS = ("music_removal", "dialogue")
FLOOR_DB = -30.0        # gain of the gated stretches (music alone; for dialogue, everything but speech)
BACKGROUND_SECONDS = 2.5     # minimum statistics: the background is what every 2.5 s keeps
BACKGROUND_PERCENTILE = 10.0
MARGIN = 5.0                 # over-subtraction: the 10th percentile sits well under the mean level
BED_NEIGHBOURS = 25          # music-alone frames whose median models the bed under a frame with speech
BED_MATCH_HZ = 150.0         # frames are matched on the band below this, where the music dominates speech
SPEECH_LOW_HZ = 80.0         # voices have next to nothing below this; the bass and the kick do
MUSIC_RAMP = (0.25, 0.6)     # music probability: ramp from no music to music for sure
SECOND_LOOK = (0.2, 0.5)     # speech probability on the background-subtracted block: ramp from 0 to 1
SYLLABIC = (0.4, 0.8)        # 2-8 Hz modulation depth of the speech-band foreground (log-energy RMS): ramp
SYLLABIC_BAND = (300.0, 3400.0)
SPEECH_NEAR_S = 2.0          # dialogue, where music is sure: a speech blip counts only within +-1 s of held speech


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    z = np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return z * z * (3 - 2 * z)


def _speech_mask(S: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Wiener-like mask of what exceeds the background ``M`` (capped at ``S``): ``(S - M)+^2 / ((S - M)+^2 + M^2)``."""
    M = np.minimum(S, M)
    fg2 = np.maximum(S - M, 0.0) ** 2
    return fg2 / (fg2 + M ** 2 + 1e-10)


def tracks(y: np.ndarray, sr: int, n_frames: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Music, speech and noise probabilities of mono ``y`` on ``n_frames`` STFT frames of ``hop`` samples.

    Examples
    --------
    >>> import numpy as np
    >>> m, s, n = tracks(np.zeros(16000, np.float32), 16000, 63, 256)
    >>> m.shape, float(m.max())
    ((63,), 0.0)
    """
    from shakelab.server import cnn, detectors

    t = np.arange(n_frames) * hop / sr
    det = detectors.get_detector()
    frames = cnn.frame_outputs(y, sr, embed=True) if det.name == "cnn" else None
    if frames is not None and len(frames.probs):
        track = cnn.music_probability(y, sr, frames=frames)
        assert track is not None  # computed from the frames above
        step, pm = track
        centres = (np.arange(len(frames.probs)) + 0.5) * cnn.PRED_S
        probs = np.nan_to_num(frames.probs, nan=0.0)
        ps = np.where(frames.active, probs[:, 0], 0.0)
        pn = np.where(frames.active, probs[:, 2], 0.0)
        from scipy.ndimage import uniform_filter1d

        ps = uniform_filter1d(ps, size=25, mode="nearest")  # 0.5 s
        pn = uniform_filter1d(pn, size=25, mode="nearest")
        mc = (np.arange(len(pm)) + 0.5) * step
        return (np.interp(t, mc, pm), np.interp(t, centres, ps), np.interp(t, centres, pn))
    step, pm = det.music_probability(y, sr)
    mc = (np.arange(len(pm)) + 0.5) * step
    pm = np.interp(t, mc, pm) if len(pm) else np.zeros(n_frames)
    return pm, 1.0 - 0.5 * pm, np.zeros(n_frames)


def background(S: np.ndarray, sr: int, hop: int, *, seconds: float = BACKGROUND_SECONDS,
               percentile: float = BACKGROUND_PERCENTILE, step: int = 4, forward: bool = False) -> np.ndarray:
    """Per-bin background level: a low percentile of ``S`` over a sliding ``seconds`` (minimum statistics).

    Speech comes and goes in every bin (syllables, pauses) while a music bed or room noise
    stays, so the low percentile over a few seconds follows the background under speech.
    The window is centred on each frame, or with ``forward`` starts at it (what the next
    ``seconds`` keep: at a music onset after quiet the centred level still holds the quiet for
    up to half the window); the forward window is mirrored at the block's end, so the last
    frames' level comes from the frames before them rather than from the last one repeated.
    Computed on every ``step``-th frame and interpolated back (the same curve, 4x faster).

    Examples
    --------
    >>> import numpy as np
    >>> S = np.ones((4, 200)); S[:, ::3] = 10.0
    >>> float(background(S, 8000, 128).max())
    1.0
    >>> S = np.ones((1, 400)); S[:, 200:] = 10.0
    >>> float(background(S, 8000, 128)[0, 210]), float(background(S, 8000, 128, forward=True)[0, 210])
    (1.0, 10.0)
    """
    from scipy.ndimage import percentile_filter

    frames = S.shape[1]
    k = max(3, round(seconds * sr / hop / step)) | 1
    origin, mode = ((0, -(k // 2)), "reflect") if forward else (0, "nearest")
    coarse = percentile_filter(S[:, ::step], percentile, size=(1, k), origin=origin, mode=mode)
    if step == 1 or coarse.shape[1] == frames:
        return coarse
    idx = np.minimum(np.arange(frames) / step, coarse.shape[1] - 1)
    lo = np.floor(idx).astype(int)
    hi = np.minimum(lo + 1, coarse.shape[1] - 1)
    w = (idx - lo)[None, :]
    return coarse[:, lo] * (1 - w) + coarse[:, hi] * w


def bed(S: np.ndarray, sr: int, n_fft: int, hop: int, alone: np.ndarray, *, k: int = BED_NEIGHBOURS,
        match_hz: float = BED_MATCH_HZ, level: np.ndarray | None = None) -> np.ndarray | None:
    """Music bed under every frame, from the block's music-alone frames ``alone`` (bool per frame), or None.

    Where the detector finds music without speech the bed's spectrum is known. For each frame,
    the ``k`` music-alone frames most like it below ``match_hz`` (cosine on the centred log
    spectrum: the bass and the kick, which speech hardly touches) are taken, and their median,
    scaled by the frame's background level against the music-alone one (the music under speech
    is usually ducked), is its bed. None when the block has fewer than ``4 k`` such frames (a
    slice of speech over music: the background level alone is used then).

    Examples
    --------
    >>> import numpy as np
    >>> S = np.random.default_rng(0).random((257, 300)) + 0.1
    >>> bed(S, 8000, 512, 128, np.arange(300) < 150).shape
    (257, 300)
    >>> bed(S, 8000, 512, 128, np.zeros(300, bool)) is None
    True
    """
    if alone.sum() < 4 * k:
        return None
    import librosa

    low = librosa.fft_frequencies(sr=sr, n_fft=n_fft) < match_hz
    D = S[:, alone]

    def unit(F: np.ndarray) -> np.ndarray:
        F = np.log(F + 1e-6)
        F -= F.mean(axis=0)
        return F / (np.linalg.norm(F, axis=0) + 1e-9)

    nbrs = np.argpartition(-(unit(S[low]).T @ unit(D[low])), k, axis=1)[:, :k]
    R = np.empty_like(S)
    for a in range(0, S.shape[1], 256):
        R[:, a:a + 256] = np.median(D[:, nbrs[a:a + 256]], axis=2)
    B = background(S, sr, hop) if level is None else level
    scale = np.median(B / (np.median(B[:, alone], axis=1, keepdims=True) + 1e-10), axis=0)
    return R * scale[None, :]


def _held(ps: np.ndarray, sr: int, hop: int) -> np.ndarray:
    """Speech over its 2-s running median, ramped: neither a dip inside speech nor a blip inside music decides."""
    from scipy.ndimage import median_filter

    return _smoothstep(median_filter(ps, size=max(3, int(2.0 * sr / hop)) | 1, mode="nearest"), 0.08, 0.3)


def _music_estimate(S: np.ndarray, sr: int, n_fft: int, hop: int, music: np.ndarray, held: np.ndarray,
                    M: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Estimate the music magnitude under ``S``: ``M``, and where music is, its geometric mean with :func:`bed`.

    The bed comes from the block's music-alone frames (``music`` sure, ``held`` speech absent), levelled
    by ``level``; without such frames ``M`` is returned as it is. The bed follows the notes, ``M`` the level.
    """
    R = bed(S, sr, n_fft, hop, (music > 0.9) & (held < 0.1), level=level)
    return M if R is None else M + music[None, :] * (np.sqrt(M * R) - M)


def gains(S: np.ndarray, sr: int, n_fft: int, hop: int, pm: np.ndarray, ps: np.ndarray, pn: np.ndarray,
          model: str, *, level: np.ndarray | None = None) -> np.ndarray:
    """Compute the time-frequency gain of ``model`` for magnitude ``S`` (freq x frames) and the frame tracks.

    ``level`` is :func:`background` of ``S`` when the caller already has it (as for :func:`bed`,
    :func:`syllabic` and :func:`second_look`).

    Examples
    --------
    >>> import numpy as np
    >>> S = np.random.default_rng(0).random((257, 100))
    >>> g = gains(S, 8000, 512, 128, np.zeros(100), np.ones(100), np.zeros(100), "music_removal")
    >>> float(g.min()), float(g.max())
    (1.0, 1.0)
    """
    floor = 10 ** (FLOOR_DB / 20)
    music = _smoothstep(pm, *MUSIC_RAMP)           # how sure the detector is that music is there
    speech = _smoothstep(ps, 0.08, 0.3)            # the gates act only where speech is clearly absent
    if model == "music_removal" and not music.any():
        return np.ones_like(S, dtype=np.float32)
    from scipy.ndimage import maximum_filter1d

    held = _held(ps, sr, hop)
    B = background(S, sr, hop) if level is None else level
    W = _speech_mask(S, _music_estimate(S, sr, n_fft, hop, music, held, MARGIN * B, B))
    if model == "music_removal":
        G = 1.0 - music[None, :] * (1.0 - W)
        alone = music * (1.0 - held)                 # music without speech: gate it
        G *= (1.0 - alone * (1.0 - floor))[None, :]
    else:
        # where music is sure, a sub-second speech blip (the CNN gives 0.1-0.36 on music alone) counts only
        # within SPEECH_NEAR_S of held speech: far from it, only the held view keeps, as music_removal's gate
        near = maximum_filter1d(held, size=max(3, int(SPEECH_NEAR_S * sr / hop)) | 1, mode="nearest") > 0.5
        speech = np.maximum(held, speech * (1.0 - music * ~near))
        G = W * speech[None, :] + floor * (1.0 - speech[None, :])
    import librosa

    # where music is, what lies under the voice band is music: a high-pass (smooth over 62-104 Hz)
    below = 1.0 - _smoothstep(librosa.fft_frequencies(sr=sr, n_fft=n_fft), SPEECH_LOW_HZ / 1.3, SPEECH_LOW_HZ * 1.3)
    G *= 1.0 - below[:, None] * music[None, :]
    return np.clip(G, floor, 1.0).astype(np.float32)


def syllabic(S: np.ndarray, sr: int, n_fft: int, hop: int, *, seconds: float = 2.0,
             level: np.ndarray | None = None) -> np.ndarray:
    """Syllabic modulation depth per frame: how much the speech-band foreground pulses at 2-8 Hz.

    The foreground is what exceeds the background level of :func:`background` in
    300-3400 Hz, relative to it (log of its energy plus a tenth of the background's); its
    2-8 Hz band-passed RMS over ``seconds`` is the depth. Speech over a bed pulses with its
    syllables (about 4 Hz); a bed without speech, once its steady level is taken out, much
    less. Used as a guard on :func:`second_look`, not alone: drums pulse too.

    Examples
    --------
    >>> import numpy as np
    >>> S = np.ones((257, 400))
    >>> float(syllabic(S, 8000, 512, 128).max()) < 1e-6
    True
    """
    import librosa
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import butter, sosfiltfilt

    fps = sr / hop
    f = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    band = (f >= SYLLABIC_BAND[0]) & (f <= SYLLABIC_BAND[1])
    M = np.minimum(S, MARGIN * (background(S, sr, hop) if level is None else level))[band]
    fg = (np.maximum(S[band] - M, 0.0) ** 2).sum(axis=0)
    e = np.log(fg + 0.1 * uniform_filter1d((M ** 2).sum(axis=0), max(1, int(fps))) + 1e-12)
    if len(e) < 16 or fps / 2 <= 8.0:
        return np.zeros(len(e))
    sos = butter(2, [2.0 / (fps / 2), 8.0 / (fps / 2)], btype="band", output="sos")
    b = sosfiltfilt(sos, e, padlen=min(len(e) - 1, 3 * 7))
    return np.sqrt(uniform_filter1d(b ** 2, max(1, int(seconds * fps)), mode="nearest"))


def second_look(X: np.ndarray, S: np.ndarray, sr: int, n_fft: int, hop: int, pm: np.ndarray,
                ps: np.ndarray, *, level: np.ndarray | None = None) -> np.ndarray:
    """Speech track ``ps`` raised where the detector hears it once the music bed is taken out.

    Speech over a loud bed can read as music alone to the detector (its speech probability
    under 0.2 over whole stretches), and the music-alone gate would then take the speech out.
    Where music is detected and speech is not, the block is heard again with the background
    level subtracted (the mask of :func:`gains`, with the bed of :func:`bed` from the first
    pass's music-alone frames where the block has them): the bed goes, speech stays.
    The level subtracted is the larger of the centred and the forward :func:`background`: at a
    music onset after quiet the centred level still holds the quiet for up to a second, and
    that music was heard as speech; the larger level also finds more of the speech under a
    steady bed (and holds speech a little longer into music that follows it). The syllabic
    cue reads the foreground above that same level.
    That speech probability, ramped over :data:`SECOND_LOOK`, and guarded by the syllabic
    modulation of the foreground (:func:`syllabic`, ramped over :data:`SYLLABIC`: a bed the
    detector mistakes for speech once thinned out rarely pulses like syllables), is taken
    where it is higher.

    Examples
    --------
    >>> import numpy as np
    >>> S = np.ones((257, 50)); ps = np.full(50, 0.9)
    >>> bool((second_look(S.astype(complex)[None], S, 8000, 512, 128, np.ones(50), ps) == ps).all())
    True
    """
    if not ((_smoothstep(pm, *MUSIC_RAMP) > 0.5) & (ps < 0.3)).any():
        return ps
    import librosa
    from scipy.ndimage import median_filter

    centred = background(S, sr, hop) if level is None else level
    ahead = np.maximum(centred, background(S, sr, hop, forward=True))   # a music onset after quiet
    M = _music_estimate(S, sr, n_fft, hop, _smoothstep(pm, *MUSIC_RAMP), _held(ps, sr, hop), MARGIN * ahead, centred)
    y = librosa.istft(X.mean(axis=0) * _speech_mask(S, M), hop_length=hop, n_fft=n_fft)
    _, ps2, _ = tracks(y, sr, S.shape[1], hop)
    cue = _smoothstep(ps2, *SECOND_LOOK)
    cue = cue * _smoothstep(syllabic(S, sr, n_fft, hop, level=ahead), *SYLLABIC)
    cue = median_filter(cue, size=max(3, int(2.0 * sr / hop)) | 1, mode="nearest")   # 2 s: no blips either way
    return np.maximum(ps, cue)


def removal_block(y: np.ndarray, sr: int, model: str) -> np.ndarray:
    """``model`` (``music_removal`` or ``dialogue``) on one ``(channels, samples)`` block, same shape.

    Examples
    --------
    >>> import numpy as np
    >>> removal_block(np.zeros((1, 8000), np.float32), 8000, "dialogue").shape
    (1, 8000)
    """
    import librosa

    from shakelab.server import stems

    if model not in MODELS:
        raise ValidationError(f"`model` must be one of {', '.join(map(repr, MODELS))}, not {model!r}")
    n_fft, hop = stems._fft_sizes(sr)
    n = y.shape[-1]
    yp = np.pad(y, ((0, 0), (0, n_fft - n))) if n < n_fft else y
    X = librosa.stft(yp, n_fft=n_fft, hop_length=hop)
    S = np.abs(X).mean(axis=0)
    pm, ps, pn = tracks(yp.mean(axis=0), sr, S.shape[1], hop)
    # the background level is the costliest step: computed once for every stage, and only when one needs it
    B = background(S, sr, hop) if model == "dialogue" or (pm > MUSIC_RAMP[0]).any() else None
    ps = second_look(X, S, sr, n_fft, hop, pm, ps, level=B)
    G = gains(S, sr, n_fft, hop, pm, ps, pn, model, level=B)
    out = librosa.istft(X * G[None], hop_length=hop, n_fft=n_fft, length=yp.shape[-1])
    return out[:, :n].astype(np.float32)


def separate(src: str | os.PathLike, dest: str | os.PathLike, model: str, fmt: str, **kwargs: Any) -> Path:
    """Write ``model`` (``music_removal`` or ``dialogue``) of ``src`` to ``dest``, block by block.

    :func:`separate_to` with one output (``kwargs``: the block and cross-fade lengths of
    :func:`shakelab.server.stems.separate`).

    Examples
    --------
    >>> separate("song.wav", "dialogue.flac", "dialogue", "flac")
    PosixPath('dialogue.flac')
    >>> import soundfile as sf
    >>> sf.info("dialogue.flac").duration
    3.0
    """
    return separate_to(src, [(dest, fmt)], model, **kwargs)[0]


def separate_to(src: str | os.PathLike, outputs: Sequence[tuple[str | os.PathLike, str]], model: str,
                **kwargs: Any) -> list[Path]:
    """Compute ``model`` of ``src`` once and write it to every ``(dest, fmt)`` of ``outputs``.

    :func:`shakelab.server.stems.separate_to` with :func:`removal_block` as its block function.

    Examples
    --------
    >>> separate_to("song.wav", [("dialogue.wav", "wav"), ("dialogue.mp3", "mp3")], "dialogue")
    [PosixPath('dialogue.wav'), PosixPath('dialogue.mp3')]
    """
    from shakelab.server import stems

    if model not in MODELS:
        raise ValidationError(f"`model` must be one of {', '.join(map(repr, MODELS))}, not {model!r}")
    return stems.separate_to(src, outputs, model, block=lambda y, sr: removal_block(y, sr, model), **kwargs)
