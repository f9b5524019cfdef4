"""The log pipeline renders JSON lines and never lets a secret through."""

from __future__ import annotations

import asyncio
import io

import orjson
import structlog
import structlog.testing

from sentinel.config import TelemetryConfig
from sentinel.telemetry.logging import (
    LineLogger,
    RedactingJSONRenderer,
    SecretRedactor,
    configure_logging,
)


def test_redactor_scrubs_configured_and_shaped_secrets() -> None:
    """Configured secrets, bearer tokens and sk- keys are replaced in every string field."""
    redact = SecretRedactor(["upstream-secret-value"])
    event = redact(
        None,
        "info",
        {
            "event": "x",
            "detail": "failed with key upstream-secret-value",
            "header": "Bearer abc.def",
            "note": "client sent sk-live-0123456789abcdef",
            "items": ["upstream-secret-value"],
            "authorization": "anything",
            "status": 200,
        },
    )
    assert "upstream-secret-value" not in str(event)
    assert "abc.def" not in event["header"] and "0123456789abcdef" not in event["note"]
    assert event["authorization"] == "[REDACTED]" and event["status"] == 200


def test_configured_logging_writes_redacted_json_lines() -> None:
    """configure_logging emits one JSON object per line with secrets and exceptions scrubbed."""
    out = io.StringIO()
    buffer = io.BytesIO()
    out.buffer = buffer  # type: ignore[misc]
    configure_logging(TelemetryConfig(), ["topsecret-admin-token"], stream=out)
    log = structlog.get_logger("test")
    try:
        raise RuntimeError("token topsecret-admin-token leaked")
    except RuntimeError as exc:
        log.error("boom", exc_info=exc, token_hint="topsecret-admin-token")
    line = buffer.getvalue().decode().strip()
    parsed = orjson.loads(line)
    assert parsed["event"] == "boom" and parsed["level"] == "error"
    assert "topsecret-admin-token" not in line
    assert "RuntimeError" in parsed["exception"]


def test_redactor_leaves_clean_events_alone() -> None:
    """An event with no secret anywhere comes back with every value unchanged."""
    redact = SecretRedactor(["upstream-secret-value"])
    event = {"event": "request_finished", "status": 200, "model": "m", "attempts": [{"ms": 1}]}
    assert redact(None, "info", dict(event)) == event


def test_redactor_without_configured_secrets_still_scrubs_shapes() -> None:
    """With no configured secrets, bearer tokens in any case and sk- keys are still scrubbed."""
    redact = SecretRedactor([])
    event = redact(None, "info", {"event": "x", "a": "BEARER tok.en", "b": ("sk-abcdefgh123",)})
    assert "tok.en" not in event["a"] and "sk-abcdefgh123" not in str(event["b"])


def test_redactor_scrubs_the_repr_of_other_objects() -> None:
    """A value that renders through its repr (any object) is scrubbed as that repr."""

    class Upstream:
        def __repr__(self) -> str:
            return "Upstream(key='upstream-secret-value')"

    redact = SecretRedactor(["upstream-secret-value"])
    event = redact(
        None, "info", {"event": "x", "upstream": Upstream(), "nested": {"k": ["sk-" + "a" * 12]}}
    )
    assert "upstream-secret-value" not in str(event) and "a" * 12 not in str(event)


def _configured(level: str = "info") -> tuple[io.BytesIO, LineLogger]:
    """The output of a configured JSON pipeline, and the request line's logger over it."""
    out = io.StringIO()
    buffer = io.BytesIO()
    out.buffer = buffer  # type: ignore[misc]
    renderer = configure_logging(
        TelemetryConfig(log_level=level),  # type: ignore[arg-type]
        ["topsecret-admin-token"],
        stream=out,
    )
    return buffer, LineLogger("sentinel.request", renderer)


def test_line_logger_writes_what_the_pipeline_writes() -> None:
    """The request line's direct path renders the same line as structlog's pipeline: same
    keys in the same order, same values, secrets scrubbed, one line."""
    buffer, line = _configured()
    fields = {"status": 200, "model": "m", "note": "Bearer abc.def", "attempts": [{"ms": 1}]}
    structlog.get_logger("sentinel.request").info("request_finished", **fields)
    line.info("request_finished", dict(fields))
    through_structlog, direct = (orjson.loads(line) for line in buffer.getvalue().splitlines())
    assert list(direct) == list(through_structlog)
    del direct["timestamp"], through_structlog["timestamp"]
    assert direct == through_structlog and "abc.def" not in str(direct)


def test_line_logger_honours_the_level_and_capture_logs() -> None:
    """Below the configured level nothing is written; a line logger handed no renderer goes
    through structlog, so capture_logs captures its line like any other event."""
    quiet, line = _configured("warning")
    line.info("request_finished", {"status": 200})
    assert quiet.getvalue() == b""
    loud, _ = _configured()
    line = LineLogger("sentinel.request")
    with structlog.testing.capture_logs() as logs:
        line.info("request_finished", {"status": 200})
    assert [entry["event"] for entry in logs] == ["request_finished"] and loud.getvalue() == b""


def test_secrets_shaped_like_markers_are_still_scrubbed() -> None:
    """A configured secret holding ``sk-`` or ``bearer`` is found through the marker's own
    search (it is not searched for again), and still scrubbed from the line."""
    buffer = io.BytesIO()
    redactor = SecretRedactor(["sk-up", "my-Bearer-x", "plain-admin-token"])
    renderer = RedactingJSONRenderer(redactor, buffer)
    for value in ("sk-up", "my-Bearer-x", "plain-admin-token"):
        renderer.write_info("request_finished", {"detail": f"key {value}!"})
    lines = buffer.getvalue().decode()
    assert lines.count("[REDACTED]") == 3
    assert not any(s in lines for s in ("sk-up", "my-Bearer-x", "plain-admin-token"))


class _CountingBuffer(io.BytesIO):
    """Bytes written, and how many times they were flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


async def test_lines_of_one_loop_turn_are_flushed_together() -> None:
    """In the event loop, the lines written in one turn are flushed once, at its end."""
    buffer = _CountingBuffer()
    renderer = RedactingJSONRenderer(SecretRedactor([]), buffer)
    renderer.write_info("request_finished", {"n": 1})
    renderer.write_info("request_finished", {"n": 2})
    assert buffer.flushes == 0
    await asyncio.sleep(0)
    assert buffer.flushes == 1 and len(buffer.getvalue().splitlines()) == 2
    renderer.write_info("request_finished", {"n": 3})
    await asyncio.sleep(0)
    assert buffer.flushes == 2


def test_with_no_loop_running_each_line_is_flushed_at_once() -> None:
    """Outside an event loop (a CLI command), a line is flushed as it is written."""
    buffer = _CountingBuffer()
    RedactingJSONRenderer(SecretRedactor([]), buffer).write_info("x", {})
    assert buffer.flushes == 1
