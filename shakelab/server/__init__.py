"""The local AudioShake Jobs API: a faithful offline implementation of the legacy API page.

FastAPI + uvicorn in a background thread of the current process (:class:`LocalServer`,
:func:`start`), or in the foreground for the command line (:func:`serve`). State is SQLite
plus files in a data directory, so assets and jobs survive a restart. The per-user server
that ``connect()`` shares between notebooks (a detached ``shakelab serve``) is found and
started by :mod:`shakelab.server.daemon`.

Layout (one concern per module): :mod:`~shakelab.server.lifecycle` (start, stop, threads,
uvicorn, the data dir lock), :mod:`~shakelab.server.app` (the ASGI app: the gate, one router
per API), :mod:`~shakelab.server.api_jobs` / :mod:`~shakelab.server.api_files` /
:mod:`~shakelab.server.api_hooks` (the routers), :mod:`~shakelab.server.auth` (auth schemes),
:mod:`~shakelab.server.web` (error answers, the JSON parser), :mod:`~shakelab.server.uploads`
(files and links into the store), :mod:`~shakelab.server.network` (URL and address vetting),
:mod:`~shakelab.server.store`, :mod:`~shakelab.server.links` (signed links),
:mod:`~shakelab.server.faults`, :mod:`~shakelab.server.worker` (the job queue),
:mod:`~shakelab.server.pool` (model processes), :mod:`~shakelab.server.callbacks`,
:mod:`~shakelab.server.processing` (probe, detection, stems; the models behind it).

Examples
--------
>>> from shakelab.server import LocalServer, start    # a running example: shakelab.server.lifecycle
>>> LocalServer.isolation
'process'
"""

from __future__ import annotations

from shakelab.server.lifecycle import (DATA_DIR_ENV, DataDirInUse, LocalServer, LocalServerError, _stop_embedded,
                                       default_data_dir, read_holder, serve, start)

__all__ = ["DATA_DIR_ENV", "DataDirInUse", "LocalServer", "LocalServerError", "_stop_embedded", "default_data_dir",
           "read_holder", "serve", "start"]
