"""The main job, offline: what ``make demo`` and ``shakelab demo`` run.

Starts (or reuses) the embedded local Jobs API server, uploads the demo recording,
runs ``music_detection`` and the ``vocals`` stem model through the HTTP API, waits,
downloads every output into ``out/demo/`` and prints the detection segments as a table.
With ``AUDIOSHAKE_API_TOKEN`` set, the same steps run against the real service.

Examples
--------
>>> from shakelab.demo import run
>>> segments = run(out_dir="out/demo", source="song.wav")   # the demo's 3-s excerpt, for speed
running music_detection, vocals on song.wav ...
<BLANKLINE>
2 jobs completed; outputs in out/demo/:
  music_detection.json ...
  vocals.wav ...
<BLANKLINE>
Music found in song.wav (segments where music is present, on the 10-second grid):
 start_time  end_time  confidence
      0.000     3.000       ...
>>> len(segments)
1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from shakelab.errors import ValidationError

if TYPE_CHECKING:
    import pandas

# Inside the package, so that `shakelab demo` works from an installed wheel in any folder
# (data/demo.flac in the checkout is a link to it).
DEMO_RECORDING = Path(__file__).resolve().parent / "data" / "demo.flac"
DEMO_MODELS = ("music_detection", "vocals")


def run(out_dir: str | Path = "out/demo", *, source: str | Path = DEMO_RECORDING) -> pandas.DataFrame:
    """Upload ``source``, run detection and one stem model, download, print the segments.

    Parameters
    ----------
    out_dir : str or Path
        Where the outputs go (created if missing).
    source : str or Path
        The recording to process; the shipped demo recording by default.

    Returns
    -------
    pandas.DataFrame
        The music-detection segments (columns of :func:`shakelab.frames.segments_frame`).
    """
    import shakelab
    from shakelab.frames import segments_frame

    source = Path(source)
    if not source.is_file():
        raise ValidationError(f"`source` must be an existing audio file, not {str(source)!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    client = shakelab.connect()
    print(f"running {', '.join(DEMO_MODELS)} on {source.name} ...", flush=True)
    jobs = client.submit(source, list(DEMO_MODELS), wait=True, progress=False)
    files: list[Path] = []
    for job in jobs:
        files.extend(client.download(job, out_dir, folder="", progress=False))  # out_dir is the demo's own
    print(f"\n{len(jobs)} jobs completed; outputs in {out_dir}/:")
    for path in files:
        print(f"  {path.name:<32} {path.stat().st_size:>10,d} bytes")

    detection_job = next(j for j in jobs if j.model == "music_detection")
    detection_file = next(p for p in files if p.suffix == ".json")
    frame = segments_frame(json.loads(detection_file.read_text()), job=detection_job, source=source.name,
                           provenance=client.provenance(detection_job))
    print(f"\nMusic found in {source.name} (segments where music is present, on the 10-second grid):")
    if frame.empty:
        print("  no music found")
    else:
        print(frame[["start_time", "end_time", "confidence"]].to_string(index=False, float_format="%.3f"))
    return frame
