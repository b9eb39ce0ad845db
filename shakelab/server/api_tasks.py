"""HTTP routes of the local Tasks API (tasks-api.md), on the same port, store and workers as the Jobs API.

``POST /assets``, ``GET /assets``, ``POST /tasks`` (``assetId`` or ``url``), ``GET /tasks/{id}``,
``GET /tasks?skip=&take=`` (newest first) and ``GET /tasks/statistics?name=usage|distribution``.
Every request needs ``x-api-key: <the server's token>``; every error is Fastify-shaped
``{statusCode, error, message}`` (plus ``code``, a short name of the problem). Each target runs
as one job through the Jobs API's worker pool, its model once for all its formats; see
:mod:`shakelab.server.tasks_store`.

Local-only: a ``music_detection`` target may carry ``window`` (seconds) and ``all_windows``
(bool), as the Jobs API's ``metadata`` may, and a completed one reports
``shakelab: {detector, window, allWindows}``.

Examples
--------
>>> import requests, shakelab.server as s, tempfile
>>> with tempfile.TemporaryDirectory() as d, s.LocalServer(d, token="k") as srv:
...     requests.get(f"{srv.base_url}/tasks", headers={"x-api-key": "k"}, timeout=10).json()
[]
"""

from __future__ import annotations

import http.client
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from shakelab import catalog
from shakelab.errors import scrubbed_logger
from shakelab.server.auth import ApiKeyAuth
from shakelab.server.network import check_url
from shakelab.server.store import iso
from shakelab.server.tasks_store import state
from shakelab.server.uploads import clean_name, fetch_link, in_link_pool, receive_upload
from shakelab.server.web import APIProblem, read_json
from shakelab.server.web import typename as _typename

log = scrubbed_logger("shakelab.server")

MAX_TARGETS = 20
#: longest ``metadata`` string kept (the service's limit is unconfirmed; 4096 is the figure seen)
MAX_METADATA_CHARS = 4096
MAX_TAKE = 100
#: the keys a target may have (``window``/``all_windows``: local-only, ``music_detection`` only)
TARGET_KEYS = ("model", "formats", "residual", "variant", "language", "transcriptUrl", "transcriptAssetId",
               "window", "all_windows")
#: ``error.code`` of a failed target, from the job's status code (HTTP-like numbers)
ERROR_CODES = {"invalid_audio": 422, "input_too_long": 413, "asset_missing": 404, "insufficient_storage": 507,
               "processing_timeout": 504, "processing_unavailable": 503, "processing_error": 500,
               "internal_error": 500}


def fastify_problem(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Answer an error Fastify-style: ``{statusCode, error: <reason phrase>, message, code: <error>}``.

    The arguments are :func:`shakelab.server.web.problem`'s, so the gate and the app's error
    handlers write every error of the Tasks API with it (:class:`TasksRouter`).

    Examples
    --------
    >>> fastify_problem(404, "task_not_found", "no task").body
    b'{"statusCode":404,"error":"Not Found","message":"no task","code":"task_not_found"}'
    """
    body = {"statusCode": status, "error": http.client.responses.get(status, "Error"), "message": message,
            "code": error}
    return JSONResponse(body, status_code=status, headers=headers)


class TasksRouter(APIRouter):
    """The Tasks API's router: errors in its shape (the gate reads ``problem``)."""

    problem = staticmethod(fastify_problem)


# -- validation --------------------------------------------------------------------------------
def _bad(message: str, code: str = "invalid_field") -> APIProblem:
    return APIProblem(400, code, message[:600])


def _models_hint() -> str:
    return ", ".join(repr(m) for m in catalog.LOCAL_MODELS)


def validate_target(raw: object, where: str) -> dict[str, Any]:
    """Check one request target against this server's models; return it normalised.

    Raises :class:`~shakelab.server.app.APIProblem` (400) naming ``where`` and the field.

    Examples
    --------
    >>> validate_target({"model": "bass", "formats": ["wav"]}, "targets[0]")["formats"]
    ['wav']
    >>> validate_target({"model": "bass", "format": "wav"}, "targets[0]")
    Traceback (most recent call last):
    ...
    shakelab.server.web.APIProblem: `targets[0].format` is not a field of a target (allowed: 'model', \
'formats', 'residual', 'variant', 'language', 'transcriptUrl', 'transcriptAssetId', 'window', 'all_windows'); \
did you mean `formats` (an array)?
    """
    if not isinstance(raw, dict):
        raise _bad(f"`{where}` must be an object {{model, formats}}, not {_typename(raw)}")
    unknown = [k for k in raw if k not in TARGET_KEYS]
    if unknown:
        hint = "; did you mean `formats` (an array)?" if unknown[0] == "format" else ""
        raise _bad(f"`{where}.{str(unknown[0])[:50]}` is not a field of a target (allowed: "
                   f"{', '.join(repr(k) for k in TARGET_KEYS)}){hint}")
    model = raw.get("model")
    if model is None:
        raise _bad(f"`{where}.model` is required; one of {_models_hint()}", "missing_field")
    if not isinstance(model, str) or model not in catalog.LOCAL_MODELS:
        shown = repr(model[:100]) if isinstance(model, str) else f"{_typename(model)} {model!r}"
        extra = (" (a model of the AudioShake service that this local server does not run)"
                 if isinstance(model, str) and model in catalog.CREDITS_PER_MINUTE else "")
        raise _bad(f"`{where}.model` must be one of {_models_hint()}, not {shown}{extra}", "unknown_model")
    allowed = catalog.LOCAL_MODELS[model]
    formats = raw.get("formats")
    if formats is None:
        raise _bad(f"`{where}.formats` is required: an array of {', '.join(map(repr, allowed))} for "
                   f"model {model!r}", "missing_field")
    if not isinstance(formats, list) or not formats:
        raise _bad(f"`{where}.formats` must be a non-empty array of formats, e.g. [{allowed[0]!r}], "
                   f"not {_typename(formats)} {formats!r}")
    for i, fmt in enumerate(formats):
        if not isinstance(fmt, str) or fmt not in allowed:
            shown = repr(fmt[:100]) if isinstance(fmt, str) else f"{_typename(fmt)} {fmt!r}"
            extra = (" (the service offers it; this local server does not write video containers)"
                     if fmt == "mp4" and model != "music_detection" else "")
            raise _bad(f"`{where}.formats[{i}]` must be one of {', '.join(map(repr, allowed))} for model "
                       f"{model!r}, not {shown}{extra}", "unsupported_format")
    if len(set(formats)) != len(formats):
        raise _bad(f"`{where}.formats` must not repeat a format: {formats!r}")
    variant = raw.get("variant")
    if variant is not None:
        documented = catalog.TASK_VARIANTS.get(model, {})
        if not documented:
            raise _bad(f"`{where}.variant` is not offered for model {model!r}; only "
                       f"{', '.join(repr(m) for m in catalog.TASK_VARIANTS)} have variants")
        if not isinstance(variant, str) or variant not in documented:
            raise _bad(f"`{where}.variant` must be one of {', '.join(map(repr, documented))} for model "
                       f"{model!r}, not {variant!r}"[:300])
    if raw.get("residual") is not None and not isinstance(raw["residual"], bool):
        raise _bad(f"`{where}.residual` must be true or false, not {raw['residual']!r}"[:300])
    if raw.get("language") is not None and not (isinstance(raw["language"], str) and 0 < len(raw["language"]) <= 35):
        raise _bad(f"`{where}.language` must be a language code such as 'en', not {raw['language']!r}"[:300])
    for key in ("transcriptUrl", "transcriptAssetId"):
        if raw.get(key) is not None:
            raise _bad(f"`{where}.{key}` applies only to 'alignment', which this local server does not run")
    if "window" in raw or "all_windows" in raw:  # local-only detection options, as in the Jobs API
        key = "window" if "window" in raw else "all_windows"
        if model != "music_detection":
            raise _bad(f"`{where}.{key}` applies only to 'music_detection', not to {model!r}")
        w = raw.get("window")
        if "window" in raw and (isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.5 <= w <= 600):
            raise _bad(f"`{where}.window` must be a number of seconds between 0.5 and 600, not {w!r}"[:300])
        if "all_windows" in raw and not isinstance(raw["all_windows"], bool):
            raise _bad(f"`{where}.all_windows` must be true or false, not {raw['all_windows']!r}"[:300])
    return {k: raw[k] for k in TARGET_KEYS if raw.get(k) is not None}


def validate_task(body: dict) -> dict[str, Any]:
    """Check a ``POST /tasks`` body completely (before anything is fetched or stored).

    Returns ``{assetId | url, metadata, targets}``; raises a 400 naming the field otherwise.

    Examples
    --------
    >>> validate_task({"assetId": "c1", "targets": [{"model": "vocals", "formats": ["wav"]}]})["assetId"]
    'c1'
    >>> validate_task({"assetId": "c1", "url": "https://x/a.wav", "targets": []})
    Traceback (most recent call last):
    ...
    shakelab.server.web.APIProblem: send exactly one of `url` and `assetId`, not both
    """
    allowed = ("url", "assetId", "targets", "metadata", "callbackUrl")
    unknown = [k for k in body if k not in allowed]
    if unknown:
        raise _bad(f"`{str(unknown[0])[:50]}` is not a field of a task (allowed: "
                   f"{', '.join(map(repr, allowed))})")
    url, asset_id = body.get("url"), body.get("assetId")
    if url is not None and asset_id is not None:
        raise _bad("send exactly one of `url` and `assetId`, not both")
    if url is None and asset_id is None:
        raise _bad("one of `url` (a public https URL of the audio) or `assetId` (the `id` of POST /assets) "
                   "is required", "missing_field")
    if asset_id is not None and (not isinstance(asset_id, str) or not 0 < len(asset_id) <= 100):
        raise _bad(f"`assetId` must be the string id returned by POST /assets, not {_typename(asset_id)} "
                   f"{asset_id!r}"[:300])
    if url is not None:
        try:
            check_url(url, field="url")
        except ValueError as exc:
            raise _bad(str(exc), "invalid_url") from None
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, str):
        raise _bad(f"`metadata` must be a string (kept as it is and echoed back), not {_typename(metadata)}")
    if metadata is not None and len(metadata) > MAX_METADATA_CHARS:
        raise _bad(f"`metadata` must be at most {MAX_METADATA_CHARS} characters, not {len(metadata)}")
    callback = body.get("callbackUrl")  # not documented: accepted (as AudioShake's demo sends it) and ignored
    if callback is not None and not isinstance(callback, str):
        raise _bad(f"`callbackUrl` must be a string URL, not {_typename(callback)}")
    targets = body.get("targets")
    if targets is None:
        raise _bad("`targets` is required: an array of 1 to 20 {model, formats} objects", "missing_field")
    if not isinstance(targets, list) or not 1 <= len(targets) <= MAX_TARGETS:
        n = f"{len(targets)} targets" if isinstance(targets, list) else f"{_typename(targets)}"
        raise _bad(f"`targets` must be an array of 1 to {MAX_TARGETS} targets, not {n}")
    checked = [validate_target(t, f"targets[{i}]") for i, t in enumerate(targets)]
    seen: dict[tuple, int] = {}
    for i, t in enumerate(checked):
        key = (t["model"], t.get("variant"))
        if key in seen:
            label = t["model"] + (f" ({t['variant']})" if t.get("variant") else "")
            raise _bad(f"`targets[{i}]` repeats `targets[{seen[key]}]` ({label}); targets must be unique: "
                       "ask for several formats in one target's `formats`")
        seen[key] = i
    out: dict[str, Any] = {"metadata": metadata, "targets": checked}
    out["assetId" if asset_id is not None else "url"] = asset_id if asset_id is not None else url
    return out


def query_int(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    """Return an integer query parameter within bounds, or raise a 400 naming it and the bad value."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    bounds = f"from {low} to {high}" if high is not None else f">= {low}"
    text = raw.strip()
    if not (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())) or len(text) > 12:
        raise _bad(f"`{name}` must be an integer {bounds}, not {raw[:50]!r}", "invalid_query")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise _bad(f"`{name}` must be an integer {bounds}, not {value}", "invalid_query")
    return value


# -- payloads ----------------------------------------------------------------------------------
def _minutes(seconds: float) -> str:
    """Return minutes as the statistics' string: at most 3 decimals, no trailing zeros ('12.5', '0')."""
    return f"{seconds / 60.0:.3f}".rstrip("0").rstrip(".")


def _number(value: float) -> float | int:
    """Return a whole number of credits as an int (``4``, as the service shows it), else the float."""
    return int(value) if float(value).is_integer() else value


def output_name(model: str, variant: str | None) -> str:
    """Return an output's ``name``: the model key, without extension, with ``_<variant>`` for a variant.

    Examples
    --------
    >>> output_name("vocals", "high_quality")
    'vocals_high_quality'
    """
    return f"{model}_{variant}" if variant else model


def target_payload(ctx, target: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Return the API object of one target (optional fields explicit null; fresh signed links)."""
    s = state(target)
    name = output_name(target["model"], target["variant"])
    output = []
    if s["status"] == "completed":
        # one file per format: of the target's one job (or of its job per format, in an older data dir)
        by_format: dict[str, dict] = {}
        for asset_id in (i for j in target["jobs"] for i in j["outputs"]):
            asset = ctx.store.get_asset(asset_id)
            if asset is not None:
                by_format.setdefault(asset["format"], asset)
        for fmt in target["formats"]:
            asset = by_format.get(fmt)
            if asset is not None:
                output.append({"name": name, "format": fmt,
                               "link": ctx.signer.make(base_url, asset["id"], f"{name}.{fmt}"),
                               "type": asset["file_type"]})
    error = None
    if s["status"] == "error":
        job = s["failed"]
        error = {"code": ERROR_CODES.get(job["status_code"], 500), "message": job["status_message"]}
    cost = None
    if s["status"] == "completed" and s["duration"] is not None:
        cost = _number(catalog.target_cost(target["model"], s["duration"], target["variant"]))
    elif s["status"] == "error":
        cost = 0  # a failed target is not billed
    updated = max([j["updated_at"] for j in target["jobs"]] + [target["created_at"]])
    payload: dict[str, Any] = {
        "id": target["id"], "taskId": target["task_id"], "model": target["model"], "status": s["status"],
        "formats": target["formats"], "output": output, "cost": cost, "error": error,
        "duration": None if s["duration"] is None else round(s["duration"], 3),
        "residual": target["residual"], "variant": target["variant"], "language": target["language"],
        "createdAt": iso(target["created_at"]), "updatedAt": iso(updated),
    }
    detail = next((j["detail"] for j in target["jobs"] if j.get("detail")), None)
    if detail and s["status"] == "completed":  # local-only: how music detection was computed
        payload["shakelab"] = detail
    return payload


def task_payload(ctx, task: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Return the API object of a task: no status of its own; ``completedAt``, ``cost`` once all finished.

    Absent fields are omitted (``completedAt``/``cost`` while a target processes, ``metadata``
    when none was sent, ``assetId`` for a ``url`` task and the reverse).
    """
    targets = [target_payload(ctx, t, base_url) for t in task["targets"]]
    states = [state(t) for t in task["targets"]]
    out: dict[str, Any] = {"id": task["id"], "createdAt": iso(task["created_at"])}
    if all(s["status"] != "processing" for s in states):
        out["completedAt"] = iso(max(s["finished_at"] for s in states))
    out["clientId"] = task["client_id"]
    if "completedAt" in out:
        out["cost"] = _number(sum(t["cost"] or 0 for t in targets))
    if task["url"] is not None:
        out["url"] = task["url"]
    else:
        out["assetId"] = task["asset_id"]
    if task["metadata"] is not None:
        out["metadata"] = task["metadata"]
    out["targets"] = targets
    return out


def asset_payload(ctx, asset: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Return ``{id, format, name, link}`` (the Jobs API's upload without ``fileType``)."""
    return {"id": asset["id"], "format": asset["format"], "name": asset["name"],
            "link": ctx.signer.make(base_url, asset["id"], asset["name"])}


def statistics(ctx, name: str) -> list[dict[str, Any]]:
    """Return the statistics ``name`` of the last 3 months; only completed targets count, by finish month.

    ``usage``: ``[{month, totalTargets, totalMinutes: str}]``, zeros included; ``distribution``
    (undocumented shape): ``[{model, totalTargets, totalMinutes: str}]``, most used first.
    """
    keys, done = ctx.tasks.finished_targets(3)
    if name == "usage":
        return [{"month": k, "totalTargets": sum(d["month"] == k for d in done),
                 "totalMinutes": _minutes(sum(d["seconds"] for d in done if d["month"] == k))} for k in keys]
    models = sorted({d["model"] for d in done})
    rows = [{"model": m, "totalTargets": sum(d["model"] == m for d in done),
             "totalMinutes": _minutes(sum(d["seconds"] for d in done if d["model"] == m))} for m in models]
    return sorted(rows, key=lambda r: -r["totalTargets"])


def target_finished(ctx, job: dict[str, Any]) -> None:
    """Worker hook: when ``job`` finished the last job of its target, POST the task to the webhook (once)."""
    target_id = job.get("target_id")
    if not target_id or not getattr(ctx, "webhook", None) or ctx.tasks is None:
        return
    task = ctx.tasks.task_of_target(target_id)
    target = next((t for t in task["targets"] if t["id"] == target_id), None) if task else None
    if target is None or state(target)["status"] == "processing" or not ctx.tasks.mark_notified(target_id):
        return
    ctx.webhooks.send(ctx.webhook, target_id, task_payload(ctx, task, ctx.base_url))


# -- the router --------------------------------------------------------------------------------
def build_router(ctx) -> APIRouter:
    """Build the Tasks API routes bound to a server context ``ctx``.

    ``ctx`` (a started :class:`~shakelab.server.LocalServer`) provides ``token``, ``store``,
    ``tasks`` (a :class:`~shakelab.server.tasks_store.TasksStore`), ``signer``, ``worker``,
    ``max_upload_bytes``, ``allow_private_links``, ``link_timeout``, ``count_upload()``,
    ``count_task()`` and ``asset_payload()`` (used by the shared upload code).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> [r.path for r in build_router(SimpleNamespace(token="k", store=None)).routes]
    ['/assets', '/assets', '/tasks', '/tasks', '/tasks/statistics', '/tasks/{task_id}']
    """
    router = TasksRouter(dependencies=[Depends(ApiKeyAuth(ctx.token))])
    store = ctx.store

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @router.post("/assets")
    async def upload_asset(request: Request):
        uploaded = await receive_upload(ctx, request, base(request))
        return JSONResponse({k: uploaded[k] for k in ("id", "format", "name", "link")})

    @router.get("/assets")
    async def list_assets(request: Request):
        return JSONResponse([asset_payload(ctx, a, base(request)) for a in store.source_assets()])

    @router.post("/tasks")
    async def create_task(request: Request):
        spec = validate_task(await read_json(request))
        url = spec.get("url")
        if url is None:
            asset = store.get_asset(spec["assetId"])
            if asset is None:
                raise APIProblem(404, "asset_not_found", f"`assetId` {spec['assetId']!r} is not an asset on this "
                                 "server; upload the file first (POST /assets) and use the `id` it returns")
            asset_id = asset["id"]
        else:
            name = clean_name(url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1], "download")
            # the same vetting, size and time caps as /upload/link
            fetched = await in_link_pool(lambda: fetch_link(ctx, base(request), url, name, field="url"))
            asset_id = fetched["id"]
        task, job_ids = ctx.tasks.add_task(asset_id=asset_id, url=url, metadata=spec["metadata"],
                                           targets=spec["targets"])
        ctx.count_task()
        for job_id in job_ids:
            ctx.worker.submit(job_id)
        return JSONResponse(task_payload(ctx, ctx.tasks.get_task(task["id"]), base(request)))

    @router.get("/tasks")
    async def list_tasks(request: Request):
        skip = query_int(request, "skip", 0, 0, None)
        take = query_int(request, "take", 10, 1, MAX_TAKE)
        return JSONResponse([task_payload(ctx, t, base(request)) for t in ctx.tasks.list_tasks(skip=skip, take=take)])

    @router.get("/tasks/statistics")
    async def task_statistics(request: Request):
        name = request.query_params.get("name", "usage")
        if name not in ("usage", "distribution"):
            raise _bad(f"`name` must be 'usage' or 'distribution', not {name[:50]!r}", "invalid_query")
        return JSONResponse(statistics(ctx, name))

    @router.get("/tasks/{task_id}")
    async def get_task(task_id: str, request: Request):
        task = ctx.tasks.get_task(task_id) if len(task_id) <= 100 else None
        if task is None:
            raise APIProblem(404, "task_not_found", f"no task with id {task_id[:100]!r} on this server")
        return JSONResponse(task_payload(ctx, task, base(request)))

    return router


def check_webhook(url: object) -> str:
    """Check a ``--webhook`` URL like every URL the server touches; return it.

    Examples
    --------
    >>> check_webhook("http://127.0.0.1:9/hook")
    'http://127.0.0.1:9/hook'
    """
    check_url(url, field="webhook")
    return str(url)
