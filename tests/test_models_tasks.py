"""shakelab.models, the Tasks API part: Task / Target / TaskOutput views of the documented payloads,
the status rule, cost and duration, shakelab's metadata tag, and the checks of a POST /tasks body."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from shakelab import catalog
from shakelab.errors import ValidationError
from shakelab.models import (
    MAX_TARGETS, Asset, JobStatus, Target, Task, TaskOutput, check_targets, check_task_request, parse_metadata,
    tag_metadata,
)

DATA = Path(__file__).parent / "data"
DOCUMENTED = json.loads((DATA / "tasks-get-documented.json").read_text())


def test_documented_task_parses_verbatim():
    task = Task.from_payload(DOCUMENTED)
    assert (task.id, task.asset_id, task.client_id, task.url) == (
        "cmn5h1wv600edx8fgoboeeg06", "cmn5gz2s800xp01phe9v3bm5r", "cm4lousna0yurbk8ngu31n8bb", None)
    assert task.created_at == dt.datetime(2026, 3, 25, 3, 16, 17, 442000, tzinfo=dt.UTC)
    # no completedAt: not done, although one target is; there is no task-level status
    assert task.completed_at is None and not task.is_done and not task.completed
    bass, drums = task.targets
    assert (bass.id, bass.model, bass.status, bass.formats, bass.cost, bass.duration) == (
        "cmn5h1vsn010001pv1cjg2n4t", "bass", JobStatus.COMPLETED, ("wav",), 4.0, 200.53)
    assert bass.completed and bass.is_done and bass.error is None and bass.task_id == task.id
    assert [(o.name, o.format, o.link) for o in bass.outputs] == [("bass", "wav", "https://cdn.audioshake.ai/...")]
    assert isinstance(bass.outputs[0], TaskOutput) and bass.outputs[0].type is None
    assert drums.status is JobStatus.PROCESSING and not drums.is_done and drums.outputs == []
    assert drums.cost is None and drums.duration is None and drums.error_info == {}
    assert task.pending_targets == [drums] and task.failed_targets == []
    assert task.cost == 4.0 and task.duration == 200.53  # no task `cost` field: the targets' sum
    assert task.raw == DOCUMENTED and bass.raw == DOCUMENTED["targets"][0]
    assert task.target("drums") is drums
    with pytest.raises(KeyError, match=r"no target 'vocals'.*\['bass', 'drums'\]"):
        task.target("vocals")


def test_task_done_only_when_completed_at_is_set():
    done = {**DOCUMENTED, "completedAt": "2026-03-25T03:20:00.000Z", "cost": 5,
            "targets": [DOCUMENTED["targets"][0], {**DOCUMENTED["targets"][1], "status": "error", "cost": 1,
                                                   "error": {"code": 500, "message": "separation failed"}}]}
    task = Task.from_payload(done)
    assert task.is_done and not task.completed and task.cost == 5.0  # the task's own cost wins
    assert [t.model for t in task.failed_targets] == ["drums"]
    assert task.failed_targets[0].error == "separation failed"
    # every target terminal but no completedAt yet: still pending (the documented rule)
    pending = Task.from_payload({**done, "completedAt": None})
    assert not pending.is_done


@pytest.mark.parametrize("status,expected,done,failed", [
    ("processing", JobStatus.PROCESSING, False, False), ("completed", JobStatus.COMPLETED, True, False),
    ("error", JobStatus.ERROR, True, True), ("failed", JobStatus.FAILED, True, True),
    ("queued", JobStatus.QUEUED, False, False), ("Rendering", JobStatus.UNKNOWN, False, False),
    (None, JobStatus.UNKNOWN, False, False),
])
def test_target_status_rule(status, expected, done, failed):
    target = Target.from_payload({"id": "t", "model": "bass", "status": status})
    assert (target.status, target.is_done, target.failed) == (expected, done, failed)
    if status == "Rendering":
        assert target.status_text == "Rendering"


def test_failed_target_without_message_names_its_status():
    assert Target.from_payload({"id": "t", "status": "failed"}).error == \
        "the service reported status 'failed' without a message"
    assert Target.from_payload({"id": "t", "status": "error", "error": "decoder"}).error == "decoder"


def test_target_optional_fields_as_explicit_nulls_and_extras():
    raw = {"id": "t1", "model": "vocals", "status": "completed", "formats": ["wav", "mp3"], "cost": 1.5,
           "duration": 9.49, "residual": None, "variant": "high_quality", "language": None, "error": None,
           "createdAt": "2026-03-25T03:16:17.442Z", "updatedAt": "2026-03-25T03:16:40.000Z",
           "taskId": "task-9", "url": "https://x",
           "output": [{"name": "vocals_high_quality", "format": "wav", "type": "audio/wav", "link": "https://a"},
                      {"name": "vocals_high_quality", "format": "mp3", "type": "audio/mpeg", "link": "https://b"}]}
    t = Target.from_payload(raw)
    assert (t.variant, t.residual, t.language, t.task_id, t.name) == (
        "high_quality", None, None, "task-9", "vocals_high_quality")
    assert [(o.format, o.type) for o in t.outputs] == [("wav", "audio/wav"), ("mp3", "audio/mpeg")]
    assert t.cost == catalog.tasks_cost("vocals", 9.49, "high_quality") == 1.5
    assert t.updated_at is not None and t.created_at is not None and t.raw["url"] == "https://x"


def test_output_expiry_from_the_signed_link():
    out = TaskOutput.from_payload({"name": "bass", "format": "wav",
                                   "link": "https://cdn.audioshake.ai/b.wav?Expires=1774411200&Key-Pair-Id=K"})
    assert out.expires_at == dt.datetime(2026, 3, 25, 4, tzinfo=dt.UTC)
    assert TaskOutput.from_payload({"name": "bass", "link": "https://x/b"}).expires_at is None
    assert "Expires" not in repr(out)  # signed links stay out of reprs


def test_tasks_asset_is_an_asset():
    asset = Asset.from_payload({"id": "cmn5gz2s800xp01phe9v3bm5r", "format": "wav", "name": "song.wav"})
    assert (asset.id, asset.format, asset.name, asset.file_type, asset.link) == (
        "cmn5gz2s800xp01phe9v3bm5r", "wav", "song.wav", None, None)


@pytest.mark.parametrize("payload", [{}, {"task": {}}, {"targets": []}])
def test_task_without_id_names_the_field(payload):
    with pytest.raises(ValueError, match="`id`"):
        Task.from_payload(payload)


def test_task_tolerates_odd_shapes():
    task = Task.from_payload({"task": {"id": "x", "targets": "nope", "metadata": {"a": 1}}})
    assert task.targets == [] and task.metadata == '{"a": 1}' and task.cost is None and task.duration is None
    with pytest.raises(ValueError, match="JSON object, not list"):
        Task.from_payload([DOCUMENTED])


# --------------------------------------------------------------------------- metadata tag
def test_tag_keeps_user_metadata_readable():
    text = tag_metadata("att-1", "batch 7, take 2")
    assert json.loads(text) == {"shakelab": {"attempt": "att-1"}, "user": "batch 7, take 2"}
    task = Task.from_payload({"id": "t", "metadata": text})
    assert (task.attempt, task.user_metadata) == ("att-1", "batch 7, take 2")
    assert parse_metadata(tag_metadata("att-2")) == ("att-2", None)
    assert parse_metadata(tag_metadata("att-3", {"k": [1, 2]})) == ("att-3", {"k": [1, 2]})


@pytest.mark.parametrize("metadata", ["plain notes", '{"user": "no tag"}', "{not json", None,
                                      '{"shakelab": {"attempt": 5}}'])
def test_untagged_metadata_is_all_user_metadata(metadata):
    assert parse_metadata(metadata) == (None, metadata)


# --------------------------------------------------------------------------- request checks
def test_check_targets_normalises():
    assert check_targets([{"model": "bass", "formats": ["wav"]}, {"model": "music_detection"},
                          {"model": "vocals", "formats": ("mp3", "mp4"), "variant": "high_quality",
                           "residual": True},
                          {"model": "multi_voice", "formats": ["wav"], "variant": "n_speaker"},
                          {"model": "alignment", "formats": ["srt"], "language": "en",
                           "transcriptAssetId": "as-1"}]) == [
        {"model": "bass", "formats": ["wav"]},
        {"model": "music_detection", "formats": ["json"]},
        {"model": "vocals", "formats": ["mp3", "mp4"], "variant": "high_quality", "residual": True},
        {"model": "multi_voice", "formats": ["wav"], "variant": "n_speaker"},
        {"model": "alignment", "formats": ["srt"], "language": "en", "transcriptAssetId": "as-1"}]
    assert len(check_targets([{"model": m} for m in list(catalog.TASKS_MODELS)[:MAX_TARGETS]])) == MAX_TARGETS


@pytest.mark.parametrize("targets,message", [
    ("vocals", r"`targets` must be a list of targets"),
    ({"model": "vocals"}, r"`targets` must be a list of targets"),
    ([], r"`targets` must hold 1 to 20 targets, not 0"),
    ([{"model": m} for m in list(catalog.TASKS_MODELS)[:21]], r"1 to 20 targets, not 21"),
    (["vocals"], r"`targets\[0\]` must be a dict"),
    ([{"model": "kazoo"}], r"`targets\[0\].model` must be one of 'vocals', .* not 'kazoo'"),
    ([{"model": "music"}], r"`targets\[0\].model` must be one of"),  # a Jobs-API-only name
    ([{"model": "bass"}, {"model": "drums", "formats": ["json"]}],
     r"`targets\[1\].formats` must be one of 'wav', 'mp3', 'flac', 'aiff', 'mp4' for model 'drums', not 'json'"),
    ([{"model": "music_detection", "formats": ["wav"]}], r"for model 'music_detection', not 'wav'"),
    ([{"model": "transcription", "formats": "srt"}], r"`targets\[0\].formats` must be a non-empty list .*'srt'"),
    ([{"model": "bass", "formats": []}], r"`targets\[0\].formats` must be a non-empty list"),
    ([{"model": "bass", "formats": ["wav", "wav"]}], r"lists a format twice"),
    ([{"model": "bass", "variant": "high_quality"}], r"`targets\[0\].variant` is documented only for models"),
    ([{"model": "vocals", "variant": "hq"}], r"must be one of 'high_quality' for model 'vocals', not 'hq'"),
    ([{"model": "multi_voice", "variant": "high_quality"}], r"one of 'two_speaker', 'n_speaker'"),
    ([{"model": "vocals", "residual": "yes"}], r"`targets\[0\].residual` must be True or False, not 'yes'"),
    ([{"model": "vocals", "fromats": ["wav"]}], r"unknown key\(s\) \['fromats'\]"),
    ([{"model": "bass"}, {"model": "bass", "formats": ["mp3"]}], r"`targets\[1\]` repeats target 0 \('bass'\)"),
    ([{"model": "bass", "window": 5}], r"`targets\[0\].window` is an option of 'music_detection' targets only"),
    ([{"model": "music_detection", "window": 0}], r"`targets\[0\].window` must be a number of seconds"),
    ([{"model": "alignment", "transcriptUrl": "ftp://x"}], r"transcriptUrl` must be an http\(s\) URL"),
])
def test_check_targets_refuses(targets, message):
    with pytest.raises(ValidationError, match=message):
        check_targets(targets)


def test_same_model_with_another_variant_is_another_target():
    assert len(check_targets([{"model": "vocals"}, {"model": "vocals", "variant": "high_quality"}])) == 2


def test_local_only_keys_refused_for_the_service():
    target = [{"model": "music_detection", "window": 5.0, "all_windows": True}]
    assert check_targets(target, local=True) == [{"model": "music_detection", "formats": ["json"],
                                                   "window": 5.0, "all_windows": True}]
    with pytest.raises(ValidationError, match=r"unknown key\(s\) \['window', 'all_windows'\].*local server"):
        check_targets(target, local=False)


def test_check_task_request():
    targets = [{"model": "bass", "formats": ["wav"]}]
    assert check_task_request(url="https://example.com/a.wav", targets=targets, metadata="m") == {
        "url": "https://example.com/a.wav", "targets": targets, "metadata": "m"}
    assert check_task_request(url="http://127.0.0.1:9/a.wav", targets=targets)["url"].startswith("http://")
    with pytest.raises(ValidationError, match=r"`url` must be a public https:// URL, not 'http://x/a.wav'"):
        check_task_request(url="http://x/a.wav", targets=targets, local=False)
    with pytest.raises(ValidationError, match="exactly one of `asset` and `url`, not both"):
        check_task_request(asset_id="a", url="https://x/a.wav", targets=targets)
    with pytest.raises(ValidationError, match="exactly one of `asset`"):
        check_task_request(targets=targets)
    with pytest.raises(ValidationError, match="`metadata` must be a string"):
        check_task_request(asset_id="a", targets=targets, metadata={"a": 1})
    with pytest.raises(ValidationError, match="at most 4096 characters"):
        check_task_request(asset_id="a", targets=targets, metadata="x" * 4097)
    with pytest.raises(ValidationError, match="`asset` must be an Asset or a non-empty asset id"):
        check_task_request(asset_id=" ", targets=targets)


def test_costs_follow_the_documented_samples():
    assert catalog.tasks_cost("bass", 200.53) == 4.0
    assert catalog.tasks_cost("vocals", 9.49, "high_quality") == 1.5
    assert catalog.tasks_cost("music_detection", 61) == 1.0
    assert catalog.tasks_cost("dialogue", 0.5) == 1.5
    assert catalog.tasks_cost("music_identification", 100) is None
