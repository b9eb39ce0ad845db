"""From the legacy Jobs API to the Tasks API: the requests that would replace a jobs frame.

The Jobs API runs one job per model and format; the Tasks API one task per recording with up to
20 targets, each with an array of formats. :func:`tasks_request` turns the jobs a notebook ran
(a jobs frame, or the jobs themselves) into the ``POST /tasks`` bodies that do the same work:
one task per asset, one target per model (and variant, residual, language), the formats of
its jobs gathered into ``formats``. The README's "Moving to the Tasks API" section maps every
field.

Examples
--------
>>> from shakelab.migrate import tasks_request
>>> (body,) = tasks_request([
...     {"id": "j1", "assetId": "a1", "metadata": {"name": "vocals", "format": "wav"}},
...     {"id": "j2", "assetId": "a1", "metadata": {"name": "vocals", "format": "mp3"}},
...     {"id": "j3", "assetId": "a1", "metadata": {"name": "music_detection", "format": "json"}}])
>>> body["assetId"], body["targets"]
('a1', [{'model': 'vocals', 'formats': ['wav', 'mp3']}, {'model': 'music_detection', 'formats': ['json']}])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shakelab import catalog
from shakelab.errors import ValidationError
from shakelab.models import MAX_TARGETS, check_task_request

__all__ = ["MAX_TARGETS", "tasks_request"]

# the target options a legacy job carries in its metadata, under the Tasks API's names
_OPTIONS = ("variant", "residual", "language")


def _blank(value: Any) -> bool:
    return value is None or value is False or value == "" or (isinstance(value, float) and value != value) \
        or str(value) in ("<NA>", "nan", "NaT")


def _rows(jobs: Any) -> list[dict]:
    """``{asset_id, model, format, variant, residual, language}`` per job, from a frame or jobs."""
    import pandas as pd

    from shakelab.models import Job

    if isinstance(jobs, pd.DataFrame):
        missing = [c for c in ("asset_id", "model", "format") if c not in jobs.columns]
        if missing:
            raise ValidationError(f"`jobs` frame has no {', '.join(map(repr, missing))} column: "
                                  f"columns {list(jobs.columns)!r} (pass client.jobs_frame())")
        return [{k: row.get(k) for k in ("asset_id", "model", "format", *_OPTIONS)}
                for row in jobs.astype(object).to_dict("records")]
    if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Iterable):
        raise ValidationError(f"`jobs` must be a jobs frame or a list of Jobs or job payloads, not "
                              f"{type(jobs).__name__}")
    rows = []
    for i, job in enumerate(jobs):
        if isinstance(job, Mapping):
            try:
                job = Job.from_payload(job)
            except ValueError as exc:
                raise ValidationError(f"`jobs` item {i}: {getattr(exc, 'message', exc)}") from None
        if not isinstance(job, Job):
            raise ValidationError(f"`jobs` item {i} must be a Job or a job payload, not {type(job).__name__}")
        rows.append({"asset_id": job.asset_id, "model": job.model, "format": job.format,
                     **{k: job.metadata.get(k) for k in _OPTIONS}})
    return rows


def tasks_request(jobs: Any, *, assets: Mapping[str, str] | None = None) -> list[dict]:
    """Build the ``POST /tasks`` bodies that would replace the given legacy jobs.

    Jobs are grouped per asset (one task each, in first-seen order); the jobs of one model with
    the same ``variant``, ``residual`` and ``language`` become one target whose ``formats``
    lists their formats (first-seen order, no repeats). A task holds each model (and variant)
    once and at most :data:`~shakelab.models.MAX_TARGETS` targets, so one model in two
    languages, or more than 20 targets, give several tasks on one asset. A job repeated (a
    rerun) asks for nothing more.

    Parameters
    ----------
    jobs : pandas.DataFrame or iterable of Job or dict
        A jobs frame (``client.jobs_frame()``: columns ``asset_id``, ``model``, ``format``, and
        ``variant``/``residual``/``language`` when present; a Tasks frame's ``"wav,mp3"``
        formats are split), or :class:`shakelab.models.Job` objects / job payloads (their
        ``metadata.variant``, ``residual`` and ``language`` are kept).
    assets : mapping, optional
        Legacy asset id -> what the Tasks API should read instead: the id ``POST /assets``
        gave for the same file (``assetId``), or a public ``https://`` URL (``url``). The two
        APIs do not share assets on AudioShake's service; shakelab's local server serves both
        from one store, so there the legacy ids work as they are (the default).

    Returns
    -------
    list of dict
        JSON-ready bodies ``{"assetId" | "url", "targets": [{"model", "formats", ...}]}``.

    Raises
    ------
    ValidationError
        A job without asset, model or format (naming its row), a model the Tasks API does not
        run (the Jobs API's ``music``), a target the Tasks API would refuse (an undocumented
        ``variant``, a format the model does not write), or input that is not jobs.

    Examples
    --------
    >>> tasks_request([{"id": "j1", "assetId": "old", "metadata": {"name": "vocals", "format": "wav",
    ...                                                             "variant": "high_quality"}}],
    ...               assets={"old": "https://example.com/song.wav"})   # doctest: +NORMALIZE_WHITESPACE
    [{'url': 'https://example.com/song.wav',
      'targets': [{'model': 'vocals', 'formats': ['wav'], 'variant': 'high_quality'}]}]
    """
    if assets is not None and not isinstance(assets, Mapping):
        raise ValidationError(f"`assets` must be a mapping legacy asset id -> Tasks asset id or URL, not {assets!r}")
    groups: dict[str, dict[tuple, dict]] = {}
    for i, row in enumerate(_rows(jobs)):
        for field in ("asset_id", "model", "format"):
            if _blank(row.get(field)):
                raise ValidationError(f"job {i} has no `{field}` ({row!r:.160}): a Tasks request needs its "
                                      "asset, model and format")
        if str(row["model"]) not in catalog.TASKS_MODELS:
            raise ValidationError(f"job {i}: model {row['model']!r} has no Tasks API equivalent; the Tasks API "
                                  f"runs {', '.join(map(repr, catalog.TASKS_MODELS))}")
        options = {k: row[k] for k in _OPTIONS if not _blank(row.get(k))}
        if "residual" in options:
            options["residual"] = bool(options["residual"])
        targets = groups.setdefault(str(row["asset_id"]), {})
        same = (str(row["model"]), *sorted(options.items()))
        target = targets.setdefault(same, {"model": str(row["model"]), "formats": [], **options})
        for fmt in str(row["format"]).split(","):
            if fmt.strip() and fmt.strip() not in target["formats"]:
                target["formats"].append(fmt.strip())
    bodies = []
    for asset_id, targets in groups.items():
        source = (assets or {}).get(asset_id, asset_id)
        if not isinstance(source, str) or not source:
            raise ValidationError(f"`assets` maps {asset_id!r} to {source!r}: give a Tasks asset id or an https:// URL")
        where = {"url": source} if source.startswith(("https://", "http://")) else {"assetId": source}
        tasks: list[list[dict]] = []   # a task holds each (model, variant) once, at most MAX_TARGETS
        for target in targets.values():
            model_variant = (target["model"], target.get("variant"))
            home = next((t for t in tasks if len(t) < MAX_TARGETS
                         and all((o["model"], o.get("variant")) != model_variant for o in t)), None)
            if home is None:
                tasks.append(home := [])
            home.append(target)
        for chosen in tasks:  # checked as TasksClient checks what it sends
            bodies.append(check_task_request(asset_id=where.get("assetId"), url=where.get("url"), targets=chosen))
    return bodies
