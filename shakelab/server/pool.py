"""The model processes of the local server: long-lived children that run jobs sent as JSON lines.

A model runs in a ``python -m shakelab.server.pool`` child (a plain subprocess, not
multiprocessing, so the user's ``__main__`` is never re-imported), so the API never waits on the
GIL and a crashing decoder or the OOM killer cannot take the server down. Idle processes are kept
(up to :data:`MAX_IDLE_PROCESSES`) and shared by every server of the process; :func:`prewarm`
starts them ahead of the first job; each runs :func:`shakelab.server.processing.execute`.

Examples
--------
>>> run_in_process("music_detection", "song.wav", "out", "json", {})   # a 3-s recording
('ok', 3.0, ['out/music_detection.json'], {'detector': 'cnn', 'window': 10.0, 'allWindows': False})
>>> len(busy)
0
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["MAX_IDLE_PROCESSES", "MODEL_NICENESS", "Aborted", "ModelProcess", "ProcessDied", "ProcessTimeout",
           "RemoteError", "busy", "prewarm", "run_in_process"]

#: niceness added to model processes, so that the API process wins the CPU when both want it
MODEL_NICENESS = 5
MAX_IDLE_PROCESSES = 8


class ProcessDied(RuntimeError):
    """The process running a model ended without an answer (killed, out of memory, crashed)."""


class ProcessTimeout(RuntimeError):
    """A model ran longer than the job time limit; its process was ended."""


class Aborted(Exception):
    """The server stopped while a job ran; its process was ended and the job resumes next start."""


class RemoteError(RuntimeError):
    """An exception raised inside a model process, carried back by type name and message."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


class ModelProcess:
    """A long-lived ``python -m shakelab.server.pool`` child that runs jobs sent as JSON lines.

    A plain subprocess (not multiprocessing), so the user's ``__main__`` is never re-imported,
    whatever script or notebook started the server.
    """

    def __init__(self) -> None:
        import subprocess
        import sys

        import shakelab

        # the child imports this very shakelab, even when the parent found it through sys.path edits
        root = str(Path(shakelab.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        # Its own session: a kernel shutting down signals the children in its process group and
        # waits for them to vanish, which these (reaped by nobody until our atexit) never do in time.
        self.proc = subprocess.Popen([sys.executable, "-m", "shakelab.server.pool"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                     close_fds=True, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Tell whether the child still runs."""
        return self.proc.poll() is None

    def run(self, *args, abort: Callable[[], bool] = lambda: False, timeout: float = 7200.0) -> tuple:
        """Send one job and wait for its answer; ``abort()`` is polled twice a second."""
        import select

        deadline = time.monotonic() + timeout
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None  # both are pipes
        try:
            stdin.write(json.dumps(list(args)) + "\n")
            stdin.flush()
            while not select.select([stdout], [], [], 0.5)[0]:
                if abort():
                    self.close()
                    raise Aborted("the server stopped while the model ran")
                if time.monotonic() > deadline:
                    self.close()
                    raise ProcessTimeout(f"the model ran longer than {timeout:g} s and was stopped")
            line = stdout.readline()
        except (OSError, ValueError):
            line = ""
        if not line:
            self.close()
            raise ProcessDied("the model process ended without an answer")
        answer = json.loads(line)
        if answer[0] == "error":
            if answer[1] in ("ImportError", "ModuleNotFoundError"):
                raise ImportError(answer[2])
            raise RemoteError(answer[1], answer[2])
        return tuple(answer[1])

    def close(self) -> None:
        """End the child (killed: a model in the middle of a job is abandoned)."""
        with contextlib.suppress(Exception):
            self.proc.kill()
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]


_idle: list[ModelProcess] = []
busy: set[ModelProcess] = set()
_procs_lock = threading.Lock()
_atexit_registered = False


def run_in_process(*args, abort: Callable[[], bool] = lambda: False, timeout: float = 7200.0) -> tuple:
    """Run :func:`shakelab.server.processing.execute` in an idle model process (started on demand, then reused)."""
    global _atexit_registered
    with _procs_lock:
        proc = None
        while _idle and proc is None:
            candidate = _idle.pop()
            proc = candidate if candidate.alive() else None
        if proc is None:
            proc = ModelProcess()
            if not _atexit_registered:
                import atexit

                atexit.register(_close_all)
                _atexit_registered = True
        busy.add(proc)
    try:
        result = proc.run(*args, abort=abort, timeout=timeout)
    except RemoteError:
        _release(proc)
        raise
    except Exception:
        with _procs_lock:
            busy.discard(proc)
        proc.close()
        raise
    _release(proc)
    return result


def prewarm(n: int) -> None:
    """Start model processes in the background until ``n`` are idle, so the first jobs skip the imports."""
    def spawn():
        for _ in range(n):
            with _procs_lock:
                if len(_idle) + len(busy) >= n or len(_idle) >= MAX_IDLE_PROCESSES:
                    return
            proc = ModelProcess()
            _release(proc)

    global _atexit_registered
    with _procs_lock:
        if not _atexit_registered:
            import atexit

            atexit.register(_close_all)
            _atexit_registered = True
    threading.Thread(target=spawn, name="shakelab-prewarm", daemon=True).start()


def _release(proc: ModelProcess) -> None:
    with _procs_lock:
        busy.discard(proc)
        if proc.alive() and len(_idle) < MAX_IDLE_PROCESSES:
            _idle.append(proc)
            return
    proc.close()


def _close_all() -> None:
    """At interpreter exit: end every model process (unfinished jobs resume at the next start)."""
    with _procs_lock:
        procs = list(_idle) + list(busy)
        _idle.clear()
    for proc in procs:
        proc.close()


def _child_main() -> None:
    """Body of a model process: read ``[model, src, out_dir, fmt, options]`` lines, answer JSON lines."""
    import signal
    import sys
    import warnings

    # Ctrl-C / a kernel interrupt reaches the whole process group; the parent decides when a model
    # process ends (it closes stdin or kills it), so the child ignores SIGINT instead of printing a
    # KeyboardInterrupt traceback into the notebook.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(MODEL_NICENESS)
    warnings.simplefilter("ignore")
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    try:  # the slow imports, before the first job arrives
        import librosa  # noqa: F401
        import scipy.signal  # noqa: F401
        import soundfile  # noqa: F401
    except Exception:
        pass  # reported per job by execute()
    from shakelab.server import processing

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # whatever the models print cannot corrupt the protocol
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    for line in sys.stdin:
        try:
            answer = ["ok", list(processing.execute(*json.loads(line)))]
        except BaseException as exc:  # everything goes back to the parent
            answer = ["error", type(exc).__name__, str(exc)]
        proto.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    _child_main()
