"""The window decision rule of the local ``music_detection``: frame probabilities -> music segments.

A detector (:mod:`shakelab.server.detectors`) gives a music probability per frame; this module
alone decides, from that track, what the local server answers. The rule, the same for every
detector:

1. The recording is cut into windows of ``window`` seconds from 0 (10 s, the service's grid;
   ``metadata.window`` locally); the last window ends with the recording.
2. A window's **score** is the highest mean music probability over any ``STRETCH`` seconds
   (2 s; the whole window when it is shorter) of consecutive frames whose centres fall in it.
3. A window **is music** when its score is at least ``MUSIC_PROBABILITY`` (0.5): a 3-s jingle
   inside a 10-s window of speech makes it music (a mean over the whole window would be about
   0.3 and miss it), while scattered frames of a speech-only window do not.
4. Adjacent music windows are merged into one segment; its **confidence** is the
   duration-weighted mean of its windows' scores (so always >= 0.5 on our scale; the
   service's own confidences are on another scale, where 0.1 already means music).
5. Only music segments are returned. With ``all_windows=True`` (the local-only
   ``metadata.all_windows``) every window is returned unmerged with its score, music or not,
   for threshold studies: the windows with score >= 0.5 are exactly the default answer's.

Times are rounded to 1 ms and confidences to 4 decimals.

Examples
--------
>>> import numpy as np
>>> p = np.r_[np.zeros(40), np.ones(6), np.zeros(14), np.ones(20), np.zeros(8)]  # 0.5-s frames
>>> music_segments(0.5, p, 44.0)
[{'start_time': 20.0, 'end_time': 40.0, 'confidence': 1.0}]
>>> [w["confidence"] for w in music_segments(0.5, p, 44.0, all_windows=True)]
[0.0, 0.0, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import math

import numpy as np

from shakelab.errors import ValidationError

__all__ = ["MUSIC_PROBABILITY", "STRETCH", "music_segments", "window_scores"]

#: A window is music when its score reaches this (the detector's own probability scale).
MUSIC_PROBABILITY = 0.5
#: Seconds of consecutive frames whose mean probability makes a window's score.
STRETCH = 2.0


def window_scores(hop: float, probs: np.ndarray, duration: float, *, window: float = 10.0) -> list[dict]:
    """Every window of ``[0, duration]`` with its score (rule steps 1-2 of the module docstring).

    Parameters
    ----------
    hop : float
        Seconds between frames; frame ``i`` is centred on ``(i + 0.5) * hop``.
    probs : numpy.ndarray
        Music probability per frame, in [0, 1].
    duration : float
        Length of the recording in seconds.
    window : float
        Window length in seconds, > 0.

    Returns
    -------
    list of dict
        ``{"start_time", "end_time", "confidence"}`` per window, in order; ``confidence`` is
        the score.

    Examples
    --------
    >>> window_scores(0.5, np.r_[np.zeros(14), np.ones(6)], 10.0, window=10.0)
    [{'start_time': 0.0, 'end_time': 10.0, 'confidence': 1.0}]
    """
    for name, value in (("hop", hop), ("window", window), ("duration", duration)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                or not math.isfinite(value) or value <= 0:
            raise ValidationError(f"`{name}` must be a positive number of seconds, not {value!r}")
    p = np.clip(np.nan_to_num(np.asarray(probs, np.float64)), 0.0, 1.0)
    if p.ndim != 1:
        raise ValidationError(f"`probs` must be one probability per frame (1-D), not shape {p.shape}")
    csum = np.concatenate([[0.0], np.cumsum(p)])
    centres = (np.arange(len(p)) + 0.5) * hop
    n = max(1, math.ceil(duration / window - 1e-9))
    # first frame of each window (frames are in time order): one searchsorted, no mask per window
    edges = np.searchsorted(centres, np.arange(n + 1) * window - 1e-9)
    edges[-1] = len(p)
    out = []
    for k in range(n):
        start, end = k * window, min((k + 1) * window, duration)
        a, b = int(edges[k]), int(edges[k + 1])
        if b > a:
            m = max(1, min(b - a, round(min(STRETCH, end - start) / hop)))
            means = (csum[a + m:b + 1] - csum[a:b - m + 1]) / m
            score = float(means.max())
        elif len(p):  # a window shorter than a frame: the nearest frame
            score = float(p[min(len(p) - 1, int((start + end) / 2 / hop))])
        else:
            score = 0.0
        out.append({"start_time": round(float(start), 3), "end_time": round(float(end), 3),
                    "confidence": round(score, 4)})
    return out


def music_segments(hop: float, probs: np.ndarray, duration: float, *, window: float = 10.0,
                   all_windows: bool = False) -> list[dict]:
    """Return what the local ``music_detection`` answers: the merged music segments (the module's rule).

    Parameters
    ----------
    hop, probs, duration, window
        As in :func:`window_scores`.
    all_windows : bool
        Return every window with its score instead (the local-only ``metadata.all_windows``).

    Returns
    -------
    list of dict
        ``{"start_time", "end_time", "confidence"}`` per music segment (adjacent music windows
        merged), in order; ``[]`` when no window is music.

    Examples
    --------
    >>> music_segments(0.5, np.r_[np.ones(20), np.zeros(20), np.ones(20)], 30.0)  # doctest: +NORMALIZE_WHITESPACE
    [{'start_time': 0.0, 'end_time': 10.0, 'confidence': 1.0},
     {'start_time': 20.0, 'end_time': 30.0, 'confidence': 1.0}]
    """
    scored = window_scores(hop, probs, duration, window=window)
    if all_windows:
        return scored
    merged: list[dict] = []
    weight = 0.0
    for w in scored:
        if w["confidence"] < MUSIC_PROBABILITY:
            continue
        length = w["end_time"] - w["start_time"]
        if merged and abs(merged[-1]["end_time"] - w["start_time"]) < 1e-9:
            last = merged[-1]
            total = weight + length
            last["confidence"] = (last["confidence"] * weight + w["confidence"] * length) / total if total else \
                max(last["confidence"], w["confidence"])
            last["end_time"] = w["end_time"]
            weight = total
        else:
            merged.append(dict(w))
            weight = length
    for s in merged:
        s["confidence"] = round(float(s["confidence"]), 4)
    return merged
