"""Typed views of the AudioShake legacy Jobs API payloads: :class:`Asset`, :class:`Job`,
:class:`OutputAsset` and :class:`JobStatus`.

Parsing is tolerant of every variant the real service has been seen to send: statuses
``created``/``queued``/``processing``/``completed``/
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
from typing import Any, Mapping

__all__ = ["Asset", "Job", "JobStatus", "OutputAsset", "parse_timestamp"]


class JobStatus(StrEnum):
    """The lifecycle state of a job.

    ``JobStatus("whatever")`` never fails: a value the service has not documented maps to
    :attr:`UNKNOWN`, which counts as still pending (the raw value stays in ``Job.raw``).
    Being a ``str`` enum, ``JobStatus.COMPLETED == "completed"`` holds.

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
    def _missing_(cls, value: object) -> "JobStatus":
        if isinstance(value, str):
            low = value.strip().lower()
            for member in cls:
                if member.value == low:
                    return member
        return cls.UNKNOWN

    @property
    def is_done(self) -> bool:
        """True for a terminal state (completed, failed or error)."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ERROR)

    @property
    def failed(self) -> bool:
        """True for ``failed`` and ``error``."""
        return self in (JobStatus.FAILED, JobStatus.ERROR)

    @property
    def pending(self) -> bool:
        """True while the job may still change (every non-terminal state, unknown ones included)."""
        return not self.is_done


def parse_timestamp(value: Any) -> _dt.datetime | None:
    """A tz-aware UTC datetime from an ISO-8601 string or epoch seconds/milliseconds, else None.

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
            return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
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
        ts = ts.replace(tzinfo=_dt.timezone.utc)
    return ts.astimezone(_dt.timezone.utc)


def _mapping(payload: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise ValueError(f"{what} payload must be a JSON object, not {type(payload).__name__} {payload!r:.80}")
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
    def from_payload(cls, payload: Any) -> "Asset":
        """Build from an API payload (``{...}`` or ``{"asset": {...}}``); ``ValueError`` names a missing ``id``."""
        data = _mapping(payload, "asset")
        if "id" not in data and isinstance(data.get("asset"), Mapping):
            data = data["asset"]
        asset_id = data.get("id") or data.get("assetId")
        if not asset_id:
            raise ValueError(f"asset payload has no `id` field: {dict(data)!r:.200}")
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
    def from_payload(cls, payload: Any) -> "OutputAsset":
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


@dataclass(frozen=True)
class Job:
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
    def from_payload(cls, payload: Any) -> "Job":
        """Build from ``GET /job/{id}`` or ``POST /job`` JSON (wrapped in ``{"job": ...}`` or not).

        Raises ``ValueError`` naming the field when the payload has no job ``id``.
        """
        data = _mapping(payload, "job")
        if isinstance(data.get("job"), Mapping):
            data = data["job"]
        job_id = data.get("id") or data.get("jobId")
        if not job_id:
            raise ValueError(f"job payload has no `id` field: {dict(data)!r:.200}")
        meta = data.get("metadata")
        if not isinstance(meta, Mapping):
            meta = data.get("stemMetadata")
        meta = dict(meta) if isinstance(meta, Mapping) else {}
        source = data.get("sourceAsset") if isinstance(data.get("sourceAsset"), Mapping) else {}
        info = data.get("statusInfo") if isinstance(data.get("statusInfo"), Mapping) else {}
        asset_id = data.get("assetId") or source.get("id")
        return cls(
            id=str(job_id),
            status=JobStatus(data.get("status")),
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
    def is_done(self) -> bool:
        """True once the job reached a terminal state (completed, failed or error)."""
        return self.status.is_done

    @property
    def failed(self) -> bool:
        """True when the job ended ``failed`` or ``error``."""
        return self.status.failed

    @property
    def completed(self) -> bool:
        """True when the job ended ``completed``."""
        return self.status is JobStatus.COMPLETED

    @property
    def status_text(self) -> str:
        """The status exactly as the service wrote it (``status`` maps unknown values to UNKNOWN)."""
        raw = self.raw.get("status")
        return raw if isinstance(raw, str) and raw else self.status.value

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

    def with_source_name(self, name: str | None) -> "Job":
        """A copy with ``source_name`` set when this one has none."""
        if self.source_name or not name:
            return self
        return replace(self, source_name=name)
