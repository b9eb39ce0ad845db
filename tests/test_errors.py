"""The exception hierarchy and its messages."""

from types import SimpleNamespace

from shakelab import errors


def test_hierarchy():
    for cls in (errors.AuthenticationError, errors.NotFoundError, errors.RateLimitError, errors.ServerError):
        assert issubclass(cls, errors.APIError)
    for cls in (errors.APIError, errors.TransportError, errors.JobFailedError, errors.JobTimeoutError,
                errors.ValidationError):
        assert issubclass(cls, errors.ShakelabError)


def test_api_error_carries_status_message_and_request_id():
    exc = errors.RateLimitError(429, "slow down", {"error": "rate_limited"}, "req-1", retry_after=2.5)
    assert (exc.status, exc.message, exc.retry_after, exc.request_id) == (429, "slow down", 2.5, "req-1")
    assert str(exc) == "HTTP 429: slow down (request req-1)"


def test_timeout_message_says_how_to_resume():
    job = SimpleNamespace(id="abc123", status="processing")
    message = str(errors.JobTimeoutError(job, 30))
    assert "abc123" in message and "still processing" in message and "client.wait('abc123')" in message


def test_failed_message_has_job_id_and_server_message():
    message = str(errors.JobFailedError(SimpleNamespace(id="j9"), "not an audio file"))
    assert message == "job j9 failed: not an audio file"
