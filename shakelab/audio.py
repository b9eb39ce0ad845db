"""Audio loading for shakelab: decoding files into numpy arrays.

WAV, FLAC, AIFF, OGG and MP3 are read by soundfile (libsndfile); other containers
(AAC/M4A/MP4) fall back to librosa/audioread, which needs ffmpeg.

Long recordings are never decoded whole for plotting: :func:`iter_blocks` streams a file in
fixed-size blocks, :func:`envelope` reduces it to a min/max envelope on the way, and
:func:`melspectrogram` reads a bounded number of windows by seeking.

Examples
--------
>>> from shakelab import audio
>>> from shakelab.demo import DEMO_RECORDING
>>> y, sr = audio.load(DEMO_RECORDING, sr=22050)
>>> y.shape, sr
((970200,), 22050)
>>> len(audio.envelope(DEMO_RECORDING, bins=2000).lo)
2000
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from shakelab.errors import ValidationError

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


READABLE = "WAV, FLAC, AIFF, OGG, MP3 (AAC/M4A/MP4 with ffmpeg)"

_SIGNATURES = (  # (offset, bytes, what a file starting so is)
    (0, b"RIFF", "a WAV (RIFF) file"), (0, b"fLaC", "a FLAC file"), (0, b"OggS", "an OGG file"),
    (0, b"FORM", "an AIFF file"), (0, b"ID3", "an MP3 file (ID3 tag)"), (4, b"ftyp", "an MP4/M4A file"),
    (0, b"%PDF", "a PDF document"), (0, b"\x89PNG", "a PNG image"), (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"PK\x03\x04", "a ZIP archive"), (0, b"\x1f\x8b", "a gzip archive"),
)
# what libsndfile says when it does not know the bytes (its "possibly a pipe?" is false for files)
_GENERIC = ("Format not recognised", "File does not exist or is not a regular file", "unknown format")


def what_is(path: PathLike) -> str:
    """Say what a file that does not decode as audio holds, from its first bytes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> _ = p.write_text("shopping list")
    >>> what_is(p)
    'plain text'
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        return f"a file that cannot be opened ({exc.strerror or exc})"
    if not head:
        return "nothing (0 bytes)"
    for offset, magic, what in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return what
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "an MP3 file (MPEG frame header)"
    text: str | None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[:exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
    if text is not None and "\x00" not in text:
        start = text.lstrip()[:1]
        return ("JSON text" if start in "{[" and start else "HTML or XML text" if start == "<" else "plain text")
    return "bytes of no known audio format"


def unreadable(path: PathLike, exc: BaseException | None = None) -> str:
    """Say in one line why a file does not decode: the file, what it holds, what is readable.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "take1.mp3"
    >>> _ = p.write_bytes(bytes(range(256)))
    >>> print(unreadable(p))  # doctest: +ELLIPSIS
    '.../take1.mp3' is not a readable audio file: it holds bytes of no known audio format (despite its .mp3 name); ...
    """
    name = os.fspath(path)
    p = Path(path)
    if not p.exists():
        return f"{name!r} is not a readable audio file: it does not exist"
    if not p.is_file():
        return f"{name!r} is not a readable audio file: it is a directory or a device, not a file"
    what = what_is(p)
    detail = str(exc or "").strip()
    if what.startswith(("a WAV", "a FLAC", "an OGG", "an AIFF", "an MP3", "an MP4")):
        what = f"it starts like {what} but its audio cannot be decoded"
        if detail and not any(g in detail for g in _GENERIC):
            what += f" ({re.sub(r'^Error opening .*?: ', '', detail).rstrip('.')})"
        if "MP4" in what:
            what += " (MP4/M4A need ffmpeg)"
    else:
        what = f"it holds {what}"
        suffix = p.suffix.lower()
        if suffix in (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3", ".m4a", ".aac", ".mp4"):
            what += f" (despite its {suffix} name)"
    return f"{name!r} is not a readable audio file: {what}; readable: {READABLE}"


def info(path: PathLike) -> AudioInfo:
    """Read the header of an audio file.

    Raises :class:`~shakelab.errors.ValidationError` (a ``ValueError``) naming the file, what it
    holds and what is readable when it is not
    decodable audio (:func:`unreadable`).

    Examples
    --------
    >>> from shakelab.demo import DEMO_RECORDING
    >>> info(DEMO_RECORDING).duration
    44.0
    """
    import soundfile as sf

    try:
        i = sf.info(str(path))
    except Exception as exc:  # libsndfile's errors are RuntimeError/LibsndfileError
        raise ValidationError(unreadable(path, exc)) from None
    frames = int(i.frames)
    if frames <= 0 or i.samplerate <= 0:
        raise ValidationError(f"{os.fspath(path)!r} holds no audio (0 frames)")
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
    >>> from shakelab.demo import DEMO_RECORDING
    >>> y, sr = load(DEMO_RECORDING, sr=16000)
    >>> len(y) / sr
    44.0
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"`path` must be an existing audio file, not {os.fspath(path)!r}")
    try:
        data, file_sr = sf.read(str(p), dtype="float32", always_2d=True)
        y = data.T  # (channels, samples)
    except Exception as sf_exc:
        try:
            import librosa

            y, file_sr = librosa.load(str(p), sr=None, mono=False)
            y = np.atleast_2d(y).astype(np.float32)
        except Exception:
            raise ValidationError(unreadable(p, sf_exc)) from None
    if y.shape[-1] == 0:
        raise ValidationError(f"{os.fspath(path)!r} holds no audio (0 frames)")
    if mono:
        y = y.mean(axis=0)
    if sr is not None and sr != file_sr:
        import librosa

        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq").astype(np.float32)
        file_sr = sr
    return np.ascontiguousarray(y), int(file_sr)


# --------------------------------------------------------------------------- streaming
class Envelope(NamedTuple):
    """Min/max envelope of a signal: ``lo[i]``/``hi[i]`` over the samples of bin ``i``.

    ``times`` are bin start times in seconds; bins cover the signal evenly (their lengths
    differ by at most one sample). ``samplerate`` and ``frames`` describe the whole signal.
    """

    times: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    samplerate: int
    frames: int

    @property
    def duration(self) -> float:
        """Length of the signal in seconds."""
        return self.frames / self.samplerate if self.samplerate else 0.0


_BLOCK = 1 << 18  # frames per streamed block (1 MB of int16 mono)


def _as_signal(source: Any, sr: int | None) -> tuple[np.ndarray, int] | None:
    """(mono float array, sr) for array-like input, None for a path."""
    if isinstance(source, (str, os.PathLike)):
        return None
    if isinstance(source, tuple) and len(source) == 2 and np.ndim(source[0]) >= 1:
        source, sr = source
    if isinstance(source, (np.ndarray, list, tuple)):
        y = np.asarray(source)
        if not np.issubdtype(y.dtype, np.number) or y.ndim not in (1, 2):
            raise ValidationError("`path_or_array` must be a path, a 1-D (samples) or 2-D (channels, "
                                  f"samples) numeric array or a (y, sr) pair, not shape {y.shape} "
                                  f"of {y.dtype}")
        if sr is None or isinstance(sr, bool) or not float(sr) > 0:
            raise ValidationError(f"`sr` must be a positive sample rate for array input, not {sr!r}")
        if y.ndim == 2:
            y = y.mean(axis=0)
        return y, int(sr)
    raise ValidationError("`path_or_array` must be a path, a numpy array or a (y, sr) pair, not "
                          f"{type(source).__name__}")


def _bin_edges(frames: int, bins: Any) -> np.ndarray:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValidationError(f"`bins` must be a positive integer, not {bins!r}")
    bins = int(min(bins, max(frames, 1)))
    return (np.arange(bins + 1, dtype=np.int64) * frames) // bins


def _reduce_into(lo: np.ndarray, hi: np.ndarray, edges: np.ndarray, g0: int,
                 block: np.ndarray) -> None:
    """Fold one block (global sample offset ``g0``) into the per-bin min/max arrays."""
    n = len(block)
    if n == 0:
        return
    b0 = int(np.searchsorted(edges, g0, side="right")) - 1
    b1 = int(np.searchsorted(edges, g0 + n, side="left"))
    idx = edges[b0:b1] - g0
    idx[0] = 0
    np.minimum(lo[b0:b1], np.minimum.reduceat(block, idx), out=lo[b0:b1])
    np.maximum(hi[b0:b1], np.maximum.reduceat(block, idx), out=hi[b0:b1])


def iter_blocks(path: PathLike, *, blocksize: int = _BLOCK, mono: bool = True):
    """Stream a file as ``(offset, block)`` pairs, never holding the whole file.

    16-bit PCM mono files come as int16 blocks (scale by 1/32768), everything else as
    float32; with ``mono`` the channels are averaged. The block buffer is reused: copy a
    block you want to keep.

    Examples
    --------
    >>> from shakelab.demo import DEMO_RECORDING
    >>> sum(len(b) for _, b in iter_blocks(DEMO_RECORDING))
    970200
    """
    import soundfile as sf

    meta = info(path)
    with sf.SoundFile(str(path)) as f:
        native = f.subtype == "PCM_16" and f.channels == 1
        dtype = "int16" if native else "float32"
        buf = np.empty((blocksize, f.channels), dtype=dtype)
        offset = 0
        while True:
            got = f.read(blocksize, dtype=dtype, always_2d=True, out=buf)
            n = len(got)
            if n == 0:
                break
            block = got
            if mono:
                block = got[:, 0] if f.channels == 1 else got.mean(axis=1, dtype=np.float32)
            yield offset, block
            offset += n
            if n < blocksize or offset >= meta.frames:
                break


def envelope(path_or_array: Any, *, bins: int = 2000, sr: int | None = None,
             blocksize: int = _BLOCK) -> Envelope:
    """Min/max envelope in ``bins`` bins, streamed from disk for a path.

    A path is read in blocks of ``blocksize`` frames (memory stays flat whatever the file
    length); an array is reduced in place. Channels are averaged to mono.

    Parameters
    ----------
    path_or_array : str, PathLike, numpy.ndarray or (y, sr)
        An audio file (WAV, FLAC, AIFF, OGG, MP3), samples (``(samples,)`` or
        ``(channels, samples)``), or a ``(y, sr)`` pair.
    bins : int
        Number of bins (capped at the number of samples).
    sr : int, optional
        Sample rate of an array (ignored for a path).
    blocksize : int
        Frames per streamed block.

    Returns
    -------
    Envelope
        ``times`` (bin starts, s), ``lo``/``hi`` (float32 in [-1, 1]), ``samplerate``,
        ``frames``.

    Examples
    --------
    >>> env = envelope(np.array([0.0, 1.0, -1.0, 0.5]), bins=2, sr=4)
    >>> env.lo.tolist(), env.hi.tolist(), env.times.tolist()
    ([0.0, -1.0], [1.0, 0.5], [0.0, 0.5])
    """
    sig = _as_signal(path_or_array, sr)
    if sig is not None:
        y, rate = sig
        frames = len(y)
        if frames == 0:
            raise ValidationError("`path_or_array` holds no samples")
        edges = _bin_edges(frames, bins)
        lo = np.minimum.reduceat(y, edges[:-1]).astype(np.float32)
        hi = np.maximum.reduceat(y, edges[:-1]).astype(np.float32)
        return Envelope(edges[:-1] / rate, lo, hi, rate, frames)
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) or blocksize < 1:
        raise ValidationError(f"`blocksize` must be a positive integer, not {blocksize!r}")
    meta = info(path_or_array)
    edges = _bin_edges(meta.frames, bins)
    nb = len(edges) - 1
    lo = np.full(nb, np.inf)
    hi = np.full(nb, -np.inf)
    scale = 1.0
    end = 0
    for offset, block in iter_blocks(path_or_array, blocksize=int(blocksize)):
        if block.dtype == np.int16:
            scale = 1.0 / 32768.0
        block = block[: max(0, meta.frames - offset)]
        _reduce_into(lo, hi, edges, offset, block)
        end = offset + len(block)
    if end < meta.frames:  # header promised more than the decoder gave
        lo[~np.isfinite(lo)] = 0.0
        hi[~np.isfinite(hi)] = 0.0
    return Envelope(edges[:-1] / meta.samplerate, (lo * scale).astype(np.float32),
                    (hi * scale).astype(np.float32), meta.samplerate, meta.frames)


def melspectrogram(path_or_array: Any, *, sr: int | None = None, n_mels: int = 128,
                   n_fft: int = 2048, hop_length: int = 512, max_columns: int = 2000,
                   fmax: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Mel power spectrogram with at most ``max_columns`` columns, flat in memory.

    Short signals get a plain STFT (``hop_length``). For long ones the hop grows so that
    about ``4 * max_columns`` windows of ``n_fft`` samples are analysed, each read from
    disk with a seek (an hour-long file is never decoded whole), and every 4 neighbouring
    windows are averaged into one column.

    Returns
    -------
    (S, edges, sr)
        ``S``: (n_mels, columns) float32 power; ``edges``: column boundaries in seconds
        (columns + 1); ``sr``: the sample rate.

    Examples
    --------
    >>> S, edges, sr = melspectrogram((np.zeros(22050, np.float32), 22050), n_mels=32)
    >>> S.shape[0], float(edges[0])
    (32, 0.0)
    """
    import librosa

    sig = _as_signal(path_or_array, sr)
    if sig is not None:
        y, rate = sig
        frames = len(y)
    else:
        meta = info(path_or_array)
        rate, frames = meta.samplerate, meta.frames
    if frames == 0:
        raise ValidationError("`path_or_array` holds no samples")
    target = 4 * int(max_columns)
    n_win = max(1, 1 + (frames - n_fft) // hop_length) if frames >= n_fft else 1
    hop = hop_length if n_win <= target else math.ceil(max(frames - n_fft, 1) / (target - 1))
    starts = np.arange(0, max(frames - n_fft, 0) + 1, hop, dtype=np.int64)
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    mel = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmax=fmax).astype(np.float32)
    power = np.empty((n_mels, len(starts)), np.float32)
    chunk = np.zeros((256, n_fft), np.float32)

    def flush(k0: int, k1: int) -> None:
        spec = np.abs(np.fft.rfft(chunk[: k1 - k0] * window, axis=1)) ** 2
        power[:, k0:k1] = mel @ spec.T.astype(np.float32)

    if sig is not None:
        for k0 in range(0, len(starts), 256):
            k1 = min(k0 + 256, len(starts))
            for j, s in enumerate(starts[k0:k1]):
                seg = y[s:s + n_fft]
                chunk[j, :len(seg)] = seg
                chunk[j, len(seg):] = 0.0
            flush(k0, k1)
    else:
        import soundfile as sf

        with sf.SoundFile(str(path_or_array)) as f:
            buf = np.empty((n_fft, f.channels), np.float32)
            for k0 in range(0, len(starts), 256):
                k1 = min(k0 + 256, len(starts))
                for j, s in enumerate(starts[k0:k1]):
                    if j == 0 or s != starts[k0 + j - 1] + n_fft:
                        f.seek(int(s))
                    got = f.read(n_fft, dtype="float32", always_2d=True, out=buf)
                    chunk[j, :len(got)] = got.mean(axis=1)
                    chunk[j, len(got):] = 0.0
                flush(k0, k1)
    group = 1 if hop == hop_length else 4
    cols = math.ceil(len(starts) / group)
    pad = cols * group - len(starts)
    if pad:
        power = np.concatenate([power, power[:, -1:].repeat(pad, axis=1)], axis=1)
    S = power.reshape(n_mels, cols, group).mean(axis=2)
    edges = np.append(starts[::group], max(starts[-1] + hop, min(frames, starts[-1] + n_fft)))
    return S, edges.astype(np.float64) / rate, rate
