"""The admin surface, behind the ``[admin]`` bearer token: ``/admin/v1/*`` and ``/metrics``."""

from sentinel.admin.metrics import MetricsEndpoint
from sentinel.admin.token import require_admin
from sentinel.admin.upstreams import AdminUpstreams

__all__ = ["AdminUpstreams", "MetricsEndpoint", "require_admin"]
