"""The owner index contract, run unchanged against MemoryOwners and RedisOwners (server and
cluster), and what only RedisOwners has: its key layout, its scripts and its failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib.resources import files

import orjson
import pytest
from redis.asyncio import Redis, RedisCluster

from sentinel.tenancy import (
    MAX_PAGE,
    MemoryOwners,
    ObjectKind,
    ObjectRef,
    OwnerIndex,
    OwnershipUnavailable,
    RedisOwners,
    owned_key,
    owner_key,
)
from tests.support.redis_server import RedisServer

ALICE = "team-alice"
BOB = "team-bob"


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.e2e),
        pytest.param("cluster", marks=pytest.mark.e2e),
    ]
)
async def owners(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[OwnerIndex]:
    """Each owner index in turn: the contract tests run unchanged against all of them."""
    if request.param == "memory":
        yield MemoryOwners()
        return
    client: Redis | RedisCluster
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = server.client()
    else:
        nodes: list[RedisServer] = request.getfixturevalue("redis_cluster")
        client = RedisCluster(host="127.0.0.1", port=nodes[0].port, socket_timeout=2)
    try:
        yield RedisOwners(client, 2_000, prefix=prefix)
    finally:
        await client.aclose()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the shared server."""
    client = redis_server.client()
    try:
        yield client
    finally:
        await client.aclose()


def snap(object_id: str, **fields: object) -> bytes:
    """A snapshot as a create reply would carry it."""
    return orjson.dumps({"id": object_id, **fields})


def ids(snapshots: list[bytes]) -> list[str]:
    """The ids of a page of snapshots, in page order."""
    return [orjson.loads(one)["id"] for one in snapshots]


async def claim_files(owners: OwnerIndex, owner: str, created: dict[str, int]) -> None:
    """Claim one file per entry of ``created`` (id → created_at), each with a snapshot."""
    for object_id, created_at in created.items():
        await owners.claim(ObjectRef("file", object_id), owner, created_at, snap(object_id))


async def every_page(
    owners: OwnerIndex, owner: str, kind: ObjectKind, limit: int, *, ascending: bool
) -> list[list[str]]:
    """The ids of every page, following ``after`` from the first page to the last."""
    pages: list[list[str]] = []
    after = None
    while True:
        snapshots, has_more = await owners.page(
            owner, kind, after=after, limit=limit, ascending=ascending
        )
        pages.append(ids(snapshots))
        if not has_more:
            return pages
        after = pages[-1][-1]


# --- the contract -----------------------------------------------------------------------------


async def test_unknown_objects_have_no_owner(owners: OwnerIndex) -> None:
    """An object the gateway never saw created has no owner."""
    assert await owners.owner_of(ObjectRef("file", "file-unknown")) is None


async def test_first_owner_wins(owners: OwnerIndex) -> None:
    """A claim of an object another key holds changes neither its owner nor its listing."""
    ref = ObjectRef("file", "file-1")
    await owners.claim(ref, ALICE, 10, snap("file-1", by="alice"))
    await owners.claim(ref, BOB, 20, snap("file-1", by="bob"))
    assert await owners.owner_of(ref) == ALICE
    alice, _ = await owners.page(ALICE, "file", after=None, limit=10, ascending=False)
    assert [orjson.loads(one)["by"] for one in alice] == ["alice"]
    assert await owners.page(BOB, "file", after=None, limit=10, ascending=False) == ([], False)


async def test_same_owner_reclaim_updates_the_snapshot(owners: OwnerIndex) -> None:
    """A re-claim by the owner with a snapshot replaces the snapshot and the created_at."""
    await claim_files(owners, ALICE, {"file-1": 10, "file-2": 20})
    await owners.claim(ObjectRef("file", "file-1"), ALICE, 30, snap("file-1", status="done"))
    page, _ = await owners.page(ALICE, "file", after=None, limit=10, ascending=False)
    assert [orjson.loads(one) for one in page] == [
        {"id": "file-1", "status": "done"},
        {"id": "file-2"},
    ]


async def test_reclaim_without_a_snapshot_changes_nothing(owners: OwnerIndex) -> None:
    """A re-claim without a snapshot keeps the stored snapshot and created_at."""
    await claim_files(owners, ALICE, {"file-1": 10, "file-2": 20})
    await owners.claim(ObjectRef("file", "file-1"), ALICE, 30, None)
    page, _ = await owners.page(ALICE, "file", after=None, limit=10, ascending=False)
    assert page == [snap("file-2"), snap("file-1")]


async def test_objects_claimed_without_a_snapshot_show_a_placeholder(owners: OwnerIndex) -> None:
    """An object claimed without a snapshot is listed as its id and kind."""
    await owners.claim(ObjectRef("model", "ft:gpt-4o:org::abc"), ALICE, 10, None)
    page, has_more = await owners.page(ALICE, "model", after=None, limit=10, ascending=False)
    assert [orjson.loads(one) for one in page] == [{"id": "ft:gpt-4o:org::abc", "object": "model"}]
    assert not has_more


async def test_release_forgets_owner_and_listing(owners: OwnerIndex) -> None:
    """A released object has no owner, is no longer listed, and may be claimed anew."""
    await claim_files(owners, ALICE, {"file-1": 10, "file-2": 20})
    await owners.release(ObjectRef("file", "file-1"))
    assert await owners.owner_of(ObjectRef("file", "file-1")) is None
    page, _ = await owners.page(ALICE, "file", after=None, limit=10, ascending=False)
    assert ids(page) == ["file-2"]
    await owners.claim(ObjectRef("file", "file-1"), BOB, 30, snap("file-1"))
    assert await owners.owner_of(ObjectRef("file", "file-1")) == BOB


async def test_release_of_an_unknown_object_is_no_error(owners: OwnerIndex) -> None:
    """Releasing an object nobody claimed does nothing."""
    await owners.release(ObjectRef("batch", "batch_unknown"))
    assert await owners.owner_of(ObjectRef("batch", "batch_unknown")) is None


async def test_pages_run_newest_first_with_ties_by_id(owners: OwnerIndex) -> None:
    """Pages follow created_at descending, equal ones by id descending, to the last one."""
    await claim_files(owners, ALICE, {"f-a": 20, "f-b": 10, "f-c": 20, "f-d": 30, "f-e": 5})
    pages = await every_page(owners, ALICE, "file", 2, ascending=False)
    assert pages == [["f-d", "f-c"], ["f-a", "f-b"], ["f-e"]]


async def test_ascending_pages_are_the_exact_reverse(owners: OwnerIndex) -> None:
    """Ascending pages list oldest first, equal created_at by id ascending."""
    await claim_files(owners, ALICE, {"f-a": 20, "f-b": 10, "f-c": 20, "f-d": 30, "f-e": 5})
    pages = await every_page(owners, ALICE, "file", 2, ascending=True)
    assert pages == [["f-e", "f-b"], ["f-a", "f-c"], ["f-d"]]


async def test_has_more_is_false_on_an_exactly_full_last_page(owners: OwnerIndex) -> None:
    """A page that takes the last object says no more follow."""
    await claim_files(owners, ALICE, {"f-a": 1, "f-b": 2})
    assert await every_page(owners, ALICE, "file", 2, ascending=False) == [["f-b", "f-a"]]
    snapshots, has_more = await owners.page(ALICE, "file", after="f-a", limit=5, ascending=False)
    assert (snapshots, has_more) == ([], False)


async def test_after_another_owners_object_starts_from_the_start(owners: OwnerIndex) -> None:
    """A cursor naming an object the caller does not own (or nobody does) is ignored."""
    await claim_files(owners, ALICE, {"f-a": 10, "f-b": 20})
    await owners.claim(ObjectRef("file", "f-bob"), BOB, 15, snap("f-bob"))
    for after in ("f-bob", "f-nobody"):
        page, has_more = await owners.page(ALICE, "file", after=after, limit=1, ascending=False)
        assert (ids(page), has_more) == (["f-b"], True)


async def test_kinds_are_kept_apart(owners: OwnerIndex) -> None:
    """One id of two kinds is two objects, each with its own owner and listing."""
    await owners.claim(ObjectRef("file", "same-id"), ALICE, 10, snap("same-id", kind="file"))
    await owners.claim(ObjectRef("batch", "same-id"), BOB, 10, snap("same-id", kind="batch"))
    assert await owners.owner_of(ObjectRef("file", "same-id")) == ALICE
    assert await owners.owner_of(ObjectRef("batch", "same-id")) == BOB
    assert await owners.owner_of(ObjectRef("thread", "same-id")) is None
    files_page, _ = await owners.page(ALICE, "file", after=None, limit=10, ascending=False)
    assert [orjson.loads(one)["kind"] for one in files_page] == ["file"]
    assert await owners.page(ALICE, "batch", after=None, limit=10, ascending=False) == ([], False)


async def test_owners_are_kept_apart(owners: OwnerIndex) -> None:
    """Each owner's pages list only its own objects."""
    await claim_files(owners, ALICE, {"f-a1": 1, "f-a2": 2})
    await claim_files(owners, BOB, {"f-b1": 3})
    alice, _ = await owners.page(ALICE, "file", after=None, limit=10, ascending=False)
    bob, _ = await owners.page(BOB, "file", after=None, limit=10, ascending=False)
    assert (ids(alice), ids(bob)) == (["f-a2", "f-a1"], ["f-b1"])


async def test_odd_owner_names_and_ids_are_kept_apart(owners: OwnerIndex) -> None:
    """Braces and percent signs in owners and ids cannot make two keys collide."""
    await owners.claim(ObjectRef("file", "{x}"), "a}b{%", 1, snap("{x}"))
    await owners.claim(ObjectRef("file", "%7Bx%7D"), "a%7Db%7B%25", 1, snap("%7Bx%7D"))
    assert await owners.owner_of(ObjectRef("file", "{x}")) == "a}b{%"
    assert await owners.owner_of(ObjectRef("file", "%7Bx%7D")) == "a%7Db%7B%25"
    page, _ = await owners.page("a}b{%", "file", after=None, limit=10, ascending=False)
    assert ids(page) == ["{x}"]


@pytest.mark.parametrize("limit", [0, MAX_PAGE + 1])
async def test_page_sizes_outside_the_range_are_refused(owners: OwnerIndex, limit: int) -> None:
    """A page limit outside 1..100 is a programming error: ValueError."""
    with pytest.raises(ValueError, match="limit"):
        await owners.page(ALICE, "file", after=None, limit=limit, ascending=False)


async def test_a_full_page_holds_the_largest_limit(owners: OwnerIndex) -> None:
    """With 101 objects a page of 100 says one more follows."""
    await claim_files(owners, ALICE, {f"f-{n:03}": n for n in range(MAX_PAGE + 1)})
    page, has_more = await owners.page(ALICE, "file", after=None, limit=MAX_PAGE, ascending=True)
    assert len(page) == MAX_PAGE and has_more
    assert ids(page)[0] == "f-000"


# --- Redis only -------------------------------------------------------------------------------


async def test_key_layout(redis: Redis, prefix: str) -> None:
    """The owner hash is tagged by the object id, the listing by the owner."""
    owners = RedisOwners(redis, 2_000, prefix=prefix)
    await owners.claim(ObjectRef("file", "file-1"), ALICE, 10, snap("file-1"))
    assert owner_key(prefix, ObjectRef("file", "file-1")) == f"{prefix}:owner:{{file-1}}:file"
    assert owned_key(prefix, ALICE, "file") == f"{prefix}:owned:{{{ALICE}}}:file"
    assert await redis.hgetall(f"{prefix}:owner:{{file-1}}:file") == {
        b"owner": ALICE.encode(),
        b"kind": b"file",
        b"created": b"10",
        b"snap": snap("file-1"),
    }
    listing = f"{prefix}:owned:{{{ALICE}}}:file"
    assert await redis.zrange(listing, 0, -1, withscores=True) == [(b"file-1", 10.0)]


async def test_entries_left_by_a_halfway_release_are_never_listed(
    redis: Redis, prefix: str
) -> None:
    """A listed object whose owner hash is gone or names another owner is skipped and removed."""
    owners = RedisOwners(redis, 2_000, prefix=prefix)
    await claim_files(owners, ALICE, {"f-a": 1, "f-b": 2, "f-c": 3})
    await redis.delete(owner_key(prefix, ObjectRef("file", "f-c")))
    await owners.claim(ObjectRef("file", "f-c"), BOB, 3, snap("f-c"))
    await redis.delete(owner_key(prefix, ObjectRef("file", "f-b")))
    page, has_more = await owners.page(ALICE, "file", after=None, limit=1, ascending=False)
    assert (ids(page), has_more) == (["f-a"], False)
    listing = owned_key(prefix, ALICE, "file")
    assert await redis.zrange(listing, 0, -1) == [b"f-a"]


async def test_a_client_that_decodes_replies_works(redis_server: RedisServer, prefix: str) -> None:
    """A client made with decode_responses=True still gets bytes snapshots."""
    client = redis_server.client(decode_responses=True)
    try:
        owners = RedisOwners(client, 2_000, prefix=prefix)
        await owners.claim(ObjectRef("file", "file-1"), ALICE, 10, snap("file-1"))
        assert await owners.owner_of(ObjectRef("file", "file-1")) == ALICE
        page, _ = await owners.page(ALICE, "file", after=None, limit=10, ascending=False)
        assert page == [snap("file-1")]
    finally:
        await client.aclose()


async def test_stopped_redis_raises_ownership_unavailable(private_redis: RedisServer) -> None:
    """Every operation on a stopped Redis raises OwnershipUnavailable, never an answer."""
    client = private_redis.client(socket_connect_timeout=0.5)
    try:
        owners = RedisOwners(client, 1_000)
        ref = ObjectRef("file", "file-1")
        await owners.claim(ref, ALICE, 10, snap("file-1"))
        private_redis.stop()
        with pytest.raises(OwnershipUnavailable) as caught:
            await owners.owner_of(ref)
        assert caught.value.status == 503 and caught.value.code == "ownership_unavailable"
        with pytest.raises(OwnershipUnavailable):
            await owners.claim(ref, BOB, 20, None)
        with pytest.raises(OwnershipUnavailable):
            await owners.release(ref)
        with pytest.raises(OwnershipUnavailable):
            await owners.page(ALICE, "file", after=None, limit=10, ascending=False)
    finally:
        await client.aclose()


async def test_a_slow_redis_raises_ownership_unavailable(private_redis: RedisServer) -> None:
    """A reply later than timeout_ms raises OwnershipUnavailable rather than waiting."""
    client = private_redis.client()
    try:
        owners = RedisOwners(client, 50)
        # The server holds every later command for 10 s; the pause is over when it is killed.
        await client.client_pause(10_000)
        with pytest.raises(OwnershipUnavailable) as caught:
            await owners.owner_of(ObjectRef("file", "file-1"))
        assert caught.value.context == {"reason": "redis: TimeoutError"}
    finally:
        await client.aclose()


def test_the_public_message_names_no_cause() -> None:
    """The client sees a fixed message; the cause stays in the private context."""
    error = OwnershipUnavailable(reason="redis: ConnectionError")
    assert error.message == "Object ownership cannot be checked right now; try again later."
    assert b"ConnectionError" not in error.as_json()


def test_prefixes_with_braces_are_refused() -> None:
    """A brace in the prefix would break the hash tags, so it is refused."""
    with pytest.raises(ValueError, match="braces"):
        RedisOwners(Redis(), 100, prefix="a{b}")


@pytest.mark.parametrize("script", ["claim.lua", "page.lua"])
def test_lua_scripts_ship_with_the_package(script: str) -> None:
    """Each script is a package resource whose header names its KEYS and ARGV."""
    text = files("sentinel.tenancy").joinpath(script).read_text(encoding="utf-8")
    assert text.startswith(f"--[[ {script}:")
    assert "KEYS[1]" in text and "ARGV[1]" in text
