"""Fault injection for the local server, so clients can be tested against a misbehaving service.

In process: ``server.faults.add(...)``; over HTTP: ``POST /_faults`` with the same keys.

Examples
--------
>>> faults = Faults()
>>> faults.add(method="GET", path="/job/*", status=429, times=1)
>>> faults.take("GET", "/job/cabc").status
429
>>> faults.take("GET", "/job/cabc") is None      # used up
True
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass, field
from typing import Any

from shakelab.errors import ValidationError

VARIANTS = (None, "stemAssets", "nested")


@dataclass
class Fault:
    """One injected answer. See :meth:`Faults.add` for the meaning of each field."""

    method: str = "GET"
    path: str = "/job/*"
    status: int | None = 429
    times: int | None = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    drop: bool = False
    delay_after: float = 0.0
    after: bool = False


class Faults:
    """The faults a server injects: per-request answers plus global shape and timing switches.

    Attributes
    ----------
    variant : None, 'stemAssets' or 'nested'
        Shape of ``GET /job/{id}`` payloads: the page's ``outputAssets``/``metadata`` (None), the older
        ``stemAssets``/``stemMetadata`` names, or ``outputAssets`` nested inside ``sourceAsset``.
    not_found_for : float
        ``GET /job/{id}`` answers 404 for this many seconds after the job's creation.
    processing_delay : float
        Each job takes at least this many seconds (the wait is interrupted when the server stops).
    fail_models : frozenset of str
        Jobs (and Tasks API targets) of these models fail (``processing_error``, "fault
        injected") instead of running: one target errors while the others complete.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._variant: str | None = None
        self._not_found_for = 0.0
        self._processing_delay = 0.0
        self._fail_models: frozenset[str] = frozenset()

    # -- switches ---------------------------------------------------------------------------
    @property
    def variant(self) -> str | None:
        """Shape of ``GET /job/{id}`` payloads (see the class docstring)."""
        return self._variant

    @variant.setter
    def variant(self, value: str | None) -> None:
        if value not in VARIANTS:
            raise ValidationError(f"`variant` must be one of None, 'stemAssets', 'nested', not {value!r}")
        self._variant = value

    @property
    def not_found_for(self) -> float:
        """Seconds after its creation during which ``GET /job/{id}`` answers 404."""
        return self._not_found_for

    @not_found_for.setter
    def not_found_for(self, value: float) -> None:
        self._not_found_for = _seconds("not_found_for", value)

    @property
    def processing_delay(self) -> float:
        """Seconds each job takes at least."""
        return self._processing_delay

    @processing_delay.setter
    def processing_delay(self, value: float) -> None:
        self._processing_delay = _seconds("processing_delay", value)

    @property
    def fail_models(self) -> frozenset[str]:
        """Models whose jobs fail instead of running."""
        return self._fail_models

    @fail_models.setter
    def fail_models(self, value) -> None:
        if isinstance(value, str) or not all(isinstance(m, str) for m in value):
            raise ValidationError(f"`fail_models` must be a list of model names, not {value!r}")
        self._fail_models = frozenset(value)

    # -- per-request faults -----------------------------------------------------------------
    def add(self, method: str = "GET", path: str = "/job/*", status: int | None = 429, times: int | None = 1,
            headers: dict[str, str] | None = None, body: Any = None, delay: float = 0.0,
            drop: bool = False, delay_after: float = 0.0, after: bool = False) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path`` with a fault.

        Parameters
        ----------
        method : str
            HTTP method, case-insensitive; ``"*"`` matches any.
        path : str
            fnmatch pattern on the URL path (no query), e.g. ``"/job/*"``.
        status : int or None
            Status to answer. ``None`` answers normally (after ``delay``) unless ``drop``.
        times : int or None
            How many matching requests get the fault; ``None`` means every one until :meth:`clear`.
        headers : dict, optional
            Extra response headers. A 429 without headers gets ``Retry-After: 1``.
        body : dict, str or bytes, optional
            A dict is sent as JSON; str/bytes are sent raw (``Content-Type: application/json``
            unless ``headers`` says otherwise), e.g. garbage. ``None`` sends ``{error, message}``.
        delay : float
            Seconds to wait before answering (or before passing the request on when ``status`` is None).
        drop : bool
            Close the connection without any answer.
        delay_after : float
            With ``status=None``: let the request be handled (a job is created), then hold the
            answer this many seconds: the client's "it reached the server but the answer came
            too late" case.
        after : bool
            Handle the request first (the job or task is created), then lose its answer: drop the
            connection (``drop`` or ``status=None``) or answer ``status`` (e.g. 502) instead. The
            client's "created, but the answer never came" case.

        Examples
        --------
        >>> f = Faults(); f.add(path="/upload", method="POST", status=503, times=2)
        """
        if not isinstance(method, str) or not method:
            raise ValidationError(f"`method` must be an HTTP method or '*', not {method!r}")
        if not isinstance(path, str) or not path.startswith(("/", "*")):
            raise ValidationError(f"`path` must be a URL path pattern such as '/job/*', not {path!r}")
        if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
            raise ValidationError(f"`status` must be an HTTP status code 100-599 or None, not {status!r}")
        if times is not None and not (isinstance(times, int) and times >= 1):
            raise ValidationError(f"`times` must be a positive integer or None, not {times!r}")
        if headers is not None and not (isinstance(headers, dict)
                                        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
            raise ValidationError(f"`headers` must be a dict of str to str, not {headers!r}")
        if body is not None and not isinstance(body, (dict, list, str, bytes)):
            raise ValidationError(f"`body` must be a dict, list, str or bytes, not {type(body).__name__}")
        delay = _seconds("delay", delay)
        delay_after = _seconds("delay_after", delay_after)
        hdrs = dict(headers or {})
        if status == 429 and headers is None:
            hdrs["Retry-After"] = "1"
        with self._lock:
            self._faults.append(Fault(method.upper(), path, status, times, hdrs, body, delay, bool(drop),
                                      delay_after, bool(after)))

    def clear(self) -> None:
        """Forget every fault and reset the switches to normal behaviour."""
        with self._lock:
            self._faults.clear()
        self._variant = None
        self._not_found_for = 0.0
        self._processing_delay = 0.0
        self._fail_models = frozenset()

    def take(self, method: str, path: str) -> Fault | None:
        """Return the first fault matching ``method`` and ``path`` (of any route), using up one of its ``times``.

        None when no fault matches.
        """
        with self._lock:
            for i, f in enumerate(self._faults):
                if f.method not in ("*", method.upper()) or not fnmatch.fnmatchcase(path, f.path):
                    continue
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        del self._faults[i]
                return f
        return None

    def pending(self) -> list[Fault]:
        """Return a copy of the faults still armed."""
        with self._lock:
            return [Fault(**vars(f)) for f in self._faults]

    def apply(self, command: dict) -> None:
        """Apply one ``POST /_faults`` command (several keys may be combined).

        ``{"add": {...}}``, ``{"clear": true}``, ``{"variant": v}``, ``{"not_found_for": s}``,
        ``{"processing_delay": s}`` or ``{"fail_models": [...]}``.
        """
        if not isinstance(command, dict) or not command:
            raise ValidationError("the body must be a JSON object with one of 'add', 'clear', 'variant', "
                                  f"'not_found_for', 'processing_delay', 'fail_models', not {command!r}")
        unknown = set(command) - {"add", "clear", "variant", "not_found_for", "processing_delay", "fail_models"}
        if unknown:
            raise ValidationError(f"unknown key(s) {sorted(unknown)!r}; allowed: 'add', 'clear', 'variant', "
                                  "'not_found_for', 'processing_delay', 'fail_models'")
        if command.get("clear"):
            self.clear()
        if "add" in command:
            spec = command["add"]
            if not isinstance(spec, dict):
                raise ValidationError(f"`add` must be an object of fault keys, not {spec!r}")
            allowed = set(Fault.__dataclass_fields__)
            bad = set(spec) - allowed
            if bad:
                raise ValidationError(f"unknown fault key(s) {sorted(bad)!r}; allowed: {sorted(allowed)!r}")
            self.add(**spec)
        if "variant" in command:
            self.variant = command["variant"]
        if "not_found_for" in command:
            self.not_found_for = command["not_found_for"]
        if "processing_delay" in command:
            self.processing_delay = command["processing_delay"]
        if "fail_models" in command:
            if not isinstance(command["fail_models"], list):
                raise ValidationError(f"`fail_models` must be a list of model names, not {command['fail_models']!r}")
            self.fail_models = command["fail_models"]


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < 1e6):
        raise ValidationError(f"`{name}` must be a number of seconds >= 0, not {value!r}")
    return float(value)
