"""shakelab.models: tolerant parsing of every payload variant the service sends."""

from __future__ import annotations

import datetime as dt

import pytest

from shakelab.models import Asset, Job, JobStatus, OutputAsset, parse_timestamp

COMPLETED = {
    "id": "job-1", "clientId": "c", "requestId": "r1", "licenseId": "l", "callbackUrl": None,
    "status": "completed", "statusInfo": {"code": "ok", "message": "done"},
    "createdAt": "2026-03-01T10:00:00Z", "startedAt": "2026-03-01T10:00:02.500Z",
    "updatedAt": "2026-03-01T10:00:12.500Z",
    "metadata": {"format": "wav", "name": "instrumental", "variant": "high"},
    "assetId": "asset-1",
    "sourceAsset": {"name": "song.mp3", "id": "asset-1", "fileType": "audio/mpeg", "format": "mp3", "link": "https://l"},
    "outputAssets": [{"name": "instrumental.wav", "id": "o1", "fileType": "audio/wav", "format": "wav",
                      "link": "https://x/instrumental.wav?sig=1"}],
    "somethingNew": [1, 2],
}


@pytest.mark.parametrize("value,expected", [
    ("created", JobStatus.CREATED), ("queued", JobStatus.QUEUED), ("processing", JobStatus.PROCESSING),
    ("completed", JobStatus.COMPLETED), ("failed", JobStatus.FAILED), ("error", JobStatus.ERROR),
    ("COMPLETED", JobStatus.COMPLETED), (" Queued ", JobStatus.QUEUED), ("paused", JobStatus.UNKNOWN),
    (None, JobStatus.UNKNOWN), (3, JobStatus.UNKNOWN),
])
def test_status_parsing(value, expected):
    assert JobStatus(value) is expected


def test_status_predicates():
    assert [s.value for s in JobStatus if s.is_done] == ["completed", "failed", "error"]
    assert [s.value for s in JobStatus if s.failed] == ["failed", "error"]
    assert JobStatus.UNKNOWN.pending and JobStatus.CREATED.pending and not JobStatus.COMPLETED.pending
    assert JobStatus.COMPLETED == "completed" and f"{JobStatus.QUEUED}" == "queued"


def test_completed_job_keeps_everything():
    job = Job.from_payload({"job": COMPLETED})
    assert (job.id, job.status, job.model, job.format, job.asset_id, job.source_name) == \
        ("job-1", JobStatus.COMPLETED, "instrumental", "wav", "asset-1", "song.mp3")
    assert job.is_done and job.completed and not job.failed and job.error is None
    assert job.metadata["variant"] == "high"
    assert job.raw["somethingNew"] == [1, 2] and job.raw["requestId"] == "r1"
    assert [(o.name, o.format, o.file_type, o.id) for o in job.outputs] == [
        ("instrumental.wav", "wav", "audio/wav", "o1")]
    assert job.outputs[0].link == "https://x/instrumental.wav?sig=1"
    assert job.created_at == dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)
    assert job.duration_s == pytest.approx(10.0)
    assert job.status_info == {"code": "ok", "message": "done"}


def test_stem_assets_and_stem_metadata_variant():
    payload = {"id": "j", "status": "completed", "stemMetadata": {"name": "vocals", "format": "mp3"},
               "stemAssets": [{"name": "vocals.mp3", "link": "https://x/v.mp3"}]}
    job = Job.from_payload(payload)
    assert (job.model, job.format) == ("vocals", "mp3")
    assert [o.name for o in job.outputs] == ["vocals.mp3"]


def test_outputs_nested_in_source_asset():
    payload = {"id": "j", "status": "completed", "metadata": {"name": "drums", "format": "wav"},
               "sourceAsset": {"id": "a9", "name": "s.wav",
                               "outputAssets": [{"name": "drums.wav", "link": "https://x/d.wav"}]}}
    job = Job.from_payload(payload)
    assert job.asset_id == "a9" and job.source_name == "s.wav"
    assert [o.link for o in job.outputs] == ["https://x/d.wav"]


def test_bare_link_outputs_and_single_object():
    job = Job.from_payload({"id": "j", "status": "completed", "outputAssets": ["https://h/p/out.json?sig=2"]})
    assert job.outputs[0].name == "out.json" and job.outputs[0].link.endswith("sig=2")
    job = Job.from_payload({"id": "j", "status": "completed", "outputAssets": {"name": "a.wav", "link": "l"}})
    assert [o.name for o in job.outputs] == ["a.wav"]


def test_queued_job_from_post_response_and_unknown_status():
    job = Job.from_payload({"job": {"id": "j3", "status": "queued", "metadata": {"name": "vocals", "format": "wav"},
                                    "assetId": "a"}})
    assert job.status is JobStatus.QUEUED and not job.is_done and job.outputs == [] and job.duration_s is None
    odd = Job.from_payload({"id": "j4", "status": "Rendering"})
    assert odd.status is JobStatus.UNKNOWN and odd.status_text == "Rendering" and not odd.is_done


@pytest.mark.parametrize("payload,message", [
    ({"id": "j", "status": "failed", "statusInfo": {"code": "E1", "message": "audio too long"}}, "audio too long"),
    ({"id": "j", "status": "error", "error": "decoder crashed"}, "decoder crashed"),
    ({"id": "j", "status": "error", "error": {"code": "X", "message": "nested"}}, "nested"),
    ({"id": "j", "status": "failed"}, "the service reported status 'failed' without a message"),
])
def test_failed_job_messages(payload, message):
    job = Job.from_payload(payload)
    assert job.failed and job.is_done and job.error == message


@pytest.mark.parametrize("payload", [{}, {"job": {}}, {"status": "queued"}])
def test_job_without_id_names_the_field(payload):
    with pytest.raises(ValueError, match="`id`"):
        Job.from_payload(payload)


def test_non_object_payload_rejected():
    with pytest.raises(ValueError, match="JSON object, not list"):
        Job.from_payload([1])
    with pytest.raises(ValueError, match="JSON object, not str"):
        Asset.from_payload("garbage")


def test_asset_payload():
    raw = {"name": "song", "id": "clyx", "fileType": "audio/mpeg", "format": "mp3", "link": "https://x", "extra": 1}
    asset = Asset.from_payload(raw)
    assert (asset.id, asset.name, asset.file_type, asset.format, asset.link) == ("clyx", "song", "audio/mpeg", "mp3", "https://x")
    assert asset.raw == raw
    assert Asset.from_payload({"asset": raw}).id == "clyx"
    assert "https://x" not in repr(asset)  # links (signed URLs) stay out of reprs
    with pytest.raises(ValueError, match="`id`"):
        Asset.from_payload({"name": "x"})


def test_output_asset_and_reprs_are_short():
    out = OutputAsset.from_payload({"name": "v.wav", "link": "https://x?sig=secret", "format": "wav"})
    assert out.name == "v.wav" and "sig=secret" not in repr(out)
    job = Job.from_payload({"job": COMPLETED})
    assert repr(job).startswith("Job(id='job-1', status=<JobStatus.COMPLETED") and "outputAssets" not in repr(job)


@pytest.mark.parametrize("value,expected", [
    ("2026-03-01T10:00:00Z", dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)),
    ("2026-03-01T12:00:00+02:00", dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)),
    ("2026-03-01T10:00:00", dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)),
    (1772359200, dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)),
    (1772359200000, dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)),
    ("yesterday", None), (None, None), ("", None), ({}, None),
])
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


def test_with_source_name_only_fills_gaps():
    job = Job.from_payload({"id": "j", "status": "queued"})
    named = job.with_source_name("a.wav")
    assert named.source_name == "a.wav" and named.with_source_name("b.wav").source_name == "a.wav"
    assert job.with_source_name(None) is job
