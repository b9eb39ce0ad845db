"""Batch runs against the real local server: resume, no duplicates, shared 429 backoff, isolation."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from shakelab import batch
from shakelab.client import Client
from shakelab.errors import ValidationError
from shakelab.ledger import Ledger

SR = 8000


DEMO = Path(__file__).resolve().parents[1] / "data" / "demo.flac"


def make_audio(folder: Path, n: int, *, seconds=(1.0, 2.0), prefix="rec", sub_every: int = 0,
               music_every: int = 0) -> list[Path]:
    """n short, distinct recordings (noise), some in a subfolder; every ``music_every``-th
    (from the first) is 10 s of the demo's music instead."""
    rng = np.random.default_rng(len(str(folder)) + n)
    music, music_sr = sf.read(DEMO, dtype="float32", start=10 * 22050, stop=20 * 22050) if music_every else (None, 0)
    paths = []
    for i in range(n):
        dur = seconds[0] + (seconds[1] - seconds[0]) * (i % 5) / 4
        t = np.arange(int(SR * dur)) / SR
        y = 0.1 * rng.standard_normal(t.size)  # noise: no music (a steady tone can read as music)
        where = folder / "sub" if sub_every and i % sub_every == 0 else folder
        if music_every and i % music_every == 0:
            where.mkdir(parents=True, exist_ok=True)
            path = where / f"{prefix}{i:03d}.wav"
            sf.write(path, music + 1e-4 * rng.standard_normal(music.size).astype(np.float32), music_sr)
            paths.append(path)
            continue
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{prefix}{i:03d}.wav"
        sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def client_for(server) -> Client:
    return Client(token=server.token, base_url=server.base_url, ledger=Ledger())


def stats(server):
    s = server.stats()
    return s["uploads"], s["jobs"], sum(s["requests"].values())


# --------------------------------------------------------------------------- arguments
def test_sources_folder_glob_list_and_frame(tmp_path):
    files = make_audio(tmp_path / "a", 4, sub_every=2)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    (tmp_path / "a" / "UPPER.WAV").write_bytes(files[1].read_bytes())
    found, names, root = batch._collect_sources(tmp_path / "a")
    assert root == tmp_path / "a"
    assert [p.relative_to(root).as_posix() for p in found] == [
        "UPPER.WAV", "rec001.wav", "rec003.wav", "sub/rec000.wav", "sub/rec002.wav"]
    found, _, _ = batch._collect_sources(str(tmp_path / "a" / "**" / "rec00[01].wav"))
    assert sorted(p.name for p in found) == ["rec000.wav", "rec001.wav"]
    found, names, _ = batch._collect_sources([files[0], str(files[0]), files[1]])   # duplicates once
    assert names == [str(files[0]), str(files[1])]
    found, _, _ = batch._collect_sources(pd.DataFrame({"path": [str(f) for f in files], "label": 1}))
    assert found == files


def test_bad_arguments_fail_before_any_request(fresh_server, tmp_path):
    client = client_for(fresh_server)
    make_audio(tmp_path, 1)
    before = fresh_server.stats()
    with pytest.raises(ValidationError, match="'path' column"):
        batch.run(pd.DataFrame({"file": ["x.wav"]}), ["vocals"], client=client)
    with pytest.raises(ValidationError, match="does not exist"):
        batch.run(tmp_path / "nope", ["vocals"], client=client)
    with pytest.raises(ValidationError, match="`model` must be one of"):
        batch.run(tmp_path, ["kazoo"], client=client)
    with pytest.raises(ValidationError, match=r"`format` must be one of .* not 'json'"):
        batch.run(tmp_path, ["vocals"], format="json", client=client)
    with pytest.raises(ValidationError, match="`concurrency` must be a positive integer, not 0"):
        batch.run(tmp_path, ["vocals"], concurrency=0, client=client)
    with pytest.raises(ValidationError, match="`executor`"):
        batch.run(tmp_path, ["vocals"], executor="dask", client=client)
    with pytest.raises(ValidationError, match="`sources` item 1"):
        batch.run([tmp_path / "a.wav", 3], ["vocals"], client=client)
    assert fresh_server.stats() == before


# --------------------------------------------------------------------------- the main path
def test_fifty_files_then_rerun_costs_nothing(fresh_server, tmp_path):
    files = make_audio(tmp_path / "rec", 50, sub_every=7, music_every=10)
    music = {str(f) for f in files[::10]}
    client = client_for(fresh_server)
    first = batch.run(tmp_path / "rec", ["music_detection"], client=client, concurrency=4, progress=False)
    assert first.ok, first.failed[["source", "error"]].to_string()
    jobs = first.jobs
    assert len(jobs) == 50 and jobs["job_id"].is_unique
    assert set(jobs["source"]) == {str(f) for f in files}
    assert (jobs["action"] == "submitted").all() and (jobs["format"] == "json").all()
    assert str(jobs["finished_at"].dtype) == "datetime64[ns, UTC]"
    seg = first.segments
    assert list(seg.columns) == ["source", "job_id", "start_time", "end_time", "duration", "confidence",
                                 "provenance"]
    assert set(seg["source"]) == music                                 # only music is returned
    assert seg["provenance"].str.match(r"local:\w+:window=10s$").all()
    n = jobs.set_index("source")["n_segments"]
    assert seg.groupby("source").size().to_dict() == n[sorted(music)].to_dict()
    assert (n.drop(list(music)) == 0).all()
    assert seg["confidence"].between(0, 1).all()
    # a recording without music is a result: a coverage row with 0 s, not a missing one
    cov = first.coverage.set_index("source")
    assert list(first.coverage["source"]) == list(jobs["source"])
    assert (cov.loc[list(music), "finding"] == "music found").all()
    assert (cov.drop(list(music))["finding"] == "no music found").all()
    assert (cov.drop(list(music))[["music_seconds", "share"]] == 0).all().all()
    assert cov["duration"].between(1.0, 10.01).all()
    uploads, created, requests_made = stats(fresh_server)
    assert (uploads, created) == (50, 50)                               # one upload, one job each

    second = batch.run(tmp_path / "rec", ["music_detection"], client=client, concurrency=4, progress=False)
    assert second.ok and (second.jobs["action"] == "skipped").all()
    assert list(second.jobs["job_id"]) == list(jobs["job_id"])
    pd.testing.assert_frame_equal(second.segments, seg)
    assert stats(fresh_server) == (50, 50, requests_made)              # no upload, no job, no request
    # a new process with a new client and the same ledger is just as frugal
    fresh_client = client_for(fresh_server)
    third = batch.run(tmp_path / "rec", "music_detection", client=fresh_client, progress=False)
    assert third.ok and stats(fresh_server)[:2] == (50, 50)


def test_force_resubmits(fresh_server, tmp_path):
    make_audio(tmp_path / "rec", 2)
    client = client_for(fresh_server)
    batch.run(tmp_path / "rec", ["music_detection"], client=client, progress=False)
    forced = batch.run(tmp_path / "rec", ["music_detection"], client=client, progress=False, force=True)
    assert forced.ok and (forced.jobs["action"] == "submitted").all()
    assert fresh_server.stats()["jobs"] == 4                             # force=True: new (billed) jobs


# --------------------------------------------------------------------------- resume after a kill
def _ledger_jobs(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    import sqlite3

    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("SELECT job_id, status FROM jobs").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_killed_batch_resumes_with_exactly_one_job_per_file_and_model(fresh_server, tmp_path):
    files = make_audio(tmp_path / "rec", 50)
    ledger_path = Path(os.environ["SHAKELAB_LEDGER"])
    fresh_server.faults.processing_delay = 2.0      # each job runs a while: the batch is mid-way when killed
    env = {**os.environ, "AUDIOSHAKE_API_TOKEN": fresh_server.token,
           "AUDIOSHAKE_BASE_URL": fresh_server.base_url, "SHAKELAB_LEDGER": str(ledger_path)}
    log = open(tmp_path / "batch.log", "wb")  # noqa: SIM115 - the subprocess writes to it; closed in `finally`
    proc = subprocess.Popen([sys.executable, "-m", "shakelab.cli", "batch", str(tmp_path / "rec"),
                             "--models", "music_detection", "--out", str(tmp_path / "out"),
                             "--concurrency", "4"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while len(_ledger_jobs(ledger_path)) < 6:
            assert proc.poll() is None, (tmp_path / "batch.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the batch subprocess created no jobs"
            time.sleep(0.05)
        # From now on the service refuses new jobs (a refused POST /job creates nothing), so the
        # set of jobs stops growing; once the ledger has recorded every job the server made,
        # kill: a kill between the server creating a job and the ledger recording it is the one
        # loss no client can prevent (the API has no idempotency key), and this avoids it.
        fresh_server.faults.add(method="POST", path="/job", status=503, times=None)
        time.sleep(0.5)                             # a POST /job already past the gate finishes
        while len(_ledger_jobs(ledger_path)) < fresh_server.stats()["jobs"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    recorded = _ledger_jobs(ledger_path)
    created_before = fresh_server.stats()["jobs"]
    assert len(recorded) == created_before >= 6
    in_flight = [j for j, status in recorded if status not in ("completed", "failed")]
    assert in_flight, "the kill came after every job had finished: nothing was resumed"
    assert created_before < 50, "the kill came after every job had been created"

    fresh_server.faults.clear()
    posts_before = fresh_server.stats()["requests"].get("POST /job", 0)
    result = batch.run(tmp_path / "rec", ["music_detection"], client=client_for(fresh_server), progress=False)
    assert result.ok, result.failed[["source", "error"]].to_string()
    assert fresh_server.stats()["jobs"] == 50                        # exactly one job per (file, model)
    assert result.jobs["job_id"].is_unique and set(result.jobs["source"]) == {str(f) for f in files}
    assert set(in_flight) <= set(result.jobs["job_id"])               # in-flight jobs were polled, not redone
    assert (result.jobs.set_index("job_id").loc[in_flight, "action"] == "resumed").all()
    assert int((result.jobs["action"] == "submitted").sum()) == 50 - created_before
    assert fresh_server.stats()["requests"]["POST /job"] - posts_before == 50 - created_before


def test_ctrl_c_stops_at_once_and_a_rerun_resumes(fresh_server, tmp_path):
    make_audio(tmp_path / "rec", 4)
    ledger_path = Path(os.environ["SHAKELAB_LEDGER"])
    fresh_server.faults.processing_delay = 60.0     # nothing finishes while the batch runs
    env = {**os.environ, "AUDIOSHAKE_API_TOKEN": fresh_server.token,
           "AUDIOSHAKE_BASE_URL": fresh_server.base_url}
    with open(tmp_path / "batch.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "shakelab.cli", "batch", str(tmp_path / "rec"),
                                 "--models", "music_detection", "--out", str(tmp_path / "out")],
                                env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while len(_ledger_jobs(ledger_path)) < 4:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "batch.log").read_text()[-2000:]
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            # the workers are polling jobs that need a minute more: they must not hold the exit
            assert proc.wait(timeout=30) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert {status for _, status in _ledger_jobs(ledger_path)} <= {"queued", "processing"}
    fresh_server.faults.clear()                     # releases the waiting jobs
    result = batch.run(tmp_path / "rec", ["music_detection"], client=client_for(fresh_server), progress=False)
    assert result.ok and (result.jobs["action"] == "resumed").all()
    assert fresh_server.stats()["jobs"] == 4


# --------------------------------------------------------------------------- rate limits
def test_429_storm_slows_the_batch_without_failures(fresh_server, tmp_path):
    make_audio(tmp_path / "rec", 10)
    faults = fresh_server.faults
    faults.add(method="POST", path="/upload", status=429, times=3, headers={"Retry-After": "1"})
    faults.add(method="POST", path="/job", status=429, times=4, headers={"Retry-After": "1"})
    faults.add(method="GET", path="/job/*", status=429, times=12, headers={"Retry-After": "1"})
    result = batch.run(tmp_path / "rec", ["music_detection"], client=client_for(fresh_server), concurrency=4,
                       progress=False)
    assert result.ok, result.failed[["source", "error"]].to_string()
    assert result.stats["failed"] == 0 and len(result.coverage) == 10
    assert result.stats["rate_limited"] == 3 + 4 + 12                 # every 429 was seen and waited out
    assert faults.take("GET", "/job/x") is None                        # the storm was used up
    assert fresh_server.stats()["jobs"] == 10                          # a refused POST /job is not a job


def test_one_429_holds_every_worker(fresh_server):
    """After a 429 with Retry-After, no other request of the batch goes out until the wait is over."""
    client = client_for(fresh_server)
    gate = batch.RateGate()
    fresh_server.faults.add(method="GET", path="/usage", status=429, times=1, headers={"Retry-After": "2"})
    with client.transport.gated(gate):
        first = threading.Thread(target=client.usage)
        first.start()
        while gate.hits == 0:
            time.sleep(0.005)
        (pause_start, pause_end), = gate.pauses
        before = fresh_server.stats()["requests"].get("GET /usage", 0)
        client.usage()                                   # another worker: held at the gate
        sent_after = time.monotonic()
        first.join()
    assert pause_end - pause_start == pytest.approx(2.0, abs=0.05)
    assert sent_after >= pause_end
    assert gate.waited_s > 1.0
    assert fresh_server.stats()["requests"]["GET /usage"] == before + 2
    # the gate is removed afterwards: the client's transport is as it was
    assert client.transport.gate is None


def test_retry_after_forms():
    gate = batch.RateGate()
    import email.utils

    gate.note(429, email.utils.formatdate(time.time() + 3, usegmt=True))
    (start, end), = gate.pauses
    assert 1.5 < end - start <= 3.0
    gate = batch.RateGate()
    gate.note(429, None)     # no Retry-After: 1 s, then doubling while the 429s go on
    gate.note(429, "garbage")
    assert gate.hits == 2 and len(gate.pauses) == 2
    assert gate.pauses[0][1] - gate.pauses[0][0] == pytest.approx(1.0, abs=0.05)
    assert gate.pauses[1][1] - gate.pauses[1][0] == pytest.approx(2.0, abs=0.05)
    gate.note(200, None)     # a success ends the streak
    gate.note(429, None)
    assert gate.pauses[-1][1] - gate.pauses[-1][0] == pytest.approx(2.0, abs=0.05)  # not extended: 1 s < 2 s left
    gate.note(429, "100000")
    assert gate.pauses[-1][1] - gate.pauses[-1][0] == pytest.approx(60.0, abs=0.05)   # capped
    held = batch.RateGate()
    held.note(429, "0.3")
    t0 = time.monotonic()
    held.wait_turn()
    assert time.monotonic() - t0 >= 0.25 and held.waited_s > 0


# --------------------------------------------------------------------------- isolation
def test_corrupt_and_missing_files_fail_alone(fresh_server, tmp_path):
    good = make_audio(tmp_path / "rec", 4)
    bad = tmp_path / "rec" / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(200))
    missing = tmp_path / "rec" / "gone.flac"
    result = batch.run([*good[:2], bad, missing, *good[2:]], ["music_detection"],
                       client=client_for(fresh_server), progress=False)
    jobs = result.jobs.set_index("source")
    assert list(result.jobs["source"]) == [str(p) for p in [*good[:2], bad, missing, *good[2:]]]
    assert (jobs.loc[[str(p) for p in good], "status"] == "completed").all()
    assert jobs.loc[str(bad), "status"] == "failed"
    message = jobs.loc[str(bad), "error"]
    assert "broken.wav" in message or "audio" in message.lower(), message
    assert jobs.loc[str(missing), "status"] == "failed"
    assert jobs.loc[str(missing), "error"] == f"file not found: {str(missing)!r}"
    assert result.stats["failed"] == 2
    cov = result.coverage.set_index("source")
    assert (cov.loc[[str(p) for p in good], "finding"] != "no result").all()
    assert cov.loc[str(bad), "finding"] == cov.loc[str(missing), "finding"] == "no result"
    assert cov.loc[str(missing), "error"] == f"file not found: {str(missing)!r}"


def test_several_models_one_upload_per_file_and_downloads(fresh_server, tmp_path):
    make_audio(tmp_path / "rec", 3, sub_every=2)
    client = client_for(fresh_server)
    result = batch.run(tmp_path / "rec", ["music_detection", "vocals"], client=client, progress=False,
                       download_to=tmp_path / "out", format={"music_detection": "txt", "vocals": "flac"})
    assert result.ok, result.failed[["source", "error"]].to_string()
    assert fresh_server.stats()["uploads"] == 3 and fresh_server.stats()["jobs"] == 6
    assert list(result.jobs["model"].astype(str)) == ["music_detection", "vocals"] * 3
    outs = dict(zip(zip(result.jobs["source"], result.jobs["model"].astype(str), strict=True), result.jobs["outputs"],
                    strict=True))
    sub = str(tmp_path / "rec" / "sub" / "rec000.wav")
    assert [Path(p).relative_to(tmp_path / "out").as_posix() for p in outs[(sub, "vocals")]] == \
        ["sub/rec000/vocals.flac"]
    assert sf.info(outs[(sub, "vocals")][0]).format == "FLAC"
    assert Path(outs[(sub, "music_detection")][0]).suffix == ".txt"
    assert result.jobs.loc[result.jobs["model"] == "vocals", "n_segments"].isna().all()
    assert len(result.segments) == int(result.jobs["n_segments"].sum())
    requests_before = stats(fresh_server)[2]
    again = batch.run(tmp_path / "rec", ["music_detection", "vocals"], client=client, progress=False,
                      download_to=tmp_path / "out", format={"music_detection": "txt", "vocals": "flac"})
    assert again.ok and stats(fresh_server)[2] == requests_before          # outputs already on disk
    assert list(again.jobs["outputs"]) == list(result.jobs["outputs"])


# --------------------------------------------------------------------------- executors, progress, CLI
def test_given_thread_executor_is_used_and_left_open(fresh_server, tmp_path):
    make_audio(tmp_path / "rec", 3)
    with cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="mine") as pool:
        result = batch.run(tmp_path / "rec", ["music_detection"], client=client_for(fresh_server),
                           executor=pool, progress=False)
        assert result.ok
        assert pool.submit(lambda: 42).result() == 42


def test_process_executor_builds_its_own_clients(fresh_server, tmp_path, monkeypatch):
    """The path Dask takes: work runs in other processes; a Client never pickles (it holds the
    token), so each worker builds one from AUDIOSHAKE_API_TOKEN and the same ledger path."""
    make_audio(tmp_path / "rec", 3)
    monkeypatch.setenv("AUDIOSHAKE_API_TOKEN", fresh_server.token)
    import multiprocessing

    client = client_for(fresh_server)
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = batch.run(tmp_path / "rec", ["music_detection"], client=client, executor=pool, progress=False)
    assert result.ok, result.failed[["source", "error"]].to_string()
    assert len(result.coverage) == 3 and fresh_server.stats()["jobs"] == 3
    again = batch.run(tmp_path / "rec", ["music_detection"], client=client, progress=False)
    assert (again.jobs["action"] == "skipped").all() and fresh_server.stats()["jobs"] == 3


def test_process_executor_builds_tasks_clients_on_the_tasks_api(fresh_server, tmp_path, monkeypatch):
    """The same with a TasksClient: each worker builds a TasksClient from AUDIOSHAKE_API_KEY."""
    make_audio(tmp_path / "rec", 3)
    monkeypatch.setenv("AUDIOSHAKE_API_KEY", fresh_server.token)
    import multiprocessing

    client = tasks_client_for(fresh_server)
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = batch.run(tmp_path / "rec", ["music_detection"], client=client, executor=pool, progress=False)
    assert result.ok, result.failed[["source", "error"]].to_string()
    assert len(result.coverage) == 3 and (fresh_server.stats()["tasks"], fresh_server.stats()["jobs"]) == (3, 0)
    again = batch.run(tmp_path / "rec", ["music_detection"], client=client, progress=False)
    assert (again.jobs["action"] == "skipped").all() and fresh_server.stats()["tasks"] == 3


def test_progress_bar_counts(fresh_server, tmp_path, capsys):
    make_audio(tmp_path / "rec", 2)
    (tmp_path / "rec" / "bad.wav").write_bytes(b"nope")
    batch.run(tmp_path / "rec", ["music_detection"], client=client_for(fresh_server), progress=True)
    err = capsys.readouterr().err
    assert "batch" in err and "queued=3" in err
    assert "done=2" in err and "failed=1" in err


def test_cli_writes_csv_summary(fresh_server, tmp_path, monkeypatch, capsys):
    files = make_audio(tmp_path / "rec", 3, music_every=2)
    (tmp_path / "rec" / "bad.wav").write_bytes(b"nope")
    monkeypatch.setenv("AUDIOSHAKE_API_TOKEN", fresh_server.token)
    monkeypatch.setenv("AUDIOSHAKE_BASE_URL", fresh_server.base_url)
    from shakelab.cli import main

    code = main(["batch", str(tmp_path / "rec"), "--models", "music_detection", "--out", str(tmp_path / "out"),
                 "--concurrency", "2"])
    out = capsys.readouterr().out
    assert code == 1                                             # one file failed, and it is listed
    assert "3 completed, 1 failed" in out and "bad.wav" in out
    summary = pd.read_csv(tmp_path / "out" / "jobs.csv")
    assert list(summary.columns) == list(batch.JOBS_COLUMNS)
    assert sorted(summary["source"]) == sorted([str(f) for f in files] + [str(tmp_path / "rec" / "bad.wav")])
    assert (summary["status"] == "completed").sum() == 3
    segments = pd.read_csv(tmp_path / "out" / "segments.csv")
    assert set(segments["source"]) == {str(files[0]), str(files[2])}   # the music files
    coverage = pd.read_csv(tmp_path / "out" / "coverage.csv").set_index("source")
    assert coverage.loc[str(files[1]), "finding"] == "no music found"
    assert coverage.loc[str(tmp_path / "rec" / "bad.wav"), "finding"] == "no result"
    assert all((tmp_path / "out" / f.stem / "music_detection.json").is_file() for f in files)
    jobs_before = fresh_server.stats()["jobs"]
    code = main(["batch", str(tmp_path / "rec" / "rec000.wav"), "--models", "music_detection",
                 "--out", str(tmp_path / "out2")])
    assert code == 0 and fresh_server.stats()["jobs"] == jobs_before     # done already: from the ledger
    assert (tmp_path / "out2" / "rec000" / "music_detection.json").is_file()


def test_downloads_of_a_list_mirror_relative_paths_with_the_client_rule(fresh_server, tmp_path):
    """a/take1.wav and b/take1.wav given as a list (no folder root) stay apart, as in client.download."""
    from shakelab.client import output_folder

    files = []
    for sub, seconds in (("a", 1.0), ("b", 2.0)):
        (tmp_path / "set" / sub).mkdir(parents=True)
        sf.write(tmp_path / "set" / sub / "take1.wav", np.full(int(seconds * 8000), 0.1, np.float32), 8000)
        files.append(tmp_path / "set" / sub / "take1.wav")
    result = batch.run(files, ["vocals"], client=client_for(fresh_server), progress=False,
                       download_to=tmp_path / "out")
    assert result.ok, result.failed[["source", "error"]].to_string()
    outs = [Path(p[0]).relative_to(tmp_path / "out").as_posix() for p in result.jobs["outputs"]]
    assert outs == ["a/take1/vocals.wav", "b/take1/vocals.wav"]
    assert outs[0] == (output_folder(files[0], root=tmp_path / "set") / "vocals.wav").as_posix()
    assert [sf.info(tmp_path / "out" / o).frames for o in outs] == [8000, 16000]
    assert "processing_s" in result.jobs.columns and "duration_s" not in result.jobs.columns


# --------------------------------------------------------------------------- the Tasks API
def tasks_client_for(server):
    from shakelab.tasks import TasksClient

    return TasksClient(api_key=server.token, base_url=server.base_url, ledger=Ledger())


def test_batch_on_the_tasks_api_one_task_per_file_and_a_cheap_rerun(fresh_server, tmp_path):
    files = make_audio(tmp_path / "rec", 4, music_every=2)
    music = {str(files[0]), str(files[2])}
    client = tasks_client_for(fresh_server)
    result = batch.run(tmp_path / "rec", ["music_detection", "vocals"], client=client, progress=False,
                       download_to=tmp_path / "out", concurrency=2)
    assert result.ok, result.failed[["source", "error"]].to_string()
    s = fresh_server.stats()
    # one upload and ONE task (two targets) per file; the Jobs API is never asked
    assert (s["uploads"], s["tasks"], s["jobs"]) == (4, 4, 0)
    assert s["requests"].get("POST /tasks") == 4 and not s["requests"].get("POST /job")
    jobs = result.jobs
    assert list(jobs["model"].astype(str)) == ["music_detection", "vocals"] * 4
    assert jobs["job_id"].is_unique and (jobs["action"] == "submitted").all()
    targets = {t.id: t for task in client.iter_tasks() for t in task.targets}
    assert set(jobs["job_id"]) == set(targets)                      # a row's job_id is its target's id
    vocals = jobs[jobs["model"] == "vocals"]
    assert all(Path(p).name == "vocals.wav" and Path(p).is_file() for paths in vocals["outputs"] for p in paths)
    seg = result.segments
    assert set(seg["source"]) == music and seg["provenance"].str.match(r"local:\w+:window=10s$").all()
    cov = result.coverage.set_index("source")
    assert (cov.loc[sorted(music), "finding"] == "music found").all()
    assert (cov.drop(sorted(music))["finding"] == "no music found").all()

    # a rerun costs nothing, as on the Jobs API: each target comes back from the ledger, the
    # outputs from the files already downloaded, the segments from the ledger (without download_to too)
    for download_to in (tmp_path / "out", None):
        requests_before = sum(fresh_server.stats()["requests"].values())
        again = batch.run(tmp_path / "rec", ["music_detection", "vocals"], client=client, progress=False,
                          download_to=download_to)
        assert again.ok and (again.jobs["action"] == "skipped").all()
        assert sum(fresh_server.stats()["requests"].values()) - requests_before == 0
        if download_to is not None:
            assert list(again.jobs["outputs"]) == list(jobs["outputs"])
        assert list(again.jobs["job_id"]) == list(jobs["job_id"])
        assert fresh_server.stats()["tasks"] == 4 and fresh_server.stats()["uploads"] == 4
        pd.testing.assert_frame_equal(again.segments, seg)


def test_a_tasks_batch_without_download_to_reruns_without_a_request(fresh_server, tmp_path):
    """The music segments of a Tasks target are kept in the ledger, as a job's: the rerun asks nothing."""
    make_audio(tmp_path / "rec", 2, music_every=1)
    client = tasks_client_for(fresh_server)
    first = batch.run(tmp_path / "rec", ["music_detection", "bass"], client=client, progress=False)
    assert first.ok, first.failed[["source", "error"]].to_string()
    assert len(first.segments) and fresh_server.stats()["requests"].get("GET /tasks/{id}")
    before = fresh_server.stats()["requests"]
    again = batch.run(tmp_path / "rec", ["music_detection", "bass"], client=client, progress=False)
    assert fresh_server.stats()["requests"] == before
    assert (again.jobs["action"] == "skipped").all() and list(again.jobs["job_id"]) == list(first.jobs["job_id"])
    pd.testing.assert_frame_equal(again.segments, first.segments)
    pd.testing.assert_frame_equal(again.coverage, first.coverage)
