"""The audio processing behind the local server's models (called by the job worker).

- :func:`probe` checks that a file is complete, decodable audio and says what it holds.
- :func:`run_model` runs one model on one file once and writes its output file in each format asked:
  ``music_detection`` -> ``music_detection.json`` or ``.txt`` (the segments of
  :func:`detect_music`, written by :func:`run_detection`); ``vocals``, ``instrumental``,
  ``drums``, ``bass``, ``other`` -> ``<model>.<fmt>`` from :mod:`shakelab.server.stems`
  (classical DSP, same sample rate, channels and length as the input); ``music_removal``,
  ``dialogue`` -> ``<model>.<fmt>`` from :mod:`shakelab.server.removal` through the same
  block writer.
- :func:`detect_music` is music detection on samples: the segments where music is present
  ``[{start_time, end_time, confidence}]``, as the service answers (or every window with
  ``all_windows=True``). The detector's frame probabilities come from
  :mod:`shakelab.server.detectors`; the rule that turns them into segments is
  :func:`shakelab.server.decision.music_segments`. It is the one detection pipeline: jobs,
  tests and benchmarks all go through it (``detector=`` picks another detector).
- :func:`execute` runs one job for the worker (in a model process): probe, then the model.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> import shakelab
>>> from shakelab.server import processing
>>> demo = Path(shakelab.__file__).parent / "data" / "demo.flac"
>>> processing.probe(demo).duration
44.0
>>> with tempfile.TemporaryDirectory() as out:
...     [p.name for p in processing.run_model("music_detection", demo, out, "json")]
['music_detection.json']
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shakelab import catalog
from shakelab.audio import AudioInfo

from shakelab.errors import ValidationError

if TYPE_CHECKING:
    from shakelab.server.detectors import Detector

__all__ = ["DETECTION_SR", "MAX_INPUT_SECONDS", "detect_music", "execute", "load_mono", "probe", "run_detection",
           "run_model"]

DETECTION_SR = 8000  # the feature detector's rate (the detector's own ``sample_rate`` decides in run_model)
MIN_WINDOW = 0.5

PathLike = str | os.PathLike

_DECLARED = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def probe(path: PathLike) -> AudioInfo:
    """Check that ``path`` is complete, decodable audio and read what it holds.

    Parameters
    ----------
    path : str or PathLike
        WAV, FLAC, AIFF, OGG, MP3 (and AAC/M4A/MP4 when ffmpeg is installed).

    Returns
    -------
    shakelab.audio.AudioInfo
        ``samplerate``, ``channels``, ``frames``, ``format``; ``.duration`` in seconds.

    Raises
    ------
    ValueError
        Naming the file and what is wrong: missing, empty (zero bytes or zero frames), not
        audio, or truncated (the header declares more audio than the file holds, or its
        end cannot be decoded).

    Examples
    --------
    >>> import shakelab
    >>> probe(Path(shakelab.__file__).parent / "data" / "demo.flac")
    AudioInfo(samplerate=22050, channels=1, frames=970200, format='flac')
    """
    import soundfile as sf

    from shakelab import audio

    name = os.fspath(path)
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"{name!r} does not exist or is not a file")
    if p.stat().st_size == 0:
        raise ValidationError(f"{name!r} is empty (0 bytes)")
    try:
        info = audio.info(p)
    except ValueError as exc:
        if "0 frames" in str(exc):  # read by libsndfile, holds no samples whatever its header says
            raise ValidationError(f"{name!r} is not audio: it holds no audio (0 frames decode, whatever its header "
                             "declares)") from None
        other = _probe_other(p)
        if other is None:
            raise ValidationError(str(exc)) from None  # audio.info's message: the file, what it holds, what reads
        return other
    try:
        extra = sf.info(str(p)).extra_info
    except Exception:  # pragma: no cover - audio.info just read it
        extra = ""
    for _chunk, declared, actual in _DECLARED.findall(extra):
        declared, actual = int(declared), int(actual)
        if actual < declared and declared not in (0, 0xFFFFFFFF, 0x7FFFFFFF) and declared < 0xFFFFFF00:
            raise ValidationError(f"{name!r} is truncated: its header declares {declared} bytes of audio but the file "
                             f"holds {actual}")
    if "*** Chunk size" in extra and "> file length" in extra:
        raise ValidationError(f"{name!r} is truncated: a chunk is longer than the file")
    tail = min(info.frames, 4096)
    try:
        with sf.SoundFile(str(p)) as f:
            f.seek(f.frames - tail)
            got = len(f.read(tail, dtype="float32", always_2d=True))
    except Exception as exc:
        raise ValidationError(f"{name!r} is truncated or corrupt: its last {tail} frames cannot be decoded "
                         f"({_short(exc, name)})") from None
    if got < tail:
        raise ValidationError(f"{name!r} is truncated: it declares {info.frames} frames but its end cannot be decoded")
    return info


def _short(exc: BaseException, name: str) -> str:
    return str(exc).replace(f"{name!r} ", "").replace(name, "the file").strip()[:200]


def _probe_other(p: Path) -> AudioInfo | None:
    """AAC/M4A/MP4 and other containers through audioread (needs ffmpeg); None if it cannot."""
    try:
        import audioread

        with audioread.audio_open(str(p)) as f:
            sr, ch, dur = int(f.samplerate), int(f.channels), float(f.duration)
            decoded = any(len(block) for block in itertools.islice(f, 8))  # the header's duration is not audio
    except Exception:
        return None
    if not decoded:
        return None
    if sr <= 0 or dur <= 0:
        return None
    return AudioInfo(samplerate=sr, channels=ch, frames=round(dur * sr), format=p.suffix.lstrip(".").lower()
                     or "unknown")


def load_mono(path: PathLike, sr: int = DETECTION_SR) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sr``, streaming blocks through soxr (flat memory).

    Examples
    --------
    >>> import shakelab
    >>> len(load_mono(Path(shakelab.__file__).parent / "data" / "demo.flac")) / 8000
    44.0
    """
    import soundfile as sf

    try:
        f = sf.SoundFile(os.fspath(path))
    except Exception:
        from shakelab import audio

        return audio.load(path, sr=sr, mono=True)[0]
    import soxr

    with f:
        if f.samplerate == sr:
            return np.concatenate([b.mean(axis=1) for b in f.blocks(1 << 18, dtype="float32", always_2d=True)]
                                  or [np.zeros(0, np.float32)]).astype(np.float32)
        rs = soxr.ResampleStream(f.samplerate, sr, 1, dtype="float32", quality="HQ")
        parts = []
        for block in f.blocks(1 << 18, dtype="float32", always_2d=True):
            parts.append(rs.resample_chunk(np.ascontiguousarray(block.mean(axis=1))))
        parts.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(parts).astype(np.float32)


def detect_music(y: np.ndarray, sr: int, *, window: float = 10.0, all_windows: bool = False,
                 detector: str | Detector | None = None) -> list[dict]:
    """Detect music in samples: the segments where music is present, as the service answers.

    The one detection pipeline: what ``music_detection`` jobs run (:func:`run_detection`), the
    detector's probability track through the rule of :mod:`shakelab.server.decision`.

    Parameters
    ----------
    y : numpy.ndarray
        Samples, mono ``(n,)`` or ``(channels, n)`` (averaged).
    sr : int
        Sample rate of ``y``.
    window : float
        Window length in seconds (the real service uses 10).
    all_windows : bool
        Every window with its score instead of the music segments (local-only extension).
    detector : {"auto", "cnn", "features"} or Detector, optional
        The server's detector by default (:func:`shakelab.server.detectors.get_detector`); a
        name picks one, an object (``cnn.CNNDetector(hop=1)``) is used as it is.

    Returns
    -------
    list of dict
        ``{"start_time": float, "end_time": float, "confidence": float}`` per music segment
        (adjacent music windows merged), ``[]`` without music; the rule is
        :func:`shakelab.server.decision.music_segments`.

    Raises
    ------
    ValueError
        Empty ``y``, a non-positive ``sr`` or ``window``, an unknown ``detector`` name.

    Examples
    --------
    >>> import numpy as np
    >>> detect_music(np.zeros(8000 * 15, np.float32), 8000)
    []
    >>> [w["end_time"] for w in detect_music(np.zeros(8000 * 15, np.float32), 8000, all_windows=True)]
    [10.0, 15.0]
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1 or y.size == 0:
        raise ValidationError(f"`y` must hold audio samples (1-D, or 2-D channels x samples), not shape {y.shape}")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValidationError(f"`sr` must be a positive integer sample rate, not {sr!r}")
    window, all_windows = _check_window(window), _check_all_windows(all_windows)
    if detector is None or isinstance(detector, str):
        from shakelab.server import detectors

        detector = detectors.get_detector(detector)
    return _detect(y, int(sr), window, len(y) / sr, detector, all_windows=all_windows)


def _detect(y: np.ndarray, sr: int, window: float, duration: float, detector: Detector, *,
            all_windows: bool = False) -> list[dict]:
    from shakelab.server import decision

    hop, probs = detector.music_probability(y, sr)
    return decision.music_segments(hop, probs, duration, window=window, all_windows=all_windows)


def _check_all_windows(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"`all_windows` must be true or false, not {value!r}")
    return value


def _check_window(window: object) -> float:
    if isinstance(window, str):
        with contextlib.suppress(ValueError):
            window = float(window)
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not math.isfinite(window) \
            or window < MIN_WINDOW:
        raise ValidationError(f"`window` must be a number of seconds >= {MIN_WINDOW}, not {window!r}")
    return float(window)


def _formats(fmt: str | Sequence[str]) -> list[str]:
    """One format or several (a Tasks API target's), as a list; an empty list is refused."""
    formats = [fmt] if isinstance(fmt, str) else list(fmt)
    if not formats:
        raise ValidationError("`fmt` must be a format or a non-empty list of formats, not []")
    return formats


def run_model(model: str, src_path: PathLike, out_dir: PathLike, fmt: str | Sequence[str], *,
              options: dict | None = None) -> list[Path]:
    """Run ``model`` on ``src_path`` once and write its output into ``out_dir`` in each format asked.

    Parameters
    ----------
    model : str
        One of ``shakelab.catalog.LOCAL_MODELS``: ``music_detection``, ``vocals``,
        ``instrumental``, ``drums``, ``bass``, ``other``, ``music_removal``, ``dialogue``.
    src_path : path
        The input audio.
    out_dir : path
        Existing or new directory for the output.
    fmt : str or list of str
        ``json``/``txt`` for ``music_detection``; ``wav``, ``mp3``, ``flac``, ``aiff`` for stems.
        Several (a Tasks API target's ``formats``): the model runs once and each file is encoded
        from that one result, the same file a run for that format alone writes.
    options : dict, optional
        Extra job metadata. ``window`` (seconds) and ``all_windows`` (bool), local-only
        extensions, set the music-detection grid and ask for every window (see
        :func:`run_detection`); other keys (``variant``, ``residual``, ...) are accepted and
        ignored.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``fmt``: ``[out_dir/music_detection.json]`` (or
        ``.txt``, one line ``start<TAB>end<TAB>confidence`` per segment) or ``[out_dir/<model>.<fmt>]``.

    Raises
    ------
    ValueError
        Unknown model or format (naming the allowed ones), a bad ``window``, or input that
        is not complete decodable audio.

    Examples
    --------
    >>> run_model("drums", "song.wav", "out", "flac")
    [PosixPath('out/drums.flac')]
    >>> import soundfile as sf
    >>> sf.info("out/drums.flac").frames == sf.info("song.wav").frames
    True
    >>> [p.name for p in run_model("drums", "song.wav", "both", ["wav", "mp3"])]   # one run, two files
    ['drums.wav', 'drums.mp3']
    """
    catalog.check_model(model, catalog.LOCAL_MODELS)
    formats = _formats(fmt)
    for one in formats:
        catalog.check_format(model, one, catalog.LOCAL_MODELS)
    options = dict(options or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model == "music_detection":
        return run_detection(src_path, out, formats, options=options)[0]
    probe(src_path)
    from shakelab.server import removal, stems

    separate_to = removal.separate_to if model in removal.MODELS else stems.separate_to
    return separate_to(src_path, [(out / f"{model}.{one}", one) for one in formats], model)


def run_detection(src_path: PathLike, out_dir: PathLike, fmt: str | Sequence[str], *, options: dict | None = None
                  ) -> tuple[list[Path], dict]:
    """Run ``music_detection`` on a file once, write its output in each format, and say how it was computed.

    Parameters
    ----------
    src_path, out_dir, fmt
        As in :func:`run_model` (``fmt`` is ``json``, ``txt`` or a list of them).
    options : dict, optional
        ``window`` (seconds >= 0.5, default 10) and ``all_windows`` (default False).

    Returns
    -------
    (list of pathlib.Path, dict)
        ``[out_dir/music_detection.<fmt>]`` (one per format) and ``{"detector", "window", "allWindows"}``
        (what the job payload reports, so that a client can label the frame it builds).

    Examples
    --------
    >>> import tempfile
    >>> import shakelab
    >>> with tempfile.TemporaryDirectory() as out:
    ...     paths, detail = run_detection(Path(shakelab.__file__).parent / "data" / "demo.flac", out, "json")
    >>> [p.name for p in paths], detail["window"], detail["allWindows"], detail["detector"] in ("cnn", "features")
    (['music_detection.json'], 10.0, False, True)
    """
    formats = _formats(fmt)
    for one in formats:
        catalog.check_format("music_detection", one, catalog.LOCAL_MODELS)
    options = dict(options or {})
    window = _check_window(10.0 if options.get("window") is None else options["window"])
    all_windows = _check_all_windows(options.get("all_windows", False))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = probe(src_path)
    from shakelab.server import detectors

    detector = detectors.get_detector()
    sr = getattr(detector, "sample_rate", None) or 16000
    y = load_mono(src_path, sr)
    if y.size == 0:
        raise ValidationError(f"{os.fspath(src_path)!r} holds no decodable audio")
    # windows follow the header's duration (an MP3's decoded length can differ by a few ms)
    segments = _detect(y, sr, window, info.duration, detector, all_windows=all_windows)
    dests = []
    for one in formats:
        dest = out / f"music_detection.{one}"
        if one == "json":
            dest.write_text(json.dumps(segments, indent=2) + "\n")
        else:
            dest.write_text("".join(f"{s['start_time']:.3f}\t{s['end_time']:.3f}\t{s['confidence']:.4f}\n"
                                    for s in segments))
        dests.append(dest)
    return dests, {"detector": detector.name, "window": window, "allWindows": all_windows}


#: Longest input a job accepts, in seconds (the service takes stems up to 3 h).
MAX_INPUT_SECONDS = 3 * 3600.0


def execute(model: str, src: str, out_dir: str, fmt: str | Sequence[str], options: dict) -> tuple:
    """Probe and run one job (in a model process of :mod:`shakelab.server.pool`, or a worker thread).

    ``fmt`` is the job's format, or a Tasks API target's formats: the model runs once for all.

    Returns ``("ok", duration_seconds, [output paths], detail)`` (``detail``: how music
    detection was computed, see :func:`shakelab.server.processing.run_detection`; None for other
    models), or ``(code, message)`` for a failure the user caused (``invalid_audio``,
    ``input_too_long``). Other errors propagate.
    """
    try:
        info = probe(src)
    except ValueError as exc:
        return ("invalid_audio", str(exc))
    if info.duration > MAX_INPUT_SECONDS:
        return ("input_too_long", f"the input lasts {info.duration / 60:.1f} min; the limit is "
                                  f"{MAX_INPUT_SECONDS / 60:.0f} min")
    detail = None
    try:
        if model == "music_detection":
            paths, detail = run_detection(src, out_dir, fmt, options=options)
        else:
            paths = run_model(model, src, out_dir, fmt, options=options)
    except ValueError as exc:
        return ("invalid_audio", str(exc))
    return ("ok", float(info.duration), [str(p) for p in paths], detail)
