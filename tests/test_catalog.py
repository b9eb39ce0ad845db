"""The model catalogue: what each model accepts, and the errors for what it does not."""

import pytest

from shakelab import catalog
from shakelab.errors import ValidationError


def test_default_formats_are_the_natural_ones():
    assert catalog.default_format("music_detection") == "json"
    assert catalog.default_format("vocals") == "wav"
    assert catalog.default_format("transcription") == "json"


def test_unknown_model_names_the_parameter_value_and_choices():
    with pytest.raises(ValidationError) as info:
        catalog.check_model("kazoo")
    message = str(info.value)
    assert "`model`" in message and "'kazoo'" in message and "'vocals'" in message


def test_format_not_allowed_for_model_lists_the_allowed_ones():
    with pytest.raises(ValidationError) as info:
        catalog.check_format("vocals", "json")
    assert str(info.value) == ("`format` must be one of 'wav', 'mp3', 'flac', 'aiff' for model 'vocals', "
                               "not 'json'")
    assert catalog.check_format("music_detection", "txt") == "txt"


def test_validation_error_is_a_value_error():
    with pytest.raises(ValueError):
        catalog.check_model(None)


def test_common_formats_intersects_in_catalogue_order():
    assert catalog.common_formats(["vocals", "drums"]) == ["wav", "mp3", "flac", "aiff"]
    assert catalog.common_formats(["vocals", "music_detection"]) == []
    assert catalog.common_formats(["music_detection", "transcription"]) == ["json", "txt"]
    assert catalog.common_formats([]) == []


def test_local_models_are_a_subset_of_the_service_models():
    for model, formats in catalog.LOCAL_MODELS.items():
        assert set(formats) <= set(catalog.SERVICE_MODELS[model])
