"""The models the AudioShake legacy Jobs API offers and the output formats each accepts.

One table, used by the client (to validate before any network call), the local server
(to answer 400 for what it cannot do) and the widgets (to offer only valid formats).

Examples
--------
>>> from shakelab import catalog
>>> catalog.default_format("music_detection")
'json'
>>> catalog.common_formats(["vocals", "drums"])
['wav', 'mp3', 'flac', 'aiff']
"""

from __future__ import annotations

from collections.abc import Iterable

from shakelab.errors import ValidationError

AUDIO_FORMATS = ("wav", "mp3", "flac", "aiff")
TEXT_FORMATS = ("json", "txt")
SUBTITLE_FORMATS = ("json", "txt", "srt")

# Every model of the real service and its output formats; the first is the natural one.
SERVICE_MODELS: dict[str, tuple[str, ...]] = {
    **{m: AUDIO_FORMATS for m in (
        "vocals", "instrumental", "drums", "bass", "guitar", "piano", "wind", "other",
        "other-x-guitar", "dialogue", "music", "music_fx", "effects", "music_removal")},
    "music_detection": TEXT_FORMATS,
    "transcription": SUBTITLE_FORMATS,
    "alignment": SUBTITLE_FORMATS,
}

# What the embedded local server really computes (classical DSP stems, a real detector).
LOCAL_MODELS: dict[str, tuple[str, ...]] = {
    **{m: AUDIO_FORMATS for m in ("vocals", "instrumental", "drums", "bass", "other", "music_removal", "dialogue")},
    "music_detection": TEXT_FORMATS,
}

MIME_TYPES = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "aiff": "audio/aiff",
    "ogg": "audio/ogg", "json": "application/json", "txt": "text/plain", "srt": "application/x-subrip",
}


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in values)


def check_model(model: object, models: dict[str, tuple[str, ...]] = SERVICE_MODELS) -> str:
    """Return ``model`` if it is a known model name, else raise ``ValidationError`` listing the allowed ones.

    Examples
    --------
    >>> check_model("vocals")
    'vocals'
    """
    if not isinstance(model, str) or model not in models:
        raise ValidationError(f"`model` must be one of {_quoted(models)}, not {model!r}")
    return model


def check_format(model: str, fmt: object, models: dict[str, tuple[str, ...]] = SERVICE_MODELS) -> str:
    """Return ``fmt`` if ``model`` accepts it, else raise ``ValidationError`` naming both.

    Examples
    --------
    >>> check_format("vocals", "flac")
    'flac'
    """
    allowed = models[check_model(model, models)]
    if not isinstance(fmt, str) or fmt not in allowed:
        raise ValidationError(f"`format` must be one of {_quoted(allowed)} for model {model!r}, not {fmt!r}")
    return fmt


def default_format(model: str, models: dict[str, tuple[str, ...]] = SERVICE_MODELS) -> str:
    """Return the natural output format of ``model``: json for analysis models, wav for stems."""
    return models[check_model(model, models)][0]


def common_formats(models_chosen: Iterable[str], models: dict[str, tuple[str, ...]] = SERVICE_MODELS) -> list[str]:
    """Return the formats every model in ``models_chosen`` accepts, in catalogue order (empty list for none)."""
    chosen = [check_model(m, models) for m in models_chosen]
    if not chosen:
        return []
    first = models[chosen[0]]
    return [f for f in first if all(f in models[m] for m in chosen[1:])]


# --------------------------------------------------------------------------- the Tasks API
# Models of the Tasks API (tasks-api.md, "Models"); the first format is the natural one. Every audio
# model also writes `mp4` (the audio in a video container). `music` is a Jobs-API-only name.
TASKS_AUDIO_FORMATS = (*AUDIO_FORMATS, "mp4")
TASKS_MODELS: dict[str, tuple[str, ...]] = {
    **{m: TASKS_AUDIO_FORMATS for m in (
        "vocals", "instrumental", "vocals_lead", "vocals_backing", "drums", "bass", "guitar",
        "guitar_electric", "guitar_acoustic", "piano", "strings", "wind", "other", "other-x-guitar",
        "dialogue", "effects", "music_fx", "music_removal", "multi_voice")},
    "music_detection": TEXT_FORMATS,
    "transcription": SUBTITLE_FORMATS,
    "alignment": SUBTITLE_FORMATS,
    "music_identification": ("json",),  # on request; its formats are undocumented (json assumed)
}
#: The only documented ``variant`` values, per model; a variant on any other model is refused.
TASKS_VARIANTS: dict[str, tuple[str, ...]] = {
    "vocals": ("high_quality",), "instrumental": ("high_quality",),
    "multi_voice": ("two_speaker", "n_speaker"),
}
#: Credits per started minute of source audio (None: on request, price not published).
TASKS_CREDITS_PER_MINUTE: dict[str, float | None] = {
    **{m: 1.0 for m in ("vocals", "instrumental", "vocals_lead", "vocals_backing", "drums", "bass", "guitar",
                        "guitar_electric", "guitar_acoustic", "piano", "strings", "wind", "other",
                        "other-x-guitar", "transcription", "alignment")},
    **{m: 1.5 for m in ("dialogue", "effects", "music_fx", "music_removal")},
    "music_detection": 0.5, "multi_voice": None, "music_identification": None,
}
_VARIANT_CREDITS = {("vocals", "high_quality"): 1.5, ("instrumental", "high_quality"): 1.5}

# The same table under the names the local server reads (one table, two views).
#: Credits per minute of the models with a published price.
CREDITS_PER_MINUTE: dict[str, float] = {m: r for m, r in TASKS_CREDITS_PER_MINUTE.items() if r is not None}
#: Documented variants and their rate per minute (on-request prices: the local server bills 1.0).
TASK_VARIANTS: dict[str, dict[str, float]] = {
    m: {v: _VARIANT_CREDITS.get((m, v), CREDITS_PER_MINUTE.get(m, 1.0)) for v in vs}
    for m, vs in TASKS_VARIANTS.items()}
TASK_AUDIO_FORMATS = TASKS_AUDIO_FORMATS


def tasks_cost(model: str, duration: float, variant: str | None = None) -> float | None:
    """Return the credits a Tasks API target costs: ceil(duration / 60) x the model's credits per minute.

    Every sample the reference page shows fits this rule (bass 200.53 s -> 4; vocals
    ``high_quality`` 9.49 s -> 1.5). None for models priced on request.

    Examples
    --------
    >>> tasks_cost("bass", 200.53), tasks_cost("vocals", 9.49, "high_quality"), tasks_cost("multi_voice", 60)
    (4.0, 1.5, None)
    """
    import math

    rate = _VARIANT_CREDITS.get((model, variant or ""), TASKS_CREDITS_PER_MINUTE.get(check_model(model, TASKS_MODELS)))
    if rate is None:
        return None
    return math.ceil(max(0.0, float(duration)) / 60.0) * rate


def target_cost(model: str, duration: float, variant: str | None = None) -> float:
    """Return what the local server bills a target: :func:`tasks_cost`, at 1.0 per minute where unpublished.

    Examples
    --------
    >>> target_cost("bass", 200.53), target_cost("vocals", 9.49, "high_quality"), target_cost("multi_voice", 60)
    (4.0, 1.5, 1.0)
    """
    import math

    cost = tasks_cost(model, duration, variant) if model in TASKS_MODELS else None
    return cost if cost is not None else math.ceil(max(0.0, float(duration)) / 60.0) * 1.0
