"""Audio loading for shakelab: decoding files into numpy arrays.

WAV, FLAC, AIFF, OGG and MP3 are read by soundfile (libsndfile); other containers
(AAC/M4A/MP4) fall back to librosa/audioread, which needs ffmpeg.

Examples
--------
>>> from shakelab import audio
>>> y, sr = audio.load("data/demo.flac", sr=22050)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PathLike = str | os.PathLike


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header without decoding it."""

    samplerate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.samplerate if self.samplerate else 0.0


def info(path: PathLike) -> AudioInfo:
    """Read the header of an audio file.

    Raises ``ValueError`` naming the file when it is not decodable audio.

    Examples
    --------
    >>> info("data/demo.flac").duration   # doctest: +SKIP
    40.0
    """
    import soundfile as sf

    try:
        i = sf.info(str(path))
    except Exception as exc:  # libsndfile's errors are RuntimeError/LibsndfileError
        raise ValueError(f"{os.fspath(path)!r} is not a readable audio file: {exc}") from exc
    frames = int(i.frames)
    if frames <= 0 or i.samplerate <= 0:
        raise ValueError(f"{os.fspath(path)!r} holds no audio (0 frames)")
    return AudioInfo(samplerate=int(i.samplerate), channels=int(i.channels), frames=frames,
                     format=str(i.format).lower())


def load(path: PathLike, *, sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode a whole audio file as float32.

    Parameters
    ----------
    path : str or PathLike
        WAV, FLAC, AIFF, OGG or MP3 (others through librosa/audioread when ffmpeg exists).
    sr : int, optional
        Resample to this rate; ``None`` keeps the file's rate.
    mono : bool
        Average channels to one. Otherwise the array is ``(channels, samples)``.

    Returns
    -------
    (numpy.ndarray, int)
        Samples in [-1, 1] and the sample rate.

    Examples
    --------
    >>> y, sr = load("data/demo.flac", sr=16000)   # doctest: +SKIP
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"`path` must be an existing audio file, not {os.fspath(path)!r}")
    try:
        data, file_sr = sf.read(str(p), dtype="float32", always_2d=True)
        y = data.T  # (channels, samples)
    except Exception as sf_exc:
        try:
            import librosa

            y, file_sr = librosa.load(str(p), sr=None, mono=False)
            y = np.atleast_2d(y).astype(np.float32)
        except Exception as exc:
            raise ValueError(f"{os.fspath(path)!r} is not a readable audio file: {sf_exc}") from exc
    if y.shape[-1] == 0:
        raise ValueError(f"{os.fspath(path)!r} holds no audio (0 frames)")
    if mono:
        y = y.mean(axis=0)
    if sr is not None and sr != file_sr:
        import librosa

        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq").astype(np.float32)
        file_sr = sr
    return np.ascontiguousarray(y), int(file_sr)
