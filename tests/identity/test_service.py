"""Tests for ``IdentityService`` against a real identity service, on an injected clock."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import aiohttp
import orjson
import pytest

from sentinel.auth.keys import Principal
from sentinel.config.identity import IdentityServiceConfig
from sentinel.config.limits import LimitDefaults
from sentinel.identity import IdentityService, IdentityUnavailable
from sentinel.limits.spec import Dimension
from tests.identity.conftest import IDENTITY_TOKEN, FakeClock, IdentityServer, digest_hex

KEY = "sk-idp-alice-0123456789abcdef"


def service(
    session: aiohttp.ClientSession, server: IdentityServer, clock: FakeClock, **overrides: Any
) -> IdentityService:
    settings = IdentityServiceConfig(url=server.url, token=IDENTITY_TOKEN, **overrides)
    return IdentityService(session, settings, LimitDefaults(rpm=1000), clock=clock)


async def resolve(source: IdentityService, key: str) -> Principal | None:
    raw = key.encode()
    return await source.resolve(raw, hashlib.sha256(raw).digest())


async def until_settled(source: IdentityService) -> None:
    """Wait until no lookup is in flight (a background refresh has taught the cache)."""
    async with asyncio.timeout(5):
        while source.in_flight:
            await asyncio.sleep(0.001)


async def test_a_known_key_becomes_its_principal(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """The answer's fields make the principal, under ``idp:<name>``; left-out limits are
    [limits] defaults; the service sees only the digest and the bearer token."""
    identity_server.add(KEY, name="alice", team="ml", tpm=500, models=["gpt-*"])
    source = service(http, identity_server, clock)
    principal = await resolve(source, KEY)
    assert principal is not None
    assert (principal.name, principal.id, principal.team) == ("alice", "idp:alice", "ml")
    assert principal.models == ("gpt-*",)
    assert principal.limits.limit(Dimension.TOKENS) == 500
    assert principal.limits.limit(Dimension.REQUESTS) == 1000
    assert orjson.loads(identity_server.bodies[0]) == {"key_sha256": digest_hex(KEY)}
    assert identity_server.authorizations == [f"Bearer {IDENTITY_TOKEN}"]


async def test_admin_from_the_service_is_never_taken(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """``admin: true`` in an answer is ignored, as is any field Sentinel does not know."""
    identity_server.add(KEY, name="alice", admin=True, email="alice@example.com")
    principal = await resolve(service(http, identity_server, clock), KEY)
    assert principal is not None and not principal.is_admin


async def test_concurrent_first_requests_share_one_lookup(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """100 requests of one key that arrive together cause exactly one lookup."""
    identity_server.add(KEY, name="alice")
    identity_server.hold = asyncio.Event()
    source = service(http, identity_server, clock)
    waiting = [asyncio.create_task(resolve(source, KEY)) for _ in range(100)]
    async with asyncio.timeout(5):
        while identity_server.total == 0:
            await asyncio.sleep(0.001)
    identity_server.hold.set()
    principals = await asyncio.gather(*waiting)
    assert {p.id for p in principals if p is not None} == {"idp:alice"}
    assert len(principals) == 100
    assert identity_server.total == 1


async def test_fresh_answers_are_served_without_asking(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """Within ttl_s the cache answers alone."""
    identity_server.add(KEY, name="alice")
    source = service(http, identity_server, clock, ttl_s=60)
    await resolve(source, KEY)
    clock.advance(59_999)
    assert await resolve(source, KEY) is not None
    assert identity_server.total == 1


async def test_after_ttl_stale_is_served_while_one_refresh_runs(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """Past ttl_s, requests are answered at once from the stale entry while exactly one
    refresh is in flight; its answer (new limits) serves the requests after it."""
    identity_server.add(KEY, name="alice", rpm=5)
    source = service(http, identity_server, clock, ttl_s=60)
    await resolve(source, KEY)
    identity_server.add(KEY, name="alice", rpm=7)
    identity_server.hold = asyncio.Event()
    clock.advance(60_000)
    served = await asyncio.gather(*(resolve(source, KEY) for _ in range(50)))
    assert all(p is not None and p.limits.limit(Dimension.REQUESTS) == 5 for p in served)
    assert source.in_flight == 1
    identity_server.hold.set()
    await until_settled(source)
    assert identity_server.total == 2
    principal = await resolve(source, KEY)
    assert principal is not None and principal.limits.limit(Dimension.REQUESTS) == 7


async def test_a_refresh_answering_404_revokes_the_key(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """A key the service no longer knows is unknown once the refresh has answered."""
    identity_server.add(KEY, name="alice")
    source = service(http, identity_server, clock)
    await resolve(source, KEY)
    identity_server.principals.clear()
    clock.advance(60_000)
    assert await resolve(source, KEY) is not None  # stale, while the refresh runs
    await until_settled(source)
    assert await resolve(source, KEY) is None


async def test_known_keys_work_through_an_outage_until_max_stale(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """With the service down, a known key works until max_stale_s after its last good
    answer, and from then on gets 503 (never admitted, never a 401)."""
    identity_server.add(KEY, name="alice")
    source = service(http, identity_server, clock, ttl_s=60, max_stale_s=600)
    await resolve(source, KEY)
    await identity_server.stop()
    for _ in range(9):
        clock.advance(60_000)
        assert await resolve(source, KEY) is not None
        await until_settled(source)
    clock.advance(59_999)
    assert await resolve(source, KEY) is not None
    clock.advance(1)
    with pytest.raises(IdentityUnavailable) as refused:
        await resolve(source, KEY)
    assert refused.value.status == 503
    assert refused.value.code == "identity_unavailable"


async def test_unknown_keys_get_503_while_the_service_is_down(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """A key never seen cannot be confirmed or denied: 503 with retry-after."""
    await identity_server.stop()
    with pytest.raises(IdentityUnavailable) as refused:
        await resolve(service(http, identity_server, clock), KEY)
    assert int(refused.value.headers["retry-after"]) >= 1


@pytest.mark.parametrize("status", [500, 502, 401, 400])
async def test_error_statuses_are_503_not_unknown(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock, status: int
) -> None:
    """Anything but 200 and 404 says nothing about the key."""
    identity_server.add(KEY, name="alice")
    identity_server.status = status
    with pytest.raises(IdentityUnavailable):
        await resolve(service(http, identity_server, clock), KEY)


async def test_a_slow_service_is_cut_off_at_the_deadline(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """A lookup that outlives timeout_ms is a failure: 503."""
    identity_server.add(KEY, name="alice")
    identity_server.hold = asyncio.Event()
    with pytest.raises(IdentityUnavailable):
        await resolve(service(http, identity_server, clock, timeout_ms=50), KEY)


async def test_a_bad_answer_is_503(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """An answer with an invalid field is not half-used: the key is not admitted."""
    identity_server.add(KEY, name="alice", rpm="lots")
    with pytest.raises(IdentityUnavailable):
        await resolve(service(http, identity_server, clock), KEY)


async def test_unknown_keys_are_remembered_for_negative_ttl(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """A 404 is not asked again for negative_ttl_s, then it is."""
    source = service(http, identity_server, clock, negative_ttl_s=5)
    assert await resolve(source, KEY) is None
    clock.advance(4_999)
    assert await resolve(source, KEY) is None
    assert identity_server.total == 1
    identity_server.add(KEY, name="alice")
    clock.advance(1)
    assert await resolve(source, KEY) is not None
    assert identity_server.total == 2


async def test_429_silences_lookups_for_its_retry_after(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """After a 429 with Retry-After: 7, no lookup at all for 7 s: new keys get 503 with
    that retry-after; then lookups resume."""
    identity_server.status, identity_server.retry_after = 429, "7"
    source = service(http, identity_server, clock)
    with pytest.raises(IdentityUnavailable) as refused:
        await resolve(source, KEY)
    assert refused.value.headers["retry-after"] == "7"
    identity_server.status = None
    identity_server.add("sk-another-key-000000000000", name="bob")
    clock.advance(6_999)
    with pytest.raises(IdentityUnavailable):
        await resolve(source, "sk-another-key-000000000000")
    assert identity_server.total == 1
    clock.advance(1)
    assert await resolve(source, "sk-another-key-000000000000") is not None
    assert identity_server.total == 2


async def test_the_breaker_stops_lookups_to_a_failing_service(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """After breaker_failures failures in a row no lookup goes out until the cooldown has
    passed; then one probe does, and its success closes the breaker."""
    identity_server.status = 500
    source = service(http, identity_server, clock, breaker_failures=3, breaker_cooldown_ms=5_000)
    keys = [f"sk-breaker-key-{i:020d}" for i in range(10)]
    for key in keys[:3]:
        with pytest.raises(IdentityUnavailable):
            await resolve(source, key)
    for key in keys[3:]:
        with pytest.raises(IdentityUnavailable) as refused:
            await resolve(source, key)
    assert identity_server.total == 3
    assert refused.value.headers["retry-after"] == "5"
    identity_server.status = None
    identity_server.add(keys[3], name="dave")
    clock.advance(5_000)
    assert await resolve(source, keys[3]) is not None
    assert source.breaker.is_closed


async def test_lookups_beyond_max_lookups_wait_their_turn(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """Eight new keys at once with max_lookups = 2: never more than two lookups at the service,
    and every key is answered once slots free up."""
    keys = [f"sk-queued-{i:020d}" for i in range(8)]
    for key in keys:
        identity_server.add(key, name=key[-6:])
    identity_server.hold = asyncio.Event()
    source = service(http, identity_server, clock, max_lookups=2)
    waiting = [asyncio.create_task(resolve(source, key)) for key in keys]
    async with asyncio.timeout(5):
        while identity_server.total < 2:
            await asyncio.sleep(0.001)
    identity_server.hold.set()
    principals = await asyncio.gather(*waiting)
    assert all(p is not None for p in principals)
    assert identity_server.most_answering == 2
    assert identity_server.total == 8


async def test_a_key_that_finds_no_free_slot_in_time_gets_503(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """No free slot within timeout_ms is Sentinel's own congestion: 503 without a lookup, and
    the breaker does not count it against the service. (One slot, held by a hanging lookup;
    of two keys waiting for it, the second cannot get it in time.)"""
    identity_server.hold = asyncio.Event()
    source = service(http, identity_server, clock, max_lookups=1, timeout_ms=300)
    held = asyncio.create_task(resolve(source, "sk-holds-the-slot-000000000000"))
    async with asyncio.timeout(5):
        while identity_server.total < 1:
            await asyncio.sleep(0.001)
    waiters = [resolve(source, f"sk-waits-for-a-slot-{i:010d}") for i in range(2)]
    outcomes = await asyncio.gather(held, *waiters, return_exceptions=True)
    assert all(isinstance(outcome, IdentityUnavailable) for outcome in outcomes)
    reasons = [o.context["reason"] for o in outcomes if isinstance(o, IdentityUnavailable)]
    assert reasons.count("no lookup slot free in time") == 1
    assert identity_server.total == 2  # the holder and the one waiter that got the slot
    assert source.breaker.consecutive_failures == 2  # their timeouts, not the congestion
    identity_server.hold.set()


async def test_the_waiting_room_is_bounded(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """With max_lookups = 1, four keys may be in flight (one asking, three waiting); a fifth
    new key gets 503 at once."""
    identity_server.hold = asyncio.Event()
    source = service(http, identity_server, clock, max_lookups=1)
    waiting = [asyncio.create_task(resolve(source, f"sk-wait-{i:024d}")) for i in range(4)]
    async with asyncio.timeout(5):
        while identity_server.total < 1 or source.in_flight < 4:
            await asyncio.sleep(0.001)
    with pytest.raises(IdentityUnavailable):
        await resolve(source, "sk-fifth-key-00000000000000000")
    identity_server.hold.set()
    assert await asyncio.gather(*waiting) == [None] * 4


async def test_a_spray_of_random_keys_stays_bounded_and_keeps_known_keys(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """Random keys fill only the bounded unknown cache; the known key stays cached."""
    identity_server.add(KEY, name="alice")
    source = service(http, identity_server, clock, max_entries=5, max_unknown_entries=20)
    await resolve(source, KEY)
    for _ in range(200):
        assert await resolve(source, "sk-" + os.urandom(16).hex()) is None
    assert source.cache.unknown_count == 20
    assert source.cache.known_count == 1
    await identity_server.stop()
    assert await resolve(source, KEY) is not None


async def test_close_cancels_lookups_in_flight(
    http: aiohttp.ClientSession, identity_server: IdentityServer, clock: FakeClock
) -> None:
    """Shutdown does not wait on a hanging identity service."""
    identity_server.hold = asyncio.Event()
    source = service(http, identity_server, clock)
    waiting = asyncio.create_task(resolve(source, KEY))
    async with asyncio.timeout(5):
        while identity_server.total == 0:
            await asyncio.sleep(0.001)
    await source.aclose()
    assert source.in_flight == 0
    with pytest.raises(asyncio.CancelledError):
        await waiting
