"""shakelab: notebook toolkit for the AudioShake API (the legacy Jobs API and the Tasks API).

``import shakelab`` stays light: pandas, matplotlib, ipywidgets, librosa and the local
server are imported only when the functions that need them are used.

Examples
--------
>>> import shakelab
>>> client = shakelab.connect()
>>> segments = client.music_detection("song.wav", progress=False)   # 3 s of music
>>> segments[["start_time", "end_time"]].values.tolist()
[[0.0, 3.0]]
"""

from __future__ import annotations

import importlib
from typing import Any

from shakelab.errors import (  # noqa: F401  (re-exported)
    APIError, AuthenticationError, BatchCancelled, JobFailedError, JobTimeoutError, MalformedResponseError,
    NotFoundError, RateLimitError, ServerError, ShakelabError, TransportError, UnconfirmedJobError, ValidationError,
)
from shakelab.errors import TaskFailedError, UnconfirmedTaskError  # noqa: F401  (re-exported)

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562).
_LAZY = {
    "Client": "shakelab.client",
    "connect": "shakelab.client",
    "TasksClient": "shakelab.tasks",
    "Task": "shakelab.models",
    "Target": "shakelab.models",
    "TaskOutput": "shakelab.models",
    "Asset": "shakelab.models",
    "Job": "shakelab.models",
    "OutputAsset": "shakelab.models",
    "JobStatus": "shakelab.models",
    "jobs_frame": "shakelab.frames",
    "tasks_frame": "shakelab.frames",
    "segments_frame": "shakelab.frames",
    "usage_frame": "shakelab.frames",
    "plot_detection": "shakelab.plot",
    "plot_spectrogram": "shakelab.plot",
    "plot_timeline": "shakelab.plot",
    "plot_confidence": "shakelab.plot",
    "plot_usage": "shakelab.plot",
    "Ledger": "shakelab.ledger",
}


# Submodules reachable as attributes (``shakelab.segments.merge``) without importing them up front.
_SUBMODULES = {"audio", "batch", "catalog", "client", "evaluation", "frames", "labels", "ledger", "migrate",
               "models", "plot", "segments", "tasks", "transport", "widgets"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"shakelab.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shakelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
