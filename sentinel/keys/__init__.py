"""Runtime keys: created, changed and revoked through the admin API while Sentinel runs.

``records`` (a key as stored), ``bodies`` (what an API body may hold), ``store`` (the storage
seam) with ``redis_store`` and ``sqlite_store``, ``source`` (the cached ``PrincipalSource``
kept current on every replica), ``service`` (the audited changes behind the keys API),
``views`` and ``cli``.
"""

from sentinel.keys.backends import open_runtime_keys
from sentinel.keys.service import KeyAdmin
from sentinel.keys.source import RuntimeKeys
from sentinel.keys.views import own_key_view

__all__ = ["KeyAdmin", "RuntimeKeys", "open_runtime_keys", "own_key_view"]
