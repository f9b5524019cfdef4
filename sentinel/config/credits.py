"""``[credits]``: prepaid credits kept by an external ledger instead of Redis or the state file.

::

    [credits]
    url = "https://ledger.internal/v1"   # POST {url}/holds, {url}/captures, {url}/releases
    token = "env:LEDGER_TOKEN"           # sent as Authorization: Bearer
    account = "key"                      # whose balance: the key's id, or "team:<team>"
    timeout_ms = 500                     # a hold's deadline (it is on the request's path)
    capture_batch_ms = 200               # captures and releases wait this long to be batched
    capture_batch_max = 100              # ... or until this many are waiting
    on_unavailable = "refuse"            # the only choice: 503, never an admission

There is deliberately no fail-open choice: money decisions never fail open, so a ledger that
cannot be asked refuses the request (503 ``credits_unavailable``). ``hold_ttl_s`` must outlast
the longest request an upstream allows (its ``timeout_ms``), or a hold could expire at the
ledger while its request still runs. Plain data: ``sentinel.money.ledger`` speaks the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sentinel.config.table import Table, http_url_problem, show

__all__ = ["CreditsConfig", "read_credits"]

_MAX_BATCH = 1_000
_MAX_TIMEOUT_MS = 60_000


@dataclass(frozen=True, slots=True)
class CreditsConfig:
    """``[credits]``: the external ledger, how requests hold against it, how they settle."""

    url: str  # the ledger's base URL, no trailing slash
    token: str | None = None  # sent as Authorization: Bearer
    account: Literal["key", "team"] = "key"  # the principal's id, or "team:<team>"
    timeout_ms: int = 500  # the deadline of one hold (and of a balance read for GET /v1/key)
    hold_ttl_s: int = 3_600  # expires_at = now + this: the backstop when nothing settles it
    capture_batch_ms: int = 200  # captures and releases wait at most this long for a batch
    capture_batch_max: int = 100  # ... and go at once when this many are waiting
    max_pending: int = 100_000  # settlements not yet delivered; beyond it holds are refused
    max_holds: int = 256  # holds in flight at once; more wait (within timeout_ms) for a turn
    close_timeout_ms: int = 5_000  # at shutdown, how long pending settlements are tried
    breaker_failures: int = 5  # failed holds in a row that open the breaker
    breaker_cooldown_ms: int = 5_000  # open this long before one probe hold goes through
    on_unavailable: Literal["refuse"] = "refuse"  # the only choice (see the module docstring)


def read_credits(t: Table, longest_request_ms: int) -> CreditsConfig:
    """Read ``[credits]``; ``longest_request_ms`` is the largest upstream ``timeout_ms``."""
    d = CreditsConfig(url="")
    url = t.string("url", required=True, check=http_url_problem).rstrip("/")
    credits = CreditsConfig(
        url=url,
        token=t.secret("token"),
        account=t.choice("account", ("key", "team"), d.account),
        timeout_ms=t.integer("timeout_ms", d.timeout_ms, minimum=1),
        hold_ttl_s=t.integer("hold_ttl_s", d.hold_ttl_s, minimum=1),
        capture_batch_ms=t.integer("capture_batch_ms", d.capture_batch_ms, minimum=1),
        capture_batch_max=t.integer("capture_batch_max", d.capture_batch_max, minimum=1),
        max_pending=t.integer("max_pending", d.max_pending, minimum=1),
        max_holds=t.integer("max_holds", d.max_holds, minimum=1),
        close_timeout_ms=t.integer("close_timeout_ms", d.close_timeout_ms, minimum=0),
        breaker_failures=t.integer("breaker_failures", d.breaker_failures, minimum=1),
        breaker_cooldown_ms=t.integer("breaker_cooldown_ms", d.breaker_cooldown_ms, minimum=1),
        on_unavailable=_on_unavailable(t),
    )
    if credits.timeout_ms > _MAX_TIMEOUT_MS:
        t.problem(
            "timeout_ms",
            f"must be at most {_MAX_TIMEOUT_MS} (a hold delays the request), "
            f"got {credits.timeout_ms}",
        )
    if credits.capture_batch_max > _MAX_BATCH:
        t.problem(
            "capture_batch_max", f"must be at most {_MAX_BATCH}, got {credits.capture_batch_max}"
        )
    if credits.max_pending < credits.capture_batch_max:
        t.problem(
            "max_pending",
            f"must be at least capture_batch_max ({credits.capture_batch_max}), "
            f"got {credits.max_pending}",
        )
    if credits.hold_ttl_s * 1000 < longest_request_ms:
        t.problem(
            "hold_ttl_s",
            f"must outlast the longest request (an upstream's timeout_ms is "
            f"{longest_request_ms} ms), got {credits.hold_ttl_s}",
        )
    t.finish()
    return credits


def _on_unavailable(t: Table) -> Literal["refuse"]:
    value = t.take("on_unavailable")
    if value is not None and value != "refuse":
        t.problem(
            "on_unavailable",
            f"expected 'refuse', got {show(value)}: a ledger that cannot be asked never "
            "admits a request (there is no fail-open choice)",
        )
    return "refuse"
