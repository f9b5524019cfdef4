"""Tenant isolation: every object created through the gateway belongs to the key that made it.

Files, batches, uploads, responses, stored chat completions, vector stores, assistants,
threads, fine-tuning jobs and fine-tuned models are owned by the key that created them; any
other key gets 404 as if they did not exist, and list endpoints answer from the owner index,
showing only the caller's objects. Who may see everything (admin keys) is the caller's call.

Pure core: ``objects`` (which objects a path, a request body or a reply names). Thin shell:
the ``OwnerIndex`` Protocol with ``MemoryOwners`` and ``RedisOwners`` (``claim.lua``,
``page.lua``), which raise ``OwnershipUnavailable`` rather than guess.
"""

from sentinel.tenancy.index import (
    MAX_PAGE,
    MemoryOwners,
    OwnerIndex,
    OwnershipUnavailable,
    placeholder,
)
from sentinel.tenancy.objects import (
    MAX_BODY_DEPTH,
    ObjectKind,
    ObjectRef,
    body_object_ids,
    collection_kind,
    created_objects,
    may_refer,
    path_object,
)
from sentinel.tenancy.redis_index import RedisOwners, owned_key, owner_key

__all__ = [
    "MAX_BODY_DEPTH",
    "MAX_PAGE",
    "MemoryOwners",
    "ObjectKind",
    "ObjectRef",
    "OwnerIndex",
    "OwnershipUnavailable",
    "RedisOwners",
    "body_object_ids",
    "collection_kind",
    "created_objects",
    "may_refer",
    "owned_key",
    "owner_key",
    "path_object",
    "placeholder",
]
