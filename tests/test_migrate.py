"""shakelab.migrate: the Tasks API requests that replace a legacy jobs frame."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shakelab import catalog
from shakelab.errors import ValidationError
from shakelab.frames import jobs_frame
from shakelab.migrate import tasks_request
from shakelab.models import MAX_TARGETS

DOCUMENTED_TASK = Path(__file__).parent / "data" / "tasks-get-documented.json"


def test_a_real_jobs_frame_becomes_one_task_per_asset(client, demo_path):
    # two assets, three models, one model in two formats (two jobs on one asset), and a rerun
    asset = client.upload(demo_path, progress=False)
    client.submit(asset, ["vocals", "music_detection"], format={"vocals": "wav"}, wait=False, progress=False)
    client.submit(asset, ["vocals"], format="mp3", wait=False, progress=False)
    client.submit(demo_path, ["bass"], wait=False, progress=False)  # uploaded again: another asset
    frame = client.jobs_frame()
    assert len(frame) == 4
    first, second = frame["asset_id"].iloc[0], frame["asset_id"].iloc[3]
    assert first != second
    assert tasks_request(frame) == [
        {"assetId": first, "targets": [{"model": "vocals", "formats": ["wav", "mp3"]},
                                       {"model": "music_detection", "formats": ["json"]}]},
        {"assetId": second, "targets": [{"model": "bass", "formats": ["wav"]}]},
    ]
    # a rerun (the same jobs again) asks for nothing more
    assert tasks_request(pd.concat([frame, frame], ignore_index=True)) == tasks_request(frame)


def test_variants_options_and_other_sources_are_kept_apart():
    jobs = [
        {"id": "j1", "assetId": "a1", "metadata": {"name": "vocals", "format": "wav"}},
        {"id": "j2", "assetId": "a1", "metadata": {"name": "vocals", "format": "flac", "variant": "high_quality"}},
        {"id": "j3", "assetId": "a1", "metadata": {"name": "vocals", "format": "wav", "variant": "high_quality"}},
        {"id": "j4", "assetId": "a1", "metadata": {"name": "instrumental", "format": "wav", "residual": True}},
        {"id": "j5", "assetId": "a2", "metadata": {"name": "transcription", "format": "srt", "language": "fr"}},
    ]
    bodies = tasks_request(jobs, assets={"a1": "cmAssetFromPostAssets", "a2": "https://example.com/b.wav"})
    assert bodies == [
        {"assetId": "cmAssetFromPostAssets", "targets": [
            {"model": "vocals", "formats": ["wav"]},
            {"model": "vocals", "formats": ["flac", "wav"], "variant": "high_quality"},
            {"model": "instrumental", "formats": ["wav"], "residual": True}]},
        {"url": "https://example.com/b.wav", "targets": [
            {"model": "transcription", "formats": ["srt"], "language": "fr"}]},
    ]
    json.dumps(bodies)  # JSON-ready


def test_more_than_twenty_targets_or_one_model_twice_split_into_several_tasks():
    stems = ["vocals", "instrumental", "vocals_lead", "vocals_backing", "drums", "bass", "guitar",
             "guitar_electric", "guitar_acoustic", "piano", "strings", "wind", "other", "other-x-guitar",
             "dialogue", "effects", "music_fx", "music_removal", "music_detection", "transcription", "alignment"]
    natural = {m: catalog.default_format(m, catalog.TASKS_MODELS) for m in stems}
    jobs = [{"id": f"j{i}", "assetId": "a1", "metadata": {"name": m, "format": natural[m]}}
            for i, m in enumerate(stems)]
    jobs.append({"id": "jfr", "assetId": "a1", "metadata": {"name": "transcription", "format": "srt",
                                                            "language": "fr"}})
    bodies = tasks_request(jobs)
    assert len(stems) == MAX_TARGETS + 1
    assert [len(b["targets"]) for b in bodies] == [MAX_TARGETS, 2]
    assert {b["assetId"] for b in bodies} == {"a1"}
    # the 21st target, and the second transcription (French) that cannot share a task with the first
    assert bodies[1]["targets"] == [{"model": "alignment", "formats": ["json"]},
                                    {"model": "transcription", "formats": ["srt"], "language": "fr"}]


def test_a_tasks_frame_round_trips_to_its_request():
    # the documented task, verbatim: its frame asks again for what the task asked
    task = json.loads(DOCUMENTED_TASK.read_text())
    assert tasks_request(jobs_frame([task])) == [
        {"assetId": "cmn5gz2s800xp01phe9v3bm5r", "targets": [{"model": "bass", "formats": ["wav"]},
                                                             {"model": "drums", "formats": ["wav"]}]}]
    assert tasks_request(jobs_frame([])) == []


@pytest.mark.parametrize(("jobs", "kwargs", "pattern"), [
    ([{"id": "j1", "metadata": {"name": "vocals", "format": "wav"}}], {}, r"job 0 has no `asset_id`"),
    ([{"id": "j1", "assetId": "a", "metadata": {"format": "wav"}}], {}, r"job 0 has no `model`"),
    ([{"status": "queued"}], {}, r"`jobs` item 0: job payload has no `id`"),
    ([3], {}, r"`jobs` item 0 must be a Job or a job payload, not int"),
    ("jobs.csv", {}, r"`jobs` must be a jobs frame or a list of Jobs or job payloads, not str"),
    (pd.DataFrame({"model": ["vocals"]}), {}, r"`jobs` frame has no 'asset_id', 'format' column"),
    ([{"id": "j1", "assetId": "a", "metadata": {"name": "vocals", "format": "wav"}}], {"assets": {"a": ""}},
     r"`assets` maps 'a' to ''"),
    ([], {"assets": ["a"]}, r"`assets` must be a mapping"),
    ([{"id": "j1", "assetId": "a", "metadata": {"name": "music", "format": "wav"}}], {},
     r"job 0: model 'music' has no Tasks API equivalent"),
    ([{"id": "j1", "assetId": "a", "metadata": {"name": "drums", "format": "wav", "variant": "high_quality"}}], {},
     r"`targets\[0\].variant` is documented only for models"),
])
def test_bad_input_names_the_parameter(jobs, kwargs, pattern):
    with pytest.raises(ValidationError, match=pattern):
        tasks_request(jobs, **kwargs)
