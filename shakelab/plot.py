"""Plots of music-detection output and usage (matplotlib).

Every function is ``plot_x(data, *, ..., ax=None, **kwargs) -> Axes``: ``ax=None`` draws on
``plt.gca()``, ``**kwargs`` go to the main artist, nothing calls ``plt.show()`` or touches
rcParams. Waveforms are drawn from a min/max envelope streamed from disk, so an hour-long
file plots in about a second with flat memory. matplotlib is imported on first use.

Examples
--------
>>> import matplotlib.pyplot as plt
>>> from shakelab.demo import DEMO_RECORDING
>>> from shakelab.plot import plot_detection
>>> fig, ax = plt.subplots(figsize=(10, 3))
>>> segments = [{"start_time": 10.0, "end_time": 44.0, "confidence": 0.98}]
>>> plot_detection(DEMO_RECORDING, segments, ax=ax) is ax
True
>>> plt.close(fig)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from shakelab.errors import ValidationError

__all__ = [
    "plot_confidence",
    "plot_detection",
    "plot_spectrogram",
    "plot_timeline",
    "plot_usage",
]

_WAVE = "#3b5b78"
_SPAN_CMAP = "Oranges"
_LINE = "#c2410c"
_THRESH = "#b91c1c"
_BELOW = "#9ca3af"
_LANE = 0.28  # share of plot_detection's axes height given to the confidence lane
_NICE_STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60,
               120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _axes(ax):
    return _plt().gca() if ax is None else ax


def _frame(segments):
    from shakelab.frames import as_segments

    return as_segments(segments)


def _span_colors(conf: Any, *, alpha: bool = True) -> np.ndarray:
    """RGBA per confidence: darker orange and more opaque for higher confidence."""
    import matplotlib

    cmap = matplotlib.colormaps[_SPAN_CMAP]
    rgba = cmap((0.3 if alpha else 0.2) + (0.45 if alpha else 0.7) * np.asarray(conf, float))
    rgba = np.atleast_2d(rgba).copy()
    if alpha:
        rgba[:, 3] = 0.1 + 0.3 * np.asarray(conf, float)
    return rgba


def format_time(seconds: float, duration: float) -> str:
    """Tick text for ``seconds``: h:mm:ss from an hour on, m:ss from a minute, else seconds.

    Examples
    --------
    >>> format_time(3725, 7200), format_time(75, 300), format_time(2.5, 10)
    ('1:02:05', '1:15', '2.5')
    """
    if duration >= 3600:
        s = round(seconds)
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    if duration >= 60:
        s = round(seconds)
        return f"{s // 60}:{s % 60:02d}"
    return f"{seconds:g}"


def _time_axis(ax, duration: float) -> None:
    """Nice time ticks and h:mm:ss / m:ss labels for a span of ``duration`` seconds."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    duration = float(duration) if duration and duration > 0 else 1.0
    step = next((s for s in _NICE_STEPS if duration / s <= 8), _NICE_STEPS[-1])
    if duration >= 60:
        step = max(step, 1)
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: format_time(x, duration)))
    unit = "h:mm:ss" if duration >= 3600 else "m:ss" if duration >= 60 else "s"
    ax.set_xlabel(f"time ({unit})")


def _spans(ax, df: pd.DataFrame, y0: float, y1: float, *, alpha: bool = True, **kwargs):
    """One PolyCollection of vertical spans (x in data, y in axes fraction)."""
    from matplotlib.collections import PolyCollection

    s = df["start_time"].to_numpy()
    e = df["end_time"].to_numpy()
    verts = [[(a, y0), (a, y1), (b, y1), (b, y0)] for a, b in zip(s, e, strict=True)]
    coll = PolyCollection(verts, facecolors=_span_colors(df["confidence"].to_numpy(), alpha=alpha)
                          if len(df) else "none", edgecolors="none",
                          transform=ax.get_xaxis_transform(), **kwargs)
    ax.add_collection(coll, autolim=False)
    return coll


def _outlines(ax, df: pd.DataFrame, y0: float, y1: float):
    """Dashed outlines of segments that did not pass a threshold (shown, not hidden)."""
    from matplotlib.collections import PolyCollection

    verts = [[(a, y0), (a, y1), (b, y1), (b, y0)] for a, b in zip(df["start_time"], df["end_time"], strict=True)]
    coll = PolyCollection(verts, facecolors="none", edgecolors="#d1d5db", linewidths=0.0, hatch="///",
                          transform=ax.get_xaxis_transform(), zorder=0.6, label="below threshold")
    ax.add_collection(coll, autolim=False)
    return coll


def _one_recording(df: pd.DataFrame) -> None:
    keys = df[["source", "job_id"]].drop_duplicates()
    if len(keys) > 1:
        raise ValidationError(f"`segments` must belong to one recording, but it has {len(keys)} "
                              f"source/job pairs: {keys.to_dict('records')!r}; select one "
                              "(df[df.source == name]) or use plot_timeline")


def _check_threshold(threshold):
    if threshold is None:
        return None
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(threshold, bool) or not 0.0 <= t <= 1.0:
        raise ValidationError(f"`threshold` must be a number in [0, 1] or None, not {threshold!r}")
    return t


def _step_xy(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Confidence as a step line: flat over each segment, broken over gaps."""
    df = df.sort_values("start_time", kind="stable")
    xs, ys = [], []
    prev_end = None
    for s, e, c in zip(df["start_time"], df["end_time"], df["confidence"], strict=True):
        if prev_end is not None and s > prev_end + 1e-9:
            xs.append(np.nan)
            ys.append(np.nan)
        xs += [s, e]
        ys += [c, c]
        prev_end = e
    return np.asarray(xs, float), np.asarray(ys, float)


def plot_detection(audio: Any, segments: Any, *, threshold: float | None = None, gap: float = 0.0,
                   ax=None, bins: int | None = None, **kwargs):
    """Waveform with the music found shaded, and the confidence in a lane of its own.

    Every returned segment is music, whatever its confidence (the service's meaning): each is
    shaded over the waveform, darker for higher confidence. Below the waveform, inside ``ax``,
    a lane (``ax.confidence_ax``, from ``ax.inset_axes``) shows the confidence (0-1) as a step
    line and, when given, the ``threshold`` as a dashed line, so neither can be confused with
    the waveform. With a ``threshold``, segments under it are not shaded but stay visible: grey
    in the lane and outlined over the waveform. The legend sits inside the axes (top), so a
    title set afterwards never covers it. Time ticks read h:mm:ss for recordings of an hour or
    more.

    Parameters
    ----------
    audio : str, PathLike or (numpy.ndarray, int)
        An audio file, or samples and their sample rate.
    segments : pandas.DataFrame or list of dict
        One recording's segments (``segments_frame`` columns or the raw payload). All-window
        output (``provenance`` ending in ``:all_windows``) needs a ``threshold``.
    threshold : float, optional
        Shade only segments with confidence >= it (0-1), and draw it in the lane.
    gap : float
        Shade kept segments closer than ``gap`` seconds as one region (see
        :func:`shakelab.segments.merge`).
    ax : matplotlib.axes.Axes, optional
        Where to draw; default ``plt.gca()``. The lane is ``ax.confidence_ax``.
    bins : int, optional
        Envelope bins; default twice the axes width in pixels (at least 1000).
    **kwargs
        Passed to the waveform artist (``fill_between``, or ``plot`` for very short input).

    Returns
    -------
    matplotlib.axes.Axes
        ``ax`` (the waveform axes), with the lane as ``ax.confidence_ax``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.sin(np.linspace(0, 2000, 40000)).astype("float32")
    >>> ax = plot_detection((y, 8000), [{"start_time": 0, "end_time": 5, "confidence": 0.18}])
    >>> tuple(float(v) for v in ax.get_xlim()), ax.confidence_ax.get_ylabel()
    ((0.0, 5.0), 'confidence')
    """
    from matplotlib.patches import Patch

    from shakelab import audio as audio_mod
    from shakelab import segments as sg

    ax = _axes(ax)
    df = _frame(segments)
    _one_recording(df)
    thr = _check_threshold(threshold)
    music = sg.select_music(df, thr)
    below = df[~df.index.isin(music.index)]
    if len(music) and gap:
        music = sg.merge(music, gap=gap)
    if bins is None:
        bins = max(1000, int(2 * ax.bbox.width))
    env = audio_mod.envelope(audio, bins=bins)
    duration = float(env.duration)

    if len(env.lo) == env.frames:  # fewer samples than bins: draw the samples themselves
        opts = {"color": _WAVE, "linewidth": 0.8, "label": "waveform", **kwargs}
        wave = ax.plot(env.times, env.lo, **opts)[0]
    else:
        opts = {"color": _WAVE, "linewidth": 0.3, "label": "waveform", **kwargs}
        wave = ax.fill_between(env.times, env.lo, env.hi, zorder=2, **opts)
    peak = float(max(np.max(np.abs(env.lo)), np.max(np.abs(env.hi)))) or 1.0
    # the waveform keeps the top of the axes, the lane the bottom
    top, bottom = 1.1 * peak, -1.1 * peak
    ax.set_ylim(bottom - (top - bottom) * _LANE / (1 - _LANE), top)
    ax.set_yticks([-peak, 0.0, peak], [f"{-peak:.2g}", "0", f"{peak:.2g}"])
    ax.set_xlim(0.0, duration)
    ax.set_ylabel("amplitude")
    label = "music (shade = confidence)"
    _spans(ax, music, _LANE, 1.0, zorder=0.5, label=label)
    if len(below):
        _outlines(ax, below, _LANE, 1.0)
    _time_axis(ax, duration)

    lane = ax.inset_axes([0.0, 0.0, 1.0, _LANE], sharex=ax, zorder=3)
    lane.set_facecolor("white")
    x, y = _step_xy(df)
    line = lane.plot(x, y, color=_LINE, linewidth=1.3, label="confidence", zorder=3)[0]
    lane.fill_between(x, 0, y, color=_LINE, alpha=0.12, linewidth=0)
    handles = [wave, Patch(facecolor=_span_colors([0.8])[0], label=label)]
    if len(below):
        bx, by = _step_xy(below)
        lane.plot(bx, by, color=_BELOW, linewidth=1.3, label="below threshold", zorder=3.5)
        handles.append(Patch(facecolor="none", edgecolor="#9ca3af", hatch="///", linewidth=0,
                             label="below threshold"))
    handles.append(line)
    if thr is not None:
        handles.append(lane.axhline(thr, color=_THRESH, linestyle="--", linewidth=1.0,
                                    label=f"threshold {thr:g}"))
    lane.set_ylim(0.0, 1.12)  # 1.0 stays off the frame
    lane.set_yticks([0.0, 0.5, 1.0], ["0", ".5", "1"])
    lane.yaxis.tick_right()
    lane.yaxis.set_label_position("right")
    lane.set_ylabel("confidence", fontsize="small")
    lane.tick_params(axis="y", labelsize="x-small", length=2)
    lane.tick_params(axis="x", labelbottom=False, length=0)
    lane.grid(axis="y", color="#e5e7eb", linewidth=0.6)
    lane.set_xlim(0.0, duration)
    ax.confidence_ax = lane
    # The legend lives in an empty child axes on top of ax: matplotlib places a title above
    # child axes, so a title set afterwards never prints over the legend.
    wide = ax.bbox.width / ax.figure.dpi >= 6.5
    rows = 1 if wide else math.ceil(len(handles) / 3)
    height_pt = rows * 11.0 + 4.0
    key = ax.inset_axes([0.0, 1.0, 1.0, height_pt / max(ax.bbox.height * 72 / ax.figure.dpi, 1.0)])
    key.set_axis_off()
    key.legend(handles=handles, loc="lower left", ncols=len(handles) if wide else 3, frameon=False,
               fontsize="x-small", borderaxespad=0.0, borderpad=0.2, handlelength=1.4, columnspacing=1.0)
    ax.legend_ax = key
    ax.figure.sca(ax)
    return ax


def plot_spectrogram(audio: Any, segments: Any = None, *, threshold: float | None = None, ax=None,
                     n_mels: int = 128, fmax: float | None = None, max_columns: int = 2000, **kwargs):
    """Mel spectrogram (dB) with the music segments marked as a strip along the top.

    Long files are not decoded whole: at most ``4 * max_columns`` windows are read (see
    :func:`shakelab.audio.melspectrogram`), averaged into ``max_columns`` columns.

    Parameters
    ----------
    audio : str, PathLike or (numpy.ndarray, int)
    segments : pandas.DataFrame or list of dict, optional
        One recording's segments, every one music (the strip's colour deepens with confidence).
    threshold : float, optional
        Mark only segments with confidence >= it (required for all-window output).
    ax : matplotlib.axes.Axes, optional
    n_mels, fmax, max_columns
        Spectrogram resolution and top frequency (default half the sample rate).
    **kwargs
        Passed to ``pcolormesh`` (e.g. ``cmap``). Add a colour bar with
        ``plt.colorbar(ax.collections[0], ax=ax)``.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> ax = plot_spectrogram((np.random.default_rng(0).normal(size=8000), 8000), n_mels=32)
    >>> ax.get_ylabel()
    'frequency (Hz, mel scale)'
    """
    import librosa
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter

    from shakelab import audio as audio_mod

    from shakelab import segments as sg

    ax = _axes(ax)
    df = _frame(segments) if segments is not None else None
    if df is not None:
        _one_recording(df)
        df = sg.select_music(df, _check_threshold(threshold))
    S, edges, sr = audio_mod.melspectrogram(audio, n_mels=n_mels, fmax=fmax,
                                            max_columns=max_columns)
    top = float(fmax or sr / 2)
    fedges = librosa.mel_frequencies(n_mels=n_mels + 1, fmin=0.0, fmax=top)
    S_db = librosa.power_to_db(S, ref=float(S.max()) if S.max() > 0 else 1.0, top_db=80.0)
    opts = {"cmap": "magma", "shading": "flat", "rasterized": True, **kwargs}
    ax.pcolormesh(edges, fedges, S_db, **opts)
    ax.set_yscale("function", functions=(
        lambda f: librosa.hz_to_mel(np.maximum(f, 0.0)), lambda m: librosa.mel_to_hz(m)))
    ticks = [t for t in (0, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000) if t <= top]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda f, _p: f"{f / 1000:g}k" if f >= 1000 else f"{f:g}"))
    ax.set_ylim(0.0, top)
    ax.set_xlim(0.0, float(edges[-1]))
    ax.set_ylabel("frequency (Hz, mel scale)")
    _time_axis(ax, float(edges[-1]))
    if df is not None and len(df):
        _spans(ax, df, 0.93, 1.0, alpha=False, zorder=3, label="music (shade = confidence)")
        ax.legend(handles=[Patch(facecolor=_span_colors([0.8], alpha=False)[0],
                                 label="music (strip shade = confidence)")],
                  loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False,
                  fontsize="small", borderaxespad=0.2)
    return ax


def plot_timeline(segments: Any, *, by: str = "source", recordings: Any = None,
                  threshold: float | None = None, ax=None, cmap: str = "viridis",
                  colorbar: bool = True, **kwargs):
    """One row per recording (or job), its music segments as bars coloured by confidence.

    Every segment is music (the service's meaning). A recording without music has no segment:
    pass ``recordings`` to keep its row, marked "no music found".

    Parameters
    ----------
    segments : pandas.DataFrame or list of dict
        Segments of many recordings (e.g. a batch), ``segments_frame`` columns.
    by : {"source", "job_id"}
        What makes a row; rows keep the order of first appearance, top to bottom. Sources
        that are paths are labelled relative to their common folder (``a/take1.wav``,
        ``b/take1.wav``; a single recording by its file name).
    recordings : list of str or pandas.DataFrame, optional
        Every row to show, in order (names of ``by``; or a frame with a ``by`` column such as
        ``batch.run(...).coverage``): those without segments are marked "no music found" (or
        "no result" where that frame's ``finding`` says the job failed).
    threshold : float, optional
        Draw only segments with confidence >= it (required for all-window output).
    ax : matplotlib.axes.Axes, optional
    cmap : str
        Colour map for confidence 0-1.
    colorbar : bool
        Add a confidence colour bar beside ``ax``.
    **kwargs
        Passed to each row's ``broken_barh``.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"source": ["a", "b"], "start_time": [0.0, 5.0],
    ...                    "end_time": [10.0, 20.0], "confidence": [0.9, 0.2]})
    >>> [t.get_text() for t in plot_timeline(df).get_yticklabels()]
    ['a', 'b']
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if by not in ("source", "job_id"):
        raise ValidationError(f"`by` must be 'source' or 'job_id', not {by!r}")
    from shakelab import segments as sg

    ax = _axes(ax)
    df = sg.select_music(_frame(segments), _check_threshold(threshold))
    cm = matplotlib.colormaps[cmap]
    keys = list(pd.unique(df[by]))
    notes: dict = {}
    if recordings is not None:
        given = recordings[by] if isinstance(recordings, pd.DataFrame) else recordings
        keys = list(dict.fromkeys([*(str(k) for k in given), *(k for k in keys if not pd.isna(k))]))
        if isinstance(recordings, pd.DataFrame) and "finding" in recordings.columns:  # batch coverage
            notes = {str(k): str(f) for k, f in zip(recordings[by], recordings["finding"], strict=True)
                     if f == "no result"}
    names = []
    for i, key in enumerate(keys):
        rows = df[df[by].isna()] if pd.isna(key) else df[(df[by] == key).fillna(False)]
        names.append("(unnamed)" if pd.isna(key) else str(key))
        if rows.empty:
            ax.annotate(notes.get(str(key), "no music found"), (0, i), xytext=(4, 0), textcoords="offset points",
                        va="center", ha="left", fontsize="small", color="#6b7280", style="italic")
            continue
        opts = {"edgecolor": "white", "linewidth": 0.3, **kwargs}
        ax.broken_barh(list(zip(rows["start_time"], rows["duration"], strict=True)), (i - 0.4, 0.8),
                       facecolors=cm(rows["confidence"].to_numpy()), **opts)
    ax.set_yticks(range(len(keys)), _short_names(names) if by == "source" else names)
    ax.set_ylim(max(len(keys), 1) - 0.5, -0.5)
    end = float(df["end_time"].max()) if len(df) else 1.0
    if isinstance(recordings, pd.DataFrame) and "duration" in recordings.columns and \
            recordings["duration"].notna().any():
        end = max(end, float(recordings["duration"].max()))
    ax.set_xlim(0.0, end or 1.0)
    _time_axis(ax, end)
    ax.set_ylabel("job" if by == "job_id" else "recording")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if colorbar:
        sm = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cm)
        ax.figure.colorbar(sm, ax=ax, label="confidence", pad=0.01, fraction=0.04)
    return ax


def _short_names(names: list[str]) -> list[str]:
    """Paths relative to their common folder (file names for one); other names unchanged."""
    import posixpath

    paths = [n.replace("\\", "/") for n in names]
    if not paths or not all("/" in p for p in paths):
        return names
    parents = [posixpath.dirname(p) for p in paths]
    try:
        common = posixpath.commonpath(parents) if len(set(p.startswith("/") for p in parents)) == 1 else ""
    except ValueError:
        common = ""
    short = [posixpath.relpath(p, common) if common else p for p in paths]
    return short if len(set(short)) == len(short) else names


def _duration_unit(total: float) -> tuple[str, float]:
    if total >= 2 * 3600:
        return "hours", 3600.0
    if total >= 120:
        return "minutes", 60.0
    return "seconds", 1.0


def plot_confidence(segments: Any, *, bins: int = 20, ax=None, **kwargs):
    """Histogram of confidence weighted by duration: how much audio got each confidence.

    Parameters
    ----------
    segments : pandas.DataFrame or list of dict
    bins : int
        Equal bins over [0, 1].
    ax : matplotlib.axes.Axes, optional
    **kwargs
        Passed to ``ax.hist``.

    Returns
    -------
    matplotlib.axes.Axes
        The y axis is in seconds, minutes or hours, whichever reads best.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> ax = plot_confidence([{"start_time": 0, "end_time": 10, "confidence": 0.95}], bins=10,
    ...                      ax=plt.figure().gca())
    >>> float(ax.patches[-1].get_height())
    10.0
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValidationError(f"`bins` must be a positive integer, not {bins!r}")
    ax = _axes(ax)
    df = _frame(segments)
    name, unit = _duration_unit(float(df["duration"].sum()))
    opts = {"color": _WAVE, "edgecolor": "white", "linewidth": 0.5, **kwargs}
    ax.hist(df["confidence"].to_numpy(), bins=np.linspace(0.0, 1.0, int(bins) + 1),
            weights=df["duration"].to_numpy() / unit, **opts)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("music confidence")
    ax.set_ylabel(f"duration ({name})")
    return ax


def _usage(usage: Any) -> pd.DataFrame:
    if isinstance(usage, pd.DataFrame):
        missing = {"month", "total_jobs", "total_minutes"} - set(usage.columns)
        if missing:
            raise ValidationError(f"`usage` frame lacks columns {sorted(missing)!r} "
                                  "(expected the usage_frame columns)")
        df = usage[["month", "total_jobs", "total_minutes"]].copy()
        df["month"] = pd.PeriodIndex(df["month"].astype(str), freq="M")
    else:
        from shakelab.frames import usage_frame

        df = usage_frame(usage)
    if df.empty:
        return df
    attrs = dict(df.attrs)  # what the counts count (usage_counts), whatever pandas keeps below
    df = df.groupby("month", sort=True).sum()
    full = pd.period_range(df.index.min(), df.index.max(), freq="M")
    df = df.reindex(full, fill_value=0)
    df.index.name = "month"
    df = df.reset_index()
    df.attrs = attrs
    return df


def _fmt(v: float, whole: bool) -> str:
    if whole:
        return f"{round(v):,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def plot_usage(usage: Any, *, ax=None, **kwargs):
    """Monthly jobs (or targets) as bars and minutes as a line on a second axis, values labelled.

    The bars say what they count (:func:`shakelab.frames.usage_counts`): ``jobs`` for the
    Jobs API's ``/usage``, ``targets`` for the Tasks API's statistics (``totalTargets``).

    Months without usage inside the range are drawn as zero (and not labelled: an empty
    month has no bar and its point sits on the axis). The jobs axis has whole-number ticks.
    Up to 12 months every month is labelled and every value written; beyond that ticks fall on every 3rd (6th, 12th)
    month, job counts are written upright in small type and minutes only at their
    maximum and last month.

    Parameters
    ----------
    usage : dict, list of dict or pandas.DataFrame
        The ``/usage`` payload (``{"clientId", "usage": [...]}``), its list, or a
        ``usage_frame``.
    ax : matplotlib.axes.Axes, optional
        Bars go here; minutes go on ``ax.twinx()``.
    **kwargs
        Passed to ``ax.bar``.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> ax = plot_usage({"usage": [{"month": "2026-03", "totalJobs": 412,
    ...                              "totalMinutes": 823.5}]})
    >>> sorted(t.get_text() for a in ax.figure.axes for t in a.texts)
    ['412', '824']
    >>> plot_usage([{"month": "2026-03", "totalTargets": 42, "totalMinutes": "123.5"}]).get_ylabel()
    'targets'
    """
    from matplotlib.ticker import FixedLocator, MaxNLocator

    from shakelab.frames import usage_counts

    ax = _axes(ax)
    df = _usage(usage)
    counts = usage_counts(df)
    n = len(df)
    ax.set_ylabel(counts)
    if n == 0:
        ax.set_xticks([])
        return ax
    x = np.arange(n)
    jobs = df["total_jobs"].to_numpy(dtype=float)
    minutes = df["total_minutes"].to_numpy(dtype=float)
    dense = n > 12
    opts = {"color": "#5b84b1", "width": 0.7, "label": counts, **kwargs}
    bars = ax.bar(x, jobs, **opts)
    # Bars fill the lower ~70 % of the height and the minutes line (same zero) runs above
    # them, so labels of the two never sit on each other when minutes follow jobs.
    top = (jobs.max() or 1) * 1.45
    ax.set_ylim(0, top)
    tw = ax.twinx()
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counted: no 0.2 job ticks
    for rect, v in zip(bars, jobs, strict=True):
        xc = rect.get_x() + rect.get_width() / 2
        if v == 0:
            continue
        if dense and v >= 0.16 * top:  # upright, inside the bar from its base
            ax.annotate(_fmt(v, True), (xc, 0), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", rotation=90, fontsize="x-small",
                        color="white")
        else:  # above the bar, drawn over the minutes line on a light box
            tw.annotate(_fmt(v, True), (xc, v), xycoords=ax.transData, xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom",
                        rotation=90 if dense else 0,
                        fontsize="x-small" if dense else "small", color="#2d4a6b",
                        bbox={"boxstyle": "round,pad=0.1", "facecolor": "white",
                              "edgecolor": "none", "alpha": 0.8})
    line = tw.plot(x, minutes, color=_LINE, marker="o", markersize=3 if dense else 5,
                   linewidth=1.8, label="minutes")[0]
    show = range(n) if not dense else sorted({int(np.argmax(minutes)), n - 1})
    for i in (i for i in show if minutes[i] > 0):
        last = dense and i == n - 1  # the last month sits by the right spine: label to its left
        tw.annotate(_fmt(minutes[i], False), (x[i], minutes[i]), xytext=(-4, 2) if last else (0, 6),
                    textcoords="offset points", ha="right" if last else "center", va="bottom",
                    fontsize="x-small" if dense else "small", color=_LINE)
    if not jobs.any() and not minutes.any():
        ax.text(0.5, 0.5, f"no {counts} in these months", transform=ax.transAxes, ha="center", va="center",
                color="#57606a", fontsize="small")
    tw.set_ylim(0, (minutes.max() or 1) * 1.15)
    tw.set_ylabel("minutes", color=_LINE)
    pad = max(0.0, (3 - n) / 2)
    ax.set_xlim(-0.6 - pad, n - 0.4 + pad)
    step = 1 if n <= 12 else 3 if n <= 36 else 6 if n <= 72 else 12
    months: list[Any] = list(df["month"])
    ticks = [i for i in range(n) if step == 1 or (months[i].month - 1) % step == 0]
    labels = [months[i].strftime("%b\n%Y") if (months[i].month == 1 or k == 0)
              else months[i].strftime("%b") for k, i in enumerate(ticks)]
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_locator(FixedLocator(x.tolist()))
    ax.legend(handles=[bars, line], loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2,
              frameon=False, fontsize="small", borderaxespad=0.2)
    ax.figure.sca(ax)
    return ax
