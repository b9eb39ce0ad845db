"""Interactive widgets for notebooks: submit jobs, explore detections, chart usage.

The widgets only wire: every piece of logic they call lives in the client
(:class:`shakelab.Client`), in :mod:`shakelab.segments`, :mod:`shakelab.plot`,
:mod:`shakelab.frames` or in the small plain functions of this module, so the
widgets can be driven from plain Python (set ``.value``, call ``.click()``) and
tested without a browser.

- :class:`JobSubmitter`: pick a file (upload or path), models, a format; submit;
  watch a live status table; download outputs. Jobs are tracked in a background
  thread, so the kernel never blocks while they run.
- :class:`DetectionExplorer`: music-detection segments (every one is music; an optional
  confidence filter and a merge gap), redrawn with :func:`shakelab.plot.plot_detection`,
  coverage numbers, export of Audacity labels.
- :class:`UsageDashboard`: monthly usage chart and table with a refresh button.

Each widget displays itself in a notebook (it has ``_repr_mimebundle_``) and keeps
its top-level container in ``.widget``.

Examples
--------
>>> from shakelab.widgets import JobSubmitter
>>> submitter = JobSubmitter()   # on shakelab.connect(): here the local server
>>> "local server" in submitter.widget.children[0].value, submitter.models.value
(True, ('music_detection',))
>>> submitter.close()
"""

from __future__ import annotations

import datetime as dt
import html
import io
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urljoin, urlparse

import ipywidgets as widgets

from shakelab import catalog
from shakelab.client import output_folder
from shakelab.errors import (
    JobFailedError, JobTimeoutError, NotFoundError, ShakelabError, ValidationError, WaitTimeoutError,
)
from shakelab.models import FAILED_STATUSES
from shakelab.transport import Poller, Schedule

__all__ = [
    "NATURAL", "PER_KIND", "DetectionExplorer", "JobSubmitter", "UsageDashboard", "explore_segments",
    "format_choices", "format_families", "is_local", "models_for", "status_table_html", "usage_table_html",
    "validate_submission",
]

NATURAL = "natural"    # the Format choice "each model's own format"
PER_KIND = "per kind"  # the Format choice "choose per kind of model" (one dropdown per family)

_LABEL = {"description_width": "120px"}  # room for "music_detection" beside its format
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0:0:0:0:0:0:0:1"}


# --------------------------------------------------------------------------------------
# plain functions (the logic the widgets call)
# --------------------------------------------------------------------------------------

def is_local(client: Any) -> bool:
    """Tell whether ``client`` talks to a shakelab local server (a loopback base URL).

    The embedded server started by :func:`shakelab.connect` and ``shakelab serve``
    both listen on loopback; the real service never does.

    Examples
    --------
    >>> class C: base_url = "http://127.0.0.1:8765"
    >>> is_local(C())
    True
    >>> C.base_url = "https://groovy.audioshake.ai"
    >>> is_local(C())
    False
    """
    base_url = getattr(client, "base_url", None)
    if not base_url:
        return False
    host = urlparse(str(base_url)).hostname or ""
    return host.lower() in _LOOPBACK


def models_for(client: Any) -> dict[str, tuple[str, ...]]:
    """Return the model catalogue a client can use: its ``catalogue``, else the local or the service's.

    Each client knows its API's (``client.catalogue``); for other objects, ``LOCAL_MODELS`` on a
    local server (a loopback ``base_url``) and ``SERVICE_MODELS`` elsewhere.

    Examples
    --------
    >>> class C: base_url = "http://127.0.0.1:8765"
    >>> sorted(models_for(C()))[:3]
    ['bass', 'dialogue', 'drums']
    """
    catalogue = getattr(client, "catalogue", None)
    if isinstance(catalogue, dict) and catalogue:
        return catalogue
    return catalog.LOCAL_MODELS if is_local(client) else catalog.SERVICE_MODELS


def validate_submission(*, path: str = "", uploads: Any = (), models: Iterable[str] = (),
                        format: str | dict | None = None, callback_url: str = "",
                        catalogue: dict[str, tuple[str, ...]] = catalog.SERVICE_MODELS) -> dict:
    """Check what a user entered in the :class:`JobSubmitter` before anything is sent.

    Parameters
    ----------
    path : str
        A file path typed by the user (``""`` when none); ``~`` is expanded.
    uploads : sequence of dict
        ``FileUpload.value`` (ipywidgets 8: dicts with ``name`` and ``content``).
    models : iterable of str
        The chosen models; at least one.
    format : str, dict or None
        One output format every chosen model accepts, a dict model -> format, or None (or
        :data:`NATURAL`) for each model's natural format.
    callback_url : str
        Optional ``http(s)://`` URL.
    catalogue : dict
        Model -> formats table to validate against.

    Returns
    -------
    dict
        ``{"source": Path | (name, bytes), "name": str, "path": str, "models": list[str],
        "format": what was asked, "formats": dict model -> format, "callback_url": str | None}``
        (``path``: the path as typed, or the uploaded file's name).

    Raises
    ------
    shakelab.errors.ValidationError
        Naming the field and echoing the bad value.

    Examples
    --------
    >>> validate_submission(path="", models=["vocals"], format="wav")
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: choose a file: upload one or type its `path` (both are empty)
    """
    uploads = list(uploads or ())
    path = (path or "").strip()
    if uploads and path:
        raise ValidationError(
            f"choose either an uploaded file or a `path`, not both (uploaded {_upload_name(uploads[0])!r}, "
            f"path {path!r}): press Clear to drop the upload, or empty the path")
    if not uploads and not path:
        raise ValidationError("choose a file: upload one or type its `path` (both are empty)")
    if uploads:
        if len(uploads) > 1:
            raise ValidationError(f"upload one file at a time, not {len(uploads)}")
        name = _upload_name(uploads[0])
        content = _upload_content(uploads[0])
        if not content:
            raise ValidationError(f"the uploaded file {name!r} is empty")
        source: Any = (name, content)
        typed = name
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise ValidationError(f"`path` {path!r} does not exist (relative to {os.getcwd()!r})")
        if p.is_dir():
            raise ValidationError(f"`path` {path!r} is a directory; give an audio file")
        if p.stat().st_size == 0:
            raise ValidationError(f"`path` {path!r} is an empty file")
        source, name, typed = p, p.name, path
    models = list(models or ())
    if not models:
        raise ValidationError(f"choose at least one `model` from {', '.join(map(repr, catalogue))}")
    for m in models:
        catalog.check_model(m, catalogue)
    if isinstance(format, dict):
        formats = {m: format.get(m) or catalog.default_format(m, catalogue) for m in models}
    elif format in (None, NATURAL):
        formats = {m: catalog.default_format(m, catalogue) for m in models}
    else:
        formats = {m: format for m in models}
    for m in models:
        catalog.check_format(m, formats[m], catalogue)
    url = (callback_url or "").strip()
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValidationError(f"`callback_url` must be an http(s):// URL, not {url!r}")
    return {"source": source, "name": name, "path": typed, "models": models, "format": format,
            "formats": formats, "callback_url": url or None}


def format_choices(models: Iterable[str], catalogue: dict[str, tuple[str, ...]] = catalog.SERVICE_MODELS
                   ) -> list[tuple[str, str]]:
    """Return the *Format* dropdown's ``(label, value)`` options for the chosen models.

    Models that share formats get those (their natural one first); models of different
    kinds (a stem and ``music_detection``) get "each model's own format" (:data:`NATURAL`,
    what ``client.submit`` does by default) and "choose per kind of model"
    (:data:`PER_KIND`, one dropdown per kind: :func:`format_families`).

    Examples
    --------
    >>> format_choices(["vocals", "drums"])[:2]
    [('wav', 'wav'), ('mp3', 'mp3')]
    >>> format_choices(["music_detection", "vocals"])
    [("each model's own format (json, wav)", 'natural'), ('choose per kind of model', 'per kind')]
    """
    chosen = [catalog.check_model(m, catalogue) for m in models]
    if not chosen:
        return []
    common = catalog.common_formats(chosen, catalogue)
    if common:
        return [(f, f) for f in common]
    natural = ", ".join(dict.fromkeys(catalog.default_format(m, catalogue) for m in chosen))
    return [(f"each model's own format ({natural})", NATURAL), ("choose per kind of model", PER_KIND)]


def format_families(models: Iterable[str], catalogue: dict[str, tuple[str, ...]] = catalog.SERVICE_MODELS
                    ) -> list[tuple[tuple[str, ...], list[str]]]:
    """Return the chosen models grouped by the formats they accept: ``[(formats, models), ...]``, in order.

    Examples
    --------
    >>> format_families(["vocals", "music_detection", "drums"])
    [(('wav', 'mp3', 'flac', 'aiff'), ['vocals', 'drums']), (('json', 'txt'), ['music_detection'])]
    """
    families: dict[tuple[str, ...], list[str]] = {}
    for m in models:
        families.setdefault(tuple(catalogue[catalog.check_model(m, catalogue)]), []).append(m)
    return list(families.items())


def _upload_name(item: Any) -> str:
    return str(item["name"] if isinstance(item, dict) else getattr(item, "name", "upload"))


def _upload_content(item: Any) -> bytes:
    content = item["content"] if isinstance(item, dict) else getattr(item, "content", b"")
    return bytes(content) if content is not None else b""


def job_status(job: Any) -> str:
    """Return a job's status as the service wrote it, lower-case ('queued', 'completed', ...)."""
    return str(job.status_text).lower()


def job_outputs(job: Any, base_url: str = "") -> list[tuple[str, str]]:
    """``[(name, absolute link), ...]`` of a job's output assets."""
    out = []
    for o in job.outputs:
        link = urljoin(base_url.rstrip("/") + "/", o.link) if (o.link and base_url) else (o.link or "")
        out.append((o.name or "", link))
    return out


def status_table_html(rows: list[dict], *, api: str = "jobs") -> str:
    """Render the JobSubmitter's rows as an HTML table.

    Each row is a dict with ``file``, ``model``, ``format``, ``status``, ``elapsed``
    (seconds), ``job_id``, ``outputs`` (list of (name, link)), ``message``. With
    ``api="tasks"`` a row is a task's target: the id column is headed ``target id`` and an
    empty table says "No tasks yet.".

    Examples
    --------
    >>> "completed" in status_table_html([{"file": "a.wav", "model": "vocals", "format": "wav",
    ...     "status": "completed", "elapsed": 1.5, "job_id": "j1", "outputs": [], "message": ""}])
    True
    >>> status_table_html([], api="tasks")
    '<div class="shakelab-status-empty"><i>No tasks yet.</i></div>'
    """
    if api not in ("jobs", "tasks"):
        raise ValidationError(f"`api` must be 'jobs' or 'tasks', not {api!r}")
    if not rows:
        return f'<div class="shakelab-status-empty"><i>No {api} yet.</i></div>'
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in
                   ("file", "model", "format", "status", "elapsed", "target id" if api == "tasks" else "job id",
                    "outputs", "message"))
    colours = {"completed": "#1a7f37", "reused": "#57606a", **dict.fromkeys(FAILED_STATUSES, "#cf222e")}
    body = []
    for r in rows:
        status = str(r.get("status", ""))
        colour = colours.get(status, "#9a6700")
        links = ", ".join(
            f"<a href='{html.escape(link, quote=True)}' target='_blank' rel='noopener' "
            f"style='color:#0969da;text-decoration:underline'>{html.escape(name)}</a>"
            if link else html.escape(name) for name, link in r.get("outputs") or [])
        elapsed = r.get("elapsed")
        cells = [
            _text(r.get("file", "")), _text(r.get("model", "")), _text(r.get("format", "")),
            f"<span class='shakelab-status shakelab-status-{re.sub(r'[^A-Za-z0-9_-]', '_', status)}' "
            f"style='color:{colour};font-weight:bold'>{html.escape(status)}</span>",
            "&mdash;" if elapsed is None else f"{elapsed:.1f} s",
            f"<code>{html.escape(str(r.get('job_id') or ''))}</code>", links,
            _text(r.get("message") or ""),
        ]
        styles = (["padding:2px 8px;white-space:nowrap"] * (len(cells) - 1)
                  + ["padding:2px 8px;min-width:10em;max-width:32em"])  # readable when the table is squeezed
        body.append("<tr>" + "".join(f"<td style='{st}'>{c}</td>" for st, c in zip(styles, cells, strict=True))
                    + "</tr>")
    return ("<table class='shakelab-status-table' style='border-collapse:collapse'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _text(value: Any) -> str:
    """Escape for HTML element text (quotes stay readable)."""
    return html.escape(str(value), quote=False)


def _error_html(message: str) -> str:
    return (f"<div class='shakelab-error' style='color:#cf222e;white-space:pre-wrap'>"
            f"{_text(message)}</div>")


def _info_html(message: str) -> str:
    return f"<div class='shakelab-info' style='white-space:pre-wrap'>{_text(message)}</div>"


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return buf.getvalue()


class _Displayable:
    """Show ``self.widget`` when the object is the value of a notebook cell."""

    widget: widgets.Widget

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Close the widgets (they disappear from the notebook)."""
        self.widget.close()


# --------------------------------------------------------------------------------------
# JobSubmitter
# --------------------------------------------------------------------------------------

class JobSubmitter(_Displayable):
    """Submit jobs from a notebook and watch them run, without blocking the kernel.

    Choose a file (the upload button, *Clear* to drop an upload, or a path on the kernel's
    machine), one or more models, an output format (the formats every chosen model accepts;
    for models of different kinds, "each model's own format" or one choice per kind) and
    optionally a callback URL, then press *Submit*. The file is uploaded once and
    one job per model is created; a background thread polls the jobs and keeps the
    status table (file, model, status, elapsed time, outputs, server message) up to
    date. Bad input is reported before anything is sent; a failed job shows the
    server's message.

    Parameters
    ----------
    client : shakelab.Client, optional
        Defaults to :func:`shakelab.connect` (the embedded local server without a token).
    catalogue : dict, optional
        Model -> formats table to offer. Defaults to ``catalog.LOCAL_MODELS`` when the
        client talks to a local server (loopback URL), else ``catalog.SERVICE_MODELS``.
    download_dir : str or Path
        Where the *Download outputs* button saves finished outputs.
    poll_interval : float
        First pause between status polls, in seconds; it grows to ``max_poll_interval``.
    max_poll_interval : float
        Longest pause between polls.
    timeout : float or None
        Stop tracking a job after this many seconds (it keeps running on the service).

    Attributes
    ----------
    upload, clear_button, upload_label, path, models, format, callback_url, submit_button,
    download_button, download_path, messages, table : ipywidgets
        The child widgets (set their ``.value`` / call ``.click()`` to drive it from code).
    header : ipywidgets.HTML
        Names the API and the server: "Submit jobs — Jobs API, local server <url>", or
        "Submit tasks — Tasks API, ..." on a :class:`shakelab.TasksClient`.
    family_formats : dict
        Formats -> ``Dropdown``: one per kind of model chosen, shown when *Format* is
        :data:`PER_KIND`.
    catalogue : dict
        The model -> formats table offered.

    Notes
    -----
    Each submission runs in its own daemon thread (upload, one job per model through
    ``client.start``, then polling with ``client.refresh``: the same with a
    :class:`shakelab.TasksClient`, where the models are the targets of one task). A job the
    ledger already had is shown as ``reused`` (nothing was sent). *Download outputs* saves
    each recording's outputs in its own folder (:func:`shakelab.client.output_folder`), so two
    ``take1.wav`` never overwrite each other. Every widget change made from those
    threads goes through one lock-protected method; ipykernel sends the resulting comm
    messages from any thread, so the browser sees updates while the kernel is idle or busy
    with other cells. ``on_complete`` callbacks run in the tracking thread.

    Examples
    --------
    >>> submitter = JobSubmitter(client)
    >>> submitter.submit_button.click()   # no file yet: refused, nothing sent
    >>> submitter.messages.value, submitter.rows   # doctest: +ELLIPSIS
    ("...choose a file...", [])
    >>> submitter.path.value = "song.wav"
    >>> submitter.models.value = ("music_detection", "vocals")
    >>> submitter.format.value, submitter.chosen_format()   # each model's own format
    ('natural', None)
    >>> submitter.submit_button.click()
    >>> submitter.wait(timeout=120)[["model", "format", "status"]]
                 model format     status
    0  music_detection   json  completed
    1           vocals    wav  completed
    >>> submitter.download_path.value = "out"
    >>> submitter.download_button.click()
    >>> _ = submitter.wait(timeout=60)
    >>> [Path(p).name for r in submitter.rows for p in r["downloaded"]]
    ['music_detection.json', 'vocals.wav']
    >>> submitter.close()
    """

    def __init__(self, client: Any = None, *, catalogue: dict[str, tuple[str, ...]] | None = None,
                 download_dir: str | os.PathLike = "shakelab-downloads", poll_interval: float = 0.5,
                 max_poll_interval: float = 5.0, timeout: float | None = 3600.0):
        for pname, value in (("poll_interval", poll_interval), ("max_poll_interval", max_poll_interval),
                             ("timeout", timeout)):
            if value is None and pname == "timeout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValidationError(f"`{pname}` must be a positive number of seconds, not {value!r}")
        if catalogue is not None and (not isinstance(catalogue, dict) or not catalogue):
            raise ValidationError(f"`catalogue` must be a non-empty dict of model -> formats, not {catalogue!r:.80}")
        if client is None:
            import shakelab

            client = shakelab.connect()
        self.client = client
        self.catalogue = dict(catalogue) if catalogue is not None else dict(models_for(client))
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.timeout = timeout

        self._lock = threading.RLock()
        self._rows: list[dict] = []
        self._threads: list[threading.Thread] = []
        self._callbacks: list[tuple[Callable[[Any], Any], bool]] = []
        self._stop = threading.Event()

        default_model = "music_detection" if "music_detection" in self.catalogue else next(iter(self.catalogue))
        self.upload = widgets.FileUpload(description="Upload", multiple=False,
                                         accept=".wav,.flac,.mp3,.aiff,.aif,.ogg,.m4a,.aac,.mp4,.mov")
        self.upload.add_class("shakelab-upload")
        self.clear_button = widgets.Button(description="Clear", icon="times", disabled=True,
                                           tooltip="Drop the uploaded file", layout=widgets.Layout(width="80px"))
        self.clear_button.add_class("shakelab-clear")
        self.upload_label = widgets.HTML()
        self.upload_label.add_class("shakelab-upload-label")
        self.path = widgets.Text(description="or path", placeholder="../data/demo.flac",
                                 layout=widgets.Layout(width="420px"))
        self.path.add_class("shakelab-path")
        self.models = widgets.SelectMultiple(options=list(self.catalogue), value=(default_model,),
                                             description="Models", rows=min(8, len(self.catalogue)))
        self.format = widgets.Dropdown(description="Format", style=_LABEL, layout=widgets.Layout(width="440px"))
        self.format.add_class("shakelab-format")
        self.family_formats: dict[tuple[str, ...], widgets.Dropdown] = {}
        self.family_box = widgets.VBox()
        self.family_box.add_class("shakelab-family-formats")
        self._folders: dict[str, Any] = {}  # output_folder's `taken` for this widget
        self.models.add_class("shakelab-models")
        self.callback_url = widgets.Text(description="Callback", placeholder="https://... (optional)",
                                         style=_LABEL, layout=widgets.Layout(width="440px"))
        self.submit_button = widgets.Button(description="Submit", button_style="primary", icon="play")
        self.submit_button.add_class("shakelab-submit")
        self.download_path = widgets.Text(value=str(download_dir), description="Save to")
        self.download_button = widgets.Button(description="Download outputs", icon="download",
                                              layout=widgets.Layout(width="auto"))
        self.messages = widgets.HTML()
        self.messages.add_class("shakelab-messages")
        self._api = "tasks" if getattr(client, "api", "jobs") == "tasks" else "jobs"
        self.table = widgets.HTML(status_table_html([], api=self._api))
        self.table.add_class("shakelab-table")

        self.models.observe(self._on_models_change, names="value")
        self.format.observe(self._on_format_change, names="value")
        self.upload.observe(self._on_upload_change, names="value")
        self.clear_button.on_click(self._on_clear)
        self.submit_button.on_click(self._on_submit)
        self.download_button.on_click(self._on_download)
        self._on_models_change()

        tasks = self._api == "tasks"
        self._unit = "target" if tasks else "job"  # what one row of the table is
        backend = "local server" if is_local(client) else "AudioShake service"
        self.header = widgets.HTML(f"<b>Submit {'tasks' if tasks else 'jobs'}</b> &mdash; "
                                   f"{'Tasks' if tasks else 'Jobs'} API, {html.escape(backend)} "
                                   f"<code>{html.escape(str(getattr(client, 'base_url', '')))}</code>")
        self.header.add_class("shakelab-header")
        self.widget = widgets.VBox([
            self.header,
            widgets.HBox([self.upload, self.clear_button, self.upload_label]),
            self.path,
            widgets.HBox([self.models, widgets.VBox([self.format, self.family_box, self.callback_url])]),
            widgets.HBox([self.submit_button]),
            self.messages,
            self.table,
            widgets.HBox([self.download_path, self.download_button]),
        ])
        self.widget.add_class("shakelab-job-submitter")

    # -- public API ---------------------------------------------------------------------

    @property
    def jobs(self) -> list:
        """The jobs created so far (latest state seen), in submission order."""
        with self._lock:
            return [r["job"] for r in self._rows if r.get("job") is not None]

    @property
    def rows(self) -> list[dict]:
        """A copy of the status table's rows (file, model, format, status, elapsed, job_id, outputs, message)."""
        with self._lock:
            return [self._row_view(r) for r in self._rows]

    def frame(self):
        """Return the jobs as a DataFrame (:func:`shakelab.frames.jobs_frame`)."""
        from shakelab.frames import jobs_frame

        return jobs_frame(self.jobs)

    def on_complete(self, callback: Callable[[Any], Any], *, failed: bool = False) -> Callable[[Any], Any]:
        """Call ``callback(job)`` when a job completes (and when one fails, with ``failed=True``).

        The callback runs in the tracking thread; an exception it raises is shown in the
        widget's message area. Returns ``callback``, so it can be used as a decorator.
        """
        if not callable(callback):
            raise ValidationError(f"`callback` must be callable, not {callback!r}")
        with self._lock:
            self._callbacks.append((callback, bool(failed)))
        return callback

    @property
    def running(self) -> bool:
        """True while any submission is still being uploaded or tracked."""
        with self._lock:
            return any(t.is_alive() for t in self._threads)

    def wait(self, timeout: float | None = None):
        """Block until every submitted job is done (or ``timeout`` seconds pass); return :meth:`frame`.

        Only for scripts and tests: in a notebook, the status table updates on its own.
        Raises :class:`~shakelab.errors.WaitTimeoutError` (a ``TimeoutError``) when jobs are still
        running at the deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return self.frame()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(f"{len(alive)} submission(s) still running after {timeout:g} s; "
                                   "they keep running, call wait() again")
            alive[0].join(timeout=None if remaining is None else min(remaining, 1.0))

    def stop(self) -> None:
        """Stop tracking (the jobs keep running on the server)."""
        self._stop.set()

    def close(self) -> None:
        """Stop tracking and close the widgets."""
        self.stop()
        super().close()

    # -- callbacks ----------------------------------------------------------------------

    def _on_models_change(self, change: Any = None) -> None:
        chosen = list(self.models.value)
        choices = format_choices(chosen, self.catalogue)
        current = self.format.value
        values = [v for _, v in choices]
        self.format.options = [v if label == v else (label, v) for label, v in choices]
        if choices:
            self.format.value = current if current in values else values[0]
        self.format.disabled = not choices
        kept = {}
        for formats, models in format_families(chosen, self.catalogue):
            dropdown = self.family_formats.get(formats) or widgets.Dropdown(
                options=list(formats), value=formats[0], style=_LABEL, layout=widgets.Layout(width="440px"))
            dropdown.description = ", ".join(models) if len(models) <= 2 else f"{models[0]}, ... ({len(models)} models)"
            kept[formats] = dropdown
        self.family_formats = kept
        self._on_format_change()

    def _on_format_change(self, change: Any = None) -> None:
        per_kind = self.format.value == PER_KIND
        self.family_box.children = tuple(self.family_formats.values()) if per_kind else ()

    def chosen_format(self) -> str | dict | None:
        """Return what *Format* says: one format, a dict model -> format (per kind), or None (each model's own)."""
        if self.format.value == PER_KIND:
            return {m: dropdown.value for formats, dropdown in self.family_formats.items()
                    for m in self.models.value if tuple(self.catalogue[m]) == formats}
        return None if self.format.value in (None, NATURAL) else self.format.value

    def _on_upload_change(self, change: Any = None) -> None:
        uploads = list(self.upload.value or ())
        self.clear_button.disabled = not uploads
        if uploads:
            size = len(_upload_content(uploads[0]))
            self.upload_label.value = (f"<span style='color:#57606a'>uploaded <b>{_text(_upload_name(uploads[0]))}"
                                       f"</b> ({size / 1e6:.1f} MB)</span>")
        else:
            self.upload_label.value = ""

    def _on_clear(self, _button: Any = None) -> None:
        """Drop the uploaded file (the path field and the status table stay)."""
        self.upload.value = ()
        self._set_messages(_info_html("Upload cleared."))

    def _on_submit(self, _button: Any = None) -> None:
        try:
            spec = validate_submission(path=self.path.value, uploads=self.upload.value,
                                       models=self.models.value, format=self.chosen_format(),
                                       callback_url=self.callback_url.value, catalogue=self.catalogue)
        except ShakelabError as exc:
            self._set_messages(_error_html(str(exc)))
            return
        asked = ", ".join(f"{m} ({fmt})" for m, fmt in spec["formats"].items())
        self._set_messages(_info_html(f"Submitting {spec['name']} to {asked}..."))
        start = time.monotonic()
        with self._lock:
            rows = []
            for model in spec["models"]:
                row = {"file": spec["name"], "source": spec["path"], "model": model,
                       "format": spec["formats"][model], "status": "uploading", "start": start, "end": None,
                       "job": None, "job_id": None, "outputs": [], "message": "", "downloaded": [],
                       "reused": False}
                rows.append(row)
                self._rows.append(row)
            thread = threading.Thread(target=self._run, args=(spec, rows), daemon=True,
                                      name=f"shakelab-submit-{spec['name']}")
            self._threads.append(thread)
        self._render()
        thread.start()

    def _on_download(self, _button: Any = None) -> None:
        dest = Path(self.download_path.value or ".").expanduser()
        with self._lock:
            todo = [r for r in self._rows if r["status"] == "completed" and not r["downloaded"]]
        if not todo:
            self._set_messages(_info_html("No finished outputs to download yet."))
            return
        thread = threading.Thread(target=self._download, args=(todo, dest), daemon=True,
                                  name="shakelab-download")
        with self._lock:
            self._threads.append(thread)
        self._set_messages(_info_html(f"Downloading {len(todo)} {self._unit}(s) to {dest} ..."))
        thread.start()

    # -- background work ----------------------------------------------------------------

    def _run(self, spec: dict, rows: list[dict]) -> None:
        """Upload once, create one job per model, then poll until every job is done.

        ``client.start`` (one task for all models on the Tasks API) in a background thread;
        every error ends up in the table.
        """
        try:
            jobs = self._submit(spec)
        except Exception as exc:  # shown, never raised in a thread
            for r in rows:
                self._finish(r, "failed", f"not submitted: {exc}")
            self._set_messages(_error_html(f"Submitting {spec['name']} failed: {exc}"))
            return
        for r, job in zip(rows, jobs, strict=True):
            if job.reused:
                when = ""
                if job.created_at is not None:
                    created = job.created_at.astimezone(dt.UTC)
                    today = created.date() == dt.datetime.now(dt.UTC).date()
                    when = created.strftime(" at %H:%M\u00a0UTC" if today else " on %Y-%m-%d")
                self._set_row(r, reused=True, message=f"ran{when}; nothing sent")
            self._update(r, job)
        reused = sum(j.reused for j in jobs)
        sent = len(jobs) - reused
        if not sent:
            text = (f"Nothing sent for {spec['name']}: the ledger already had {reused} finished {self._unit}(s) "
                    "for this file, model and format (use client.submit(..., force=True) to run again).")
        else:
            text = (f"Submitted {spec['name']}: {sent} {self._unit}(s)"
                    + (f", {reused} reused from the ledger" if reused else "")
                    + "; the table updates as they run (the kernel stays free).")
        self._set_messages(_info_html(text))
        self._poll(rows)

    def _submit(self, spec: dict) -> list:
        # client.start: one run per model on either client (Jobs: a job each; Tasks: the targets of one task)
        kwargs: dict[str, Any] = dict(format=spec["formats"], progress=False)
        if spec["callback_url"]:
            kwargs["callback_url"] = spec["callback_url"]
        source = spec["source"]
        if isinstance(source, tuple):  # (name, bytes) from the FileUpload widget
            name, content = source
            with tempfile.TemporaryDirectory(prefix="shakelab-upload-") as tmp:
                path = Path(tmp) / (Path(name).name or "upload")
                path.write_bytes(content)
                return self.client.start(path, spec["models"], **kwargs)
        return self.client.start(source, spec["models"], **kwargs)

    #: Seconds a job the service answers 404 for is still polled (the real service answers 404
    #: for a few seconds after creating a job).
    not_found_grace = 60.0

    def _poll(self, rows: list[dict]) -> None:
        """Track ``rows`` until done: one :class:`~shakelab.transport.Poller` per job.

        Each is stepped once a round from this (background) thread, so the kernel never blocks.
        """
        schedule = Schedule(first=self.poll_interval, growth=1.5, cap=self.max_poll_interval)
        active = [(r, self._poller(r)) for r in rows if r["end"] is None and r["job"] is not None]
        round_ = 0
        while active and not self._stop.wait(schedule.delay(round_)):
            round_ += 1
            for r, poller in list(active):
                if self._stop.is_set():
                    return
                try:
                    if poller.step() is None and r["end"] is None:
                        continue
                except JobFailedError:
                    pass  # shown by _update (on_update) with the service's message
                except NotFoundError:
                    self._finish(r, "failed", f"the service does not know this job (404 for "
                                              f"{self.not_found_grace:g} s)")
                except JobTimeoutError:
                    self._set_row(r, message=f"stopped tracking after {self.timeout:g} s; the job keeps "
                                             f"running: client.wait({r['job_id']!r})", end=time.monotonic())
                active.remove((r, poller))

    def _poller(self, row: dict) -> Poller:
        return Poller(lambda: self.client.refresh(row["job"]), lambda job: job.status, subject=row["job"],
                      timeout=self.timeout, not_found_grace=self.not_found_grace, cancel=self._stop,
                      transient=(Exception,),  # shown in the table; polling goes on until the timeout
                      on_update=lambda job: self._update(row, job),
                      on_error=lambda exc: self._set_row(row, message=f"still polling: {exc}"))

    def _update(self, row: dict, job: Any) -> None:
        with self._lock:
            row["job"] = job
            row["job_id"] = job.id
            row["status"] = job_status(job)
            row["outputs"] = job_outputs(job, getattr(self.client, "base_url", ""))
            row["message"] = (job.error or "") if job.failed else row["message"] if row["reused"] else ""
            done = job.is_done and row["end"] is None
            if done:
                row["end"] = time.monotonic()
                if row["reused"]:
                    done = False  # finished long ago: no on_complete for it now
        self._render()
        if done:
            self._fire(job, failed=job.failed)

    def _finish(self, row: dict, status: str, message: str) -> None:
        with self._lock:
            row["status"] = status
            row["message"] = message
            row["end"] = time.monotonic()
        self._render()

    def _set_row(self, row: dict, **changes: Any) -> None:
        with self._lock:
            row.update(changes)
        self._render()

    def _fire(self, job: Any, *, failed: bool) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback, wants_failed in callbacks:
            if failed and not wants_failed:
                continue
            try:
                callback(job)
            except Exception as exc:  # shown, never lost
                self._set_messages(_error_html(f"on_complete callback {getattr(callback, '__name__', callback)!r} "
                                               f"raised {type(exc).__name__}: {exc}"))

    def _download(self, rows: list[dict], dest: Path) -> None:
        saved: list[str] = []
        errors: list[str] = []
        dest.mkdir(parents=True, exist_ok=True)
        fetched: dict[str, list] = {}  # a job shown twice (reused again) is downloaded once
        for r in rows:
            key = r["job"].asset_id or r["job_id"]
            with self._lock:
                folder = output_folder(r["source"], taken=self._folders, key=key)
            if r["job_id"] in fetched:
                with self._lock:
                    r["downloaded"] = list(fetched[r["job_id"]])
                continue
            try:
                paths = self.client.download(r["job"], dest, folder=folder, progress=False)
            except Exception as exc:  # shown
                errors.append(f"{r['model']} ({r['job_id']}): {exc}")
                continue
            fetched[r["job_id"]] = [str(p) for p in paths]
            with self._lock:
                r["downloaded"] = [str(p) for p in paths]
            saved.extend(str(p) for p in paths)
        text = f"Saved {len(saved)} file(s) to {dest}:\n" + "\n".join(saved)
        if errors:
            self._set_messages(_error_html(text + "\nFailed:\n" + "\n".join(errors)))
        else:
            self._set_messages(_info_html(text))

    # -- rendering (every widget update goes through here, under the lock) --------------

    def _row_view(self, r: dict) -> dict:
        end = r["end"] if r["end"] is not None else time.monotonic()
        reused = r["reused"] and r["status"] == "completed"
        return {"file": r["file"], "model": r["model"], "format": r["format"],
                "status": "reused" if reused else r["status"], "elapsed": None if reused else end - r["start"],
                "job_id": r["job_id"], "outputs": list(r["outputs"]), "message": r["message"],
                "downloaded": list(r["downloaded"]), "reused": r["reused"]}

    def _render(self) -> None:
        with self._lock:
            self.table.value = status_table_html([self._row_view(r) for r in self._rows], api=self._api)

    def _set_messages(self, value: str) -> None:
        with self._lock:
            self.messages.value = value


# --------------------------------------------------------------------------------------
# DetectionExplorer
# --------------------------------------------------------------------------------------

def explore_segments(segments, *, threshold: float | None = None, gap: float = 0.0):
    """Return the music the explorer shows: every segment (or those >= ``threshold``), merged across ``gap`` s.

    Every returned segment is music, whatever its confidence (the service's meaning);
    ``threshold`` is an optional filter (required for all-window output). The computation
    behind :class:`DetectionExplorer`.

    Examples
    --------
    >>> explore_segments([{"start_time": 20, "end_time": 30, "confidence": 0.18},
    ...                   {"start_time": 40, "end_time": 60, "confidence": 0.32}])["duration"].tolist()
    [10.0, 20.0]
    """
    from shakelab import segments as seg

    kept = seg.select_music(seg.as_frame(segments), threshold).reset_index(drop=True)
    return seg.merge(kept, gap=gap) if len(kept) else kept


class DetectionExplorer(_Displayable):
    """Explore music-detection output: an optional confidence filter, merge gap, plot, coverage, export.

    By default every returned segment is music, whatever its confidence (what the service's
    answer means) and all are drawn. *Filter by confidence* turns the threshold slider on:
    segments under it stay visible (hatched in the plot), and the text says how many of the
    returned segments (or windows, for the local all-window output) pass and into how many
    music regions they merge. All-window output always needs a threshold; it starts at the
    local server's own cut (0.5). Moving a control re-draws :func:`shakelab.plot.plot_detection`
    and the coverage (:func:`shakelab.segments.coverage`). *Export* writes the music regions
    as an Audacity label track.

    Parameters
    ----------
    audio : str, Path or (numpy.ndarray, int)
        The recording the segments describe (drawn as the waveform).
    segments : pandas.DataFrame or list of dict
        A segments frame (:func:`shakelab.frames.segments_frame`), or what
        :func:`shakelab.frames.as_segments` reads (the raw ``music_detection`` payload).
    threshold : float, optional
        Initial confidence threshold (0-1); default none (every segment is music).
    gap : float
        Initial merge gap in seconds.
    export_path : str or Path
        Default file for the Audacity labels.

    Attributes
    ----------
    use_threshold : ipywidgets.Checkbox
    threshold, gap : ipywidgets.FloatSlider
    image : ipywidgets.Image
        The rendered plot (PNG).
    coverage : ipywidgets.HTML
    export_path, export_button, messages : ipywidgets
    figure, ax : matplotlib Figure and Axes of the last drawing.

    Examples
    --------
    >>> segments = [{"start_time": 0.0, "end_time": 1.0, "confidence": 0.9},
    ...             {"start_time": 1.5, "end_time": 3.0, "confidence": 0.4}]
    >>> explorer = DetectionExplorer("song.wav", segments)   # the 3-s recording they describe
    >>> len(explorer.segments()), bytes(explorer.image.value[1:4])   # every segment is music; a PNG plot
    (2, b'PNG')
    >>> explorer.use_threshold.value = True; explorer.threshold.value = 0.7
    >>> explorer.segments()[["start_time", "end_time"]].values.tolist()
    [[0.0, 1.0]]
    >>> explorer.coverage.value   # doctest: +ELLIPSIS
    "...1 of 2 returned segments at or above 0.70 (1 below, shown hatched)...1.0 s of music, 33.3% of..."
    >>> explorer.export_button.click()
    >>> open("music_labels.txt").read().split()   # one Audacity label: start, end, confidence
    ['0.0', '1.0', '0.9']
    """

    def __init__(self, audio: Any, segments, *, threshold: float | None = None, gap: float = 0.0,
                 export_path: str | os.PathLike = "music_labels.txt", figsize: tuple[float, float] = (10, 3)):
        from shakelab import segments as seg
        from shakelab.frames import is_all_windows

        if threshold is not None and (isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0):
            raise ValidationError(f"`threshold` must be between 0 and 1 or None, not {threshold!r}")
        if float(gap) < 0:
            raise ValidationError(f"`gap` must be >= 0 seconds, not {gap!r}")
        self.audio = audio
        self.all_segments = seg.as_frame(segments)
        self.all_windows = bool(is_all_windows(self.all_segments).any())
        self.figsize = figsize
        self.duration = self._duration(audio)
        self.figure: Any = None
        self.ax: Any = None
        if threshold is None and self.all_windows:
            from shakelab.server.decision import MUSIC_PROBABILITY

            threshold = MUSIC_PROBABILITY

        auto = widgets.Layout(width="auto")
        self.use_threshold = widgets.Checkbox(value=threshold is not None, description="Filter by confidence",
                                              disabled=self.all_windows, indent=False, layout=auto)
        self.threshold = widgets.FloatSlider(value=0.5 if threshold is None else float(threshold), min=0.0,
                                             max=1.0, step=0.05, description="Threshold",
                                             continuous_update=False, readout_format=".2f",
                                             disabled=threshold is None)
        self.gap = widgets.FloatSlider(value=float(gap), min=0.0, max=max(60.0, float(gap)), step=1.0,
                                       description="Merge gap (s)", continuous_update=False,
                                       style={"description_width": "initial"})
        self.image = widgets.Image(format="png")
        self.coverage = widgets.HTML()
        self.export_path = widgets.Text(value=str(export_path), description="Labels file",
                                        style={"description_width": "initial"})
        self.export_button = widgets.Button(description="Export Audacity labels", icon="save", layout=auto)
        self.messages = widgets.HTML()

        self.use_threshold.observe(self._on_use_threshold, names="value")
        self.threshold.observe(self._redraw, names="value")
        self.gap.observe(self._redraw, names="value")
        self.export_button.on_click(self._on_export)
        self.widget = widgets.VBox([
            widgets.HBox([self.use_threshold, self.threshold, self.gap]),
            self.image, self.coverage,
            widgets.HBox([self.export_path, self.export_button]), self.messages,
        ])
        self.widget.add_class("shakelab-detection-explorer")
        self._redraw()

    @staticmethod
    def _duration(audio: Any) -> float | None:
        if isinstance(audio, tuple) and len(audio) == 2:
            y, sr = audio
            return float(len(y) / sr) if sr else None
        try:
            from shakelab import audio as audio_mod

            return audio_mod.info(audio).duration
        except Exception:  # duration only refines coverage
            return None

    @property
    def active_threshold(self) -> float | None:
        """The threshold in use, or None when every segment counts as music."""
        return float(self.threshold.value) if self.use_threshold.value else None

    def segments(self):
        """Return the music regions currently shown (filtered when a threshold is on, then merged)."""
        return explore_segments(self.all_segments, threshold=self.active_threshold, gap=self.gap.value)

    def _on_use_threshold(self, change: Any = None) -> None:
        self.threshold.disabled = not self.use_threshold.value
        self._redraw()

    def _redraw(self, change: Any = None) -> None:
        from matplotlib.figure import Figure

        from shakelab import segments as seg
        from shakelab.plot import plot_detection

        shown = self.segments()
        fig = Figure(figsize=self.figsize, layout="constrained")
        ax = fig.add_subplot()
        plot_detection(self.audio, self.all_segments, threshold=self.active_threshold, gap=self.gap.value, ax=ax)
        self.figure, self.ax = fig, ax
        self.image.value = _figure_png(fig)
        thr = self.active_threshold
        kept = len(self.all_segments) if thr is None else int((self.all_segments["confidence"] >= thr).sum())
        seconds = share = None
        if self.duration:
            music = seg.coverage(shown.assign(source="shown"), duration={"shown": self.duration}, threshold=0.0)
            seconds, share = float(music["music_seconds"].iloc[0]), float(music["share"].iloc[0])
        self.coverage.value = _coverage_html(
            kept=kept, total=len(self.all_segments), regions=len(shown), threshold=thr,
            unit="window" if self.all_windows else "returned segment", seconds=seconds, share=share)

    def _on_export(self, _button: Any = None) -> None:
        from shakelab import segments as seg

        path = Path(self.export_path.value).expanduser()
        try:
            shown = self.segments()
            seg.write_labels(shown, path)
        except Exception as exc:  # shown
            self.messages.value = _error_html(f"could not write {str(path)!r}: {exc}")
            return
        self.messages.value = _info_html(f"Wrote {len(shown)} label(s) to {path}")


def _coverage_html(*, kept: int, total: int, regions: int, threshold: float | None, unit: str,
                   seconds: float | None, share: float | None) -> str:
    """One line that counts returned rows and merged regions separately, never mixing them.

    Examples
    --------
    >>> _coverage_html(kept=2, total=2, regions=2, threshold=None, unit="returned segment",
    ...                seconds=30.0, share=30 / 70)   # doctest: +ELLIPSIS
    "<div class='shakelab-coverage'>all 2 returned segments are music ... 30.0 s of music, 42.9% of the recording</div>"
    """
    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    if threshold is None:
        parts = [f"all {plural(total, unit)} {'is' if total == 1 else 'are'} music"]
    else:
        parts = [f"{kept} of {plural(total, unit)} at or above {threshold:.2f}"
                 f" ({total - kept} below, shown hatched)"]
    parts.append(f"<b>{plural(regions, 'music region')}</b> shown" if regions else "<b>no music found</b>")
    if seconds is not None:
        parts.append(f"{seconds:.1f} s of music" + (f", {100 * share:.1f}% of the recording"
                                                    if share is not None and share == share else ""))
    return "<div class='shakelab-coverage'>" + " &middot; ".join(parts) + "</div>"


# --------------------------------------------------------------------------------------
# UsageDashboard
# --------------------------------------------------------------------------------------

def usage_table_html(usage, *, max_height: str = "18em") -> str:
    """Render a usage frame as a compact HTML table.

    Light borders, numbers right-aligned, newest month first, scrolling inside a box when the
    history is long. The count column is headed ``jobs`` or ``targets``, what the frame counts
    (:func:`shakelab.frames.usage_counts`).

    Examples
    --------
    >>> from shakelab.frames import usage_frame
    >>> "2026-03" in usage_table_html(usage_frame({"usage": [{"month": "2026-03", "totalJobs": 4,
    ...                                                         "totalMinutes": 8.5}]}))
    True
    >>> ">targets</th>" in usage_table_html(usage_frame([{"month": "2026-03", "totalTargets": 42,
    ...                                                    "totalMinutes": "123.5"}]))
    True
    """
    from shakelab.frames import usage_counts

    cell = "padding:2px 10px;border-bottom:1px solid #eaeef2"
    head = ("<tr>" + "".join(
        f"<th style='{cell};position:sticky;top:0;background:#f6f8fa;border-bottom:1px solid #d0d7de;"
        f"text-align:{align}'>{name}</th>" for name, align in
        (("month", "left"), (usage_counts(usage), "right"), ("minutes", "right"))) + "</tr>")
    body = "".join(
        f"<tr><td style='{cell}'>{html.escape(str(m))}</td>"
        f"<td style='{cell};text-align:right'>{int(j):,}</td>"
        f"<td style='{cell};text-align:right'>{float(mi):,.1f}</td></tr>"
        for m, j, mi in zip(usage["month"][::-1], usage["total_jobs"][::-1], usage["total_minutes"][::-1], strict=True))
    if not len(usage):
        body = f"<tr><td colspan='3' style='{cell}'><i>no usage</i></td></tr>"
    return (f"<div class='shakelab-usage-scroll' style='max-height:{max_height};overflow-y:auto;"
            "display:inline-block;border:1px solid #d0d7de;border-radius:4px'>"
            "<table class='shakelab-usage-table' style='border-collapse:collapse;"
            "font-variant-numeric:tabular-nums;font-size:13px'>"
            f"<thead>{head}</thead><tbody>{body}</tbody></table></div>")


class UsageDashboard(_Displayable):
    """Monthly usage (jobs, or the Tasks API's targets, and minutes) as a chart and a table, with a refresh button.

    *Refresh* fetches the service's months (:meth:`Client.usage`, the last 3 on the
    service) and merges them into what is shown (:func:`shakelab.frames.merge_usage`): a
    saved 36-month history stays, its last months are updated, new months are added, and
    the message says so.

    Parameters
    ----------
    client : shakelab.Client, optional
        Where *Refresh* fetches usage from (:meth:`Client.usage`); defaults to
        :func:`shakelab.connect`, created on first use.
    usage : pandas.DataFrame or dict, optional
        Usage to show at first (a usage frame or the API's ``{"usage": [...]}`` payload),
        e.g. a saved history; without it the dashboard fetches from the client at once.

    Attributes
    ----------
    refresh_button : ipywidgets.Button
    image : ipywidgets.Image
        The chart (PNG of :func:`shakelab.plot.plot_usage`).
    table, messages : ipywidgets.HTML
        The table (:func:`usage_table_html`, newest month first) and status line.
    usage : pandas.DataFrame
        What is shown.

    Examples
    --------
    >>> history = {"usage": [{"month": "2025-01", "totalJobs": 4, "totalMinutes": 8.5},
    ...                      {"month": "2025-02", "totalJobs": 2, "totalMinutes": 3.0}]}   # a saved history
    >>> dashboard = UsageDashboard(client, usage=history)
    >>> dashboard.usage["month"].astype(str).tolist()
    ['2025-01', '2025-02']
    >>> dashboard.refresh()   # the local server's last 3 months, merged in
    >>> dashboard.messages.value   # doctest: +ELLIPSIS
    "...: 0 updated, 3 added (5 months). The local server counts only the runs it made itself: ...</div>"
    >>> len(dashboard.usage), "2025-01" in dashboard.table.value
    (5, True)
    """

    def __init__(self, client: Any = None, *, usage: Any = None, figsize: tuple[float, float] = (9, 3.5)):
        self._client = client
        self.figsize = figsize
        self.usage = None
        self.figure: Any = None
        self.ax: Any = None
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.image = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.messages = widgets.HTML()
        self.refresh_button.on_click(self.refresh)
        self.widget = widgets.VBox([self.refresh_button, self.messages, self.image, self.table])
        self.widget.add_class("shakelab-usage-dashboard")
        if usage is not None:
            self.show(usage)
        else:
            self.refresh()

    @property
    def client(self) -> Any:
        """The client (:func:`shakelab.connect` on first use when none was given)."""
        if self._client is None:
            import shakelab

            self._client = shakelab.connect()
        return self._client

    def refresh(self, _button: Any = None) -> None:
        """Fetch usage from the client and merge it into what is shown; errors are shown in the widget."""
        from shakelab.frames import merge_usage

        try:
            fresh = self.client.usage()
        except Exception as exc:  # shown
            self.messages.value = _error_html(f"could not fetch usage: {exc}")
            return
        at = time.strftime("%H:%M:%S")
        if self.usage is None or not len(self.usage):
            self.show(fresh)
            self.messages.value = _info_html(f"Fetched {len(fresh)} month(s) at {at}.")
            return
        before = set(self.usage["month"])
        updated = [str(m) for m in fresh["month"] if m in before]
        merged = merge_usage(self.usage, fresh)
        n_before = len(self.usage)
        self.show(merged)
        self.messages.value = _info_html(
            f"Fetched {len(fresh)} month(s) at {at} and merged them into the {n_before}-month history: "
            f"{len(updated)} updated{' (' + ', '.join(updated) + ')' if updated else ''}, "
            f"{len(fresh) - len(updated)} added ({len(merged)} months)."
            + (" The local server counts only the runs it made itself: its months replace the saved ones."
               if is_local(self.client) else ""))

    def show(self, usage: Any) -> None:
        """Show ``usage`` (a usage frame or an API usage payload), replacing what is shown."""
        from matplotlib.figure import Figure

        from shakelab.frames import usage_frame
        from shakelab.plot import plot_usage

        import pandas as pd

        frame = usage if isinstance(usage, pd.DataFrame) else usage_frame(usage)
        self.usage = frame
        fig = Figure(figsize=self.figsize)
        ax = fig.add_subplot()
        plot_usage(frame, ax=ax)
        self.figure, self.ax = fig, ax
        self.image.value = _figure_png(fig)
        self.table.value = usage_table_html(frame)
