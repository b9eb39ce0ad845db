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
    """Give the natural output format of ``model``: json for analysis models, wav for stems."""
    return models[check_model(model, models)][0]


def common_formats(models_chosen: Iterable[str], models: dict[str, tuple[str, ...]] = SERVICE_MODELS) -> list[str]:
    """List the formats that every model in ``models_chosen`` accepts, in catalogue order (empty list for none)."""
    chosen = [check_model(m, models) for m in models_chosen]
    if not chosen:
        return []
    first = models[chosen[0]]
    return [f for f in first if all(f in models[m] for m in chosen[1:])]
