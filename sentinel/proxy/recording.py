"""One usage record per authenticated request, handed to the tracker when the response ends.

The record's ``request_id`` is exactly the ``x-request-id`` the response carried, so billing
joins with the client's own logs; a retrying client may repeat it. Uniqueness comes from the
``record_id`` made here, the idempotency key every sink de-duplicates by.
"""

from __future__ import annotations

import secrets

from sentinel.http.context import RequestContext
from sentinel.usage.records import UsageRecord
from sentinel.usage.tracker import UsageTracker

__all__ = ["UsageRecorder"]


class UsageRecorder:
    """A ``RequestContext.on_finish`` hook that turns the finished request into a record."""

    def __init__(self, tracker: UsageTracker) -> None:
        self._tracker = tracker

    def __call__(self, ctx: RequestContext, finished_ns: int) -> None:
        if ctx.key is None:
            return  # never authenticated: nobody to bill
        if not self._tracker.keeps_records:
            self._tracker.count_unkept()  # no sink: counted, not built
            return
        usage = ctx.usage
        self._tracker.record(
            UsageRecord.of(
                record_id="rec_" + secrets.token_hex(16),
                request_id=ctx.request_id,
                key=ctx.key,
                key_id=ctx.key_id or "",
                team=ctx.team,
                model=ctx.model or "",
                upstream=ctx.upstream or "",
                endpoint=ctx.path,
                status=ctx.status,
                usage=usage,
                source="none" if usage is None else ctx.usage_source or "estimated",
                started_at=ctx.started_at,
                ttfb_ms=(ctx.ttfb_ns - ctx.started_ns) // 1_000_000 if ctx.ttfb_ns else None,
                duration_ms=(finished_ns - ctx.started_ns) // 1_000_000,
                request_bytes=ctx.request_bytes,
                response_bytes=ctx.response_bytes,
                cost_usd=ctx.cost_usd,
            )
        )
