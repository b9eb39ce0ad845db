"""Typed views of the AudioShake legacy Jobs API payloads.

:class:`Asset`, :class:`Job`, :class:`OutputAsset` and :class:`JobStatus`. Parsing is tolerant
of every variant the real service has been seen to send: statuses ``created``/``queued``/``processing``/``completed``/
``failed``/``error`` and unknown ones (treated as still pending), ``outputAssets`` or the older
``stemAssets``, ``outputAssets`` nested inside ``sourceAsset``, ``metadata`` or
``stemMetadata``, a payload wrapped in ``{"job": ...}`` or not. Every object keeps the payload
it was built from in ``.raw``, so no field the service sends is ever lost.

Examples
--------
>>> from shakelab.models import Job
>>> job = Job.from_payload({"job": {"id": "j1", "status": "completed",
...     "metadata": {"name": "vocals", "format": "wav"},
...     "stemAssets": [{"name": "vocals.wav", "link": "https://x/v.wav"}]}})
>>> job.is_done, job.failed, [o.name for o in job.outputs]
(True, False, ['vocals.wav'])
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from enum import StrEnum
from collections.abc import Mapping
from typing import Any

from shakelab.errors import MalformedResponseError

__all__ = ["FAILED_STATUSES", "TERMINAL_STATUSES", "Asset", "Job", "JobStatus", "OutputAsset", "parse_timestamp"]


class JobStatus(StrEnum):
    """The lifecycle state of a job.

    ``JobStatus("whatever")`` never fails: a value the service has not documented maps to
    :attr:`UNKNOWN`, which counts as still pending (the raw value stays in ``Job.raw``).
    Being a ``str`` enum, ``JobStatus.COMPLETED == "completed"`` holds. It is the one
    classification of statuses in shakelab: the Jobs API's job status and the Tasks API's
    per-target status (``processing`` -> ``completed`` | ``error``, ``failed`` seen too) both
    map onto it, and :data:`FAILED_STATUSES` is the one set of terminal failures.

    Examples
    --------
    >>> JobStatus("Completed"), JobStatus("error").failed, JobStatus("paused").pending
    (<JobStatus.COMPLETED: 'completed'>, True, True)
    """

    CREATED = "created"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    ERROR = "error"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> JobStatus:
        if isinstance(value, str):
            low = value.strip().lower()
            for member in cls:
                if member.value == low:
                    return member
        return cls.UNKNOWN

    @property
    def is_done(self) -> bool:
        """True for a terminal state (completed, failed or error)."""
        return self.value in TERMINAL_STATUSES

    @property
    def failed(self) -> bool:
        """True for a terminal failure (:data:`FAILED_STATUSES`: ``failed`` and ``error``)."""
        return self.value in FAILED_STATUSES

    @property
    def pending(self) -> bool:
        """True while the job may still change (every non-terminal state, unknown ones included)."""
        return not self.is_done


#: The terminal failures (plain strings, so a raw status or a ledger column can be tested too).
FAILED_STATUSES: frozenset[str] = frozenset({JobStatus.FAILED.value, JobStatus.ERROR.value})
#: The statuses after which the service never changes a job (or a target) again.
TERMINAL_STATUSES: frozenset[str] = FAILED_STATUSES | {JobStatus.COMPLETED.value}


def parse_timestamp(value: Any) -> _dt.datetime | None:
    """Return a tz-aware UTC datetime from an ISO-8601 string or epoch seconds/milliseconds, else None.

    Examples
    --------
    >>> parse_timestamp("2026-03-01T12:00:00Z").isoformat()
    '2026-03-01T12:00:00+00:00'
    """
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, _dt.datetime):
        ts = value
    elif isinstance(value, (int, float)):
        seconds = float(value) / 1000.0 if abs(value) > 1e11 else float(value)
        try:
            return _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            ts = _dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.UTC)
    return ts.astimezone(_dt.UTC)


def _mapping(payload: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise MalformedResponseError(f"{what} payload must be a JSON object, not {type(payload).__name__} "
                                     f"{payload!r:.80}")
    return payload


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Asset:
    """An uploaded file, as ``POST /upload`` and ``POST /upload/link`` answer it.

    Attributes
    ----------
    id : str
        The asset id to pass as ``assetId`` (``client.create_job(asset, ...)`` accepts the Asset).
    name, file_type, format, link : str or None
        ``name``, ``fileType``, ``format`` and ``link`` of the payload.
    raw : dict
        The payload as received.

    Examples
    --------
    >>> Asset.from_payload({"name": "song", "id": "a1", "fileType": "audio/mpeg", "format": "mp3"}).id
    'a1'
    """

    id: str
    name: str | None = None
    file_type: str | None = None
    format: str | None = None
    link: str | None = field(default=None, repr=False)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_payload(cls, payload: Any) -> Asset:
        """Build from an API payload (``{...}`` or ``{"asset": {...}}``).

        A missing ``id`` raises ``MalformedResponseError`` (a ``ValueError``) naming it.
        """
        data = _mapping(payload, "asset")
        if "id" not in data and isinstance(data.get("asset"), Mapping):
            data = data["asset"]
        asset_id = data.get("id") or data.get("assetId")
        if not asset_id:
            raise MalformedResponseError(f"asset payload has no `id` field: {dict(data)!r:.200}")
        return cls(id=str(asset_id), name=_str_or_none(data.get("name")),
                   file_type=_str_or_none(data.get("fileType") or data.get("file_type")),
                   format=_str_or_none(data.get("format")), link=_str_or_none(data.get("link")),
                   raw=dict(data))


@dataclass(frozen=True)
class OutputAsset:
    """One result file of a completed job (an entry of ``outputAssets`` / ``stemAssets``).

    Examples
    --------
    >>> OutputAsset.from_payload({"name": "vocals.wav", "format": "wav", "link": "https://x"}).name
    'vocals.wav'
    """

    name: str | None
    link: str | None = field(default=None, repr=False)
    format: str | None = None
    file_type: str | None = None
    id: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_payload(cls, payload: Any) -> OutputAsset:
        """Build from one output entry; a bare string is taken as the link."""
        if isinstance(payload, str):
            return cls(name=payload.rsplit("/", 1)[-1].split("?", 1)[0] or None, link=payload,
                       raw={"link": payload})
        data = _mapping(payload, "output asset")
        link = data.get("link") or data.get("url")
        return cls(name=_str_or_none(data.get("name")), link=_str_or_none(link),
                   format=_str_or_none(data.get("format")),
                   file_type=_str_or_none(data.get("fileType") or data.get("file_type")),
                   id=_str_or_none(data.get("id")), raw=dict(data))


def _outputs_of(data: Mapping[str, Any]) -> list[OutputAsset]:
    candidates = [data.get("outputAssets"), data.get("stemAssets")]
    source = data.get("sourceAsset")
    if isinstance(source, Mapping):
        candidates += [source.get("outputAssets"), source.get("stemAssets")]
    for value in candidates:
        if isinstance(value, list) and value:
            return [OutputAsset.from_payload(v) for v in value if isinstance(v, (Mapping, str))]
        if isinstance(value, Mapping) and value:  # a single output as an object
            return [OutputAsset.from_payload(value)]
    return []


class _Run:
    """The status properties a job and a target share (both carry ``status`` and the ``raw`` payload)."""

    status: JobStatus
    raw: dict

    @property
    def is_done(self) -> bool:
        """True once the run reached a terminal state (completed, failed or error)."""
        return self.status.is_done

    @property
    def failed(self) -> bool:
        """True when the run ended ``failed`` or ``error``."""
        return self.status.failed

    @property
    def completed(self) -> bool:
        """True when the run ended ``completed``."""
        return self.status is JobStatus.COMPLETED

    @property
    def status_text(self) -> str:
        """The status exactly as the service wrote it (``status`` maps unknown values to UNKNOWN)."""
        raw = self.raw.get("status")
        return raw if isinstance(raw, str) and raw else self.status.value


@dataclass(frozen=True)
class Job(_Run):
    """One job: one model run against one asset.

    Attributes
    ----------
    id : str
        The job id (``client.wait(id)``, ``client.get_job(id)``).
    status : JobStatus
        Parsed status; unknown values become ``JobStatus.UNKNOWN`` (pending).
    model, format : str or None
        ``metadata.name`` and ``metadata.format`` (or ``stemMetadata``).
    metadata : dict
        The whole metadata object (extra keys such as ``variant`` included).
    asset_id : str or None
        ``assetId`` (or ``sourceAsset.id``).
    source_name : str or None
        ``sourceAsset.name`` (the client fills it in from the uploaded Asset when the service omits it).
    outputs : list of OutputAsset
        ``outputAssets``, ``stemAssets`` or ``sourceAsset.outputAssets``, whichever is present.
    created_at, started_at, updated_at : datetime or None
        tz-aware UTC.
    status_info : dict
        ``statusInfo`` ({code, message}) when present.
    raw : dict
        The job object as received.
    reused : bool
        True when ``Client.submit`` returned this job from the ledger instead of creating it
        (nothing was sent, nothing billed).

    Examples
    --------
    >>> job = Job.from_payload({"id": "j2", "status": "failed", "statusInfo": {"message": "bad audio"}})
    >>> job.failed, job.error
    (True, 'bad audio')
    """

    id: str
    status: JobStatus = JobStatus.UNKNOWN
    model: str | None = None
    format: str | None = None
    metadata: dict = field(default_factory=dict, repr=False, compare=False)
    asset_id: str | None = None
    source_name: str | None = None
    outputs: list[OutputAsset] = field(default_factory=list, repr=False, compare=False)
    created_at: _dt.datetime | None = field(default=None, repr=False)
    started_at: _dt.datetime | None = field(default=None, repr=False)
    updated_at: _dt.datetime | None = field(default=None, repr=False)
    status_info: dict = field(default_factory=dict, repr=False, compare=False)
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    reused: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def from_payload(cls, payload: Any) -> Job:
        """Build from ``GET /job/{id}`` or ``POST /job`` JSON (wrapped in ``{"job": ...}`` or not).

        Raises ``MalformedResponseError`` (a ``ValueError``) naming the field when the payload has no job ``id``.
        """
        data = _mapping(payload, "job")
        if isinstance(data.get("job"), Mapping):
            data = data["job"]
        job_id = data.get("id") or data.get("jobId")
        if not job_id:
            raise MalformedResponseError(f"job payload has no `id` field: {dict(data)!r:.200}")
        meta = data.get("metadata")
        if not isinstance(meta, Mapping):
            meta = data.get("stemMetadata")
        meta = dict(meta) if isinstance(meta, Mapping) else {}
        source: Mapping[str, Any] = data["sourceAsset"] if isinstance(data.get("sourceAsset"), Mapping) else {}
        info: Mapping[str, Any] = data["statusInfo"] if isinstance(data.get("statusInfo"), Mapping) else {}
        asset_id = data.get("assetId") or source.get("id")
        return cls(
            id=str(job_id),
            status=JobStatus(data.get("status")),  # type: ignore[arg-type]  # never fails: _missing_
            model=_str_or_none(meta.get("name") or data.get("model")),
            format=_str_or_none(meta.get("format")),
            metadata=meta,
            asset_id=_str_or_none(asset_id),
            source_name=_str_or_none(source.get("name")),
            outputs=_outputs_of(data),
            created_at=parse_timestamp(data.get("createdAt")),
            started_at=parse_timestamp(data.get("startedAt")),
            updated_at=parse_timestamp(data.get("updatedAt") or data.get("completedAt")),
            status_info=dict(info),
            raw=dict(data),
        )

    @property
    def error(self) -> str | None:
        """The service's message for a failed job (``statusInfo.message``, ``error``, ...), else None."""
        if not self.failed:
            return None
        for value in (self.status_info.get("message"), self.raw.get("error"), self.raw.get("message"),
                      self.status_info.get("code")):
            if isinstance(value, Mapping):
                value = value.get("message") or value.get("code")
            if value:
                return str(value)
        return f"the service reported status {self.status_text!r} without a message"

    @property
    def duration_s(self) -> float | None:
        """Processing time in seconds (``updatedAt - startedAt``) of a finished job, else None."""
        if not self.is_done or self.started_at is None or self.updated_at is None:
            return None
        return (self.updated_at - self.started_at).total_seconds()

    def with_source_name(self, name: str | None) -> Job:
        """Return a copy with ``source_name`` set when this one has none."""
        if self.source_name or not name:
            return self
        return replace(self, source_name=name)


# =========================================================================== the Tasks API
# Typed views of the Tasks API's objects (tasks-api.md): a Task holds 1-20 Targets, each with its own
# status and TaskOutputs. The Tasks API's asset (``POST /assets`` -> ``{id, format, name, link}``) is an
# :class:`Asset` (``file_type`` stays None). Target statuses use :class:`JobStatus`, the one status
# classification of shakelab: ``completed`` success, ``error`` and ``failed`` terminal failures,
# anything else pending. A task has no status of its own: it is done when ``completedAt`` is set.
# Below the views: the checks of a ``POST /tasks`` body (run before any request) and shakelab's tag
# in a task's ``metadata`` (how a task whose answer was lost is found again).

#: Most targets one task may have (older pages of the reference said 10).
MAX_TARGETS = 20
#: Longest ``metadata`` string (unconfirmed in the reference; the tag shakelab adds counts too).
MAX_METADATA_CHARS = 4096
#: The key of shakelab's own part of a task's ``metadata`` (see :func:`tag_metadata`).
TAG_KEY = "shakelab"
#: Keys a target of ``POST /tasks`` may carry (the reference page's target request).
TARGET_KEYS = ("model", "formats", "residual", "variant", "language", "transcriptUrl", "transcriptAssetId")
#: Target keys only shakelab's local server knows (``music_detection``): refused for the service.
LOCAL_TARGET_KEYS = ("window", "all_windows")

__all__ += ["MAX_TARGETS", "Target", "Task", "TaskOutput", "check_targets", "check_task_request",
            "parse_metadata", "tag_metadata"]


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # `totalMinutes`-style numbers in strings too
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


@dataclass(frozen=True)
class TaskOutput(OutputAsset):
    """One result file of a Tasks API target: an entry ``{name, format, link, type}`` of ``output``.

    ``name`` is the model key without extension (``bass``, ``vocals_high_quality``): match outputs
    on :attr:`format`, never on a suffix of the name. ``type`` (a MIME type) is ``file_type``.

    Examples
    --------
    >>> out = TaskOutput.from_payload({"name": "bass", "format": "wav", "type": "audio/wav",
    ...                                "link": "https://cdn.example/b.wav?Expires=1774411200&Signature=x"})
    >>> out.name, out.format, out.type, out.expires_at.isoformat()
    ('bass', 'wav', 'audio/wav', '2026-03-25T04:00:00+00:00')
    """

    @classmethod
    def from_payload(cls, payload: Any) -> TaskOutput:
        """Build from one ``output`` entry (a bare string is taken as the link)."""
        if isinstance(payload, str):
            return cls(name=None, link=payload, raw={"link": payload})
        data = _mapping(payload, "task output")
        return cls(name=_str_or_none(data.get("name")), link=_str_or_none(data.get("link") or data.get("url")),
                   format=_str_or_none(data.get("format")), file_type=_str_or_none(data.get("type")),
                   id=_str_or_none(data.get("id")), raw=dict(data))

    @property
    def type(self) -> str | None:
        """The MIME type the service gave (``type``)."""
        return self.file_type

    @property
    def expires_at(self) -> _dt.datetime | None:
        """When the signed link stops working (its ``Expires=`` unix seconds), else None."""
        from urllib.parse import parse_qsl, urlsplit

        for key, value in parse_qsl(urlsplit(self.link or "").query):
            if key.lower() == "expires":
                return parse_timestamp(_float_or_none(value))
        return None


@dataclass(frozen=True)
class Target(_Run):
    """One target of a task: one model run on the task's source, with its own status.

    Attributes
    ----------
    id : str or None
        The target id (the documented payloads always carry one).
    model : str or None
    status : JobStatus
        ``processing`` -> ``completed`` | ``error`` (``failed`` counts as ``error``); unknown
        values are pending.
    formats : tuple of str
        The formats requested.
    outputs : list of TaskOutput
        ``output``: empty until completed, then one entry per requested format.
    cost : float or None
        Credits (may appear while still processing).
    duration : float or None
        Seconds of source audio.
    residual : bool or None
    variant, language : str or None
    error_info : dict
        ``error`` ``{code, message}`` of a failed target, else empty.
    task_id : str or None
        ``taskId`` when the service sends it (the :class:`Task` fills it in otherwise).
    created_at, updated_at : datetime or None
    raw : dict
        The target object as received.
    asset_id : str or None
        The task's ``assetId`` (filled in by the :class:`Task`).
    reused : bool
        True when ``TasksClient.start`` found its task in the ledger instead of creating one.

    Examples
    --------
    >>> t = Target.from_payload({"id": "t1", "model": "drums", "status": "error", "formats": ["wav"],
    ...                          "output": [], "error": {"code": 422, "message": "no audio stream"}})
    >>> t.is_done, t.failed, t.error
    (True, True, 'no audio stream')
    """

    id: str | None
    model: str | None = None
    status: JobStatus = JobStatus.UNKNOWN
    formats: tuple[str, ...] = ()
    outputs: list[TaskOutput] = field(default_factory=list, repr=False, compare=False)
    cost: float | None = None
    duration: float | None = None
    residual: bool | None = field(default=None, repr=False)
    variant: str | None = None
    language: str | None = field(default=None, repr=False)
    error_info: dict = field(default_factory=dict, repr=False, compare=False)
    task_id: str | None = field(default=None, repr=False)
    created_at: _dt.datetime | None = field(default=None, repr=False)
    updated_at: _dt.datetime | None = field(default=None, repr=False)
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    #: the task's ``assetId`` (the :class:`Task` fills it in), as a legacy job has one
    asset_id: str | None = field(default=None, repr=False)
    #: True when ``TasksClient.start`` returned it from a task it did not create (nothing sent)
    reused: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def from_payload(cls, payload: Any, *, task_id: str | None = None, asset_id: str | None = None) -> Target:
        """Build from one entry of a task's ``targets`` (tolerant: missing fields become None/empty)."""
        data = _mapping(payload, "target")
        formats = data.get("formats")
        if isinstance(formats, str):
            formats = [formats]
        output = data.get("output")
        if isinstance(output, (Mapping, str)):
            output = [output]
        error = data.get("error")
        if isinstance(error, str):
            error = {"message": error}
        residual = data.get("residual")
        return cls(
            id=_str_or_none(data.get("id")),
            model=_str_or_none(data.get("model")),
            status=JobStatus(str(data.get("status"))),
            formats=tuple(str(f) for f in formats) if isinstance(formats, list) else (),
            outputs=[TaskOutput.from_payload(o) for o in output if isinstance(o, (Mapping, str))]
            if isinstance(output, list) else [],
            cost=_float_or_none(data.get("cost")),
            duration=_float_or_none(data.get("duration")),
            residual=residual if isinstance(residual, bool) else None,
            variant=_str_or_none(data.get("variant")),
            language=_str_or_none(data.get("language")),
            error_info=dict(error) if isinstance(error, Mapping) else {},
            task_id=_str_or_none(data.get("taskId")) or task_id,
            created_at=parse_timestamp(data.get("createdAt")),
            updated_at=parse_timestamp(data.get("updatedAt")),
            raw=dict(data),
            asset_id=asset_id,
        )

    @property
    def error(self) -> str | None:
        """The service's ``error.message`` of a failed target (or a stand-in naming the status), else None."""
        if not self.failed:
            return None
        message = self.error_info.get("message") or self.error_info.get("code")
        if message:
            return str(message)
        return f"the service reported status {self.status_text!r} without a message"

    @property
    def duration_s(self) -> float | None:
        """Processing time in seconds of a finished target (``updatedAt - createdAt``), else None.

        The Tasks API sends no start time, so queueing is included (``Job.duration_s`` starts at
        ``startedAt``).
        """
        if not self.is_done or self.created_at is None or self.updated_at is None:
            return None
        return (self.updated_at - self.created_at).total_seconds()

    @property
    def name(self) -> str:
        """The output key: the model, with ``_<variant>`` for a variant (``vocals_high_quality``)."""
        return f"{self.model}_{self.variant}" if self.variant else str(self.model)


@dataclass(frozen=True)
class Task:
    """One Tasks API task: a source (an asset or a URL) and its targets.

    There is no task-level status: :attr:`is_done` is ``completedAt`` being set. Absent fields
    are None.

    Attributes
    ----------
    id : str
    targets : list of Target
    created_at, completed_at : datetime or None
    client_id : str or None
    asset_id, url : str or None
        The source (exactly one in a request).
    metadata : str or None
        ``metadata`` exactly as echoed (an opaque string; see :attr:`user_metadata`, :attr:`attempt`).
    raw : dict
        The task object as received.
    reused : bool
        True when the client returned this task instead of creating it (nothing was sent, nothing
        billed): from the ledger, or found again after a lost answer.

    Examples
    --------
    >>> task = Task.from_payload({"id": "cmn5", "createdAt": "2026-03-25T03:16:17.442Z", "targets": [
    ...     {"id": "t1", "model": "bass", "cost": 4, "status": "completed", "duration": 200.53,
    ...      "output": [{"name": "bass", "format": "wav", "link": "https://cdn/x"}]},
    ...     {"id": "t2", "model": "drums", "status": "processing", "output": []}]})
    >>> task.is_done, [t.status.value for t in task.targets], task.cost, task.duration
    (False, ['completed', 'processing'], 4.0, 200.53)
    """

    id: str
    targets: list[Target] = field(default_factory=list, repr=False, compare=False)
    created_at: _dt.datetime | None = field(default=None, repr=False)
    completed_at: _dt.datetime | None = field(default=None, repr=False)
    client_id: str | None = field(default=None, repr=False)
    asset_id: str | None = None
    url: str | None = field(default=None, repr=False)
    metadata: str | None = field(default=None, repr=False)
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    reused: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def from_payload(cls, payload: Any) -> Task:
        """Build from ``POST /tasks`` / ``GET /tasks/{id}`` JSON (or ``{"task": ...}``).

        Raises :class:`~shakelab.errors.MalformedResponseError` (a ``ValueError``) naming the field when
        the payload has no task ``id``.
        """
        data = _mapping(payload, "task")
        if "id" not in data and isinstance(data.get("task"), Mapping):
            data = data["task"]
        task_id = data.get("id") or data.get("taskId")
        if not task_id:
            raise MalformedResponseError(f"task payload has no `id` field: {dict(data)!r:.200}")
        targets = data.get("targets")
        metadata = data.get("metadata")
        if metadata is not None and not isinstance(metadata, str):  # the reference says a string
            import json

            metadata = json.dumps(metadata, sort_keys=True, default=str)
        return cls(
            id=str(task_id),
            targets=[Target.from_payload(t, task_id=str(task_id), asset_id=_str_or_none(data.get("assetId")))
                     for t in targets if isinstance(t, Mapping)]
            if isinstance(targets, list) else [],
            created_at=parse_timestamp(data.get("createdAt")),
            completed_at=parse_timestamp(data.get("completedAt")),
            client_id=_str_or_none(data.get("clientId")),
            asset_id=_str_or_none(data.get("assetId")),
            url=_str_or_none(data.get("url")),
            metadata=metadata,
            raw=dict(data),
        )

    @property
    def is_done(self) -> bool:
        """True once ``completedAt`` is set (every target ended, in success or failure)."""
        return self.completed_at is not None

    @property
    def failed_targets(self) -> list[Target]:
        """The targets that ended ``error`` or ``failed``."""
        return [t for t in self.targets if t.failed]

    @property
    def pending_targets(self) -> list[Target]:
        """The targets still processing (or in a status not documented)."""
        return [t for t in self.targets if not t.is_done]

    @property
    def completed(self) -> bool:
        """True when the task is done and every target completed."""
        return self.is_done and bool(self.targets) and all(t.completed for t in self.targets)

    @property
    def cost(self) -> float | None:
        """Credits: the task's ``cost``, else the sum of its targets' known costs, else None."""
        cost = _float_or_none(self.raw.get("cost"))
        if cost is not None:
            return cost
        known = [t.cost for t in self.targets if t.cost is not None]
        return float(sum(known)) if known else None

    @property
    def duration(self) -> float | None:
        """Seconds of source audio, as the targets report it (None until one does)."""
        known = [t.duration for t in self.targets if t.duration is not None]
        return max(known) if known else None

    @property
    def source(self) -> str | None:
        """The asset id, else the URL, the task was made from."""
        return self.asset_id or self.url

    @property
    def attempt(self) -> str | None:
        """The id shakelab tagged this task with when it created it (see :func:`tag_metadata`), else None."""
        return parse_metadata(self.metadata)[0]

    @property
    def user_metadata(self) -> Any:
        """The caller's own metadata, without shakelab's tag (the whole string for untagged tasks)."""
        return parse_metadata(self.metadata)[1]

    def target(self, model: str, variant: str | None = None) -> Target:
        """Return the target running ``model`` (and ``variant``); ``KeyError`` names the models present."""
        for t in self.targets:
            if t.model == model and (variant is None or t.variant == variant):
                return t
        raise KeyError(f"task {self.id} has no target {model!r}"
                       f"{f' (variant {variant!r})' if variant else ''}; it has {[t.name for t in self.targets]!r}")


# --------------------------------------------------------------------------- metadata tag
def tag_metadata(attempt: str, user: Any = None) -> str:
    """Build the ``metadata`` string of a task shakelab creates: its attempt id beside the caller's own.

    ``{"shakelab": {"attempt": "<id>"}, "user": <the caller's metadata>}`` as compact JSON, so
    that the task can be found again in ``GET /tasks`` after its answer was lost, and the
    caller's metadata (any JSON value, a string as it is) stays readable.

    Examples
    --------
    >>> tag_metadata("a1b2", "run 3")
    '{"shakelab":{"attempt":"a1b2"},"user":"run 3"}'
    >>> parse_metadata(tag_metadata("a1b2", {"take": 1}))
    ('a1b2', {'take': 1})
    """
    import json

    body: dict[str, Any] = {TAG_KEY: {"attempt": attempt}}
    if user is not None:
        body["user"] = user
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def parse_metadata(metadata: str | None) -> tuple[str | None, Any]:
    """Split a task's ``metadata`` into ``(attempt id, user metadata)``; an untagged string is all user metadata.

    Examples
    --------
    >>> parse_metadata('{"shakelab":{"attempt":"a1"}}'), parse_metadata("my notes"), parse_metadata(None)
    (('a1', None), (None, 'my notes'), (None, None))
    """
    if not isinstance(metadata, str) or not metadata.startswith("{"):
        return None, metadata
    import json

    try:
        body = json.loads(metadata)
    except ValueError:
        return None, metadata
    tag = body.get(TAG_KEY) if isinstance(body, dict) else None
    if not isinstance(tag, dict) or not isinstance(tag.get("attempt"), str):
        return None, metadata
    return tag["attempt"], body.get("user")


# --------------------------------------------------------------------------- request checks
def _fail(message: str) -> None:
    from shakelab.errors import ValidationError

    raise ValidationError(message)


def check_targets(targets: Any, *, local: bool = True) -> list[dict]:
    """Validate the ``targets`` of a ``POST /tasks`` and return them as plain dicts.

    Each target is a mapping with ``model`` (:data:`shakelab.catalog.TASKS_MODELS`), ``formats``
    (a non-empty list of formats that model writes; default: its natural one), and optionally
    ``residual`` (bool), ``variant`` (only where documented: vocals/instrumental
    ``high_quality``, multi_voice ``two_speaker``/``n_speaker``), ``language``,
    ``transcriptUrl``/``transcriptAssetId`` (alignment). 1 to :data:`MAX_TARGETS` targets, no
    two with the same model and variant. ``local=True`` also accepts the local server's
    ``window``/``all_windows`` on a ``music_detection`` target.

    Raises
    ------
    shakelab.ValidationError
        Naming the target (``targets[1].formats``) and echoing the bad value.

    Examples
    --------
    >>> check_targets([{"model": "vocals", "formats": ["wav", "mp3"], "variant": "high_quality"},
    ...                {"model": "music_detection"}])  # doctest: +NORMALIZE_WHITESPACE
    [{'model': 'vocals', 'formats': ['wav', 'mp3'], 'variant': 'high_quality'},
     {'model': 'music_detection', 'formats': ['json']}]
    >>> check_targets([{"model": "drums", "formats": ["json"]}])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: `targets[0].formats` must be one of 'wav', ... for model 'drums', not 'json'
    """
    from shakelab import catalog
    from shakelab.errors import ValidationError

    if isinstance(targets, (str, bytes, Mapping)) or not isinstance(targets, (list, tuple)):
        _fail("`targets` must be a list of targets such as [{'model': 'vocals', 'formats': ['wav']}], "
              f"not {type(targets).__name__} {targets!r:.100}")
    if not 1 <= len(targets) <= MAX_TARGETS:
        _fail(f"`targets` must hold 1 to {MAX_TARGETS} targets, not {len(targets)}")
    checked: list[dict] = []
    seen: dict[tuple[str, Any], int] = {}
    for i, target in enumerate(targets):
        where = f"`targets[{i}]"
        if not isinstance(target, Mapping):
            _fail(f"{where}` must be a dict such as {{'model': 'vocals', 'formats': ['wav']}}, "
                  f"not {type(target).__name__} {target!r:.80}")
        allowed = TARGET_KEYS + (LOCAL_TARGET_KEYS if local else ())
        unknown = [k for k in target if k not in allowed]
        if unknown:
            hint = (f" ({', '.join(LOCAL_TARGET_KEYS)} are extensions of shakelab's local server: the AudioShake "
                    "service does not know them)") if set(unknown) & set(LOCAL_TARGET_KEYS) else ""
            _fail(f"{where}` has unknown key(s) {unknown!r}; a target may have {', '.join(allowed)}{hint}")
        try:
            model = catalog.check_model(target.get("model"), catalog.TASKS_MODELS)
        except ValidationError as exc:
            _fail(f"{where}.model{str(exc)[len('`model'):]}")
        formats = target.get("formats")
        if formats is None:
            formats = [catalog.default_format(model, catalog.TASKS_MODELS)]
        if isinstance(formats, str) or not isinstance(formats, (list, tuple)) or not formats:
            _fail(f"{where}.formats` must be a non-empty list of formats such as "
                  f"[{catalog.default_format(model, catalog.TASKS_MODELS)!r}], not {formats!r:.80}")
        for fmt in formats:
            try:
                catalog.check_format(model, fmt, catalog.TASKS_MODELS)
            except ValidationError as exc:
                _fail(f"{where}.formats{str(exc)[len('`format'):]}")
        if len(set(formats)) != len(formats):
            _fail(f"{where}.formats` lists a format twice: {list(formats)!r}")
        out: dict[str, Any] = {"model": model, "formats": list(formats)}
        variant = target.get("variant")
        if variant is not None:
            variants = catalog.TASKS_VARIANTS.get(model, ())
            if not variants:
                _fail(f"{where}.variant` is documented only for models {sorted(catalog.TASKS_VARIANTS)!r}, "
                      f"not for {model!r} (got {variant!r})")
            if variant not in variants:
                _fail(f"{where}.variant` must be one of {', '.join(map(repr, variants))} for model {model!r}, "
                      f"not {variant!r}")
            out["variant"] = variant
        if target.get("residual") is not None:
            if not isinstance(target["residual"], bool):
                _fail(f"{where}.residual` must be True or False, not {target['residual']!r}")
            out["residual"] = target["residual"]
        for key in ("language", "transcriptUrl", "transcriptAssetId"):
            value = target.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                _fail(f"{where}.{key}` must be a non-empty string, not {value!r:.80}")
            if key == "transcriptUrl" and not value.startswith(("https://", "http://")):
                _fail(f"{where}.transcriptUrl` must be an http(s) URL, not {value!r:.80}")
            out[key] = value
        for key in LOCAL_TARGET_KEYS:
            if key in target:
                if model != "music_detection":
                    _fail(f"{where}.{key}` is an option of 'music_detection' targets only, not of {model!r}")
                value = target[key]
                if key == "window" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                        or not 0 < value <= 600):
                    _fail(f"{where}.window` must be a number of seconds in (0, 600], not {value!r}")
                if key == "all_windows" and not isinstance(value, bool):
                    _fail(f"{where}.all_windows` must be True or False, not {value!r}")
                out[key] = value
        same = (model, out.get("variant"))
        if same in seen:
            _fail(f"{where}` repeats target {seen[same]} ({model!r}"
                  f"{', variant ' + repr(same[1]) if same[1] else ''}); list every format in one target")
        seen[same] = i
        checked.append(out)
    return checked


def check_task_request(*, asset_id: str | None = None, url: str | None = None, targets: Any,
                       metadata: str | None = None, local: bool = True) -> dict:
    """Validate a whole ``POST /tasks`` request and return its JSON body.

    Exactly one of ``asset_id`` / ``url`` (an ``https://`` URL; ``http://`` too when ``local``),
    targets as :func:`check_targets` says, ``metadata`` a string of at most
    :data:`MAX_METADATA_CHARS` characters.

    Examples
    --------
    >>> check_task_request(asset_id="a1", targets=[{"model": "bass", "formats": ["wav"]}])
    {'assetId': 'a1', 'targets': [{'model': 'bass', 'formats': ['wav']}]}
    >>> check_task_request(asset_id="a1", url="https://x/a.wav", targets=[{"model": "bass"}])
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: give exactly one of `asset` and `url`, not both
    """
    if asset_id is not None and url is not None:
        _fail("give exactly one of `asset` and `url`, not both")
    if asset_id is None and url is None:
        _fail("give exactly one of `asset` (an uploaded Asset or its id) and `url` (a public https:// URL)")
    body: dict[str, Any] = {}
    if asset_id is not None:
        if not isinstance(asset_id, str) or not asset_id.strip():
            _fail(f"`asset` must be an Asset or a non-empty asset id, not {asset_id!r:.80}")
        body["assetId"] = asset_id.strip()
    else:
        from urllib.parse import urlsplit

        schemes = ("https", "http") if local else ("https",)
        if not isinstance(url, str) or urlsplit(url).scheme not in schemes or not urlsplit(url).netloc:
            _fail(f"`url` must be a public {'http(s)' if local else 'https'}:// URL, not {url!r:.100}")
        body["url"] = url
    body["targets"] = check_targets(targets, local=local)
    if metadata is not None:
        if not isinstance(metadata, str):
            _fail(f"`metadata` must be a string (the Tasks API echoes it back as it is), not "
                  f"{type(metadata).__name__} {metadata!r:.80}")
        if len(metadata) > MAX_METADATA_CHARS:
            _fail(f"`metadata` must be at most {MAX_METADATA_CHARS} characters (shakelab's tag included), "
                  f"not {len(metadata)}")
        body["metadata"] = metadata
    return body
